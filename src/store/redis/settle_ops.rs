//! How a request ends in Redis: a served one adds its usage, a refunded one gives its count
//! back. Each is once-only in Redis and sent again until Redis answers (see `retry.rs`), so a
//! brief outage loses neither, and an answer lost on the way never counts one twice.

use super::pool_ops::{new_count_id, redis_err};
use super::retry::RETRY_HORIZON;
use super::RedisPool;
use crate::actors::pool::{Outcome, PoolError};
use crate::domain::ModelFamily;
use crate::store::Usage;
use std::sync::Arc;
use std::time::Duration;

/// How long a withdrawn admission is refused should it still reach Redis (as long as a count
/// is given back).
const WITHDRAWN_KEPT: Duration = RETRY_HORIZON;
/// How long Redis remembers a settled request, so that its usage sent again adds nothing:
/// longer than it is sent again.
const SETTLED_KEPT: Duration = Duration::from_secs(RETRY_HORIZON.as_secs() + 60);

/// What `RedisPool::give_back` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GivenBack {
    /// The admission had run: its count came back.
    Count,
    /// Nothing to give back (not run yet, already settled, or its window is over); should it
    /// still run, it refuses itself.
    Refusal,
}

impl RedisPool {
    /// Ends a request: a served one adds its usage (its count stays); a refunded one gives
    /// its named count back. An uncounted request has nothing to give back.
    pub async fn settle(
        &self,
        key_id: &str,
        account: &str,
        family: ModelFamily,
        count_id: Option<&str>,
        outcome: Outcome,
    ) -> Result<(), PoolError> {
        let usage = match (outcome, count_id) {
            (Outcome::Served(usage), _) => usage,
            (Outcome::Refund, Some(count_id)) => {
                return self.give_back(key_id, family, count_id).await.map(|_| ())
            }
            (Outcome::Refund, None) => return Ok(()),
        };
        // The count's name names its settle too; an uncounted request gets a name of its own.
        let settle_id = count_id.map_or_else(new_count_id, Arc::from);
        self.add_usage(key_id, account, family, count_id, &settle_id, usage)
            .await
            .map(|_| ())
    }

    /// Adds a served request's usage to the key's and the account's totals, once per
    /// `settle_id` however often it is asked (within `SETTLED_KEPT`): false when that settle
    /// had already landed. Sent again until Redis answers.
    pub async fn add_usage(
        &self,
        key_id: &str,
        account: &str,
        family: ModelFamily,
        count_id: Option<&str>,
        settle_id: &str,
        usage: Usage,
    ) -> Result<bool, PoolError> {
        let what = || {
            format!(
                "the usage of a request of key {key_id} on account {account} ({} input, {} \
                 output, {} cache creation, {} cache read tokens)",
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_creation_input_tokens,
                usage.cache_read_input_tokens
            )
        };
        let send = || {
            let mut call = self
                .store
                .tier_script(&self.store.scripts.settle, &self.tier.name);
            call.arg(key_id)
                .arg(account)
                .arg(family.as_str())
                .arg(count_id.unwrap_or(""))
                .arg(usage.input_tokens)
                .arg(usage.output_tokens)
                .arg(usage.cache_creation_input_tokens)
                .arg(usage.cache_read_input_tokens)
                .arg(settle_id)
                .arg(SETTLED_KEPT.as_millis().to_string());
            let mut conn = self.store.conn();
            async move { call.invoke_async::<i64>(&mut conn).await }
        };
        let added = self.store.writes.until_answered(what, send).await;
        added.map(|n| n == 1).map_err(redis_err)
    }

    /// Gives a named count back to its window, exactly once however often it is asked: if
    /// the admission ran, its count comes back (unless it was settled or its window is
    /// over); if it has not run yet, it refuses itself should it still run (for
    /// `WITHDRAWN_KEPT`). Sent again until Redis answers, for as long as that refusal lasts.
    pub async fn give_back(
        &self,
        key_id: &str,
        family: ModelFamily,
        count_id: &str,
    ) -> Result<GivenBack, PoolError> {
        let what = || {
            format!(
                "the refund of a {} request of key {key_id}",
                family.as_str()
            )
        };
        let send = || {
            let mut call = self
                .store
                .tier_script(&self.store.scripts.give_back, &self.tier.name);
            call.arg(key_id)
                .arg(family.as_str())
                .arg(count_id)
                .arg(WITHDRAWN_KEPT.as_millis().to_string());
            let mut conn = self.store.conn();
            async move { call.invoke_async::<String>(&mut conn).await }
        };
        let answer = self.store.writes.until_answered(what, send).await;
        match answer.map_err(redis_err)?.as_str() {
            "given_back" => Ok(GivenBack::Count),
            _ => Ok(GivenBack::Refusal),
        }
    }
}
