//! One try of a refresh: skipped when someone else already refreshed, asked of the shared
//! rules first when the store is Redis, then performed by the gate.

use super::*;

/// What one try of a refresh came to.
pub(super) enum Attempt {
    Done(Result<RefreshOutcome, RefreshError>),
    /// The shared rules said not yet: why, and for how many ms.
    Deferred(String, Millis),
    Exhausted,
    /// The pool no longer holds the account (a sync removed it): nothing to refresh and
    /// nothing to charge; a sync that brings it back tracks it again.
    Gone,
}

impl RefreshCoordinator {
    fn rules(&self) -> RefreshRules {
        RefreshRules {
            failure_window: Self::ms(self.cfg.failure_window),
            max_failures: self.cfg.max_failures,
            success_lock: Self::ms(self.cfg.success_lock),
            cooldown: Self::ms(self.cfg.cooldown),
        }
    }

    pub(super) fn start_refresh(&mut self, id: AccountId, ctx: &mut Context<Self>) {
        let Some(pool) = self.pools.get(&id.0).map(|p| p.addr()) else {
            self.accounts.remove(&id);
            ctx.notify(Tick);
            return;
        };
        self.in_flight = Some(id.clone());
        let started = now_ms();
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
                _ => return Attempt::Gone,
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
            // Recorded twice at most: a lost answer must not leave the lock unset. The same
            // time both tries, so a failure is one entry however often it is written.
            let ended = now_ms();
            let mut recorded = Ok(());
            for _ in 0..2 {
                recorded = store
                    .refresh_end(&tier, &name, ended, outcome, &rules, pause, &error, &owner)
                    .await;
                if recorded.is_ok() {
                    break;
                }
            }
            if let Err(e) = recorded {
                log::error!("refresh outcome of {name} not recorded in the store: {e}");
            }
            Attempt::Done(result)
        };
        ctx.spawn(work.into_actor(self).map(move |attempt, act, ctx| {
            act.in_flight = None;
            match attempt {
                Attempt::Done(result) => {
                    if matches!(result, Ok(RefreshOutcome::Refreshed(_)) | Err(_)) {
                        act.attempt_times.record(now_ms() - started);
                    }
                    act.finish(id, result)
                }
                Attempt::Deferred(..) if act.stopping => {}
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
                Attempt::Gone => {
                    log::info!("refresh skipped: {} is no longer in the pool", id.1);
                    act.accounts.remove(&id);
                    act.answer_waiters(
                        &id,
                        &Err(RefreshError::BadResponse("the account is gone".into())),
                    );
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
}
