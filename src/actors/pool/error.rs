//! Why a pool refused a request.

use crate::domain::{Millis, ModelFamily};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("No {tier} accounts available in pool")]
    NoAccounts { tier: String },
    #[error("All {tier} accounts are at capacity")]
    AtCapacity { tier: String },
    #[error("{message}")]
    FamilyNotAllowed { message: String },
    #[error("Rate limit exceeded for {}", family.display())]
    RateLimited {
        family: ModelFamily,
        limit: u32,
        resets_at: Millis,
    },
    #[error("OAuth token has expired")]
    TokenExpired {
        account: String,
        retry_at: Option<Millis>,
    },
    #[error("The account `{account}` this key is fixed to is unavailable")]
    FixedAccountUnavailable { account: String },
    /// The account came back (its file was gone, its slots with it) and pool keys took them.
    #[error("The account `{account}` this key is fixed to has no free slot")]
    FixedAccountFull { account: String },
    #[error("No account named `{account}` in the {tier} tier")]
    UnknownAccount { tier: String, account: String },
    #[error("Account `{account}` has no free slot ({slots} keys already)")]
    AccountFull { account: String, slots: u32 },
    #[error("store unavailable: {0}")]
    Store(String),
    #[error("pool unavailable")]
    Unavailable,
    #[error("unknown key")]
    KeyUnknown,
    #[error("key revoked")]
    KeyRevoked,
    #[error("key expired")]
    KeyExpired,
}

/// The store's cause, under the pool's one "store unavailable:" prefix (not two).
impl From<crate::store::StoreError> for PoolError {
    fn from(e: crate::store::StoreError) -> PoolError {
        use crate::store::StoreError;
        PoolError::Store(match e {
            StoreError::Unavailable(why) => why,
            StoreError::Sqlite(e) => e.to_string(),
            StoreError::Corrupt(why) => format!("stored data is corrupt: {why}"),
        })
    }
}
