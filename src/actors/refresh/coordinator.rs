//! RefreshCoordinator: the one place refreshes start. It owns the timers, the global success
//! lock, the token-endpoint pause and every account's cooldown and failure count, and runs
//! one refresh at a time, earliest deadline first.

use super::gate::{RefreshGate, RefreshOutcome};
use super::plan::{decide, Candidate, Decision};
use crate::actors::pool::{BlacklistAccount, GetCredential, PoolActor};
use crate::clock::now_ms;
use crate::config::RefreshConfig;
use crate::domain::{Credential, Millis};
use crate::store::redis::{RefreshGrant, RefreshRules};
use crate::store::{Backend, RefreshRecord, WriteOp};
use crate::upstream::oauth::RefreshError;
use actix::prelude::*;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

pub type AccountId = (String, String);

/// An account the coordinator keeps fresh.
#[derive(Debug, Clone)]
pub struct Tracked {
    pub tier: String,
    pub name: String,
    pub expires_at: Option<Millis>,
    pub refreshable: bool,
}

#[derive(Debug, Default)]
struct Plan {
    expires_at: Option<Millis>,
    refreshable: bool,
    /// Refused for good (invalid_grant) until the operator recovers or sync re-reads it.
    rejected: bool,
    /// Another instance used up this account's attempts (shared store).
    exhausted: bool,
    record: RefreshRecord,
}

/// What one try of a refresh came to.
enum Attempt {
    Done(Result<RefreshOutcome, RefreshError>),
    /// The shared rules said not yet: why, and for how many ms.
    Deferred(String, Millis),
    Exhausted,
}

type Waiter = oneshot::Sender<Result<Arc<Credential>, RefreshError>>;

pub struct RefreshCoordinator {
    cfg: RefreshConfig,
    gate: RefreshGate,
    pools: Arc<HashMap<String, Addr<PoolActor>>>,
    backend: Backend,
    /// Names this instance in the shared refresh mutex.
    owner: String,
    accounts: BTreeMap<AccountId, Plan>,
    lock_until: Millis,
    paused_until: Millis,
    in_flight: Option<AccountId>,
    urgent: HashMap<AccountId, Vec<Waiter>>,
    wake: Option<SpawnHandle>,
    /// What was last logged as the reason for waiting, so a wait is logged once.
    last_wait_note: Option<String>,
}

impl RefreshCoordinator {
    pub fn new(
        cfg: RefreshConfig,
        gate: RefreshGate,
        pools: Arc<HashMap<String, Addr<PoolActor>>>,
        backend: Backend,
        saved: HashMap<AccountId, RefreshRecord>,
        timers: (Millis, Millis),
    ) -> RefreshCoordinator {
        let accounts = saved
            .into_iter()
            .map(|(id, record)| {
                (
                    id,
                    Plan {
                        record,
                        ..Plan::default()
                    },
                )
            })
            .collect();
        RefreshCoordinator {
            cfg,
            gate,
            pools,
            backend,
            owner: uuid::Uuid::new_v4().to_string(),
            accounts,
            lock_until: timers.0,
            paused_until: timers.1,
            in_flight: None,
            urgent: HashMap::new(),
            wake: None,
            last_wait_note: None,
        }
    }

    fn ms(d: crate::config::HumanDuration) -> Millis {
        d.as_millis()
    }

    fn failures_in_window(&self, plan: &Plan, now: Millis) -> usize {
        let since = now - Self::ms(self.cfg.failure_window);
        plan.record.failures.iter().filter(|t| **t > since).count()
    }

    fn may_try(&self, plan: &Plan, now: Millis) -> bool {
        plan.refreshable
            && !plan.rejected
            && !plan.exhausted
            && self.failures_in_window(plan, now) < self.cfg.max_failures as usize
    }

