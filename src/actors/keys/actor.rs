//! The KeyRegistry actor.

use super::messages::*;
use super::KeyCache;
use crate::actors::pool::{BindFixed, PoolActor, PoolError, Release};
use crate::clock::now_ms;
use crate::domain::{valid_account_name, Tier};
use crate::store::{KeyRecord, KeyStatus, StoreWriter, WriteOp};
use actix::{Actor, AsyncContext, Context, Handler, ResponseFuture};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub struct KeyRegistry {
    cache: KeyCache,
    writer: StoreWriter,
    pools: Arc<HashMap<String, actix::Addr<PoolActor>>>,
    tiers: Arc<HashMap<String, Tier>>,
    sweep_interval: Duration,
}

impl KeyRegistry {
    pub fn new(
        cache: KeyCache,
        writer: StoreWriter,
        pools: Arc<HashMap<String, actix::Addr<PoolActor>>>,
        tiers: Arc<HashMap<String, Tier>>,
        sweep_interval: Duration,
    ) -> KeyRegistry {
        KeyRegistry {
            cache,
            writer,
            pools,
            tiers,
            sweep_interval,
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
        let cache = self.cache.clone();
        let writer = self.writer.clone();
        let tier = self.tiers.get(&msg.tier).cloned();
        let pool = self.pools.get(&msg.tier).cloned();
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
            let days = msg.days.unwrap_or(tier.key_days);
            let (key, record) =
                KeyRecord::mint(&tier.name, days, msg.account.clone(), msg.note, now_ms());
            // The slot is reserved first, so a full account never gets a key on it.
            if let Some(account) = msg.account {
                pool.send(BindFixed {
                    key_id: record.id.clone(),
                    account,
                })
                .await
                .unwrap_or(Err(PoolError::Unavailable))?;
            }
            let stored = writer
                .write_durable(vec![WriteOp::InsertKey(record.clone())])
                .await;
            if let Err(e) = stored {
                pool.do_send(Release {
                    key_id: record.id.clone(),
                });
                return Err(KeyError::Store(e.to_string()));
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
        let writer = self.writer.clone();
        let pools = self.pools.clone();
        Box::pin(async move {
            let record = updated.ok_or(KeyError::NotFound(msg.id))?;
            writer
                .write_durable(vec![WriteOp::SetKeyStatus {
                    id: record.id.clone(),
                    status: KeyStatus::Revoked,
                }])
                .await
                .map_err(|e| KeyError::Store(e.to_string()))?;
            if let Some(pool) = pools.get(&record.tier) {
                pool.do_send(Release {
                    key_id: record.id.clone(),
                });
            }
            log::info!("key revoked: {} id={}", record.prefix, record.id);
            Ok(record)
        })
    }
}

impl Handler<SweepExpired> for KeyRegistry {
    type Result = ();

    fn handle(&mut self, _: SweepExpired, _: &mut Context<Self>) {
        let now = now_ms();
        for record in self.cache.all() {
            if record.status == KeyStatus::Active && record.status_at(now) == KeyStatus::Expired {
                self.cache.set_status(&record.id, KeyStatus::Expired);
                self.writer.write(WriteOp::SetKeyStatus {
                    id: record.id.clone(),
                    status: KeyStatus::Expired,
                });
                if let Some(pool) = self.pools.get(&record.tier) {
                    pool.do_send(Release {
                        key_id: record.id.clone(),
                    });
                }
                log::info!(
                    "key expired: {} id={}, slot released",
                    record.prefix,
                    record.id
                );
            }
        }
    }
}
