//! One tier's pool in Redis: the same operations as the embedded `PoolState`, each one
//! atomic in Redis, so any number of instances stay exact.

use super::key_ops::usage_from;
use super::{unavailable, RedisStore};
use crate::actors::pool::{AccountView, Admission, PoolError, PoolView, SyncDelta};
use crate::domain::window::WindowGrant;
use crate::domain::{Credential, Millis, ModelFamily, Tier};
use crate::store::{KeyRecord, Usage};
use redis::AsyncCommands;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Unique across instances: a random per-process part and a counter.
pub(super) fn new_count_id() -> Arc<str> {
    static PROCESS: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| format!("{:016x}", rand::random::<u64>()));
    Arc::from(format!(
        "{process}{:x}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

#[derive(Clone)]
pub struct RedisPool {
    pub(super) store: RedisStore,
    pub(super) tier: Tier,
}

pub(super) fn redis_err(e: redis::RedisError) -> PoolError {
    unavailable(e).into()
}

fn parse_err(e: impl std::fmt::Display) -> PoolError {
    PoolError::Store(format!("unexpected Redis answer: {e}"))
}

fn opt_ms(s: &str) -> Option<Millis> {
    s.parse().ok()
}

pub(super) fn credential_from(access: &str, refresh: &str, expires: &str) -> Credential {
    Credential {
        access_token: access.to_string(),
        refresh_token: Some(refresh.to_string()).filter(|r| !r.is_empty()),
        expires_at: opt_ms(expires),
    }
}

impl RedisPool {
    pub fn new(store: RedisStore, tier: Tier) -> RedisPool {
        RedisPool { store, tier }
    }

    fn window_ms(&self) -> Millis {
        i64::try_from(self.tier.window.as_millis()).unwrap_or(i64::MAX)
    }

    /// A name for this request's count when it will be counted in a window (see
    /// `Admission::count_id`), unique across instances.
    pub fn count_id_for(&self, family: Option<ModelFamily>) -> Option<Arc<str>> {
        family
            .and_then(|f| self.tier.limit(f))
            .filter(|limit| *limit > 0)
            .map(|_| new_count_id())
    }

    /// `count_id`: from `count_id_for`; the count is recorded under it until settled.
    pub async fn admit(
        &self,
        key: &KeyRecord,
        family: Option<ModelFamily>,
        now: Millis,
        count_id: Option<Arc<str>>,
    ) -> Result<Admission, PoolError> {
        if let Some(f) = family.filter(|f| !self.tier.allows(*f)) {
            let _ = f;
            return Err(PoolError::FamilyNotAllowed {
                message: self.tier.family_refusal(),
            });
        }
        let limit = family.and_then(|f| self.tier.limit(f)).unwrap_or(0);
        let answer: Vec<String> = self
            .store
            .tier_script(&self.store.scripts.admit, &self.tier.name)
            .arg(&key.id)
            .arg(family.map_or("", ModelFamily::as_str))
            .arg(limit)
            .arg(self.window_ms())
            .arg(now)
            .arg(self.tier.slots)
            .arg(count_id.as_deref().unwrap_or(""))
            .invoke_async(&mut self.store.conn())
            .await
            .map_err(redis_err)?;
        let field = |i: usize| answer.get(i).map(String::as_str).unwrap_or("");
        let tier_name = self.tier.display_name();
        match field(0) {
            "ok" => {
                let grant = match (opt_ms(field(7)), field(8).parse::<u32>().ok()) {
                    (Some(started), Some(count)) if limit > 0 => Some(WindowGrant {
                        started_at: started,
                        limit,
                        remaining: limit.saturating_sub(count),
                        resets_at: started.saturating_add(self.window_ms()),
                    }),
                    _ => None,
                };
                Ok(Admission {
                    account: Arc::from(field(1)),
                    credential: Arc::new(credential_from(field(4), field(5), field(6))),
                    family,
                    count_id: grant.and(count_id),
                    grant,
                    newly_bound: field(2) == "1",
                    slots_used: field(3).parse().unwrap_or(0),
                    slots: self.tier.slots,
                })
            }
            "unknown" => Err(PoolError::KeyUnknown),
            "revoked" => Err(PoolError::KeyRevoked),
            "expired" => Err(PoolError::KeyExpired),
            "fixed_unavailable" => Err(PoolError::FixedAccountUnavailable {
                account: field(1).to_string(),
            }),
            "fixed_full" => Err(PoolError::FixedAccountFull {
                account: field(1).to_string(),
            }),
            "no_accounts" => Err(PoolError::NoAccounts { tier: tier_name }),
            "capacity" => Err(PoolError::AtCapacity { tier: tier_name }),
            "token_expired" => Err(PoolError::TokenExpired {
                account: field(1).to_string(),
                retry_at: None,
            }),
            "withdrawn" => Err(PoolError::Store(
                "the admission was withdrawn before Redis ran it".into(),
            )),
            "rate_limited" => Err(PoolError::RateLimited {
                family: family.unwrap_or(ModelFamily::Other),
                limit,
                resets_at: opt_ms(field(1)).unwrap_or(now),
            }),
            other => Err(PoolError::Store(format!(
                "unexpected admit answer `{other}`"
            ))),
        }
    }

    pub async fn release(&self, key_id: &str) -> Result<(), PoolError> {
        self.store
            .tier_script(&self.store.scripts.release, &self.tier.name)
            .arg(key_id)
            .arg("")
            .invoke_async::<i64>(&mut self.store.conn())
            .await
            .map(|_| ())
            .map_err(redis_err)
    }

    pub async fn bind_fixed(&self, key_id: &str, account: &str) -> Result<(), PoolError> {
        let answer: Vec<String> = self
            .store
            .tier_script(&self.store.scripts.bind_fixed, &self.tier.name)
            .arg(key_id)
            .arg(account)
            .arg(self.tier.slots)
            .invoke_async(&mut self.store.conn())
            .await
            .map_err(redis_err)?;
        match answer.first().map(String::as_str) {
            Some("ok") => Ok(()),
            Some("full") => Err(PoolError::AccountFull {
                account: account.to_string(),
                slots: self.tier.slots,
            }),
            _ => Err(PoolError::UnknownAccount {
                tier: self.tier.name.clone(),
                account: account.to_string(),
            }),
        }
    }

    async fn is_member(&self, account: &str) -> Result<bool, PoolError> {
        self.store
            .conn()
            .sismember(self.store.names().accounts(&self.tier.name), account)
            .await
            .map_err(redis_err)
    }

    pub async fn blacklist(
        &self,
        account: &str,
        reason: &str,
        now: Millis,
    ) -> Result<bool, PoolError> {
        let listed: i64 = self
            .store
            .tier_script(&self.store.scripts.blacklist, &self.tier.name)
            .arg(account)
            .arg(format!("{now}|{reason}"))
            .invoke_async(&mut self.store.conn())
            .await
            .map_err(redis_err)?;
        Ok(listed == 1)
    }

    pub async fn recover(&self, account: &str) -> Result<bool, PoolError> {
        if !self.is_member(account).await? {
            return Ok(false);
        }
        let names = self.store.names();
        let tier = &self.tier.name;
        redis::pipe()
            .atomic()
            .hdel(names.blacklist(tier), account)
            .hdel(names.limited(tier), account)
            .del(&[
                names.refresh_failures(tier, account),
                names.refresh_cooldown(tier, account),
                names.refresh_error(tier, account),
            ])
            .query_async::<()>(&mut self.store.conn())
            .await
            .map_err(redis_err)?;
        Ok(true)
    }

    pub async fn mark_limited(&self, account: &str, until: Millis) -> Result<(), PoolError> {
        self.store
            .conn()
            .hset::<_, _, _, i64>(self.store.names().limited(&self.tier.name), account, until)
            .await
            .map(|_| ())
            .map_err(redis_err)
    }

    /// Stores a credential unless Redis already holds a newer one; answers the stored one.
    pub async fn update_credential(
        &self,
        account: &str,
        c: &Credential,
    ) -> Result<Credential, PoolError> {
        let (_, stored) = self
            .store
            .write_credential(&self.tier.name, account, c)
            .await
            .map_err(PoolError::from)?;
        Ok(stored)
    }

    pub async fn get_credential(&self, account: &str) -> Result<Option<Credential>, PoolError> {
        let have: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.store.names().credential(&self.tier.name, account))
            .arg(&["access", "refresh", "expires"])
            .query_async(&mut self.store.conn())
            .await
            .map_err(redis_err)?;
        Ok(match have.as_slice() {
            [Some(access), refresh, expires] => Some(credential_from(
                access,
                refresh.as_deref().unwrap_or(""),
                expires.as_deref().unwrap_or(""),
            )),
            _ => None,
        })
    }

    async fn account_names(&self) -> Result<Vec<String>, PoolError> {
        let mut names: Vec<String> = self
            .store
            .conn()
            .smembers(self.store.names().accounts(&self.tier.name))
            .await
            .map_err(redis_err)?;
        names.sort();
        Ok(names)
    }

    pub async fn view(&self, now: Millis) -> Result<PoolView, PoolError> {
        let names = self.account_names().await?;
        let n = self.store.names();
        let tier = &self.tier.name;
        let mut pipe = redis::pipe();
        pipe.hgetall(n.blacklist(tier)).hgetall(n.limited(tier));
        for name in &names {
            pipe.scard(n.slots(tier, name))
                .hgetall(n.credential(tier, name))
                .hgetall(n.account_usage(tier, name));
        }
        let mut values: Vec<redis::Value> = pipe
            .query_async(&mut self.store.conn())
            .await
            .map_err(redis_err)?;
        values.reverse();
        let mut next = || values.pop().unwrap_or(redis::Value::Nil);
        let blacklist: HashMap<String, String> =
            redis::from_redis_value(next()).map_err(parse_err)?;
        let limited: HashMap<String, String> =
            redis::from_redis_value(next()).map_err(parse_err)?;
        let mut accounts = Vec::with_capacity(names.len());
        for name in names {
            let used: u32 = redis::from_redis_value(next()).map_err(parse_err)?;
            let cred: HashMap<String, String> =
                redis::from_redis_value(next()).map_err(parse_err)?;
            let usage: HashMap<String, String> =
                redis::from_redis_value(next()).map_err(parse_err)?;
            let black = blacklist.get(&name).and_then(|v| v.split_once('|'));
            let limited_until = limited
                .get(&name)
                .and_then(|v| v.parse::<Millis>().ok())
                .filter(|t| *t > now);
            accounts.push(AccountView {
                status: if black.is_some() {
                    "blacklisted"
                } else if limited_until.is_some() {
                    "limited"
                } else {
                    "active"
                },
                blacklist_reason: black.map(|(_, r)| r.to_string()),
                blacklisted_since: black.and_then(|(s, _)| s.parse().ok()),
                limited_until,
                token_expires_at: cred.get("expires").and_then(|v| v.parse().ok()),
                refreshable: cred.get("refresh").is_some_and(|r| !r.is_empty()),
                usage: usage_from(&usage),
                slots_used: used,
                slots: self.tier.slots,
                name,
            });
        }
        Ok(PoolView::from_accounts(&self.tier, accounts))
    }

    pub async fn key_details(
        &self,
        key_ids: &[String],
    ) -> Result<Vec<(Option<String>, Usage)>, PoolError> {
        let mut out = Vec::with_capacity(key_ids.len());
        for id in key_ids {
            let account = self
                .store
                .binding_of(&self.tier.name, id)
                .await
                .map_err(PoolError::from)?;
            let usage = self.store.key_usage(id).await.map_err(PoolError::from)?;
            out.push((account, usage));
        }
        Ok(out)
    }

    /// Reconciles Redis with the tier's account files (see `PoolState::sync_accounts`).
    pub async fn sync_accounts(
        &self,
        files: Vec<(String, Credential)>,
        unreadable: &[String],
    ) -> Result<SyncDelta, PoolError> {
        let mut delta = SyncDelta::default();
        let present: std::collections::BTreeSet<String> = files
            .iter()
            .map(|(n, _)| n.clone())
            .chain(unreadable.iter().cloned())
            .collect();
        for (name, c) in files {
            let answer: Vec<String> = self
                .store
                .tier_script(&self.store.scripts.add_account, &self.tier.name)
                .arg(&name)
                .arg(&c.access_token)
                .arg(c.refresh_token.clone().unwrap_or_default())
                .arg(c.expires_at.map(|e| e.to_string()).unwrap_or_default())
                .invoke_async(&mut self.store.conn())
                .await
                .map_err(redis_err)?;
            let field = |i: usize| answer.get(i).map(String::as_str).unwrap_or("");
            match field(0) {
                "added" => delta.added.push(name),
                "updated" => delta.updated.push(name),
                "store_newer" => {
                    delta
                        .rewrite
                        .push((name.clone(), credential_from(field(1), field(2), field(3))));
                    delta.updated.push(name);
                }
                _ => {}
            }
        }
        for name in self.account_names().await? {
            if present.contains(&name) {
                continue;
            }
            self.store
                .tier_script(&self.store.scripts.forget_account, &self.tier.name)
                .arg(&name)
                .invoke_async::<i64>(&mut self.store.conn())
                .await
                .map_err(redis_err)?;
            delta.removed.push(name);
        }
        Ok(delta)
    }

    pub async fn account_expiries(&self) -> Result<Vec<(String, Option<Millis>, bool)>, PoolError> {
        let mut out = Vec::new();
        for name in self.account_names().await? {
            let c = self.get_credential(&name).await?;
            out.push((
                name,
                c.as_ref().and_then(|c| c.expires_at),
                c.is_some_and(|c| c.refresh_token.is_some()),
            ));
        }
        Ok(out)
    }
}
