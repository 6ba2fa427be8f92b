//! What the coordinator shows the admin API: timers, lock, and every account's state.

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
