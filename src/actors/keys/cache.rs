//! Digest → key record, read by every request.

use crate::domain::{ApiKey, Millis};
use crate::store::{KeyRecord, KeyStatus};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Unknown,
    Expired,
    Revoked,
}

#[derive(Clone, Default)]
pub struct KeyCache {
    by_digest: Arc<RwLock<HashMap<String, Arc<KeyRecord>>>>,
}

impl KeyCache {
    pub fn insert(&self, record: KeyRecord) {
        self.by_digest
            .write()
            .insert(record.digest.clone(), Arc::new(record));
    }

    /// The live record of a presented key.
    pub fn authenticate(&self, key: &ApiKey, now: Millis) -> Result<Arc<KeyRecord>, AuthError> {
        let record = self
            .by_digest
            .read()
            .get(&key.digest())
            .cloned()
            .ok_or(AuthError::Unknown)?;
        match record.status_at(now) {
            KeyStatus::Active => Ok(record),
            KeyStatus::Expired => Err(AuthError::Expired),
            KeyStatus::Revoked => Err(AuthError::Revoked),
        }
    }

    pub fn find_id(&self, id: &str) -> Option<Arc<KeyRecord>> {
        self.by_digest.read().values().find(|r| r.id == id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<KeyRecord>> {
        let mut all: Vec<Arc<KeyRecord>> = self.by_digest.read().values().cloned().collect();
        all.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        all
    }

    /// Sets a key's status; returns the updated record.
    pub fn set_status(&self, id: &str, status: KeyStatus) -> Option<Arc<KeyRecord>> {
        let mut map = self.by_digest.write();
        let entry = map.values_mut().find(|r| r.id == id)?;
        let mut updated = (**entry).clone();
        updated.status = status;
        *entry = Arc::new(updated);
        Some(entry.clone())
    }
}
