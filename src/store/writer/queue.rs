//! The writer's inbox and how the writer thread waits on it.
//!
//! The queue is a plain locked list, not a channel: a counter written while the writer is
//! already gathering a batch must not wake it — on a busy proxy that wake-up per request
//! was a thread switch per request.

use crate::store::WriteOp;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A batch this large is committed without waiting for more.
pub(super) const MAX_BATCH: usize = 4096;

/// Counters wait at most this long for company before their batch starts (with the commit,
/// under the ~10 ms a `kill -9` can lose); a change someone waits for is committed at once.
/// Every commit also costs the requests beside it on a small box (BENCHMARKS.md, fourteenth
/// pass), so the wait is as long as that bound allows.
const GATHER: Duration = Duration::from_millis(8);

/// How long after a batch the writer keeps looking for work by itself (see `next_batch`).
pub(super) const LINGER: Duration = Duration::from_secs(1);

pub(super) type Ack = oneshot::Sender<Result<(), String>>;

/// One queued change. A durable one belongs to a caller waiting for an acknowledgement: if
/// its batch fails the caller is told and undoes it, so it must never be written later.
#[derive(Debug)]
pub(super) struct Queued {
    pub op: WriteOp,
    pub durable: bool,
}

impl Queued {
    pub fn behind(op: WriteOp) -> Queued {
        Queued { op, durable: false }
    }

    pub fn durable(op: WriteOp) -> Queued {
        Queued { op, durable: true }
    }
}

/// What the writer takes off the queue in one go: the changes in the order they came, and
/// everyone waiting for them.
#[derive(Default)]
pub(super) struct Batch {
    pub ops: Vec<Queued>,
    pub acks: Vec<Ack>,
}

#[derive(Default)]
pub(super) struct Queue {
    pub batch: Batch,
    /// The writer sleeps until woken (it has been quiet for `LINGER`); whoever queues first
    /// wakes it. Otherwise it looks at the queue by itself every `GATHER`.
    pub idle: bool,
    /// Every handle is gone: commit what is left and stop.
    pub closed: bool,
}

#[derive(Default)]
pub(super) struct Shared {
    pub queue: Mutex<Queue>,
    pub wake: Condvar,
}

impl Shared {
    pub fn close(&self) {
        self.queue.lock().closed = true;
        self.wake.notify_one();
    }
}

/// What the writer does next with the queue as it finds it.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Commit what is queued now.
    Take,
    /// Closed and empty.
    Stop,
    /// Held changes are due at this time; only an acknowledgement or closing comes first.
    WaitForRetry(Instant),
    /// Changes came while the writer was not looking: give them `GATHER` for company.
    Gather,
    /// Nothing queued, a batch was recent: look again after `GATHER`.
    Look,
    /// Quiet for `LINGER`: hand back freed memory, then look once more.
    GiveBack,
    /// Sleep until someone queues.
    Sleep,
}

/// What is due at a time of its own, apart from the queue.
#[derive(Clone, Copy, Default)]
pub(super) struct Due {
    /// Changes held from a failed batch are to be tried again.
    pub retry_at: Option<Instant>,
    /// Counters appended to the counter log are to be folded into SQLite.
    pub fold_at: Option<Instant>,
}

/// The writer's waiting rules, apart from the waiting. `looked`: the writer's last wait was
/// a `Look`, so whatever is queued has already waited up to `GATHER` and goes at once — a
/// second wait would let a counter sit for two.
fn next_step(
    queue: &Queue,
    looked: bool,
    due: Due,
    now: Instant,
    quiet_since: Duration,
    gave_back: bool,
) -> Step {
    let Due { retry_at, fold_at } = due;
    let batch = &queue.batch;
    if !batch.acks.is_empty() {
        return Step::Take;
    }
    if queue.closed && batch.ops.is_empty() {
        return Step::Stop;
    }
    if let Some(at) = retry_at {
        return if queue.closed || now >= at {
            Step::Take
        } else {
            Step::WaitForRetry(at)
        };
    }
    if batch.ops.len() >= MAX_BATCH
        || (looked && !batch.ops.is_empty())
        || fold_at.is_some_and(|at| now >= at)
    {
        return Step::Take;
    }
    if !batch.ops.is_empty() {
        return Step::Gather;
    }
    // Counters waiting in the counter log keep the writer looking until their fold.
    if quiet_since < LINGER || fold_at.is_some() {
        Step::Look
    } else if !gave_back {
        Step::GiveBack
    } else {
        Step::Sleep
    }
}

