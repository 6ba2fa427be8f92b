//! One refresh per account at a time. Refresh tokens are single-use: two concurrent
//! refreshes of one account would burn the token, so callers queue on the account's lock,
//! and a caller that finds a newer credential than the one it saw simply takes it.

use crate::account_files;
use crate::actors::pool::{GetCredential, PoolActor, UpdateCredential};
use crate::config::Config;
use crate::domain::Credential;
use crate::store::Backend;
use crate::upstream::{oauth, oauth::RefreshError};
use actix::Addr;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub enum RefreshOutcome {
    /// A new credential, saved to the file and the store.
    Refreshed(Arc<Credential>),
    /// Someone else refreshed first; this is their credential.
    AlreadyNewer(Arc<Credential>),
}

impl RefreshOutcome {
    pub fn credential(&self) -> Arc<Credential> {
        match self {
            RefreshOutcome::Refreshed(c) | RefreshOutcome::AlreadyNewer(c) => c.clone(),
        }
    }
}

/// One async lock per (tier, account).
type AccountLocks = Arc<Mutex<HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>>>;

#[derive(Clone)]
pub struct RefreshGate {
    config: Arc<Config>,
    backend: Backend,
    locks: AccountLocks,
}

impl RefreshGate {
    pub fn new(config: Arc<Config>, backend: Backend) -> RefreshGate {
        RefreshGate {
            config,
            backend,
            locks: Arc::default(),
        }
    }

    fn lock_for(&self, tier: &str, account: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks
            .lock()
            .entry((tier.to_string(), account.to_string()))
            .or_default()
            .clone()
    }

    pub fn account_path(&self, tier: &str, account: &str) -> PathBuf {
        self.config
            .accounts
            .dir
            .join(tier)
            .join(format!("{account}.json"))
    }

    /// Refreshes `account` unless its credential already moved past `seen`.
    pub async fn refresh(
        &self,
        pool: &Addr<PoolActor>,
        tier: &str,
        account: &str,
        seen: &Credential,
    ) -> Result<RefreshOutcome, RefreshError> {
        let lock = self.lock_for(tier, account);
        let _held = lock.lock().await;
        let current = pool
            .send(GetCredential {
                account: account.to_string(),
            })
            .await
            .ok()
            .flatten()
            .ok_or_else(|| RefreshError::BadResponse("the account is gone".into()))?;
        if current.is_newer_than(seen) {
            return Ok(RefreshOutcome::AlreadyNewer(current));
        }
        let fresh = oauth::refresh(&self.config.upstream, &current).await?;
        self.save(pool, tier, account, &fresh).await;
        Ok(RefreshOutcome::Refreshed(Arc::new(fresh)))
    }

    /// Store first (it survives a crash between the two), then the file, then the pool.
    async fn save(&self, pool: &Addr<PoolActor>, tier: &str, account: &str, fresh: &Credential) {
        let stored = self.backend.save_credential(tier, account, fresh).await;
        if let Err(e) = stored {
            log::error!("refreshed credential of {account} not saved to the store: {e}");
        }
        crate::failpoint::hit("after-credential-store-write");
        let path = self.account_path(tier, account);
        let to_write = fresh.clone();
        let written =
            actix_web::web::block(move || account_files::write_credential(&path, &to_write)).await;
        match written {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                log::error!("refreshed credential of {account} not written to its file: {e}")
            }
            Err(e) => log::error!("refreshed credential of {account} not written to its file: {e}"),
        }
        pool.do_send(UpdateCredential {
            account: account.to_string(),
            credential: fresh.clone(),
        });
    }
}
