//! Starts the system in order: store, accounts, pools, key registry. Everything a request
//! needs ends up in `Services`, shared by all HTTP workers.

use super::keys::{KeyCache, KeyRegistry};
use super::pool::{
    AccountExpiries, AccountSlot, PoolActor, PoolAddrs, PoolBackend, PoolError, PoolHandle,
    PoolState, PoolView, ViewPool,
};
use super::refresh::{RefreshCoordinator, RefreshGate, Track, Tracked};
use super::restartable::{supervise, Restartable};
use super::sync::SyncActor;
use crate::account_files;
use crate::clock::now_ms;
use crate::config::Config;
use crate::domain::Tier;
use crate::store::counter_log::CounterLog;
use crate::store::owner::StoreOwner;
use crate::store::redis::RedisStore;
use crate::store::{
    Backend, KeyStatus, SqliteStore, StoreError, StoreWriter, StoredState, WriteOp,
};
use actix::{Actor, Addr, Arbiter, ArbiterHandle};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

pub struct Services {
    pub config: Arc<Config>,
    pub tiers: Arc<HashMap<String, Tier>>,
    /// Looked up by every request: a fast hasher (tier names come from our own config).
    pub pools: Arc<foldhash::HashMap<String, PoolHandle>>,
    pub keys: KeyCache,
    pub registry: Restartable<KeyRegistry>,
    pub backend: Backend,
    pub refresher: Restartable<RefreshCoordinator>,
    pub syncer: Restartable<SyncActor>,
    pub admin_token: String,
    pub started: Instant,
    /// The embedded store's lock, held while serving (see `store::owner`).
    pub store_owner: Option<Arc<StoreOwner>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
}

impl Services {
    /// Every tier's pool view, in tier-name order (admin pool, readiness, metrics).
    pub async fn pool_views(&self) -> Vec<Result<PoolView, PoolError>> {
        let mut names: Vec<&String> = self.pools.keys().collect();
        names.sort();
        let mut views = Vec::with_capacity(names.len());
        for name in names {
            if let Some(pool) = self.pools.get(name) {
                views.push(
                    pool.addr()
                        .send(ViewPool)
                        .await
                        .unwrap_or(Err(PoolError::Unavailable)),
                );
            }
        }
        views
    }
}

