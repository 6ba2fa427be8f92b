//! What the store keeps, as plain data.

use crate::domain::{Credential, Millis, ModelFamily, Window};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Revoked,
    Expired,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<KeyStatus> {
        match s {
            "active" => Some(KeyStatus::Active),
            "revoked" => Some(KeyStatus::Revoked),
            "expired" => Some(KeyStatus::Expired),
            _ => None,
        }
    }
}

/// A client key as stored: never the key itself, only its digest and display prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub id: String,
    pub digest: String,
    pub prefix: String,
    pub tier: String,
    pub created: Millis,
    pub expires: Option<Millis>,
    pub status: KeyStatus,
    pub fixed_account: Option<String>,
    pub note: String,
}

impl KeyRecord {
    /// The status as of `now`: an active key past its expiry is expired.
    pub fn status_at(&self, now: Millis) -> KeyStatus {
        match self.status {
            KeyStatus::Active if self.expires.is_some_and(|e| e <= now) => KeyStatus::Expired,
            s => s,
        }
    }
}

/// Token counts read from Claude's answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

impl Usage {
    pub fn add(&mut self, other: &Usage) {
        self.requests += other.requests;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cache_creation_input_tokens += other.cache_creation_input_tokens;
        self.cache_read_input_tokens += other.cache_read_input_tokens;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlacklistEntry {
    pub reason: String,
    pub since: Millis,
}

/// One change for the writer. A batch of them is one transaction: a failed batch wrote
/// nothing, so writing its changes again (usage additions included) counts nothing twice.
/// The changes every request makes share their names (`Arc<str>`) with the pool's memory.
/// The rare large ones are boxed: every request moves its three counters through the
/// pool's lock, the writer's queue and its batch, at the size of the largest variant.
#[derive(Debug, Clone)]
pub enum WriteOp {
    InsertKey(Box<KeyRecord>),
    SetKeyStatus {
        id: String,
        status: KeyStatus,
    },
    Bind {
        key_id: String,
        tier: String,
        account: String,
    },
    Unbind {
        key_id: String,
    },
    SetWindow {
        key_id: Arc<str>,
        family: ModelFamily,
        window: Window,
    },
    AddKeyUsage {
        key_id: Arc<str>,
        usage: Usage,
    },
    AddAccountUsage {
        tier: Arc<str>,
        account: Arc<str>,
        usage: Usage,
    },
    Blacklist {
        tier: String,
        account: String,
        entry: BlacklistEntry,
    },
    Unblacklist {
        tier: String,
        account: String,
    },
    SetCredential {
        tier: String,
        account: String,
        credential: Box<Credential>,
    },
    ForgetAccount {
        tier: String,
        account: String,
    },
    SetRefreshState {
        tier: String,
        account: String,
        state: Box<RefreshRecord>,
    },
    /// Global refresh timers: the success lock and a token-endpoint pause.
    SetRefreshTimers {
        lock_until: Millis,
        paused_until: Millis,
    },
}

impl WriteOp {
    /// The variant's name, for logs that count changes without showing them.
    pub fn kind(&self) -> &'static str {
        match self {
            WriteOp::InsertKey(_) => "InsertKey",
            WriteOp::SetKeyStatus { .. } => "SetKeyStatus",
            WriteOp::Bind { .. } => "Bind",
            WriteOp::Unbind { .. } => "Unbind",
            WriteOp::SetWindow { .. } => "SetWindow",
            WriteOp::AddKeyUsage { .. } => "AddKeyUsage",
            WriteOp::AddAccountUsage { .. } => "AddAccountUsage",
            WriteOp::Blacklist { .. } => "Blacklist",
            WriteOp::Unblacklist { .. } => "Unblacklist",
            WriteOp::SetCredential { .. } => "SetCredential",
            WriteOp::ForgetAccount { .. } => "ForgetAccount",
            WriteOp::SetRefreshState { .. } => "SetRefreshState",
            WriteOp::SetRefreshTimers { .. } => "SetRefreshTimers",
        }
    }
}

/// An account's refresh history, kept so a restart keeps honouring cooldowns and caps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshRecord {
    pub failures: Vec<Millis>,
    pub cooldown_until: Millis,
    pub last_error: Option<String>,
}

/// Everything the store holds, as loaded at start-up.
#[derive(Debug, Default)]
pub struct StoredState {
    pub keys: Vec<KeyRecord>,
    /// key id → (tier, account)
    pub bindings: HashMap<String, (String, String)>,
    pub windows: HashMap<(String, ModelFamily), Window>,
    pub key_usage: HashMap<String, Usage>,
    /// (tier, account) → usage
    pub account_usage: HashMap<(String, String), Usage>,
    pub blacklist: HashMap<(String, String), BlacklistEntry>,
    pub credentials: HashMap<(String, String), Credential>,
}

impl StoredState {
    /// Adds counters SQLite does not hold yet (the counter log's, at start-up), as a fold
    /// would: the window set, the usage added.
    pub fn add_counters(&mut self, counters: &[WriteOp]) {
        for op in counters {
            match op {
                WriteOp::SetWindow {
                    key_id,
                    family,
                    window,
                } => {
                    self.windows.insert((key_id.to_string(), *family), *window);
                }
                WriteOp::AddKeyUsage { key_id, usage } => self
                    .key_usage
                    .entry(key_id.to_string())
                    .or_default()
                    .add(usage),
                WriteOp::AddAccountUsage {
                    tier,
                    account,
                    usage,
                } => self
                    .account_usage
                    .entry((tier.to_string(), account.to_string()))
                    .or_default()
                    .add(usage),
                _ => {}
            }
        }
    }
}

/// What the refresh coordinator kept across restarts.
#[derive(Debug, Default)]
pub struct SavedRefresh {
    pub records: HashMap<(String, String), RefreshRecord>,
    /// (success lock until, paused until)
    pub timers: (Millis, Millis),
}

impl KeyRecord {
    /// A new key of `tier`: the secret to show once, and the record to store.
    /// `lifetime_ms: None` never expires.
    pub fn mint(
        tier: &str,
        lifetime_ms: Option<i64>,
        fixed_account: Option<String>,
        note: String,
        now: Millis,
    ) -> (crate::domain::ApiKey, KeyRecord) {
        let key = crate::domain::ApiKey::generate();
        let expires = lifetime_ms.map(|l| now.saturating_add(l));
        let record = KeyRecord {
            id: uuid::Uuid::new_v4().to_string(),
            digest: key.digest(),
            prefix: key.display_prefix(),
            tier: tier.to_string(),
            created: now,
            expires,
            status: KeyStatus::Active,
            fixed_account,
            note,
        };
        (key, record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_counter_is_not_moved_at_the_size_of_a_key_record() {
        let size = std::mem::size_of::<WriteOp>();
        let counter = std::mem::size_of::<Usage>() + 2 * std::mem::size_of::<Arc<str>>();
        assert!(
            size <= counter + 8,
            "WriteOp is {size} bytes, its largest counter {counter}: box the variant that grew it"
        );
    }
}
