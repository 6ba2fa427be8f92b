//! Digest → key record, read by every request.

use crate::domain::{ApiKey, Millis};
use crate::store::{KeyRecord, KeyStatus};
use foldhash::fast::RandomState;
use foldhash::HashMap;
use parking_lot::RwLock;
use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Digests remembered per worker thread, at most this many (then forgotten all at once).
const MEMO_CAPACITY: usize = 4096;

/// A remembered key: the key itself (compared in constant time) and its digest.
type Remembered = (Box<str>, Arc<str>);

thread_local! {
    /// Presented key → its digest, for keys that were known when presented: a client sends
    /// the same key on every request, and SHA-256 was the largest cost of authenticating.
    /// Only the digest is remembered; status and expiry are read from the record each time.
    /// Indexed by a randomly seeded hash of the key, so a lookup's timing says nothing about
    /// how much of a guessed key matches a real one.
    static DIGESTS: RefCell<(RandomState, HashMap<u64, Remembered>)> = RefCell::default();
}

/// Looks `key` up by its digest, hashing it only when this thread has not seen it known.
fn lookup<T>(key: &ApiKey, find: impl Fn(&str) -> Option<T>) -> Option<T> {
    let secret = key.secret();
    let (slot, remembered) = DIGESTS.with(|m| {
        let memo = m.borrow();
        let slot = memo.0.hash_one(secret);
        let digest = memo.1.get(&slot).and_then(|(known, digest)| {
            bool::from(known.as_bytes().ct_eq(secret.as_bytes())).then(|| digest.clone())
        });
        (slot, digest)
    });
    if let Some(digest) = remembered {
        return find(&digest);
    }
    let digest = key.digest();
    let found = find(&digest)?;
    DIGESTS.with(|m| {
        let memo = &mut m.borrow_mut().1;
        if memo.len() >= MEMO_CAPACITY {
            memo.clear();
        }
        memo.insert(slot, (secret.into(), digest.into()));
    });
    Some(found)
}

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
        let record = lookup(key, |digest| self.by_digest.read().get(digest).cloned())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn record_of(key: &ApiKey, id: &str) -> KeyRecord {
        KeyRecord {
            id: id.into(),
            digest: key.digest(),
            prefix: key.display_prefix(),
            tier: "trial".into(),
            created: 0,
            expires: None,
            status: KeyStatus::Active,
            fixed_account: None,
            note: String::new(),
        }
    }

    #[test]
    fn a_remembered_key_still_sees_revocation_and_expiry() {
        let cache = KeyCache::default();
        let key = ApiKey::generate();
        cache.insert(record_of(&key, "k1"));
        // Twice: the second lookup takes the remembered digest.
        assert_eq!(cache.authenticate(&key, 10).unwrap().id, "k1");
        assert_eq!(cache.authenticate(&key, 10).unwrap().id, "k1");
        cache.set_status("k1", KeyStatus::Revoked);
        assert_eq!(
            cache.authenticate(&key, 10).unwrap_err(),
            AuthError::Revoked
        );

        let other = ApiKey::generate();
        let mut expiring = record_of(&other, "k2");
        expiring.expires = Some(100);
        cache.insert(expiring);
        assert_eq!(cache.authenticate(&other, 99).unwrap().id, "k2");
        assert_eq!(
            cache.authenticate(&other, 100).unwrap_err(),
            AuthError::Expired
        );
    }

    #[test]
    fn keys_are_told_apart_after_being_remembered() {
        let cache = KeyCache::default();
        let (a, b) = (ApiKey::generate(), ApiKey::generate());
        cache.insert(record_of(&a, "a"));
        assert_eq!(cache.authenticate(&a, 0).unwrap().id, "a");
        assert_eq!(cache.authenticate(&b, 0).unwrap_err(), AuthError::Unknown);
        // A key learned later (another instance made it) is found too.
        cache.insert(record_of(&b, "b"));
        assert_eq!(cache.authenticate(&b, 0).unwrap().id, "b");
        assert_eq!(cache.authenticate(&a, 0).unwrap().id, "a");
    }

    #[test]
    fn the_memory_of_digests_stays_bounded() {
        let cache = KeyCache::default();
        let keys: Vec<ApiKey> = (0..MEMO_CAPACITY + 10)
            .map(|_| ApiKey::generate())
            .collect();
        for (i, key) in keys.iter().enumerate() {
            cache.insert(record_of(key, &i.to_string()));
            assert_eq!(cache.authenticate(key, 0).unwrap().id, i.to_string());
        }
        assert!(DIGESTS.with(|m| m.borrow().1.len()) <= MEMO_CAPACITY);
        assert_eq!(cache.authenticate(&keys[0], 0).unwrap().id, "0");
    }
}
