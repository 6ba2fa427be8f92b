//! `keygen` and `keys` straight against Redis, for when no server answers.

use crate::actors::pool::PoolError;
use crate::config::Config;
use crate::domain::Tier;
use crate::http::admin::{key_view, KeyView};
use crate::store::redis::RedisStore;
use crate::store::{KeyRecord, KeyStatus};
use std::future::Future;

fn run<T, F>(config: &Config, work: impl FnOnce(RedisStore) -> F) -> Result<T, String>
where
    F: Future<Output = Result<T, String>>,
{
    let system = actix_web::rt::System::new();
    system.block_on(async {
        let store =
            RedisStore::open(&config.store.url, &config.store.prefix).map_err(|e| e.to_string())?;
        work(store).await
    })
}

/// Stores a new key; a fixed key's slot is taken atomically first.
pub fn insert(config: &Config, tier: &Tier, record: &KeyRecord) -> Result<(), String> {
    let (tier, record) = (tier.clone(), record.clone());
    run(config, move |store| async move {
        if let Some(account) = &record.fixed_account {
            store
                    .pool(tier.clone())
                    .bind_fixed(&record.id, account)
                    .await
                    .map_err(|e| match e {
                        PoolError::UnknownAccount { .. } => format!(
                            "no account `{account}` in the {} tier in Redis (start a server once so it syncs the account files)",
                            tier.name
                        ),
                        other => other.to_string(),
                    })?;
        }
        store.insert_key(&record).await.map_err(|e| e.to_string())
    })
}

pub fn views(config: &Config) -> Result<Vec<KeyView>, String> {
    run(config, |store| async move {
        let keys = store.list_keys().await.map_err(|e| e.to_string())?;
        let mut views = Vec::with_capacity(keys.len());
        for k in keys {
            let account = store
                .binding_of(&k.tier, &k.id)
                .await
                .map_err(|e| e.to_string())?;
            let usage = store.key_usage(&k.id).await.map_err(|e| e.to_string())?;
            views.push(key_view(&k, account, usage));
        }
        Ok(views)
    })
}

pub fn revoke(config: &Config, id: &str) -> Result<(), String> {
    let id = id.to_string();
    run(config, move |store| async move {
        let record = store
            .key_by_id(&id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("no key with id `{id}`; `keys list` shows the ids"))?;
        store
            .retire_key(&record.tier, &id, KeyStatus::Revoked)
            .await
            .map_err(|e| e.to_string())
    })
}
