//! Client key records in Redis.

use super::{unavailable, RedisStore};
use crate::store::{KeyRecord, KeyStatus, StoreError, Usage};
use redis::AsyncCommands;
use std::collections::HashMap;

fn record_from(map: &HashMap<String, String>) -> Option<KeyRecord> {
    let get = |f: &str| map.get(f).cloned().unwrap_or_default();
    let opt = |f: &str| map.get(f).filter(|v| !v.is_empty()).cloned();
    Some(KeyRecord {
        id: opt("id")?,
        digest: get("digest"),
        prefix: get("prefix"),
        tier: get("tier"),
        created: get("created").parse().ok()?,
        expires: opt("expires").and_then(|v| v.parse().ok()),
        status: KeyStatus::parse(&get("status"))?,
        fixed_account: opt("fixed"),
        note: get("note"),
    })
}

pub(super) fn usage_from(map: &HashMap<String, String>) -> Usage {
    let n = |f: &str| map.get(f).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Usage {
        requests: n("requests"),
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_creation_input_tokens: n("cache_creation_input_tokens"),
        cache_read_input_tokens: n("cache_read_input_tokens"),
    }
}

impl RedisStore {
    /// Stores a new key record and its digest index in one transaction.
    pub async fn insert_key(&self, k: &KeyRecord) -> Result<(), StoreError> {
        let names = self.names();
        let fields: Vec<(&str, String)> = vec![
            ("id", k.id.clone()),
            ("digest", k.digest.clone()),
            ("prefix", k.prefix.clone()),
            ("tier", k.tier.clone()),
            ("created", k.created.to_string()),
            (
                "expires",
                k.expires.map(|e| e.to_string()).unwrap_or_default(),
            ),
            ("status", k.status.as_str().to_string()),
            ("fixed", k.fixed_account.clone().unwrap_or_default()),
            ("note", k.note.clone()),
        ];
        redis::pipe()
            .atomic()
            .hset_multiple(names.key(&k.id), &fields)
            .set(names.digest(&k.digest), &k.id)
            .sadd(names.all_keys(), &k.id)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    pub async fn key_by_digest(&self, digest: &str) -> Result<Option<KeyRecord>, StoreError> {
        let id: Option<String> = self
            .conn()
            .get(self.names().digest(digest))
            .await
            .map_err(unavailable)?;
        match id {
            Some(id) => self.key_by_id(&id).await,
            None => Ok(None),
        }
    }

    pub async fn key_by_id(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let map: HashMap<String, String> = self
            .conn()
            .hgetall(self.names().key(id))
            .await
            .map_err(unavailable)?;
        Ok(record_from(&map))
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let ids: Vec<String> = self
            .conn()
            .smembers(self.names().all_keys())
            .await
            .map_err(unavailable)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.names().key(id));
        }
        let maps: Vec<HashMap<String, String>> = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut keys: Vec<KeyRecord> = maps.iter().filter_map(record_from).collect();
        keys.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        Ok(keys)
    }

    /// Sets a key's status and frees its slot, atomically.
    pub async fn retire_key(
        &self,
        tier: &str,
        id: &str,
        status: KeyStatus,
    ) -> Result<(), StoreError> {
        self.tier_script(&self.scripts.release, tier)
            .arg(id)
            .arg(status.as_str())
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    pub async fn key_usage(&self, id: &str) -> Result<Usage, StoreError> {
        let map: HashMap<String, String> = self
            .conn()
            .hgetall(self.names().key_usage(id))
            .await
            .map_err(unavailable)?;
        Ok(usage_from(&map))
    }

    pub async fn binding_of(&self, tier: &str, id: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .hget(self.names().bindings(tier), id)
            .await
            .map_err(unavailable)
    }
}