    /// Candidates sorted by deadline, with their ids.
    fn candidates(&self, now: Millis) -> Vec<(AccountId, Candidate)> {
        let mut list: Vec<(AccountId, Candidate)> = self
            .accounts
            .iter()
            .filter(|(_, p)| self.may_try(p, now))
            .filter_map(|(id, p)| {
                let deadline = if self.urgent.contains_key(id) {
                    Millis::MIN
                } else {
                    p.expires_at?
                };
                Some((
                    id.clone(),
                    Candidate {
                        deadline,
                        cooldown_until: p.record.cooldown_until,
                    },
                ))
            })
            .collect();
        list.sort_by(|a, b| (a.1.deadline, &a.0).cmp(&(b.1.deadline, &b.0)));
        list
    }

    fn note_wait(&mut self, note: String) {
        if self.last_wait_note.as_deref() != Some(note.as_str()) {
            log::info!("{note}");
            self.last_wait_note = Some(note);
        }
    }

    fn schedule(&mut self, ctx: &mut Context<Self>, at: Millis) {
        if let Some(handle) = self.wake.take() {
            ctx.cancel_future(handle);
        }
        let delay = Duration::from_millis(u64::try_from((at - now_ms()).max(0)).unwrap_or(0));
        self.wake = Some(ctx.run_later(delay, |act, ctx| {
            act.wake = None;
            act.tick(ctx);
        }));
    }

