//! Persistence. The embedded store is SQLite behind a write-behind writer thread: actors keep
//! the live state in memory and hand every change to the writer, so a request never waits on
//! disk except for the rare changes that must be durable before they are acknowledged.

pub mod records;
pub mod sqlite;
pub mod writer;

pub use records::{KeyRecord, KeyStatus, RefreshRecord, StoredState, Usage, WriteOp};
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
