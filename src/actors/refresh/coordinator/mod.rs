//! RefreshCoordinator: the one place refreshes start. It owns the timers, the global success
//! lock, the token-endpoint pause and every account's cooldown and failure count, and runs
//! one refresh at a time, earliest deadline first.

use super::attempt_time::AttemptTimes;
use super::gate::{RefreshGate, RefreshOutcome};
use super::plan::{decide, Candidate, Decision};
use crate::actors::pool::{BlacklistAccount, GetCredential, PoolAddrs};
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

impl Tracked {
    /// A tier's accounts as its pool reports them (`AccountExpiries`).
    pub fn from_expiries(
        tier: &str,
        expiries: Vec<(String, Option<Millis>, bool)>,
    ) -> impl Iterator<Item = Tracked> + '_ {
        expiries
            .into_iter()
            .map(move |(name, expires_at, refreshable)| Tracked {
                tier: tier.to_string(),
                name,
                expires_at,
                refreshable,
            })
    }
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

type Waiter = oneshot::Sender<Result<Arc<Credential>, RefreshError>>;

pub struct RefreshCoordinator {
    cfg: RefreshConfig,
    gate: RefreshGate,
    pools: PoolAddrs,
    backend: Backend,
    /// Names this instance in the shared refresh mutex.
    owner: String,
    accounts: BTreeMap<AccountId, Plan>,
    lock_until: Millis,
    paused_until: Millis,
    in_flight: Option<AccountId>,
    /// How long recent attempts took, so the plan leaves room for them.
    attempt_times: AttemptTimes,
    urgent: HashMap<AccountId, Vec<Waiter>>,
    wake: Option<SpawnHandle>,
    /// What was last logged as the reason for waiting, so a wait is logged once.
    last_wait_note: Option<String>,
    /// The server is shutting down: no refresh starts any more.
    stopping: bool,
    /// Told once no attempt is in flight while stopping.
    drain_waiters: Vec<oneshot::Sender<()>>,
}

impl RefreshCoordinator {
    pub fn new(
        cfg: RefreshConfig,
        gate: RefreshGate,
        pools: PoolAddrs,
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
            attempt_times: AttemptTimes::default(),
            urgent: HashMap::new(),
            wake: None,
            last_wait_note: None,
            stopping: false,
            drain_waiters: Vec::new(),
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
            && (self.failures_are_shared()
                || self.failures_in_window(plan, now) < self.cfg.max_failures as usize)
    }

    /// With Redis the failure cap is counted there, over every instance, and a `recover`
    /// through any instance clears it: counting this instance's own memory too would keep an
    /// account it gave up on stuck here after the operator recovered it elsewhere. Redis answers
    /// "exhausted" instead, and the flag that sets is cleared at the next sync.
    fn failures_are_shared(&self) -> bool {
        matches!(self.backend, Backend::Redis(_))
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
        if self.stopping {
            self.release_drain_waiters();
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
            Self::ms(self.cfg.success_lock).saturating_add(self.attempt_times.budget()),
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

    fn persist(&self, id: &AccountId) {
        let Backend::Embedded(writer) = &self.backend else {
            return;
        };
        if let Some(plan) = self.accounts.get(id) {
            writer.write(WriteOp::SetRefreshState {
                tier: id.0.clone(),
                account: id.1.clone(),
                state: Box::new(plan.record.clone()),
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
                        pool.addr().do_send(BlacklistAccount {
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

mod attempt;
mod messages;
mod shared_view;
mod shutdown;
mod view;

use messages::Tick;
pub use messages::{next_attempt, NextAttempt, Recovered, RefreshNow, Track};
pub use shutdown::StopRefreshing;
pub use view::{AccountRefreshView, RefreshView, ViewRefresh};
