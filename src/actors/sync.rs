//! SyncActor: reconciles the account directory with the pools and the store — at start-up,
//! every `[sync] interval`, and on demand — then resets every refresh timer.

use super::pool::{AccountExpiries, PoolAddrs, SyncAccounts};
use super::refresh::{RefreshCoordinator, Track, Tracked};
use super::restartable::Restartable;
use crate::account_files;
use crate::clock::now_ms;
use crate::config::Config;
use crate::domain::Millis;
use actix::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;

const RETRY: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncReport {
    pub added: usize,
    pub updated: usize,
    pub removed: usize,
    pub skipped: usize,
    pub finished_at: Millis,
}

pub struct SyncActor {
    config: Arc<Config>,
    pools: PoolAddrs,
    refresher: Restartable<RefreshCoordinator>,
    last: Option<SyncReport>,
}

impl SyncActor {
    pub fn new(
        config: Arc<Config>,
        pools: PoolAddrs,
        refresher: Restartable<RefreshCoordinator>,
    ) -> SyncActor {
        SyncActor {
            config,
            pools,
            refresher,
            last: None,
        }
    }
}

impl Actor for SyncActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.notify(SyncNow);
        ctx.run_interval(self.config.sync.interval.get(), |_, ctx| {
            ctx.notify(SyncNow)
        });
    }
}

/// Run a sync now; answers with the counts.
#[derive(Message)]
#[rtype(result = "Result<SyncReport, String>")]
pub struct SyncNow;

async fn run_sync(
    config: Arc<Config>,
    pools: PoolAddrs,
    refresher: Restartable<RefreshCoordinator>,
) -> Result<SyncReport, String> {
    let dir = config.accounts.dir.clone();
    let tiers: Vec<String> = config.tiers.keys().cloned().collect();
    let scan = actix_web::web::block(move || account_files::scan(&dir, tiers))
        .await
        .map_err(|e| e.to_string())?;
    let mut report = SyncReport {
        skipped: scan.skipped,
        ..SyncReport::default()
    };
    let mut by_tier: HashMap<String, SyncAccounts> = pools
        .keys()
        .map(|t| {
            let empty = SyncAccounts {
                files: Vec::new(),
                unreadable: Vec::new(),
            };
            (t.clone(), empty)
        })
        .collect();
    for entry in scan.accounts {
        if let Some(sync) = by_tier.get_mut(&entry.tier) {
            sync.files.push((entry.name, entry.file.credential));
        }
    }
    for (tier, name) in scan.unreadable {
        if let Some(sync) = by_tier.get_mut(&tier) {
            sync.unreadable.push(name);
        }
    }
    let mut rewrites = Vec::new();
    let mut tracked = Vec::new();
    for (tier, sync) in by_tier {
        let Some(pool) = pools.get(&tier) else {
            continue;
        };
        let delta = pool
            .addr()
            .send(sync)
            .await
            .map_err(|e| format!("pool {tier}: {e}"))?
            .map_err(|e| format!("pool {tier}: {e}"))?;
        report.added += delta.added.len();
        report.updated += delta.updated.len();
        report.removed += delta.removed.len();
        for name in &delta.removed {
            log::info!(
                "sync: account {name} ({tier}) removed; its keys re-bind on their next request"
            );
        }
        for (name, credential) in delta.rewrite {
            rewrites.push((
                config.accounts.dir.join(&tier).join(format!("{name}.json")),
                credential,
            ));
        }
        let expiries = pool
            .addr()
            .send(AccountExpiries)
            .await
            .map_err(|e| format!("pool {tier}: {e}"))?;
        tracked.extend(Tracked::from_expiries(&tier, expiries));
    }
    if !rewrites.is_empty() {
        actix_web::web::block(move || {
            for (path, credential) in rewrites {
                match account_files::write_credential(&path, &credential) {
                    Ok(_) => log::info!(
                        "sync: {} rewritten with the store's newer credential",
                        path.display()
                    ),
                    Err(e) => log::warn!("sync: cannot rewrite {}: {e}", path.display()),
                }
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    refresher.addr().do_send(Track { accounts: tracked });
    report.finished_at = now_ms();
    log::info!(
        "sync finished: added={} updated={} removed={} skipped={}",
        report.added,
        report.updated,
        report.removed,
        report.skipped
    );
    Ok(report)
}

impl Handler<SyncNow> for SyncActor {
    type Result = ResponseActFuture<Self, Result<SyncReport, String>>;

    fn handle(&mut self, _: SyncNow, _: &mut Context<Self>) -> Self::Result {
        let work = run_sync(
            self.config.clone(),
            self.pools.clone(),
            self.refresher.clone(),
        );
        Box::pin(work.into_actor(self).map(|result, act, ctx| {
            match &result {
                Ok(report) => act.last = Some(report.clone()),
                Err(e) => {
                    // Usually the store is down: try again soon rather than at the next interval.
                    log::warn!("sync failed: {e}; retrying in {RETRY:?}");
                    ctx.notify_later(SyncNow, RETRY);
                }
            }
            result
        }))
    }
}

/// The last finished sync, for `/admin/status`.
#[derive(Message)]
#[rtype(result = "Option<SyncReport>")]
pub struct LastSync;

impl Handler<LastSync> for SyncActor {
    type Result = Option<SyncReport>;

    fn handle(&mut self, _: LastSync, _: &mut Context<Self>) -> Option<SyncReport> {
        self.last.clone()
    }
}
