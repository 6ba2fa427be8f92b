//! Reconciling a pool with its tier's account files (the SyncActor's work, per tier).

use super::state::{AccountSlot, PoolState};
use crate::domain::Credential;
use crate::store::WriteOp;
use std::collections::BTreeSet;
use std::sync::Arc;

impl PoolState {
    /// Reconciles the pool with the account files of its tier. Files win when they
    /// supersede the pool's credential; the pool's wins when newer (the caller rewrites
    /// those files). Accounts whose file is gone are removed with everything held for them;
    /// their keys re-bind later. An account whose file is `unreadable` is not gone: it stays.
    pub fn sync_accounts(
        &mut self,
        files: Vec<(String, Credential)>,
        unreadable: &[String],
    ) -> (SyncDelta, Vec<WriteOp>) {
        let mut delta = SyncDelta::default();
        let mut ops = Vec::new();
        let present: BTreeSet<&str> = files
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(unreadable.iter().map(String::as_str))
            .collect();
        let gone: Vec<String> = self
            .accounts
            .keys()
            .filter(|n| !present.contains(n.as_str()))
            .cloned()
            .collect();
        for (name, file_credential) in files {
            match self.accounts.get_mut(&name) {
                None => {
                    // Stored too: should the file break later, the account keeps serving.
                    ops.push(WriteOp::SetCredential {
                        tier: self.tier.name.clone(),
                        account: name.clone(),
                        credential: Box::new(file_credential.clone()),
                    });
                    self.accounts
                        .insert(name.clone(), AccountSlot::new(file_credential));
                    delta.added.push(name);
                }
                Some(slot) if file_credential.supersedes(&slot.credential) => {
                    slot.credential = Arc::new(file_credential.clone());
                    ops.push(WriteOp::SetCredential {
                        tier: self.tier.name.clone(),
                        account: name.clone(),
                        credential: Box::new(file_credential),
                    });
                    delta.updated.push(name);
                }
                Some(slot) if slot.credential.is_newer_than(&file_credential) => {
                    delta
                        .rewrite
                        .push((name.clone(), (*slot.credential).clone()));
                    delta.updated.push(name);
                }
                Some(_) => {}
            }
        }
        for name in gone {
            if let Some(slot) = self.accounts.remove(&name) {
                for key_id in slot.keys {
                    self.bindings.remove(&key_id);
                    ops.push(WriteOp::Unbind { key_id });
                }
            }
            ops.push(WriteOp::ForgetAccount {
                tier: self.tier.name.clone(),
                account: name.clone(),
            });
            delta.removed.push(name);
        }
        (delta, ops)
    }
}

/// What a sync changed in one pool.
#[derive(Debug, Default)]
pub struct SyncDelta {
    pub added: Vec<String>,
    pub updated: Vec<String>,
    pub removed: Vec<String>,
    /// Files whose credential is older than the pool's: written back by the caller.
    pub rewrite: Vec<(String, Credential)>,
}
