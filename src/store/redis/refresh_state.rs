//! The shared refresh rules' current state, read for the admin views: what refresh_begin.lua
//! would see now. One pipelined MULTI, however many accounts: one round trip, one snapshot.

use super::{unavailable, RedisStore};
use crate::domain::Millis;
use crate::store::StoreError;

/// One account's refresh state as every instance sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedAccountRefresh {
    pub failures_in_window: usize,
    pub cooldown_until: Option<Millis>,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SharedRefresh {
    pub lock_until: Option<Millis>,
    pub paused_until: Option<Millis>,
    /// In the order the accounts were asked for.
    pub accounts: Vec<SharedAccountRefresh>,
}

/// A PTTL answer as an absolute time; a missing key (-2), or one without expiry (-1, which
/// the scripts never write), has no "until".
fn until(now: Millis, pttl: i64) -> Option<Millis> {
    (pttl > 0).then(|| now.saturating_add(pttl))
}

fn parse_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!(
        "unexpected Redis answer for the refresh state: {e}"
    ))
}

impl RedisStore {
    /// `accounts` are (tier, account); failures count inside `failure_window` before `now`,
    /// as refresh_begin.lua counts them.
    pub async fn shared_refresh(
        &self,
        accounts: &[(String, String)],
        now: Millis,
        failure_window: Millis,
    ) -> Result<SharedRefresh, StoreError> {
        let n = self.names();
        // Exclusive, like refresh_begin trimming everything up to `now - window` inclusive.
        let since = format!("({}", now.saturating_sub(failure_window));
        let mut pipe = redis::pipe();
        pipe.atomic()
            .pttl(n.refresh_lock())
            .pttl(n.refresh_paused());
        for (tier, account) in accounts {
            pipe.zcount(n.refresh_failures(tier, account), &since, "+inf")
                .pttl(n.refresh_cooldown(tier, account))
                .get(n.refresh_error(tier, account));
        }
        let mut values: Vec<redis::Value> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        values.reverse();
        let mut next = || values.pop().unwrap_or(redis::Value::Nil);
        let lock: i64 = redis::from_redis_value(next()).map_err(parse_err)?;
        let paused: i64 = redis::from_redis_value(next()).map_err(parse_err)?;
        let mut shared = SharedRefresh {
            lock_until: until(now, lock),
            paused_until: until(now, paused),
            accounts: Vec::with_capacity(accounts.len()),
        };
        for _ in accounts {
            let failures: usize = redis::from_redis_value(next()).map_err(parse_err)?;
            let cooldown: i64 = redis::from_redis_value(next()).map_err(parse_err)?;
            let error: Option<String> = redis::from_redis_value(next()).map_err(parse_err)?;
            shared.accounts.push(SharedAccountRefresh {
                failures_in_window: failures,
                cooldown_until: until(now, cooldown),
                last_error: error.filter(|e| !e.is_empty()),
            });
        }
        Ok(shared)
    }
}
