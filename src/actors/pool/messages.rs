//! Messages a PoolActor answers.

use super::{Outcome, PoolError, PoolView, SyncDelta};
use crate::domain::{Credential, Millis, ModelFamily};
use crate::store::{KeyRecord, Usage};
use actix::Message;
use std::sync::Arc;

/// How an admitted request ended (Redis: through the actor; embedded: `PoolHandle::settle`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Settle {
    pub key: Arc<KeyRecord>,
    pub account: Arc<str>,
    pub family: ModelFamily,
    pub window_started: Option<Millis>,
    /// Redis: which count in the window is this request's (see `Admission::count_id`).
    pub count_id: Option<Arc<str>>,
    pub outcome: Outcome,
}

/// Redis: an admission whose client had an error or went away before Redis answered; undo
/// whatever it did to the window (see `RedisPool::give_back`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Withdraw {
    pub key_id: String,
    pub family: ModelFamily,
    pub count_id: Arc<str>,
}

/// The key expired or was revoked: free its slot.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Release {
    pub key_id: String,
}

/// Reserve a slot for a new fixed key; durable before the answer.
#[derive(Message)]
#[rtype(result = "Result<(), PoolError>")]
pub struct BindFixed {
    pub key_id: String,
    pub account: String,
}

#[derive(Message)]
#[rtype(result = "bool")]
pub struct BlacklistAccount {
    pub account: String,
    pub reason: String,
}

#[derive(Message)]
#[rtype(result = "bool")]
pub struct RecoverAccount {
    pub account: String,
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct MarkLimited {
    pub account: String,
    pub until: Millis,
}

#[derive(Message)]
#[rtype(result = "bool")]
pub struct UpdateCredential {
    pub account: String,
    pub credential: Credential,
}

#[derive(Message)]
#[rtype(result = "Result<PoolView, PoolError>")]
pub struct ViewPool;

/// Binding and usage of some keys, for the key listings.
#[derive(Message)]
#[rtype(result = "Vec<(Option<String>, Usage)>")]
pub struct KeyDetails {
    pub key_ids: Vec<String>,
}

/// The credential an account holds now.
#[derive(Message)]
#[rtype(result = "Option<Arc<Credential>>")]
pub struct GetCredential {
    pub account: String,
}

/// Reconcile with the tier's account files: (name, credential read from the file).
#[derive(Message)]
#[rtype(result = "Result<SyncDelta, PoolError>")]
pub struct SyncAccounts {
    pub files: Vec<(String, Credential)>,
    /// Accounts whose file is there but unreadable: left exactly as they are.
    pub unreadable: Vec<String>,
}

/// Every account's credential expiry, for the refresh coordinator.
#[derive(Message)]
#[rtype(result = "Vec<(String, Option<Millis>, bool)>")]
pub struct AccountExpiries;