    /// The next thing to do, done or scheduled.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.in_flight.is_some() {
            return;
        }
        let now = now_ms();
        self.fail_hopeless_waiters(now);
        let list = self.candidates(now);
        let cands: Vec<Candidate> = list.iter().map(|(_, c)| c.clone()).collect();
        let decision = decide(
            &cands,
            now,
            Self::ms(self.cfg.lead),
            Self::ms(self.cfg.success_lock),
            self.lock_until,
            self.paused_until,
        );
        match decision {
            Decision::Idle => {}
            Decision::WaitUntil(at) => {
                if let Some((id, _)) = list
                    .iter()
                    .find(|(_, c)| c.cooldown_until > now && c.cooldown_until == at)
                {
                    self.note_wait(format!("refresh cooldown: {}", id.1));
                }
                self.schedule(ctx, at);
            }
            Decision::BlockedByLock { index, until } => {
                self.note_wait(format!(
                    "refresh blocked by global lock: {} waits {} ms",
                    list[index].0 .1,
                    until - now
                ));
                self.schedule(ctx, until);
            }
            Decision::Paused { until } => {
                self.note_wait(format!(
                    "refresh paused by the token endpoint for {} ms",
                    until - now
                ));
                self.schedule(ctx, until);
            }
            Decision::Refresh(index) => {
                self.last_wait_note = None;
                let id = list[index].0.clone();
                self.start_refresh(id, ctx);
            }
        }
    }

    /// Urgent callers whose account can't be tried anymore get their answer now.
    fn fail_hopeless_waiters(&mut self, now: Millis) {
        let hopeless: Vec<AccountId> = self
            .urgent
            .keys()
            .filter(|id| !self.accounts.get(*id).is_some_and(|p| self.may_try(p, now)))
            .cloned()
            .collect();
        for id in hopeless {
            for waiter in self.urgent.remove(&id).unwrap_or_default() {
                let _ = waiter.send(Err(RefreshError::BadResponse(
                    "no refresh attempts left for this account".into(),
                )));
            }
        }
    }

    fn rules(&self) -> RefreshRules {
        RefreshRules {
            failure_window: Self::ms(self.cfg.failure_window),
            max_failures: self.cfg.max_failures,
            success_lock: Self::ms(self.cfg.success_lock),
            cooldown: Self::ms(self.cfg.cooldown),
        }
    }

    fn start_refresh(&mut self, id: AccountId, ctx: &mut Context<Self>) {
        let Some(pool) = self.pools.get(&id.0).cloned() else {
            self.accounts.remove(&id);
            ctx.notify(Tick);
            return;
        };
        self.in_flight = Some(id.clone());
        let gate = self.gate.clone();
        let (tier, name) = id.clone();
        let known_expiry = self.accounts.get(&id).and_then(|p| p.expires_at);
        let urgent = self.urgent.contains_key(&id);
        let shared = match &self.backend {
            Backend::Redis(store) => Some((store.clone(), self.rules(), self.owner.clone())),
            Backend::Embedded(_) => None,
        };
        let work = async move {
            let current = match pool
                .send(GetCredential {
                    account: name.clone(),
                })
                .await
            {
                Ok(Some(c)) => c,
                _ => {
                    return Attempt::Done(Err(RefreshError::BadResponse(
                        "the account is gone".into(),
                    )))
                }
            };
            // Refreshed meanwhile (another instance, or a sync): nothing to do.
            if !urgent && current.expires_at > known_expiry {
                return Attempt::Done(Ok(RefreshOutcome::AlreadyNewer(current)));
            }
            let Some((store, rules, owner)) = shared else {
                return Attempt::Done(gate.refresh(&pool, &tier, &name, &current).await);
            };
            match store
                .refresh_begin(&tier, &name, now_ms(), &rules, &owner)
                .await
            {
                Ok(RefreshGrant::Go) => {}
                Ok(RefreshGrant::Wait(reason, wait)) => return Attempt::Deferred(reason, wait),
                Ok(RefreshGrant::Exhausted) => return Attempt::Exhausted,
                Err(e) => return Attempt::Deferred(format!("store unavailable ({e})"), 1_000),
            }
            let result = gate.refresh(&pool, &tier, &name, &current).await;
            let (outcome, pause, error) = match &result {
                Ok(RefreshOutcome::Refreshed(_)) => ("success", 0, String::new()),
                Ok(RefreshOutcome::AlreadyNewer(_)) => ("skipped", 0, String::new()),
                Err(RefreshError::RateLimited(d)) => (
                    "paused",
                    i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
                    String::new(),
                ),
                Err(e) => ("failure", 0, e.to_string()),
            };
            if let Err(e) = store
                .refresh_end(
                    &tier,
                    &name,
                    now_ms(),
                    outcome,
                    &rules,
                    pause,
                    &error,
                    &owner,
                )
                .await
            {
                log::error!("refresh outcome of {name} not recorded in the store: {e}");
            }
            Attempt::Done(result)
        };
        ctx.spawn(work.into_actor(self).map(move |attempt, act, ctx| {
            act.in_flight = None;
            match attempt {
                Attempt::Done(result) => act.finish(id, result),
                Attempt::Deferred(reason, wait) => {
                    let note = if reason == "locked" {
                        format!("refresh blocked by global lock: {} waits {wait} ms", id.1)
                    } else if reason == "cooldown" {
                        format!("refresh cooldown: {}", id.1)
                    } else {
                        format!("refresh of {} waits {wait} ms: {reason}", id.1)
                    };
                    act.note_wait(note);
                    act.schedule(ctx, now_ms() + wait.max(1));
                    return;
                }
                Attempt::Exhausted => {
                    log::warn!(
                        "refresh failed: {}: no attempts left in the failure window",
                        id.1
                    );
                    if let Some(plan) = act.accounts.get_mut(&id) {
                        plan.exhausted = true;
                    }
                    act.answer_waiters(
                        &id,
                        &Err(RefreshError::BadResponse(
                            "no refresh attempts left for this account".into(),
                        )),
                    );
                }
            }
            act.tick(ctx);
        }));
    }

    fn persist(&self, id: &AccountId) {
        let Backend::Embedded(writer) = &self.backend else {
            return;
        };
        if let Some(plan) = self.accounts.get(id) {
            writer.write(WriteOp::SetRefreshState {
                tier: id.0.clone(),
                account: id.1.clone(),
                state: plan.record.clone(),
            });
        }
    }

    fn persist_timers(&self) {
        let Backend::Embedded(writer) = &self.backend else {
            return;
        };
        writer.write(WriteOp::SetRefreshTimers {
            lock_until: self.lock_until,
            paused_until: self.paused_until,
        });
    }

    fn answer_waiters(&mut self, id: &AccountId, result: &Result<Arc<Credential>, RefreshError>) {
        for waiter in self.urgent.remove(id).unwrap_or_default() {
            let _ = waiter.send(result.clone());
        }
    }

    fn finish(&mut self, id: AccountId, result: Result<RefreshOutcome, RefreshError>) {
        let now = now_ms();
        let outcome = result.map(|o| {
            let called_endpoint = matches!(o, RefreshOutcome::Refreshed(_));
            (o.credential(), called_endpoint)
        });
        match &outcome {
            Ok((credential, called_endpoint)) => {
                if *called_endpoint {
                    crate::metrics::count_refresh("success");
                    log::info!("refresh succeeded: {}", id.1);
                    crate::failpoint::panic_once("refresh-coordinator-panic");
                    self.lock_until = now + Self::ms(self.cfg.success_lock);
                    self.persist_timers();
                }
                if let Some(plan) = self.accounts.get_mut(&id) {
                    plan.expires_at = credential.expires_at;
                    plan.record = RefreshRecord::default();
                }
            }
            Err(RefreshError::RateLimited(wait)) => {
                crate::metrics::count_refresh("rate_limited");
                let wait = i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                log::warn!("refresh failed: {}: token endpoint rate limited; all refreshes pause {wait} ms", id.1);
                self.paused_until = now.saturating_add(wait);
                self.persist_timers();
            }
            Err(e) => {
                crate::metrics::count_refresh(match e {
                    RefreshError::InvalidGrant => "invalid_grant",
                    _ => "failure",
                });
                log::warn!("refresh failed: {}: {e}", id.1);
                let cooldown = Self::ms(self.cfg.cooldown);
                if let Some(plan) = self.accounts.get_mut(&id) {
                    plan.record.failures.push(now);
                    plan.record.cooldown_until = now + cooldown;
                    plan.record.last_error = Some(e.to_string());
                    match e {
                        RefreshError::InvalidGrant => plan.rejected = true,
                        RefreshError::NoRefreshToken => plan.refreshable = false,
                        _ => {}
                    }
                }
                if matches!(e, RefreshError::InvalidGrant) {
                    if let Some(pool) = self.pools.get(&id.0) {
                        pool.do_send(BlacklistAccount {
                            account: id.1.clone(),
                            reason: "refresh token rejected".into(),
                        });
                    }
                }
            }
        }
        self.persist(&id);
        self.answer_waiters(&id, &outcome.map(|(c, _)| c));
    }

    /// When the next refresh attempt of an account may happen, for `retry-after`.
    fn next_attempt(&self, id: &AccountId, now: Millis) -> Option<Millis> {
        let plan = self.accounts.get(id)?;
        if !self.may_try(plan, now) {
            return None;
        }
        Some(
            plan.record
                .cooldown_until
                .max(self.lock_until)
                .max(self.paused_until)
                .max(now),
        )
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Tick;

impl Actor for RefreshCoordinator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(Tick);
    }
}

