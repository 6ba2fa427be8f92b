//! The refresh rules every instance shares: success lock, pause, cooldowns, failure caps
//! and one refresh at a time, kept in Redis with expiring keys.

use super::{unavailable, RedisStore};
use crate::domain::Millis;
use crate::store::StoreError;

/// May this instance refresh now?
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshGrant {
    Go,
    /// Not now: the reason (locked, paused, cooldown, busy) and how long to wait.
    Wait(String, Millis),
    /// The account used up its failed attempts for the window.
    Exhausted,
}

pub struct RefreshRules {
    pub failure_window: Millis,
    pub max_failures: u32,
    pub success_lock: Millis,
    pub cooldown: Millis,
}

impl RedisStore {
    pub async fn refresh_begin(
        &self,
        tier: &str,
        account: &str,
        now: Millis,
        rules: &RefreshRules,
        owner: &str,
    ) -> Result<RefreshGrant, StoreError> {
        let answer: Vec<String> = self
            .tier_script(&self.scripts.refresh_begin, tier)
            .arg(account)
            .arg(now)
            .arg(rules.failure_window)
            .arg(rules.max_failures)
            .arg(60_000)
            .arg(owner)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let reason = answer.first().cloned().unwrap_or_default();
        let wait = answer.get(1).and_then(|w| w.parse().ok()).unwrap_or(0);
        Ok(match reason.as_str() {
            "ok" => RefreshGrant::Go,
            "exhausted" => RefreshGrant::Exhausted,
            _ => RefreshGrant::Wait(reason, wait),
        })
    }

    /// `outcome`: success, failure, paused, skipped.
    #[allow(clippy::too_many_arguments)]
    pub async fn refresh_end(
        &self,
        tier: &str,
        account: &str,
        now: Millis,
        outcome: &str,
        rules: &RefreshRules,
        pause: Millis,
        error: &str,
        owner: &str,
    ) -> Result<(), StoreError> {
        self.tier_script(&self.scripts.refresh_end, tier)
            .arg(account)
            .arg(now)
            .arg(outcome)
            .arg(rules.success_lock.max(1))
            .arg(rules.cooldown.max(1))
            .arg(pause.max(1))
            .arg(error)
            .arg(owner)
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}
