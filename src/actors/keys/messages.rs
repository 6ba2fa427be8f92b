//! Messages the KeyRegistry answers.

use crate::actors::pool::PoolError;
use crate::domain::ApiKey;
use crate::store::KeyRecord;
use actix::Message;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unknown tier `{0}`")]
    UnknownTier(String),
    #[error("{0}")]
    Pool(#[from] PoolError),
    #[error("no key with id `{0}`")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<crate::store::StoreError> for KeyError {
    fn from(e: crate::store::StoreError) -> KeyError {
        KeyError::Pool(e.into())
    }
}

pub struct CreatedKey {
    pub key: ApiKey,
    pub record: Arc<KeyRecord>,
}

#[derive(Message)]
#[rtype(result = "Result<CreatedKey, KeyError>")]
pub struct CreateKey {
    pub tier: String,
    pub account: Option<String>,
    /// None: the tier's default lifetime; Some(0): never expires.
    pub days: Option<u32>,
    /// An exact lifetime, overriding `days`.
    pub ttl: Option<std::time::Duration>,
    pub note: String,
}

#[derive(Message)]
#[rtype(result = "Result<Arc<KeyRecord>, KeyError>")]
pub struct RevokeKey {
    pub id: String,
}

/// Marks keys past their expiry as expired and frees their slots.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SweepExpired;