impl Handler<Tick> for RefreshCoordinator {
    type Result = ();

    fn handle(&mut self, _: Tick, ctx: &mut Context<Self>) {
        self.tick(ctx);
    }
}

/// Replace the tracked accounts (start-up and every sync): all timers are reset.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Track {
    pub accounts: Vec<Tracked>,
}

impl Handler<Track> for RefreshCoordinator {
    type Result = ();

    fn handle(&mut self, msg: Track, ctx: &mut Context<Self>) {
        let mut next = BTreeMap::new();
        for t in msg.accounts {
            let id = (t.tier, t.name);
            let record = self
                .accounts
                .remove(&id)
                .map(|p| p.record)
                .unwrap_or_default();
            next.insert(
                id,
                Plan {
                    expires_at: t.expires_at,
                    refreshable: t.refreshable,
                    rejected: false,
                    exhausted: false,
                    record,
                },
            );
        }
        self.accounts = next;
        self.tick(ctx);
    }
}

/// Refresh this account as soon as the rules allow, and answer with its new credential.
#[derive(Message)]
#[rtype(result = "Result<Arc<Credential>, RefreshError>")]
pub struct RefreshNow {
    pub tier: String,
    pub account: String,
}

impl Handler<RefreshNow> for RefreshCoordinator {
    type Result = ResponseFuture<Result<Arc<Credential>, RefreshError>>;