/// Builds every tier's pool from the account files and what the store remembers.
fn build_pools(
    config: &Config,
    stored: &StoredState,
    writer: &StoreWriter,
) -> HashMap<String, PoolState> {
    let mut pools: HashMap<String, PoolState> = config
        .tiers
        .iter()
        .map(|(name, t)| (name.clone(), PoolState::new(Tier::from_config(name, t))))
        .collect();
    let scan = account_files::scan(&config.accounts.dir, config.tiers.keys().cloned());
    let on_disk: HashSet<(String, String)> = scan
        .accounts
        .iter()
        .map(|e| (e.tier.clone(), e.name.clone()))
        .chain(scan.unreadable.iter().cloned())
        .collect();
    forget_vanished(stored, &pools, &on_disk, writer);
    for entry in scan.accounts {
        let Some(pool) = pools.get_mut(&entry.tier) else {
            continue;
        };
        let place = (entry.tier, entry.name);
        let file = entry.file.credential;
        let kept = stored.credentials.get(&place);
        // The store remembers rotations a file may lack; a file that supersedes it wins.
        let credential = match kept {
            Some(kept) if kept.is_newer_than(&file) && !file.supersedes(kept) => kept.clone(),
            _ => file,
        };
        if kept != Some(&credential) {
            // Stored, so that the account keeps serving should its file break.
            writer.write(WriteOp::SetCredential {
                tier: place.0.clone(),
                account: place.1.clone(),
                credential: Box::new(credential.clone()),
            });
        }
        pool.add_account(&place.1, restored_slot(stored, &place, credential));
        log::info!("loaded account: {} ({})", place.1, place.0);
    }
    // A file that is there but unreadable is not gone: the stored credential serves.
    for place in scan.unreadable {
        let Some(pool) = pools.get_mut(&place.0) else {
            continue;
        };
        let (tier, name) = (&place.0, &place.1);
        match stored.credentials.get(&place) {
            Some(kept) => {
                pool.add_account(name, restored_slot(stored, &place, kept.clone()));
                log::warn!("loaded account: {name} ({tier}) with its stored credential; its file cannot be read");
            }
            None => log::warn!(
                "account {name} ({tier}) cannot serve until its file can be read: no credential is stored for it"
            ),
        }
    }
    let now = now_ms();
    let tier_of: HashMap<&str, &str> = stored
        .keys
        .iter()
        .map(|k| (k.id.as_str(), k.tier.as_str()))
        .collect();
    let live: HashMap<&str, &str> = stored
        .keys
        .iter()
        .filter(|k| k.status_at(now) == KeyStatus::Active)
        .map(|k| (k.id.as_str(), k.tier.as_str()))
        .collect();
    for (key_id, tier) in &live {
        if let (Some(pool), Some(usage)) = (pools.get_mut(*tier), stored.key_usage.get(*key_id)) {
            pool.restore_key_usage(key_id, *usage);
        }
    }
    for (key_id, (tier, account)) in &stored.bindings {
        let is_live = live.get(key_id.as_str()) == Some(&tier.as_str());
        let restored = is_live
            && pools
                .get_mut(tier)
                .is_some_and(|p| p.restore_binding(key_id, account));
        if !restored {
            // A dead key or a vanished account: the slot is free, the key re-binds if it can.
            writer.write(WriteOp::Unbind {
                key_id: key_id.clone(),
            });
        }
    }
    for ((key_id, family), window) in &stored.windows {
        let Some(tier) = tier_of.get(key_id.as_str()) else {
            continue;
        };
        if let Some(pool) = pools.get_mut(*tier) {
            pool.restore_window(key_id, *family, *window);
        }
    }
    pools
}

/// Accounts of a configured tier that the store remembers but whose files are gone (removed
/// while the proxy was stopped) are forgotten, as a sync finding them gone would: a file put
/// back later starts clean, without the old blacklist entry or refresh failures.
fn forget_vanished(
    stored: &StoredState,
    pools: &HashMap<String, PoolState>,
    on_disk: &HashSet<(String, String)>,
    writer: &StoreWriter,
) {
    let remembered: BTreeSet<&(String, String)> = stored
        .credentials
        .keys()
        .chain(stored.blacklist.keys())
        .chain(stored.account_usage.keys())
        .collect();
    for place in remembered {
        if !pools.contains_key(&place.0) || on_disk.contains(place) {
            continue;
        }
        log::info!(
            "removed account: {} ({}): its file is gone; the store forgets it",
            place.1,
            place.0
        );
        writer.write(WriteOp::ForgetAccount {
            tier: place.0.clone(),
            account: place.1.clone(),
        });
    }
}

/// An account's slot with what the store remembers of it (blacklist entry, usage).
fn restored_slot(
    stored: &StoredState,
    place: &(String, String),
    credential: crate::domain::Credential,
) -> AccountSlot {
    let mut slot = AccountSlot::new(credential);
    slot.blacklist = stored.blacklist.get(place).cloned();
    slot.usage = stored.account_usage.get(place).copied().unwrap_or_default();
    slot
}

/// What the store gives the actors at start-up.
struct Loaded {
    backend: Backend,
    owner: Option<StoreOwner>,
    pools: Vec<(String, PoolBackend)>,
    keys: Vec<crate::store::KeyRecord>,
}

