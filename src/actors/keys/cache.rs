//! Digest → key record, read by every request.

use crate::domain::{ApiKey, Millis};
use crate::store::{KeyRecord, KeyStatus};
use foldhash::fast::RandomState;
use foldhash::HashMap;
use parking_lot::RwLock;
use std::cell::RefCell;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Keys remembered per worker thread, at most this many (then forgotten all at once).
const MEMO_CAPACITY: usize = 4096;

/// A remembered key: the key itself (compared in constant time), and the record it named
/// in the cache whose contents were `version`.
struct Remembered {
    secret: Box<str>,
    record: Arc<KeyRecord>,
    version: u64,
}

thread_local! {
    /// Presented key → its record, for keys that were known when presented: a client sends
    /// the same key on every request, and SHA-256, then the shared map's lock (moved between
    /// cores by every request) and its 64-character digest, were most of authenticating.
    /// An entry counts only while its cache is still at the version it was read from; status
    /// and expiry are read from the record each time.
    /// Indexed by a randomly seeded hash of the key, so a lookup's timing says nothing about
    /// how much of a guessed key matches a real one.
    static REMEMBERED: RefCell<(RandomState, HashMap<u64, Remembered>)> = RefCell::default();
}

/// Every change to any cache takes a new number from here: a version names one cache's
/// contents at one time, never another cache's, so one thread's memory serves them all.
fn next_version() -> u64 {
    static VERSIONS: AtomicU64 = AtomicU64::new(1);
    VERSIONS.fetch_add(1, Ordering::Relaxed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Unknown,
    Expired,
    Revoked,
}

#[derive(Clone)]
pub struct KeyCache {
    by_digest: Arc<RwLock<HashMap<String, Arc<KeyRecord>>>>,
    /// The contents' version: changed, under the write lock, by every change.
    version: Arc<AtomicU64>,
}

impl Default for KeyCache {
    fn default() -> KeyCache {
        KeyCache {
            by_digest: Arc::default(),
            version: Arc::new(AtomicU64::new(next_version())),
        }
    }
}

impl KeyCache {
    pub fn insert(&self, record: KeyRecord) {
        let mut map = self.by_digest.write();
        map.insert(record.digest.clone(), Arc::new(record));
        self.version.store(next_version(), Ordering::Release);
    }

    /// The live record of a presented key.
    pub fn authenticate(&self, key: &ApiKey, now: Millis) -> Result<Arc<KeyRecord>, AuthError> {
        let record = self.lookup(key).ok_or(AuthError::Unknown)?;
        match record.status_at(now) {
            KeyStatus::Active => Ok(record),
            KeyStatus::Expired => Err(AuthError::Expired),
            KeyStatus::Revoked => Err(AuthError::Revoked),
        }
    }

    /// The record `key` names, from this thread's memory while the cache is unchanged.
    fn lookup(&self, key: &ApiKey) -> Option<Arc<KeyRecord>> {
        let secret = key.secret();
        let version = self.version.load(Ordering::Acquire);
        let (slot, remembered) = REMEMBERED.with(|m| {
            let memo = m.borrow();
            let slot = memo.0.hash_one(secret);
            let record = memo.1.get(&slot).and_then(|r| {
                let same_key = bool::from(r.secret.as_bytes().ct_eq(secret.as_bytes()));
                (same_key && r.version == version).then(|| r.record.clone())
            });
            (slot, record)
        });
        if remembered.is_some() {
            return remembered;
        }
        // Hashed before the lock is taken; read together with the version it belongs to: a
        // change made meanwhile gives the entry a version already out of date.
        let digest = key.digest();
        let (record, version) = {
            let map = self.by_digest.read();
            let version = self.version.load(Ordering::Acquire);
            (map.get(&digest)?.clone(), version)
        };
        REMEMBERED.with(|m| {
            let memo = &mut m.borrow_mut().1;
            if memo.len() >= MEMO_CAPACITY {
                memo.clear();
            }
            memo.insert(
                slot,
                Remembered {
                    secret: secret.into(),
                    record: record.clone(),
                    version,
                },
            );
        });
        Some(record)
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
        let updated = entry.clone();
        self.version.store(next_version(), Ordering::Release);
        Some(updated)
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
    fn a_key_remembered_from_one_cache_is_not_known_to_another() {
        let (known, empty) = (KeyCache::default(), KeyCache::default());
        let key = ApiKey::generate();
        known.insert(record_of(&key, "k1"));
        assert_eq!(known.authenticate(&key, 0).unwrap().id, "k1");
        assert_eq!(empty.authenticate(&key, 0).unwrap_err(), AuthError::Unknown);
        assert_eq!(known.authenticate(&key, 0).unwrap().id, "k1");
    }

    #[test]
    fn a_record_replaced_in_the_cache_is_the_one_seen() {
        let cache = KeyCache::default();
        let key = ApiKey::generate();
        cache.insert(record_of(&key, "k1"));
        assert_eq!(cache.authenticate(&key, 0).unwrap().tier, "trial");
        let mut moved = record_of(&key, "k1");
        moved.tier = "supreme".into();
        cache.insert(moved);
        assert_eq!(cache.authenticate(&key, 0).unwrap().tier, "supreme");
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
        assert!(REMEMBERED.with(|m| m.borrow().1.len()) <= MEMO_CAPACITY);
        assert_eq!(cache.authenticate(&keys[0], 0).unwrap().id, "0");
    }
}
