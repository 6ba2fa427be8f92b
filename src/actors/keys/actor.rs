//! The KeyRegistry actor.

use super::messages::*;
use super::KeyCache;
use crate::actors::pool::{BindFixed, PoolAddrs, PoolError, Release};
use crate::clock::now_ms;
use crate::domain::{valid_account_name, Tier};
use crate::store::{Backend, KeyRecord, KeyStatus};
use actix::{Actor, AsyncContext, Context, Handler, ResponseFuture};
use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub struct KeyRegistry {
    cache: KeyCache,
    backend: Backend,
    pools: PoolAddrs,
    tiers: Arc<HashMap<String, Tier>>,
    sweep_interval: Duration,
    /// Redis did not answer the last sweep: said once per outage, not once per sweep.
    sweep_failing: Rc<Cell<bool>>,
}

impl KeyRegistry {
    pub fn new(
        cache: KeyCache,
        backend: Backend,
        pools: PoolAddrs,
        tiers: Arc<HashMap<String, Tier>>,
        sweep_interval: Duration,
    ) -> KeyRegistry {
        KeyRegistry {
            cache,
            backend,
            pools,
            tiers,
            sweep_interval,
            sweep_failing: Rc::default(),
        }
    }
}

impl Actor for KeyRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.sweep_interval, |_, ctx| {
            ctx.notify(SweepExpired);
        });
    }
}

impl Handler<CreateKey> for KeyRegistry {
    type Result = ResponseFuture<Result<CreatedKey, KeyError>>;

    fn handle(&mut self, msg: CreateKey, _: &mut Context<Self>) -> Self::Result {
        crate::failpoint::panic_once("key-registry-panic");
        let cache = self.cache.clone();
        let backend = self.backend.clone();
        let tier = self.tiers.get(&msg.tier).cloned();
        let pool = self.pools.get(&msg.tier).map(|p| p.addr());
        Box::pin(async move {
            let (Some(tier), Some(pool)) = (tier, pool) else {
                return Err(KeyError::UnknownTier(msg.tier));
            };
            if let Some(account) = &msg.account {
                if !valid_account_name(account) {
                    return Err(KeyError::Invalid(format!(
                        "`{account}` is not a valid account name"
                    )));
                }
            }
            let lifetime = tier
                .key_lifetime(msg.days, msg.ttl)
                .map_err(KeyError::Invalid)?;
            let (key, record) = KeyRecord::mint(
                &tier.name,
                lifetime,
                msg.account.clone(),
                msg.note,
                now_ms(),
            );
            // The slot is reserved first, so a full account never gets a key on it.
            if let Some(account) = msg.account {
                pool.send(BindFixed {
                    key_id: record.id.clone(),
                    account,
                })
                .await
                .unwrap_or(Err(PoolError::Unavailable))?;
            }
            let stored = backend.insert_key(&record).await;
            if let Err(e) = stored {
                pool.do_send(Release {
                    key_id: record.id.clone(),
                });
                return Err(e.into());
            }
            log::info!(
                "key created: {} tier={} id={}{}",
                record.prefix,
                record.tier,
                record.id,
                record
                    .fixed_account
                    .as_ref()
                    .map(|a| format!(" fixed to account: {a}"))
                    .unwrap_or_default()
            );
            cache.insert(record.clone());
            Ok(CreatedKey {
                key,
                record: Arc::new(record),
            })
        })
    }
}

impl Handler<RevokeKey> for KeyRegistry {
    type Result = ResponseFuture<Result<Arc<KeyRecord>, KeyError>>;

    fn handle(&mut self, msg: RevokeKey, _: &mut Context<Self>) -> Self::Result {
        // Refused from this moment on; the disk write and the slot follow.
        let updated = self.cache.set_status(&msg.id, KeyStatus::Revoked);
        let backend = self.backend.clone();
        let pools = self.pools.clone();
        Box::pin(async move {
            let record = match (updated, &backend) {
                (Some(record), _) => record,
                // Made by another instance sharing Redis.
                (None, Backend::Redis(store)) => store
                    .key_by_id(&msg.id)
                    .await?
                    .map(|mut r| {
                        r.status = KeyStatus::Revoked;
                        Arc::new(r)
                    })
                    .ok_or(KeyError::NotFound(msg.id))?,
                (None, Backend::Embedded(_)) => return Err(KeyError::NotFound(msg.id)),
            };
            backend
                .set_key_status(&record.tier, &record.id, KeyStatus::Revoked)
                .await?;
            if let Some(pool) = pools.get(&record.tier) {
                pool.addr().do_send(Release {
                    key_id: record.id.clone(),
                });
            }
            log::info!("key revoked: {} id={}", record.prefix, record.id);
            Ok(record)
        })
    }
}

impl Handler<SweepExpired> for KeyRegistry {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: SweepExpired, _: &mut Context<Self>) -> Self::Result {
        let (cache, backend, pools) =
            (self.cache.clone(), self.backend.clone(), self.pools.clone());
        let failing = self.sweep_failing.clone();
        Box::pin(async move {
            let now = now_ms();
            // With Redis, keys made by other instances expire here too.
            let records: Vec<Arc<KeyRecord>> = match &backend {
                Backend::Embedded(_) => cache.all(),
                Backend::Redis(store) => match store.list_keys().await {
                    Ok(keys) => {
                        if failing.replace(false) {
                            log::info!("key sweep resumed: Redis answers again");
                        }
                        keys.into_iter().map(Arc::new).collect()
                    }
                    Err(e) => {
                        if failing.replace(true) {
                            log::debug!("key sweep skipped: {e}");
                        } else {
                            log::warn!("key sweep skipped while Redis does not answer: {e}");
                        }
                        return;
                    }
                },
            };
            for record in records {
                if record.status != KeyStatus::Active || record.status_at(now) != KeyStatus::Expired
                {
                    continue;
                }
                cache.set_status(&record.id, KeyStatus::Expired);
                if let Err(e) = backend
                    .set_key_status(&record.tier, &record.id, KeyStatus::Expired)
                    .await
                {
                    log::warn!("key {} expired but not saved: {e}", record.prefix);
                    continue;
                }
                if let Some(pool) = pools.get(&record.tier) {
                    pool.addr().do_send(Release {
                        key_id: record.id.clone(),
                    });
                }
                log::info!(
                    "key expired: {} id={}, slot released",
                    record.prefix,
                    record.id
                );
            }
        })
    }
}
