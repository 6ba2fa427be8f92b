//! The Redis store: the same data as the embedded store, shared by any number of proxy
//! instances. Every multi-step change is one Lua script, so instances never disagree.
//! Redis unreachable → `StoreError::Unavailable` (requests fail closed with 503); the
//! connection manager reconnects by itself when Redis is back.

mod key_ops;
pub mod keys;
mod pool_ops;
mod refresh_ops;
mod refresh_state;
mod retry;
mod settle_ops;

pub use keys::KeyNames;
pub use pool_ops::RedisPool;
pub use refresh_ops::{RefreshGrant, RefreshRules};
pub use refresh_state::{SharedAccountRefresh, SharedRefresh};
pub use retry::WaitingWrites;
pub use settle_ops::GivenBack;

use super::StoreError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::Script;
use std::sync::Arc;
use std::time::Duration;

const NAMES: &str = include_str!("scripts/names.lua");

fn script(body: &str) -> Script {
    Script::new(&format!("{NAMES}\n{body}"))
}

struct Scripts {
    admit: Script,
    settle: Script,
    give_back: Script,
    release: Script,
    blacklist: Script,
    bind_fixed: Script,
    credential: Script,
    add_account: Script,
    forget_account: Script,
    refresh_begin: Script,
    refresh_end: Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            admit: script(include_str!("scripts/admit.lua")),
            settle: script(include_str!("scripts/settle.lua")),
            give_back: script(include_str!("scripts/give_back.lua")),
            release: script(include_str!("scripts/release.lua")),
            blacklist: script(include_str!("scripts/blacklist.lua")),
            bind_fixed: script(include_str!("scripts/bind_fixed.lua")),
            credential: script(include_str!("scripts/credential.lua")),
            add_account: script(include_str!("scripts/add_account.lua")),
            forget_account: script(include_str!("scripts/forget_account.lua")),
            refresh_begin: script(include_str!("scripts/refresh_begin.lua")),
            refresh_end: script(include_str!("scripts/refresh_end.lua")),
        }
    }

    fn all(&self) -> [&Script; 11] {
        [
            &self.admit,
            &self.settle,
            &self.give_back,
            &self.release,
            &self.blacklist,
            &self.bind_fixed,
            &self.credential,
            &self.add_account,
            &self.forget_account,
            &self.refresh_begin,
            &self.refresh_end,
        ]
    }
}

/// A cheap-to-clone handle: the connection manager multiplexes every caller.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    names: KeyNames,
    scripts: Arc<Scripts>,
    /// Once-only writes sent again while Redis does not answer (see `retry.rs`).
    writes: WaitingWrites,
}

pub(crate) fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisStore {
    /// Connects lazily: the store is usable (and fails closed) even while Redis is down.
    pub fn open(url: &str, prefix: &str) -> Result<RedisStore, StoreError> {
        let client = redis::Client::open(url).map_err(|e| {
            let shown = super::redacted_url(url);
            StoreError::Unavailable(format!("bad Redis URL `{shown}`: {e}"))
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(1000)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(RedisStore {
            conn,
            names: KeyNames::new(prefix),
            scripts: Arc::new(Scripts::new()),
            writes: WaitingWrites::default(),
        })
    }

    /// Loads every script into Redis (start-up); EVALSHA falls back to loading anyway.
    pub async fn load_scripts(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        for s in self.scripts.all() {
            s.prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// The Redis server's run id: it changes when Redis restarts, even quickly.
    pub async fn run_id(&self) -> Result<String, StoreError> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .unwrap_or_default()
            .trim()
            .to_string())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    /// Shutdown: the writes still waiting for Redis are sent once more; an error names
    /// how many were not answered within `within` (they are lost).
    pub async fn last_call(&self, within: Duration) -> Result<(), StoreError> {
        match self.writes.last_call(within).await {
            0 => Ok(()),
            n => Err(StoreError::Unavailable(format!(
                "{n} writes Redis has not answered are lost"
            ))),
        }
    }

    pub fn names(&self) -> &KeyNames {
        &self.names
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    pub fn pool(&self, tier: crate::domain::Tier) -> RedisPool {
        RedisPool::new(self.clone(), tier)
    }
}

impl RedisStore {
    /// A script call with the prefix and the tier filled in (every tier script takes both).
    fn tier_script<'a>(&self, script: &'a Script, tier: &str) -> redis::ScriptInvocation<'a> {
        let mut call = script.prepare_invoke();
        call.arg(self.names().prefix()).arg(tier);
        call
    }

    /// Stores a credential unless Redis holds a newer one. Answers whether it was written
    /// and the credential Redis holds now.
    pub async fn write_credential(
        &self,
        tier: &str,
        account: &str,
        c: &crate::domain::Credential,
    ) -> Result<(bool, crate::domain::Credential), StoreError> {
        let answer: Vec<String> = self
            .tier_script(&self.scripts.credential, tier)
            .arg(account)
            .arg(&c.access_token)
            .arg(c.refresh_token.clone().unwrap_or_default())
            .arg(c.expires_at.map(|e| e.to_string()).unwrap_or_default())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let field = |i: usize| answer.get(i).map(String::as_str).unwrap_or("");
        Ok((
            field(0) == "written",
            pool_ops::credential_from(field(1), field(2), field(3)),
        ))
    }
}