/// Embedded: everything is loaded into memory; the writer thread persists from then on.
fn load_embedded(config: &Config, path: &std::path::Path) -> Result<Loaded, StartError> {
    let owner = StoreOwner::acquire(path).map_err(StartError::Other)?;
    let store = SqliteStore::open(path)?;
    let (log, unfolded) = CounterLog::open(path, store.take_counter_log()?)?;
    let mut stored = store.load_all()?;
    if unfolded.lines > 0 {
        log::info!(
            "counter log: {} counters from {} lines not yet in SQLite taken back",
            unfolded.counters.len(),
            unfolded.lines
        );
    }
    stored.add_counters(&unfolded.counters);
    let every = config.store.fold_counters_every.0;
    let writer = StoreWriter::start_with_log(store, log, unfolded.counters, every)?;
    let states = build_pools(config, &stored, &writer);
    let pools = states
        .into_iter()
        .map(|(name, state)| (name, PoolBackend::embedded(state, writer.clone())))
        .collect();
    Ok(Loaded {
        backend: Backend::Embedded(writer),
        owner: Some(owner),
        pools,
        keys: std::mem::take(&mut stored.keys),
    })
}

/// Redis: nothing to load; Redis is the authority and the first sync fills in the accounts.
fn load_redis(config: &Config, tiers: &HashMap<String, Tier>) -> Result<Loaded, StartError> {
    let store = RedisStore::open(&config.store.url, &config.store.prefix)?;
    let pools = tiers
        .iter()
        .map(|(name, tier)| (name.clone(), PoolBackend::Redis(store.pool(tier.clone()))))
        .collect();
    let loader = store.clone();
    actix::spawn(async move {
        match loader.load_scripts().await {
            Ok(()) => log::info!("Redis scripts loaded"),
            Err(e) => log::warn!("Redis scripts not loaded yet ({e}); they load on first use"),
        }
    });
    Ok(Loaded {
        backend: Backend::Redis(store),
        owner: None,
        pools,
        keys: Vec::new(),
    })
}

/// A refresh coordinator on its own thread, its state read from the store, its
/// accounts' expiries read from the pools.
fn start_coordinator(
    config: &Arc<Config>,
    pools: &PoolAddrs,
    backend: &Backend,
    thread: &ActorThread,
) -> Addr<RefreshCoordinator> {
    let (saved, timers) = match (backend, config.sqlite_path()) {
        (Backend::Embedded(_), Some(path)) => {
            match SqliteStore::open(&path).and_then(|s| s.load_refresh()) {
                Ok(saved) => (saved.records, saved.timers),
                Err(e) => {
                    log::error!("refresh state could not be read from the store: {e}");
                    (HashMap::new(), (0, 0))
                }
            }
        }
        // Redis keeps the shared rules itself; the plan is rebuilt from the expiries.
        _ => (HashMap::new(), (0, 0)),
    };
    let gate = RefreshGate::new(config.clone(), backend.clone());
    let coordinator = RefreshCoordinator::new(
        config.refresh.clone(),
        gate,
        pools.clone(),
        backend.clone(),
        saved,
        timers,
    );
    let addr = RefreshCoordinator::start_in_arbiter(&thread.handle(), move |_| coordinator);
    let (pools, target) = (pools.clone(), addr.clone());
    actix::spawn(async move {
        let mut accounts = Vec::new();
        for (tier, pool) in pools.iter() {
            let Ok(expiries) = pool.addr().send(AccountExpiries).await else {
                continue;
            };
            accounts.extend(Tracked::from_expiries(tier, expiries));
        }
        target.do_send(Track { accounts });
    });
    addr
}

/// The thread a supervised actor runs on. A restarted incarnation moves into the same
/// thread (a panic ends the actor, not its thread); a new thread is started only should the
/// old one have ended, so restarts leave no idle threads behind.
#[derive(Clone, Default)]
struct ActorThread(std::rc::Rc<std::cell::RefCell<Option<ArbiterHandle>>>);

impl ActorThread {
    fn handle(&self) -> ArbiterHandle {
        let mut current = self.0.borrow_mut();
        match current.as_ref() {
            // A message it accepts shows the thread is still running.
            Some(handle) if handle.spawn(async {}) => handle.clone(),
            _ => current.insert(Arbiter::new().handle()).clone(),
        }
    }
}

