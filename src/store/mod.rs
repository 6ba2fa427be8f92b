//! Persistence. The embedded store is SQLite behind a write-behind writer thread: actors keep
//! the live state in memory and hand every change to the writer, so a request never waits on
//! disk except for the rare changes that must be durable before they are acknowledged.

pub mod backoff;
pub mod counter_log;
pub mod owner;
pub mod records;
pub mod redis;
pub mod sqlite;
pub mod writer;

pub use records::{KeyRecord, KeyStatus, RefreshRecord, SavedRefresh, StoredState, Usage, WriteOp};
pub use sqlite::SqliteStore;
pub use writer::StoreWriter;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

/// How long shutdown keeps sending the writes Redis had not answered (usage, refunds): enough
/// for a connection Redis dropped to be made again, short enough not to hold the exit up.
const REDIS_LAST_CALL: std::time::Duration = std::time::Duration::from_secs(2);

/// The store a running server uses: the embedded writer, or Redis.
#[derive(Clone)]
pub enum Backend {
    Embedded(StoreWriter),
    Redis(redis::RedisStore),
}

impl Backend {
    /// True when the store answers (for readiness and status).
    pub async fn healthy(&self) -> bool {
        match self {
            Backend::Embedded(writer) => writer.flush().await.is_ok(),
            Backend::Redis(store) => store.ping().await.is_ok(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Embedded(_) => "sqlite",
            Backend::Redis(_) => "redis",
        }
    }

    /// Makes sure everything acknowledged so far is stored (graceful shutdown). Redis:
    /// usage and refunds still waiting for it are sent once more (a few seconds at most).
    pub async fn flush(&self) -> Result<(), StoreError> {
        match self {
            Backend::Embedded(writer) => writer.flush().await,
            Backend::Redis(store) => store.last_call(REDIS_LAST_CALL).await,
        }
    }

    /// Stores a credential unless a newer one is stored (rotation).
    pub async fn save_credential(
        &self,
        tier: &str,
        account: &str,
        credential: &crate::domain::Credential,
    ) -> Result<(), StoreError> {
        match self {
            Backend::Embedded(writer) => {
                writer
                    .write_durable(vec![WriteOp::SetCredential {
                        tier: tier.to_string(),
                        account: account.to_string(),
                        credential: Box::new(credential.clone()),
                    }])
                    .await
            }
            Backend::Redis(store) => store
                .write_credential(tier, account, credential)
                .await
                .map(|_| ()),
        }
    }
}

impl Backend {
    /// Stores a new key record, durably.
    pub async fn insert_key(&self, record: &KeyRecord) -> Result<(), StoreError> {
        match self {
            Backend::Embedded(writer) => {
                writer
                    .write_durable(vec![WriteOp::InsertKey(Box::new(record.clone()))])
                    .await
            }
            Backend::Redis(store) => store.insert_key(record).await,
        }
    }

    /// Changes a key's status, durably (Redis also frees its slot in the same script).
    pub async fn set_key_status(
        &self,
        tier: &str,
        id: &str,
        status: KeyStatus,
    ) -> Result<(), StoreError> {
        match self {
            Backend::Embedded(writer) => {
                writer
                    .write_durable(vec![WriteOp::SetKeyStatus {
                        id: id.to_string(),
                        status,
                    }])
                    .await
            }
            Backend::Redis(store) => store.retire_key(tier, id, status).await,
        }
    }
}

/// A store URL safe to show: a Redis password is replaced by `***`.
pub fn redacted_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
