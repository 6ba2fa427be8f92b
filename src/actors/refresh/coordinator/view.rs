//! What the coordinator shows the admin API: timers, lock, and every account's state.
//! With Redis, the shared rules' state (every instance's failures, cooldowns, lock, pause)
//! replaces this instance's memory of them; see `shared_view`.

use super::*;

#[derive(Debug, Clone, Serialize)]
pub struct AccountRefreshView {
    pub tier: String,
    pub account: String,
    pub failures_in_window: usize,
    pub cooldown_until: Option<Millis>,
    pub last_error: Option<String>,
    pub next_attempt: Option<Millis>,
}

/// `timers`, `next_account` and `in_flight` stay this instance's plan (`next_at` also waits for
/// the shared lock and pause): the shared mutex names only its owner, not the account another
/// instance refreshes.
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
    type Result = ResponseFuture<RefreshView>;

    fn handle(&mut self, _: ViewRefresh, _: &mut Context<Self>) -> Self::Result {
        let local = self.local_view(now_ms());
        let Some(reader) = shared_view::SharedReader::of(self) else {
            return Box::pin(async move { local });
        };
        Box::pin(async move {
            let ids: Vec<AccountId> = local
                .accounts
                .iter()
                .map(|a| (a.tier.clone(), a.account.clone()))
                .collect();
            match reader.read(&ids).await {
                Ok(shared) => shared_view::merge(local, shared, reader.max_failures),
                Err(e) => {
                    // The admin call must not fail for it: this instance's memory is the best left.
                    log::warn!("refresh view shows this instance's state only: {e}");
                    local
                }
            }
        })
    }
}

impl RefreshCoordinator {
    /// The view from this instance's memory alone.
    fn local_view(&self, now: Millis) -> RefreshView {
        let list = self.candidates(now);
        let deadlines: Vec<Millis> = list.iter().map(|(_, c)| c.deadline).collect();
        let starts = crate::actors::refresh::plan::latest_starts(
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
        RefreshView {
            timers: list.len(),
            next_account: next.map(|(id, _)| id.1.clone()),
            next_at: next.map(|(_, at)| at),
            lock_until: Some(self.lock_until).filter(|t| *t > now),
            paused_until: Some(self.paused_until).filter(|t| *t > now),
            in_flight: self.in_flight.as_ref().map(|id| id.1.clone()),
            accounts,
        }
    }
}