/// Waits for work (see `next_step`), then takes the batch. None: closed and empty.
///
/// For `LINGER` after a batch the writer looks at the queue every `GATHER` on its own instead
/// of sleeping until woken: on a busy proxy no request pays for waking it (a wake-up landed in
/// the middle of the next request, and on two cores cost it tens of microseconds).
///
/// `due.fold_at`: counters in the counter log are due then; until then the writer keeps looking
/// instead of sleeping. `due.retry_at`: changes held from a failed batch are due then. Until
/// that time only someone waiting for an acknowledgement (or closing) starts a batch, so a
/// full disk is not retried in a tight loop while callers who wait still get an answer at once.
pub(super) fn next_batch(shared: &Shared, last_batch: &mut Instant, due: Due) -> Option<Batch> {
    let mut queue = shared.queue.lock();
    let mut gave_back = false;
    let mut looked = false;
    loop {
        let now = Instant::now();
        let step = next_step(
            &queue,
            looked,
            due,
            now,
            now.saturating_duration_since(*last_batch),
            gave_back,
        );
        looked = false;
        match step {
            Step::Take => break,
            Step::Stop => return None,
            Step::WaitForRetry(at) => {
                shared.wake.wait_until(&mut queue, at);
            }
            Step::Gather => {
                let deadline = now + GATHER;
                while queue.batch.acks.is_empty()
                    && !queue.closed
                    && queue.batch.ops.len() < MAX_BATCH
                {
                    if shared.wake.wait_until(&mut queue, deadline).timed_out() {
                        break;
                    }
                }
                break;
            }
            Step::Look => {
                shared.wake.wait_for(&mut queue, GATHER);
                looked = true;
            }
            Step::GiveBack => {
                // An idle thread never returns freed memory by itself. The queue stays open
                // meanwhile, so look again.
                MutexGuard::unlocked(&mut queue, crate::allocator::give_back_freed_memory);
                gave_back = true;
            }
            Step::Sleep => {
                queue.idle = true;
                shared.wake.wait(&mut queue);
                queue.idle = false;
            }
        }
    }
    *last_batch = Instant::now();
    // The next batch starts with room for one like this: growing the list a push at a time
    // copied it over and over while the workers waited on the lock.
    let room = queue.batch.ops.len();
    let taken = std::mem::replace(
        &mut queue.batch,
        Batch {
            ops: Vec::with_capacity(room),
            acks: Vec::new(),
        },
    );
    Some(taken)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue_with(ops: usize, acks: usize, closed: bool) -> Queue {
        let mut queue = Queue {
            closed,
            ..Queue::default()
        };
        for i in 0..ops {
            queue.batch.ops.push(Queued::behind(WriteOp::Unbind {
                key_id: format!("k{i}"),
            }));
        }
        for _ in 0..acks {
            queue.batch.acks.push(oneshot::channel().0);
        }
        queue
    }

    fn step(queue: &Queue, looked: bool, quiet: Duration, gave_back: bool) -> Step {
        next_step(
            queue,
            looked,
            Due::default(),
            Instant::now(),
            quiet,
            gave_back,
        )
    }

    #[test]
    fn counters_wait_for_company_once_not_twice() {
        let queued = queue_with(1, 0, false);
        // Found by the writer's own look: they have waited already.
        assert_eq!(step(&queued, true, Duration::ZERO, false), Step::Take);
        // Found on waking (or right after a commit): they get their wait now.
        assert_eq!(step(&queued, false, Duration::ZERO, false), Step::Gather);
        assert_eq!(
            step(
                &queue_with(MAX_BATCH, 0, false),
                false,
                Duration::ZERO,
                false
            ),
            Step::Take
        );
    }

    #[test]
    fn a_waiting_caller_or_closing_goes_first() {
        let now = Instant::now();
        let due = now + Duration::from_secs(1);
        let retry = Due {
            retry_at: Some(due),
            fold_at: None,
        };
        let with_retry_due =
            |queue: &Queue, looked| next_step(queue, looked, retry, now, Duration::ZERO, false);
        assert_eq!(
            step(&queue_with(0, 1, false), false, Duration::ZERO, false),
            Step::Take
        );
        assert_eq!(with_retry_due(&queue_with(3, 1, false), false), Step::Take);
        assert_eq!(
            with_retry_due(&queue_with(3, 0, false), true),
            Step::WaitForRetry(due)
        );
        assert_eq!(with_retry_due(&queue_with(3, 0, true), false), Step::Take);
        assert_eq!(
            step(&queue_with(0, 0, true), false, Duration::ZERO, false),
            Step::Stop
        );
    }

    #[test]
    fn counters_in_the_log_keep_the_writer_looking_until_their_fold() {
        let now = Instant::now();
        let empty = queue_with(0, 0, false);
        let fold_at = |at| Due {
            retry_at: None,
            fold_at: Some(at),
        };
        let later = fold_at(now + Duration::from_secs(1));
        assert_eq!(
            next_step(&empty, true, later, now, LINGER * 2, true),
            Step::Look,
            "never asleep with counters waiting"
        );
        assert_eq!(
            next_step(&empty, true, fold_at(now), now, Duration::ZERO, false),
            Step::Take
        );
    }

    #[test]
    fn a_quiet_writer_looks_then_gives_memory_back_then_sleeps() {
        let empty = queue_with(0, 0, false);
        assert_eq!(step(&empty, true, LINGER / 2, false), Step::Look);
        assert_eq!(step(&empty, true, LINGER, false), Step::GiveBack);
        assert_eq!(step(&empty, false, LINGER, true), Step::Sleep);
    }
}