    fn handle(&mut self, msg: RefreshNow, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        self.urgent
            .entry((msg.tier, msg.account))
            .or_default()
            .push(tx);
        self.tick(ctx);
        Box::pin(async move {
            rx.await.unwrap_or_else(|_| {
                Err(RefreshError::BadResponse(
                    "refresh coordinator stopped".into(),
                ))
            })
        })
    }
}

/// The account was recovered by the operator: plan it again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Recovered {
    pub tier: String,
    pub account: String,
}

impl Handler<Recovered> for RefreshCoordinator {
    type Result = ();

    fn handle(&mut self, msg: Recovered, ctx: &mut Context<Self>) {
        if let Some(plan) = self
            .accounts
            .get_mut(&(msg.tier.clone(), msg.account.clone()))
        {
            plan.rejected = false;
            plan.exhausted = false;
            plan.record = RefreshRecord::default();
        }
        self.persist(&(msg.tier, msg.account));
        self.tick(ctx);
    }
}

#[derive(Message)]
#[rtype(result = "Option<Millis>")]
pub struct NextAttempt {
    pub tier: String,
    pub account: String,
}

impl Handler<NextAttempt> for RefreshCoordinator {
    type Result = Option<Millis>;

    fn handle(&mut self, msg: NextAttempt, ctx: &mut Context<Self>) -> Option<Millis> {
        // A request just found this token expired: make sure a refresh is planned.
        self.tick(ctx);
        self.next_attempt(&(msg.tier, msg.account), now_ms())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct AccountRefreshView {
    pub tier: String,
    pub account: String,
    pub failures_in_window: usize,
    pub cooldown_until: Option<Millis>,
    pub last_error: Option<String>,
    pub next_attempt: Option<Millis>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RefreshView {
    pub timers: usize,
    pub next_account: Option<String>,
    pub next_at: Option<Millis>,
    pub lock_until: Option<Millis>,
    pub paused_until: Option<Millis>,
    pub in_flight: Option<String>,
    pub accounts: Vec<AccountRefreshView>,
}

#[derive(Message)]
#[rtype(result = "RefreshView")]
pub struct ViewRefresh;

impl Handler<ViewRefresh> for RefreshCoordinator {
    type Result = MessageResult<ViewRefresh>;

    fn handle(&mut self, _: ViewRefresh, _: &mut Context<Self>) -> Self::Result {
        let now = now_ms();
        let list = self.candidates(now);
        let deadlines: Vec<Millis> = list.iter().map(|(_, c)| c.deadline).collect();
        let starts = super::plan::latest_starts(
            &deadlines,
            Self::ms(self.cfg.lead),
            Self::ms(self.cfg.success_lock),
        );
        let next = list
            .iter()
            .zip(starts)
            .map(|((id, c), s)| {
                (
                    id,
                    s.max(c.cooldown_until)
                        .max(self.lock_until)
                        .max(self.paused_until),
                )
            })
            .min_by_key(|(_, at)| *at);
        let accounts = self
            .accounts
            .iter()
            .map(|(id, p)| AccountRefreshView {
                tier: id.0.clone(),
                account: id.1.clone(),
                failures_in_window: self.failures_in_window(p, now),
                cooldown_until: Some(p.record.cooldown_until).filter(|t| *t > now),
                last_error: p.record.last_error.clone(),
                next_attempt: self.next_attempt(id, now),
            })
            .collect();
        MessageResult(RefreshView {
            timers: list.len(),
            next_account: next.map(|(id, _)| id.1.clone()),
            next_at: next.map(|(_, at)| at),
            lock_until: Some(self.lock_until).filter(|t| *t > now),
            paused_until: Some(self.paused_until).filter(|t| *t > now),
            in_flight: self.in_flight.as_ref().map(|id| id.1.clone()),
            accounts,
        })
    }
}
