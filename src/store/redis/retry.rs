//! Writes that must land in Redis even when Redis is briefly away: a served request's usage
//! (settle.lua) and a count given back (give_back.lua). Both are once-only in Redis — each is
//! named, and a name already seen adds nothing — so a write whose answer did not come is
//! simply sent again, after a growing pause, until Redis answers or `RETRY_HORIZON` passes.
//! At most `MAX_WAITING` writes wait at once (what is dropped is logged); an outage is logged
//! when its first write starts waiting and when its last one is done, never per attempt; at
//! shutdown every waiting write is sent again at once, for a few seconds (`last_call`).
//! Every write given up is logged here, with what it carried.

use crate::store::backoff::retry_after;
use parking_lot::Mutex;
use redis::{RedisError, RetryMethod};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a write is sent again. Whatever makes it once-only in Redis must outlive this.
pub(super) const RETRY_HORIZON: Duration = Duration::from_secs(600);
/// Writes waiting for Redis at once (each holds a few hundred bytes); more are dropped.
const MAX_WAITING: usize = 10_000;
/// At shutdown, the pause between sends (a first one may meet a connection Redis dropped).
const LAST_CALL_PAUSE: Duration = Duration::from_millis(50);
/// How often shutdown looks whether the last sends are done.
const LAST_CALL_POLL: Duration = Duration::from_millis(20);
/// A send begun just before the shutdown's deadline ends within Redis's response timeout (1 s).
const LAST_SEND_ENDS: Duration = Duration::from_millis(1500);

/// This process's writes on their way to Redis; shared by every tier (cheap to clone).
#[derive(Clone)]
pub struct WaitingWrites(Arc<Shared>);

struct Shared {
    tally: Mutex<Tally>,
    /// Set at shutdown: every waiting write is sent again at once, and given up at this time.
    last_call: watch::Sender<Option<Instant>>,
}

#[derive(Default)]
struct Tally {
    /// Writes not done yet, first sends included (shutdown waits for them).
    in_flight: usize,
    /// Writes whose first send failed, now sent again.
    waiting: usize,
    /// This outage's writes that landed late, and those given up.
    landed: usize,
    lost: usize,
}

/// An answer from Redis, even an error, means the write ran or never will: only a missing
/// answer (connection refused or dropped, a timeout, Redis still loading) is worth another send.
fn worth_sending_again(e: &RedisError) -> bool {
    !matches!(e.retry_method(), RetryMethod::NoRetry)
}

impl Default for WaitingWrites {
    fn default() -> Self {
        WaitingWrites(Arc::new(Shared {
            tally: Mutex::new(Tally::default()),
            last_call: watch::Sender::new(None),
        }))
    }
}

impl WaitingWrites {
    /// Sends `write` until Redis answers. It must be once-only in Redis: a send whose answer
    /// was lost may have run. `what` names the write in the log line should it be lost.
    pub async fn until_answered<T, W, F>(
        &self,
        what: impl Fn() -> String,
        mut write: W,
    ) -> Result<T, RedisError>
    where
        W: FnMut() -> F,
        F: Future<Output = Result<T, RedisError>>,
    {
        self.0.tally.lock().in_flight += 1;
        let mut sending = Sending {
            writes: self,
            waiting: false,
        };
        let error = match write().await {
            Err(e) if worth_sending_again(&e) => e,
            Err(e) => {
                log::error!("{} is lost: Redis refused it ({e})", what());
                return Err(e);
            }
            answered => return answered,
        };
        if !self.start_waiting(&error, &what) {
            return Err(error);
        }
        sending.waiting = true;
        let outcome = self.send_again(&mut write, error).await;
        sending.waiting = false;
        self.stop_waiting(&outcome, &what);
        outcome
    }

    /// Sends again after growing pauses. At shutdown: at once, then after short pauses until
    /// the shutdown's deadline.
    async fn send_again<T, W, F>(
        &self,
        write: &mut W,
        mut error: RedisError,
    ) -> Result<T, RedisError>
    where
        W: FnMut() -> F,
        F: Future<Output = Result<T, RedisError>>,
    {
        let started = Instant::now();
        let mut failures = 1;
        let mut pause = retry_after(failures);
        let mut shutdown = self.0.last_call.subscribe();
        loop {
            let last_call = *shutdown.borrow_and_update();
            match last_call {
                Some(deadline) if Instant::now() >= deadline => return Err(error),
                Some(_) => {}
                None if started.elapsed() + pause >= RETRY_HORIZON => return Err(error),
                None => tokio::select! {
                    _ = actix_rt::time::sleep(pause) => {
                        failures += 1;
                        pause = retry_after(failures);
                    }
                    _ = shutdown.changed() => {}
                },
            }
            match write().await {
                Err(e) if worth_sending_again(&e) => error = e,
                answered => return answered,
            }
            if last_call.is_some() {
                actix_rt::time::sleep(LAST_CALL_PAUSE).await;
            }
        }
    }

    /// Counts a write that will be sent again; false (and logged) when too many already wait.
    fn start_waiting(&self, error: &RedisError, what: &impl Fn() -> String) -> bool {
        let mut tally = self.0.tally.lock();
        if tally.waiting >= MAX_WAITING {
            tally.lost += 1;
            log::error!(
                "{} is lost: Redis did not answer ({error}) and {MAX_WAITING} writes already wait for it",
                what()
            );
            return false;
        }
        if tally.waiting == 0 {
            log::warn!(
                "Redis did not answer a write ({error}); such writes are kept (at most {MAX_WAITING}) and sent again until it does"
            );
        }
        tally.waiting += 1;
        true
    }

    /// A waiting write is done; the outage's last one sums it up.
    fn stop_waiting<T>(&self, outcome: &Result<T, RedisError>, what: &impl Fn() -> String) {
        let mut tally = self.0.tally.lock();
        match outcome {
            Ok(_) => tally.landed += 1,
            Err(e) => {
                tally.lost += 1;
                log::error!("{} is lost: Redis did not take it ({e})", what());
            }
        }
        tally.waiting -= 1;
        if tally.waiting == 0 {
            let (landed, lost) = (tally.landed, tally.lost);
            tally.landed = 0;
            tally.lost = 0;
            if lost == 0 {
                log::info!("Redis answers again: all {landed} writes kept for it have landed");
            } else {
                log::warn!("writes kept for Redis: {landed} landed, {lost} lost (named above)");
            }
        }
    }

    /// Shutdown: every waiting write is sent again at once, and again until `within` has
    /// passed; answers how many writes were still not done by then (they are lost).
    pub async fn last_call(&self, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        self.0.last_call.send_replace(Some(deadline));
        loop {
            let in_flight = self.0.tally.lock().in_flight;
            if in_flight == 0 || Instant::now() >= deadline + LAST_SEND_ENDS {
                return in_flight;
            }
            actix_rt::time::sleep(LAST_CALL_POLL).await;
        }
    }
}

/// A write on its way: counted until its future ends, done or dropped (its arbiter stopped).
struct Sending<'a> {
    writes: &'a WaitingWrites,
    /// Dropped while waiting: nobody else will count it out.
    waiting: bool,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        let mut tally = self.writes.0.tally.lock();
        tally.in_flight -= 1;
        if self.waiting {
            tally.waiting -= 1;
            tally.lost += 1;
        }
    }
}