/// Starts everything; must run inside the actix system.
pub fn start(config: Config, admin_token: String) -> Result<Services, StartError> {
    let tiers: Arc<HashMap<String, Tier>> = Arc::new(
        config
            .tiers
            .iter()
            .map(|(n, t)| (n.clone(), Tier::from_config(n, t)))
            .collect(),
    );
    let loaded = match config.sqlite_path() {
        Some(path) => load_embedded(&config, &path)?,
        None => load_redis(&config, &tiers)?,
    };
    let backend = loaded.backend;

    let pool_thread = ActorThread::default();
    let mut handles = foldhash::HashMap::default();
    for (name, pool) in loaded.pools {
        let (thread, backend) = (pool_thread.clone(), pool.clone());
        // The actor keeps nothing of its own (the tier's state is in `backend`): a new one
        // carries on where a crashed one stopped.
        let addr = supervise(format!("pool actor of tier {name}"), move || {
            let actor = PoolActor::new(backend.clone());
            PoolActor::start_in_arbiter(&thread.handle(), move |_| actor)
        });
        handles.insert(name, PoolHandle::new(addr, pool));
    }
    // The actors, for the parts that only ever message them.
    let pools: PoolAddrs = Arc::new(
        handles
            .iter()
            .map(|(name, handle)| (name.clone(), handle.supervised().clone()))
            .collect(),
    );

    let keys = KeyCache::default();
    for record in loaded.keys {
        keys.insert(record);
    }
    let registry = {
        let (keys, backend, pools, tiers) =
            (keys.clone(), backend.clone(), pools.clone(), tiers.clone());
        let sweep = config.keys.sweep_interval.get();
        // The registry's keys live in the shared cache: a new incarnation has them all.
        supervise("key registry", move || {
            KeyRegistry::new(
                keys.clone(),
                backend.clone(),
                pools.clone(),
                tiers.clone(),
                sweep,
            )
            .start()
        })
    };
    let config = Arc::new(config);
    let refresher = {
        let (config, pools, backend) = (config.clone(), pools.clone(), backend.clone());
        let thread = ActorThread::default();
        supervise("refresh coordinator", move || {
            start_coordinator(&config, &pools, &backend, &thread)
        })
    };
    let (sync_config, sync_pools, sync_refresher) =
        (config.clone(), pools.clone(), refresher.clone());
    let sync_thread = ActorThread::default();
    let syncer = supervise("sync actor", move || {
        let (config, pools, refresher) = (
            sync_config.clone(),
            sync_pools.clone(),
            sync_refresher.clone(),
        );
        SyncActor::start_in_arbiter(&sync_thread.handle(), move |_| {
            SyncActor::new(config, pools, refresher)
        })
    });
    if let Backend::Redis(store) = &backend {
        watch_redis(store.clone(), syncer.clone());
    }
    Ok(Services {
        config,
        refresher,
        syncer,
        tiers,
        pools: Arc::new(handles),
        keys,
        registry,
        backend,
        admin_token,
        started: Instant::now(),
        store_owner: loaded.owner.map(Arc::new),
    })
}

/// Checks Redis twice a second: a broken connection is re-made before a request meets it,
/// and when Redis comes back — after an outage, or restarted so quickly that no check saw
/// it down (its run id changed) — the accounts are synced into it again at once.
fn watch_redis(store: RedisStore, syncer: Restartable<SyncActor>) {
    actix::spawn(async move {
        let mut was_down = false;
        // Learn the run id at once: a restart right after start-up must not go unseen.
        let mut known_run: Option<String> = store.run_id().await.ok();
        loop {
            actix_rt::time::sleep(std::time::Duration::from_millis(500)).await;
            match store.run_id().await {
                Ok(run) => {
                    let restarted = known_run.as_ref().is_some_and(|known| *known != run);
                    if was_down || restarted {
                        log::info!("Redis is reachable again; syncing accounts");
                        syncer.addr().do_send(crate::actors::sync::SyncNow);
                    }
                    was_down = false;
                    known_run = Some(run);
                }
                Err(e) => {
                    if !was_down {
                        log::error!("Redis unreachable: {e}; requests get 503 until it returns");
                    }
                    was_down = true;
                }
            }
        }
    });
}
