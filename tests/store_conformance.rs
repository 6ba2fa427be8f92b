//! SPEC §5, §6, §11 ("both backends pass one shared conformance test suite"): every scenario
//! below runs once against the embedded store (a PoolActor holding the pool in memory with a
//! temporary SQLite writer) and once against Redis (a PoolActor forwarding to a RedisPool on
//! the test's own redis-server, unique prefix). Both are set up the same way: accounts arrive
//! through `SyncAccounts`, keys are minted with `KeyRecord::mint` and stored.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use actix::Actor;
use claude_route::actors::pool::{
    Admission, BindFixed, BlacklistAccount, GetCredential, KeyDetails, Outcome, PoolActor,
    PoolBackend, PoolError, PoolHandle, PoolState, PoolView, RecoverAccount, Release, Settle,
    SyncAccounts, SyncDelta, UpdateCredential, ViewPool,
};
use claude_route::actors::restartable::supervise;
use claude_route::config::{HumanDuration, TierConfig, TierLimits};
use claude_route::domain::{Credential, Millis, ModelFamily, Tier};
use claude_route::store::redis::RedisStore;
use claude_route::store::{KeyRecord, SqliteStore, StoreWriter, Usage, WriteOp};
use common::now_ms;
use common::redis_server::RedisServer;
use futures_util::future::join_all;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

const TIER: &str = "high";
const HOUR: Millis = 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Embedded,
    Redis,
}

/// The `high` tier with `slots` per account, a sonnet limit (None: unlimited) and a window.
fn tier(slots: u32, sonnet_limit: Option<u32>, window: Duration) -> Tier {
    Tier::from_config(
        TIER,
        &TierConfig {
            slots,
            families: vec!["opus".into(), "sonnet".into(), "other".into()],
            limits: TierLimits {
                opus: None,
                sonnet: sonnet_limit,
                other: None,
            },
            window: HumanDuration(window),
            key_days: 30,
        },
    )
}

fn five_hours() -> Duration {
    Duration::from_secs(5 * 3600)
}

/// A credential whose tokens name the account and its expiry (so versions differ).
fn cred(name: &str, expires_at: Millis) -> Credential {
    Credential {
        access_token: format!("sk-ant-oat01-{name}-{expires_at}"),
        refresh_token: Some(format!("sk-ant-ort01-{name}-{expires_at}")),
        expires_at: Some(expires_at),
    }
}

/// One pool of the `high` tier, on either backend: admission and settling through the
/// handle the request path uses, everything else through its PoolActor.
struct Store {
    kind: Kind,
    pool: PoolHandle,
    writer: Option<StoreWriter>,
    redis: Option<RedisStore>,
    _redis_server: Option<RedisServer>,
    _dir: tempfile::TempDir,
}

impl Store {
    async fn start(kind: Kind, tier: Tier) -> Store {
        /// The tier's handle, its actor supervised as `serve` runs it.
        fn supervised_pool(backend: PoolBackend) -> PoolHandle {
            let actor_backend = backend.clone();
            let addr = supervise("pool", move || {
                PoolActor::new(actor_backend.clone()).start()
            });
            PoolHandle::new(addr, backend)
        }

        let dir = tempfile::Builder::new()
            .prefix("claude-route-conformance")
            .tempdir()
            .expect("tempdir");
        match kind {
            Kind::Embedded => {
                let sqlite =
                    SqliteStore::open(&dir.path().join("store.db")).expect("open SQLite store");
                let writer = StoreWriter::start(sqlite).expect("start store writer");
                let backend = PoolBackend::embedded(PoolState::new(tier), writer.clone());
                let pool = supervised_pool(backend);
                Store {
                    kind,
                    pool,
                    writer: Some(writer),
                    redis: None,
                    _redis_server: None,
                    _dir: dir,
                }
            }
            Kind::Redis => {
                let server = RedisServer::start();
                let store =
                    RedisStore::open(server.url(), server.prefix()).expect("open Redis store");
                let backend = PoolBackend::Redis(store.pool(tier));
                let pool = supervised_pool(backend);
                Store {
                    kind,
                    pool,
                    writer: None,
                    redis: Some(store),
                    _redis_server: Some(server),
                    _dir: dir,
                }
            }
        }
    }

    /// A store with `names` synced in (tokens valid for an hour).
    async fn with_accounts(kind: Kind, tier: Tier, names: &[&str]) -> Store {
        let store = Store::start(kind, tier).await;
        let exp = now_ms() + HOUR;
        let delta = store
            .sync(names.iter().map(|n| (*n, cred(n, exp))).collect())
            .await;
        let added: BTreeSet<String> = delta.added.iter().cloned().collect();
        let want: BTreeSet<String> = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(added, want, "[{kind:?}] first sync adds every account");
        store
    }

    async fn sync(&self, files: Vec<(&str, Credential)>) -> SyncDelta {
        self.sync_with_unreadable(files, &[]).await
    }

    /// A sync where the files of `unreadable` are there but cannot be parsed.
    async fn sync_with_unreadable(
        &self,
        files: Vec<(&str, Credential)>,
        unreadable: &[&str],
    ) -> SyncDelta {
        let files = files.into_iter().map(|(n, c)| (n.to_string(), c)).collect();
        let unreadable = unreadable.iter().map(|n| n.to_string()).collect();
        self.pool
            .addr()
            .send(SyncAccounts { files, unreadable })
            .await
            .expect("pool mailbox")
            .unwrap_or_else(|e| panic!("[{:?}] SyncAccounts failed: {e}", self.kind))
    }

    /// A new stored key of the tier (fixed to `fixed` when given).
    async fn key(&self, fixed: Option<&str>) -> Arc<KeyRecord> {
        let (_, record) = KeyRecord::mint(
            TIER,
            Some(30 * 24 * HOUR),
            fixed.map(str::to_string),
            String::new(),
            now_ms(),
        );
        if let Some(writer) = &self.writer {
            writer
                .write_durable(vec![WriteOp::InsertKey(Box::new(record.clone()))])
                .await
                .expect("store the key in SQLite");
        }
        if let Some(redis) = &self.redis {
            redis
                .insert_key(&record)
                .await
                .expect("store the key in Redis");
        }
        Arc::new(record)
    }

    async fn keys(&self, n: usize) -> Vec<Arc<KeyRecord>> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.key(None).await);
        }
        out
    }

    async fn admit_family(
        &self,
        key: &Arc<KeyRecord>,
        family: Option<ModelFamily>,
    ) -> Result<Admission, PoolError> {
        self.pool.admit(key, family).await
    }

    /// A counted Sonnet request.
    async fn admit(&self, key: &Arc<KeyRecord>) -> Result<Admission, PoolError> {
        self.admit_family(key, Some(ModelFamily::Sonnet)).await
    }

    /// A counted Sonnet request that must be admitted; returns it.
    async fn admit_ok(&self, key: &Arc<KeyRecord>) -> Admission {
        self.admit(key)
            .await
            .unwrap_or_else(|e| panic!("[{:?}] admission refused: {e:?}", self.kind))
    }

    async fn settle(&self, key: &Arc<KeyRecord>, a: &Admission, outcome: Outcome) {
        let settle = Settle {
            key: key.clone(),
            account: a.account.clone(),
            family: a.family.unwrap_or(ModelFamily::Sonnet),
            window_started: a.grant.map(|g| g.started_at),
            count_id: a.count_id.clone(),
            outcome,
        };
        match self.kind {
            Kind::Embedded => self.pool.settle(settle),
            // Redis settles through the actor; its answer says the script has run.
            Kind::Redis => self.pool.addr().send(settle).await.expect("pool mailbox"),
        }
    }

    async fn release(&self, key: &KeyRecord) {
        self.pool
            .addr()
            .send(Release {
                key_id: key.id.clone(),
            })
            .await
            .expect("pool mailbox");
    }

    async fn bind_fixed(&self, key: &KeyRecord, account: &str) -> Result<(), PoolError> {
        self.pool
            .addr()
            .send(BindFixed {
                key_id: key.id.clone(),
                account: account.to_string(),
            })
            .await
            .expect("pool mailbox")
    }

    async fn blacklist(&self, account: &str) -> bool {
        self.pool
            .addr()
            .send(BlacklistAccount {
                account: account.to_string(),
                reason: "test: revoked".to_string(),
            })
            .await
            .expect("pool mailbox")
    }

    async fn recover(&self, account: &str) -> bool {
        self.pool
            .addr()
            .send(RecoverAccount {
                account: account.to_string(),
            })
            .await
            .expect("pool mailbox")
    }

    async fn update_credential(&self, account: &str, credential: Credential) -> bool {
        self.pool
            .addr()
            .send(UpdateCredential {
                account: account.to_string(),
                credential,
            })
            .await
            .expect("pool mailbox")
    }

    async fn credential(&self, account: &str) -> Option<Credential> {
        self.pool
            .addr()
            .send(GetCredential {
                account: account.to_string(),
            })
            .await
            .expect("pool mailbox")
            .map(|c| (*c).clone())
    }

    async fn view(&self) -> PoolView {
        self.pool
            .addr()
            .send(ViewPool)
            .await
            .expect("pool mailbox")
            .unwrap_or_else(|e| panic!("[{:?}] ViewPool failed: {e}", self.kind))
    }

    /// `(slots used, capacity)` per account, from the pool view.
    async fn slots(&self) -> BTreeMap<String, (u32, u32)> {
        self.view()
            .await
            .accounts
            .iter()
            .map(|a| (a.name.clone(), (a.slots_used, a.slots)))
            .collect()
    }

    async fn key_details(&self, keys: &[&KeyRecord]) -> Vec<(Option<String>, Usage)> {
        self.pool
            .addr()
            .send(KeyDetails {
                key_ids: keys.iter().map(|k| k.id.clone()).collect(),
            })
            .await
            .expect("pool mailbox")
    }
}

fn slots_map(entries: &[(&str, u32, u32)]) -> BTreeMap<String, (u32, u32)> {
    entries
        .iter()
        .map(|(n, used, cap)| (n.to_string(), (*used, *cap)))
        .collect()
}

fn account_of(a: &Admission) -> String {
    a.account.to_string()
}

fn usage(input: u64, output: u64, cache_creation: u64, cache_read: u64) -> Usage {
    Usage {
        requests: 0,
        input_tokens: input,
        output_tokens: output,
        cache_creation_input_tokens: cache_creation,
        cache_read_input_tokens: cache_read,
    }
}

fn at_capacity() -> PoolError {
    PoolError::AtCapacity {
        tier: "High".to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------------------

/// §5: a new key goes to the usable account with the fewest used slots; ties go to the
/// account name, ascending (not to the order the accounts arrived in).
async fn least_loaded_binding_with_ties_by_name(kind: Kind) {
    let s = Store::with_accounts(kind, tier(2, None, five_hours()), &["b-acc", "a-acc"]).await;
    let keys = s.keys(5).await;
    let want = [("a-acc", 1), ("b-acc", 1), ("a-acc", 2), ("b-acc", 2)];
    for (i, (key, (account, used))) in keys.iter().zip(want).enumerate() {
        let a = s.admit_ok(key).await;
        assert_eq!(account_of(&a), account, "[{kind:?}] key {i}");
        assert!(
            a.newly_bound,
            "[{kind:?}] key {i} is bound by its first request"
        );
        assert_eq!((a.slots_used, a.slots), (used, 2), "[{kind:?}] key {i}");
    }
    assert_eq!(
        s.admit(&keys[4]).await.unwrap_err(),
        at_capacity(),
        "[{kind:?}]"
    );

    // Load beats the name: a fixed key on a-acc makes b-acc the least loaded one.
    let s = Store::with_accounts(kind, tier(3, None, five_hours()), &["a-acc", "b-acc"]).await;
    let fixed = s.key(Some("a-acc")).await;
    s.bind_fixed(&fixed, "a-acc").await.expect("bind_fixed");
    let keys = s.keys(3).await;
    let mut got = Vec::new();
    for key in &keys {
        got.push(account_of(&s.admit_ok(key).await));
    }
    assert_eq!(
        got,
        ["b-acc", "a-acc", "b-acc"],
        "[{kind:?}] least loaded first, then ties by name"
    );
    assert_eq!(
        s.slots().await,
        slots_map(&[("a-acc", 2, 3), ("b-acc", 2, 3)]),
        "[{kind:?}]"
    );
}

/// §5, §12: when every usable account is full a new key gets AtCapacity (and is not bound);
/// keys already bound keep working; a tier without usable accounts says NoAccounts.
async fn capacity_error_when_full(kind: Kind) {
    let s = Store::with_accounts(kind, tier(2, None, five_hours()), &["a1"]).await;
    let keys = s.keys(3).await;
    s.admit_ok(&keys[0]).await;
    s.admit_ok(&keys[1]).await;
    for _ in 0..2 {
        assert_eq!(
            s.admit(&keys[2]).await.unwrap_err(),
            at_capacity(),
            "[{kind:?}]"
        );
    }
    assert_eq!(s.slots().await, slots_map(&[("a1", 2, 2)]), "[{kind:?}]");
    let again = s.admit_ok(&keys[0]).await;
    assert_eq!(account_of(&again), "a1");
    assert!(!again.newly_bound, "[{kind:?}]");

    // The only account blacklisted: no usable account at all.
    assert!(s.blacklist("a1").await, "[{kind:?}]");
    assert_eq!(
        s.admit(&keys[2]).await.unwrap_err(),
        PoolError::NoAccounts {
            tier: "High".to_string()
        },
        "[{kind:?}]"
    );

    // An empty tier.
    let empty = Store::start(kind, tier(2, None, five_hours())).await;
    let k = empty.key(None).await;
    assert_eq!(
        empty.admit(&k).await.unwrap_err(),
        PoolError::NoAccounts {
            tier: "High".to_string()
        },
        "[{kind:?}]"
    );
}

/// §5: the binding is permanent — the key stays where it was bound even when another
/// account becomes less loaded.
async fn a_key_is_bound_once_and_stays_bound(kind: Kind) {
    let s = Store::with_accounts(kind, tier(3, None, five_hours()), &["a", "b"]).await;
    let keys = s.keys(3).await;
    let first = s.admit_ok(&keys[0]).await;
    assert_eq!(account_of(&first), "a");
    assert!(first.newly_bound);
    assert_eq!(account_of(&s.admit_ok(&keys[1]).await), "b");
    assert_eq!(account_of(&s.admit_ok(&keys[2]).await), "a");
    // a: 2 keys, b: 1 key. keys[0] stays on a.
    for i in 0..5 {
        let a = s.admit_ok(&keys[0]).await;
        assert_eq!(account_of(&a), "a", "[{kind:?}] request {i}");
        assert!(!a.newly_bound, "[{kind:?}] request {i} must not bind again");
        assert_eq!(a.slots_used, 2, "[{kind:?}]");
    }
    // Uncounted calls (count_tokens, models) use the same account.
    let unc = s.admit_family(&keys[0], None).await.expect("uncounted");
    assert_eq!(account_of(&unc), "a");
    assert!(
        unc.grant.is_none(),
        "[{kind:?}] uncounted calls get no grant"
    );
    assert_eq!(
        s.slots().await,
        slots_map(&[("a", 2, 3), ("b", 1, 3)]),
        "[{kind:?}]"
    );
    let details = s.key_details(&[&keys[0], &keys[1], &keys[2]]).await;
    let bound: Vec<Option<String>> = details.into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        bound,
        [Some("a".into()), Some("b".into()), Some("a".into())],
        "[{kind:?}]"
    );
}

/// §5: 50 simultaneous first requests of 50 keys on 2 accounts × 7 slots bind exactly 14
/// keys, 7 per account; the others get AtCapacity; a second round changes nothing.
async fn fifty_concurrent_first_admits_bind_exactly_fourteen(kind: Kind) {
    let s = Store::with_accounts(kind, tier(7, None, five_hours()), &["a1", "a2"]).await;
    let keys = s.keys(50).await;
    let results = join_all(keys.iter().map(|k| s.admit(k))).await;
    let mut per_account: BTreeMap<String, usize> = BTreeMap::new();
    let mut bound: BTreeMap<String, String> = BTreeMap::new();
    for (key, r) in keys.iter().zip(&results) {
        match r {
            Ok(a) => {
                assert!(a.newly_bound, "[{kind:?}]");
                assert!(a.slots_used <= 7, "[{kind:?}] slots_used {}", a.slots_used);
                *per_account.entry(account_of(a)).or_default() += 1;
                bound.insert(key.id.clone(), account_of(a));
            }
            Err(e) => assert_eq!(*e, at_capacity(), "[{kind:?}]"),
        }
    }
    assert_eq!(bound.len(), 14, "[{kind:?}] exactly 2 × 7 keys bound");
    assert_eq!(
        per_account,
        [("a1".to_string(), 7), ("a2".to_string(), 7)]
            .into_iter()
            .collect(),
        "[{kind:?}]"
    );
    assert_eq!(
        s.slots().await,
        slots_map(&[("a1", 7, 7), ("a2", 7, 7)]),
        "[{kind:?}]"
    );

    let again = join_all(keys.iter().map(|k| s.admit(k))).await;
    for (key, r) in keys.iter().zip(&again) {
        match (bound.get(&key.id), r) {
            (Some(acc), Ok(a)) => {
                assert_eq!(&account_of(a), acc, "[{kind:?}] a key never moves");
                assert!(!a.newly_bound, "[{kind:?}]");
            }
            (None, Err(e)) => assert_eq!(*e, at_capacity(), "[{kind:?}]"),
            (want, got) => panic!("[{kind:?}] key bound to {want:?} now gets {got:?}"),
        }
    }
    assert_eq!(
        s.slots().await,
        slots_map(&[("a1", 7, 7), ("a2", 7, 7)]),
        "[{kind:?}]"
    );
}

/// §6: 100 simultaneous requests of one key against a limit of 10 admit exactly 10.
async fn hundred_concurrent_admits_against_a_limit_of_ten(kind: Kind) {
    let s = Store::with_accounts(kind, tier(3, Some(10), five_hours()), &["a1"]).await;
    let key = s.key(None).await;
    let results = join_all((0..100).map(|_| s.admit(&key))).await;
    let mut remaining = BTreeSet::new();
    let mut refused = 0;
    for r in &results {
        match r {
            Ok(a) => {
                let g = a.grant.expect("a counted request has a grant");
                assert_eq!(g.limit, 10, "[{kind:?}]");
                remaining.insert(g.remaining);
            }
            Err(PoolError::RateLimited { family, limit, .. }) => {
                assert_eq!(*family, ModelFamily::Sonnet, "[{kind:?}]");
                assert_eq!(*limit, 10, "[{kind:?}]");
                refused += 1;
            }
            Err(e) => panic!("[{kind:?}] unexpected refusal {e:?}"),
        }
    }
    assert_eq!(
        remaining,
        (0..10).collect::<BTreeSet<u32>>(),
        "[{kind:?}] exactly 10 admitted, each with its own count"
    );
    assert_eq!(refused, 90, "[{kind:?}]");
    // Other families have their own windows (opus: unlimited in this tier).
    let opus = s
        .admit_family(&key, Some(ModelFamily::Opus))
        .await
        .expect("opus is not limited here");
    assert!(opus.grant.is_none(), "[{kind:?}]");
}

/// §6: a refunded request is given back to its window; a refund of another window is not.
async fn refund_gives_the_request_back(kind: Kind) {
    let s = Store::with_accounts(kind, tier(3, Some(2), five_hours()), &["a1"]).await;
    let key = s.key(None).await;
    let first = s.admit_ok(&key).await;
    assert_eq!(first.grant.unwrap().remaining, 1, "[{kind:?}]");
    let second = s.admit_ok(&key).await;
    assert_eq!(second.grant.unwrap().remaining, 0, "[{kind:?}]");
    assert!(
        matches!(s.admit(&key).await, Err(PoolError::RateLimited { .. })),
        "[{kind:?}] window full"
    );

    // Served: nothing comes back.
    s.settle(&key, &first, Outcome::Served(usage(1, 1, 0, 0)))
        .await;
    assert!(
        matches!(s.admit(&key).await, Err(PoolError::RateLimited { .. })),
        "[{kind:?}] a served request is not given back"
    );

    // Refund: one request comes back, exactly one.
    s.settle(&key, &second, Outcome::Refund).await;
    let third = s.admit_ok(&key).await;
    assert_eq!(third.grant.unwrap().remaining, 0, "[{kind:?}]");
    assert_eq!(
        third.grant.unwrap().started_at,
        first.grant.unwrap().started_at,
        "[{kind:?}] the same window"
    );
    assert!(
        matches!(s.admit(&key).await, Err(PoolError::RateLimited { .. })),
        "[{kind:?}] only one request came back"
    );

    // A refund naming a window that is not the current one changes nothing (on Redis such a
    // count also has a name this window never held).
    let mut stale = third.clone();
    if let Some(g) = stale.grant.as_mut() {
        g.started_at -= 1;
    }
    if stale.count_id.is_some() {
        stale.count_id = Some(Arc::from("a-count-of-another-window"));
    }
    s.settle(&key, &stale, Outcome::Refund).await;
    assert!(
        matches!(s.admit(&key).await, Err(PoolError::RateLimited { .. })),
        "[{kind:?}] a refund of another window must not free this one"
    );
}

/// §6: a window lasts its configured length (300 ms here); the next request after it opens
/// a new one; a late refund of the old window does not touch the new one.
async fn window_resets_after_the_window(kind: Kind) {
    let window = Duration::from_millis(300);
    let s = Store::with_accounts(kind, tier(3, Some(2), window), &["a1"]).await;
    let key = s.key(None).await;
    let first = s.admit_ok(&key).await;
    let g1 = first.grant.unwrap();
    assert_eq!(g1.resets_at, g1.started_at + 300, "[{kind:?}]");
    s.admit_ok(&key).await;
    let resets_at = match s.admit(&key).await {
        Err(PoolError::RateLimited { resets_at, .. }) => resets_at,
        other => panic!("[{kind:?}] expected RateLimited, got {other:?}"),
    };
    assert_eq!(resets_at, g1.started_at + 300, "[{kind:?}] reset time");
    let wait = (resets_at - now_ms()).max(0) as u64 + 30;
    common::sleep(Duration::from_millis(wait)).await;

    let fresh = s.admit_ok(&key).await;
    let g2 = fresh.grant.unwrap();
    assert!(
        g2.started_at >= resets_at,
        "[{kind:?}] a new window opens after the old one ended"
    );
    assert_eq!(g2.remaining, 1, "[{kind:?}]");
    // Refunding the first window's request now must not free the new window.
    s.settle(&key, &first, Outcome::Refund).await;
    assert_eq!(s.admit_ok(&key).await.grant.unwrap().remaining, 0);
    assert!(
        matches!(s.admit(&key).await, Err(PoolError::RateLimited { .. })),
        "[{kind:?}] the old window's refund must not count in the new one"
    );
}

/// §5, §8: a blacklisted account's keys re-bind on their next request (least loaded usable
/// account); recovery makes the account usable again; bound keys do not move back.
async fn blacklist_rebinds_and_recover_lifts(kind: Kind) {
    let s = Store::with_accounts(kind, tier(3, None, five_hours()), &["a", "b"]).await;
    let keys = s.keys(3).await;
    assert_eq!(account_of(&s.admit_ok(&keys[0]).await), "a");

    assert!(s.blacklist("a").await, "[{kind:?}]");
    assert!(!s.blacklist("nope").await, "[{kind:?}] unknown account");
    let view = s.view().await;
    let a = view.accounts.iter().find(|x| x.name == "a").unwrap();
    assert_eq!(a.status, "blacklisted", "[{kind:?}]");
    assert_eq!(a.blacklist_reason.as_deref(), Some("test: revoked"));
    assert!(a.blacklisted_since.is_some(), "[{kind:?}]");

    let moved = s.admit_ok(&keys[0]).await;
    assert_eq!(account_of(&moved), "b", "[{kind:?}] re-bound");
    assert!(moved.newly_bound, "[{kind:?}]");
    assert_eq!(
        s.slots().await,
        slots_map(&[("a", 0, 3), ("b", 1, 3)]),
        "[{kind:?}] the slot moved with the key"
    );
    assert_eq!(account_of(&s.admit_ok(&keys[1]).await), "b", "[{kind:?}]");

    assert!(s.recover("a").await, "[{kind:?}]");
    assert!(!s.recover("nope").await, "[{kind:?}] unknown account");
    let view = s.view().await;
    let a = view.accounts.iter().find(|x| x.name == "a").unwrap();
    assert_eq!(a.status, "active", "[{kind:?}]");
    assert_eq!(a.blacklist_reason, None, "[{kind:?}]");
    assert_eq!(account_of(&s.admit_ok(&keys[2]).await), "a", "[{kind:?}]");
    let stays = s.admit_ok(&keys[0]).await;
    assert_eq!(account_of(&stays), "b", "[{kind:?}] no rotation back");
    assert!(!stays.newly_bound, "[{kind:?}]");
}

/// §4, §5: a fixed key takes its slot at once; bind_fixed refuses a full or unknown
/// account; a fixed key is never moved (FixedAccountUnavailable while blacklisted).
async fn fixed_keys(kind: Kind) {
    let s = Store::with_accounts(kind, tier(2, None, five_hours()), &["a", "b"]).await;
    let f1 = s.key(Some("a")).await;
    s.bind_fixed(&f1, "a").await.expect("bind_fixed f1");
    assert_eq!(
        s.slots().await,
        slots_map(&[("a", 1, 2), ("b", 0, 2)]),
        "[{kind:?}] a fixed key takes its slot before any request"
    );
    assert_eq!(account_of(&s.admit_ok(&f1).await), "a");
    let f2 = s.key(Some("a")).await;
    s.bind_fixed(&f2, "a").await.expect("bind_fixed f2");
    let f3 = s.key(Some("a")).await;
    assert_eq!(
        s.bind_fixed(&f3, "a").await.unwrap_err(),
        PoolError::AccountFull {
            account: "a".into(),
            slots: 2
        },
        "[{kind:?}]"
    );
    assert_eq!(
        s.bind_fixed(&f3, "nope").await.unwrap_err(),
        PoolError::UnknownAccount {
            tier: TIER.into(),
            account: "nope".into()
        },
        "[{kind:?}]"
    );
    assert_eq!(
        s.slots().await,
        slots_map(&[("a", 2, 2), ("b", 0, 2)]),
        "[{kind:?}] refusals take no slot"
    );

    assert!(s.blacklist("a").await);
    assert_eq!(
        s.admit(&f1).await.unwrap_err(),
        PoolError::FixedAccountUnavailable {
            account: "a".into()
        },
        "[{kind:?}]"
    );
    assert_eq!(
        s.slots().await,
        slots_map(&[("a", 2, 2), ("b", 0, 2)]),
        "[{kind:?}] a fixed key is never moved"
    );
    let pool_key = s.key(None).await;
    assert_eq!(account_of(&s.admit_ok(&pool_key).await), "b");

    assert!(s.recover("a").await);
    assert_eq!(account_of(&s.admit_ok(&f1).await), "a", "[{kind:?}]");
    assert_eq!(account_of(&s.admit_ok(&f2).await), "a", "[{kind:?}]");
}

/// §5: no sequence pushes an account past its capacity. A fixed key's account goes away
/// (its file removed: slots and bindings with it) and comes back; a pool key takes the free
/// slot first: the fixed key is refused, not bound beyond capacity.
async fn a_returning_account_is_not_overfilled_by_its_fixed_key(kind: Kind) {
    let s = Store::with_accounts(kind, tier(1, None, five_hours()), &["a"]).await;
    let fixed = s.key(Some("a")).await;
    s.bind_fixed(&fixed, "a").await.expect("bind_fixed");
    assert_eq!(s.sync(vec![]).await.removed, vec!["a".to_string()]);
    let back = s.sync(vec![("a", cred("a", now_ms() + HOUR))]).await;
    assert_eq!(back.added, vec!["a".to_string()], "[{kind:?}]");
    let pool_key = s.key(None).await;
    assert_eq!(account_of(&s.admit_ok(&pool_key).await), "a", "[{kind:?}]");
    assert_eq!(
        s.admit(&fixed).await.unwrap_err(),
        PoolError::FixedAccountFull {
            account: "a".into()
        },
        "[{kind:?}]"
    );
    assert_eq!(s.slots().await, slots_map(&[("a", 1, 1)]), "[{kind:?}]");
}

/// §4: a released key (expired/revoked) frees its slot for another key.
async fn release_frees_the_slot(kind: Kind) {
    let s = Store::with_accounts(kind, tier(2, None, five_hours()), &["a1"]).await;
    let keys = s.keys(3).await;
    s.admit_ok(&keys[0]).await;
    s.admit_ok(&keys[1]).await;
    assert_eq!(s.admit(&keys[2]).await.unwrap_err(), at_capacity());

    s.release(&keys[0]).await;
    assert_eq!(
        s.slots().await,
        slots_map(&[("a1", 1, 2)]),
        "[{kind:?}] released"
    );
    let details = s.key_details(&[&keys[0]]).await;
    assert_eq!(details[0].0, None, "[{kind:?}] no binding left");
    // Releasing a key that holds no slot changes nothing.
    let stray = s.key(None).await;
    s.release(&stray).await;
    s.release(&keys[0]).await;
    assert_eq!(s.slots().await, slots_map(&[("a1", 1, 2)]), "[{kind:?}]");

    let a = s.admit_ok(&keys[2]).await;
    assert!(a.newly_bound, "[{kind:?}]");
    assert_eq!(
        (a.slots_used, a.slots),
        (2, 2),
        "[{kind:?}] the freed slot is used"
    );
}

/// §10: sync adds, updates (file newer), reports the store's newer credential for a
/// rewrite, and removes accounts whose file is gone with everything held for them.
async fn sync_counts(kind: Kind) {
    let t1 = now_ms() + HOUR;
    let t2 = t1 + HOUR;
    let s = Store::start(kind, tier(3, None, five_hours())).await;
    let d = s
        .sync(vec![("a", cred("a", t1)), ("b", cred("b", t1))])
        .await;
    assert_eq!(d.added, ["a", "b"], "[{kind:?}]");
    assert!(d.updated.is_empty() && d.removed.is_empty() && d.rewrite.is_empty());

    let d = s
        .sync(vec![("a", cred("a", t1)), ("b", cred("b", t1))])
        .await;
    assert!(
        d.added.is_empty() && d.updated.is_empty() && d.removed.is_empty(),
        "[{kind:?}] nothing changed: {d:?}"
    );
    assert!(d.rewrite.is_empty(), "[{kind:?}]");

    // The file is newer: taken.
    let d = s
        .sync(vec![("a", cred("a", t2)), ("b", cred("b", t1))])
        .await;
    assert_eq!(d.updated, ["a"], "[{kind:?}]");
    assert!(d.added.is_empty() && d.removed.is_empty() && d.rewrite.is_empty());
    assert_eq!(s.credential("a").await, Some(cred("a", t2)), "[{kind:?}]");

    // Keys on both accounts; then b's file disappears and a's file is older than the store.
    let keys = s.keys(2).await;
    assert_eq!(account_of(&s.admit_ok(&keys[0]).await), "a");
    assert_eq!(account_of(&s.admit_ok(&keys[1]).await), "b");
    let d = s
        .sync(vec![("a", cred("a", t1)), ("c", cred("c", t1))])
        .await;
    assert_eq!(d.added, ["c"], "[{kind:?}]");
    assert_eq!(d.removed, ["b"], "[{kind:?}]");
    assert_eq!(d.updated, ["a"], "[{kind:?}] store newer counts as updated");
    assert_eq!(
        d.rewrite,
        [("a".to_string(), cred("a", t2))],
        "[{kind:?}] the file gets the store's newer credential"
    );
    assert_eq!(
        s.credential("a").await,
        Some(cred("a", t2)),
        "[{kind:?}] the older file did not win"
    );
    assert_eq!(s.credential("b").await, None, "[{kind:?}] b is forgotten");
    assert_eq!(
        s.slots().await,
        slots_map(&[("a", 1, 3), ("c", 0, 3)]),
        "[{kind:?}]"
    );
    // keys[1] lost its account: it re-binds on its next request.
    let moved = s.admit_ok(&keys[1]).await;
    assert_eq!(account_of(&moved), "c", "[{kind:?}]");
    assert!(moved.newly_bound, "[{kind:?}]");
}

/// §2, §10: an account whose file is there but cannot be parsed is not gone: a sync keeps
/// it with its keys, credential and blacklist entry; only a missing file removes it.
async fn unreadable_file_keeps_the_account(kind: Kind) {
    let s = Store::with_accounts(kind, tier(3, None, five_hours()), &["a", "b", "c"]).await;
    let key = s.key(None).await;
    assert_eq!(account_of(&s.admit_ok(&key).await), "a", "[{kind:?}]");
    assert!(s.blacklist("b").await, "[{kind:?}]");
    let (held, c) = (s.credential("a").await, s.credential("c").await.unwrap());

    let d = s
        .sync_with_unreadable(vec![("c", c.clone())], &["a", "b"])
        .await;
    assert!(
        d.added.is_empty() && d.updated.is_empty() && d.removed.is_empty(),
        "[{kind:?}] nothing changes: {d:?}"
    );
    assert!(d.rewrite.is_empty(), "[{kind:?}] {d:?}");
    assert_eq!(s.credential("a").await, held, "[{kind:?}] credential kept");
    let again = s.admit_ok(&key).await;
    assert_eq!(account_of(&again), "a", "[{kind:?}] the key stays bound");
    assert!(!again.newly_bound, "[{kind:?}]");
    let view = s.view().await;
    let b = view.accounts.iter().find(|x| x.name == "b").unwrap();
    assert_eq!(b.status, "blacklisted", "[{kind:?}] blacklist kept");
    assert_eq!(
        s.slots().await,
        slots_map(&[("a", 1, 3), ("b", 0, 3), ("c", 0, 3)]),
        "[{kind:?}]"
    );

    let d = s.sync(vec![("c", c)]).await;
    assert_eq!(d.removed, ["a", "b"], "[{kind:?}] files gone: removed");
}

/// §2, §10: a setup-token file (no expiry) with a token the store does not hold is the
/// operator's new credential: taken, never overwritten with the stored one. A file without
/// expiry holding the stored token is merely older: it gets the stored credential back.
async fn setup_token_file_supersedes_the_stored_credential(kind: Kind) {
    let t1 = now_ms() + HOUR;
    let s = Store::start(kind, tier(3, None, five_hours())).await;
    s.sync(vec![("a", cred("a", t1))]).await;
    let setup = Credential {
        access_token: "sk-ant-oat01-a-setup".into(),
        refresh_token: None,
        expires_at: None,
    };
    let d = s.sync(vec![("a", setup.clone())]).await;
    assert_eq!(d.updated, ["a"], "[{kind:?}] {d:?}");
    assert!(d.rewrite.is_empty(), "[{kind:?}] the file is not rewritten");
    assert_eq!(s.credential("a").await, Some(setup.clone()), "[{kind:?}]");
    let d = s.sync(vec![("a", setup)]).await;
    assert!(
        d.updated.is_empty() && d.rewrite.is_empty(),
        "[{kind:?}] {d:?}"
    );

    // A later OAuth login in the file wins over the setup token.
    let t2 = t1 + HOUR;
    let d = s.sync(vec![("a", cred("a", t2))]).await;
    assert_eq!(d.updated, ["a"], "[{kind:?}] {d:?}");
    assert_eq!(s.credential("a").await, Some(cred("a", t2)), "[{kind:?}]");
    let bare = Credential {
        refresh_token: None,
        expires_at: None,
        ..cred("a", t2)
    };
    let d = s.sync(vec![("a", bare)]).await;
    assert_eq!(
        d.rewrite,
        [("a".to_string(), cred("a", t2))],
        "[{kind:?}] same token without expiry: the store's credential goes back to the file"
    );
    assert_eq!(s.credential("a").await, Some(cred("a", t2)), "[{kind:?}]");
}

/// §9: no credential update ever puts an older credential over a newer one.
async fn credential_never_older_over_newer(kind: Kind) {
    let t1 = now_ms() + HOUR;
    let (t0, t2) = (t1 - 60_000, t1 + HOUR);
    let s = Store::start(kind, tier(3, None, five_hours())).await;
    s.sync(vec![("a", cred("a", t1))]).await;

    assert!(!s.update_credential("a", cred("a", t0)).await, "[{kind:?}]");
    assert_eq!(s.credential("a").await, Some(cred("a", t1)), "[{kind:?}]");
    let same_expiry = Credential {
        access_token: "sk-ant-oat01-other".into(),
        ..cred("a", t1)
    };
    assert!(
        !s.update_credential("a", same_expiry).await,
        "[{kind:?}] not newer"
    );
    assert_eq!(s.credential("a").await, Some(cred("a", t1)), "[{kind:?}]");

    assert!(s.update_credential("a", cred("a", t2)).await, "[{kind:?}]");
    assert_eq!(s.credential("a").await, Some(cred("a", t2)), "[{kind:?}]");
    assert!(!s.update_credential("a", cred("a", t1)).await, "[{kind:?}]");
    assert_eq!(s.credential("a").await, Some(cred("a", t2)), "[{kind:?}]");

    let key = s.key(None).await;
    let a = s.admit_ok(&key).await;
    assert_eq!(
        *a.credential,
        cred("a", t2),
        "[{kind:?}] admissions carry the newest credential"
    );
    let view = s.view().await;
    assert_eq!(view.accounts[0].token_expires_at, Some(t2), "[{kind:?}]");
}

/// §6, §12: an account whose token has expired refuses admission with TokenExpired.
async fn expired_token_is_refused(kind: Kind) {
    let s = Store::start(kind, tier(3, None, five_hours())).await;
    s.sync(vec![("old", cred("old", now_ms() - 1_000))]).await;
    let key = s.key(None).await;
    match s.admit(&key).await {
        Err(PoolError::TokenExpired { account, .. }) => assert_eq!(account, "old"),
        other => panic!("[{kind:?}] expected TokenExpired, got {other:?}"),
    }
}

/// §12 (GET /admin/pool): the view shows slots used/capacity per account and tier, status,
/// token expiry, and the usage added by Settle(Served).
async fn view_shows_slots_and_usage(kind: Kind) {
    let exp = now_ms() + HOUR;
    let s = Store::start(kind, tier(3, None, five_hours())).await;
    s.sync(vec![("a", cred("a", exp)), ("b", cred("b", exp))])
        .await;
    let keys = s.keys(3).await;
    let k1 = s.admit_ok(&keys[0]).await;
    let k2 = s.admit_ok(&keys[1]).await;
    let k3 = s.admit_ok(&keys[2]).await;
    assert_eq!(
        [account_of(&k1), account_of(&k2), account_of(&k3)],
        ["a", "b", "a"]
    );
    s.settle(&keys[0], &k1, Outcome::Served(usage(100, 20, 5, 7)))
        .await;
    s.settle(&keys[2], &k3, Outcome::Served(usage(1, 2, 3, 4)))
        .await;
    s.settle(&keys[1], &k2, Outcome::Refund).await;

    let view = s.view().await;
    assert_eq!(view.tier, TIER, "[{kind:?}]");
    assert_eq!(
        (view.slots_used, view.capacity),
        (3, 6),
        "[{kind:?}] tier totals"
    );
    let a = view.accounts.iter().find(|x| x.name == "a").unwrap();
    let b = view.accounts.iter().find(|x| x.name == "b").unwrap();
    assert_eq!((a.slots_used, a.slots), (2, 3), "[{kind:?}]");
    assert_eq!((b.slots_used, b.slots), (1, 3), "[{kind:?}]");
    assert_eq!((a.status, b.status), ("active", "active"), "[{kind:?}]");
    assert_eq!(a.token_expires_at, Some(exp), "[{kind:?}]");
    assert!(a.refreshable, "[{kind:?}]");
    let want_a = Usage {
        requests: 2,
        ..usage(101, 22, 8, 11)
    };
    assert_eq!(a.usage, want_a, "[{kind:?}] account a usage");
    assert_eq!(
        b.usage,
        Usage::default(),
        "[{kind:?}] a refund adds no usage"
    );
    assert_eq!(view.usage, want_a, "[{kind:?}] tier usage");

    let details = s.key_details(&[&keys[0], &keys[1]]).await;
    assert_eq!(
        details[0],
        (
            Some("a".to_string()),
            Usage {
                requests: 1,
                ..usage(100, 20, 5, 7)
            }
        ),
        "[{kind:?}] key usage"
    );
    assert_eq!(
        details[1],
        (Some("b".to_string()), Usage::default()),
        "[{kind:?}]"
    );
}

macro_rules! conformance {
    ($($scenario:ident),* $(,)?) => {
        mod embedded {
            $(
                #[actix_rt::test]
                async fn $scenario() {
                    super::$scenario(super::Kind::Embedded).await;
                }
            )*
        }
        mod redis {
            $(
                #[actix_rt::test]
                async fn $scenario() {
                    super::$scenario(super::Kind::Redis).await;
                }
            )*
        }
    };
}

conformance!(
    least_loaded_binding_with_ties_by_name,
    capacity_error_when_full,
    a_key_is_bound_once_and_stays_bound,
    fifty_concurrent_first_admits_bind_exactly_fourteen,
    hundred_concurrent_admits_against_a_limit_of_ten,
    refund_gives_the_request_back,
    window_resets_after_the_window,
    blacklist_rebinds_and_recover_lifts,
    fixed_keys,
    a_returning_account_is_not_overfilled_by_its_fixed_key,
    release_frees_the_slot,
    sync_counts,
    unreadable_file_keeps_the_account,
    setup_token_file_supersedes_the_stored_credential,
    credential_never_older_over_newer,
    expired_token_is_refused,
    view_shows_slots_and_usage,
);

/// Redis only — an embedded admission never waits on anything that could lose its answer.
/// When Redis's answer to an admission is lost (a timeout; the client already has its 503),
/// the proxy withdraws it: whichever runs first in Redis, the admission or the withdrawal,
/// the request ends up counted zero times.
mod redis_withdrawn_admissions {
    use super::*;
    use claude_route::store::redis::RedisPool;

    const LIMIT: u32 = 2;

    async fn store() -> (Store, RedisPool) {
        let t = tier(3, Some(LIMIT), five_hours());
        let s = Store::with_accounts(Kind::Redis, t.clone(), &["a1"]).await;
        let pool = s.redis.as_ref().expect("a Redis store").pool(t);
        (s, pool)
    }

    fn remaining(a: &Admission) -> u32 {
        a.grant.expect("a counted admission").remaining
    }

    /// What the proxy does when Redis's answer to admission `count_id` was lost.
    async fn withdraw(pool: &RedisPool, key: &KeyRecord, count_id: &str) {
        pool.give_back(&key.id, ModelFamily::Sonnet, count_id)
            .await
            .expect("Redis answers");
    }

    /// A Sonnet admission sent straight to Redis with its count named `count_id`.
    async fn admit_named(
        pool: &RedisPool,
        key: &KeyRecord,
        count_id: &str,
    ) -> Result<Admission, PoolError> {
        pool.admit(
            key,
            Some(ModelFamily::Sonnet),
            now_ms(),
            Some(count_id.into()),
        )
        .await
    }

    #[actix_rt::test]
    async fn withdrawn_before_it_runs_the_admission_refuses_itself() {
        let (s, pool) = store().await;
        let key = s.key(None).await;
        withdraw(&pool, &key, "lost-1").await;
        let late = admit_named(&pool, &key, "lost-1").await;
        assert!(
            matches!(&late, Err(PoolError::Store(m)) if m.contains("withdrawn")),
            "a withdrawn admission must not run: {late:?}"
        );
        let next = s.admit_ok(&key).await;
        assert_eq!(
            remaining(&next),
            LIMIT - 1,
            "the late admission counted nothing"
        );
    }

    #[actix_rt::test]
    async fn withdrawn_after_it_ran_its_count_comes_back_once() {
        let (s, pool) = store().await;
        let key = s.key(None).await;
        let ran = admit_named(&pool, &key, "lost-2").await.expect("admitted");
        assert_eq!(remaining(&ran), LIMIT - 1);
        assert_eq!(ran.count_id.as_deref(), Some("lost-2"));

        withdraw(&pool, &key, "lost-2").await;
        let next = s.admit_ok(&key).await;
        assert_eq!(remaining(&next), LIMIT - 1, "the withdrawn count came back");

        // A second withdrawal of the same admission (its first answer lost too) gives
        // nothing more back.
        withdraw(&pool, &key, "lost-2").await;
        let last = s.admit_ok(&key).await;
        assert_eq!(remaining(&last), 0, "one count came back, not two");
    }

    #[actix_rt::test]
    async fn a_settled_count_is_not_given_back_by_a_withdrawal() {
        let (s, pool) = store().await;
        let key = s.key(None).await;
        let served = s.admit_ok(&key).await;
        let id = served
            .count_id
            .clone()
            .expect("Redis names each counted admission");
        s.settle(&key, &served, Outcome::Served(usage(1, 1, 0, 0)))
            .await;
        withdraw(&pool, &key, &id).await;
        let next = s.admit_ok(&key).await;
        assert_eq!(remaining(&next), 0, "a served request stays counted");
    }
}

/// Redis only — a served request's usage whose answer was lost (Redis timed out) is sent
/// again until Redis answers; it must land once however often it reached Redis.
mod redis_settles_once {
    use super::*;
    use claude_route::store::redis::RedisPool;

    /// A served Sonnet request's usage, settled under `settle_id`; true when it was added.
    async fn add(
        pool: &RedisPool,
        key: &KeyRecord,
        count_id: Option<&str>,
        settle_id: &str,
        sent: Usage,
    ) -> bool {
        pool.add_usage(
            &key.id,
            "a1",
            ModelFamily::Sonnet,
            count_id,
            settle_id,
            sent,
        )
        .await
        .expect("Redis answers")
    }

    #[actix_rt::test]
    async fn a_settle_sent_twice_adds_its_usage_once() {
        let t = tier(3, Some(2), five_hours());
        let s = Store::with_accounts(Kind::Redis, t.clone(), &["a1"]).await;
        let pool = s.redis.as_ref().expect("a Redis store").pool(t);
        let key = s.key(None).await;
        let served = s.admit_ok(&key).await;
        let count_id = served.count_id.as_deref();
        let sent = usage(10, 5, 2, 3);
        assert!(
            add(&pool, &key, count_id, "settle-1", sent).await,
            "the first settle adds"
        );
        assert!(
            !add(&pool, &key, count_id, "settle-1", sent).await,
            "the same settle sent again adds nothing"
        );
        let once = Usage {
            requests: 1,
            ..sent
        };
        assert_eq!(s.key_details(&[&key]).await[0].1, once, "key usage");
        assert_eq!(s.view().await.accounts[0].usage, once, "account usage");

        // Another request's settle (uncounted: no count name) still adds.
        assert!(
            add(&pool, &key, None, "settle-2", sent).await,
            "another settle adds"
        );
        let twice = Usage {
            requests: 2,
            ..usage(20, 10, 4, 6)
        };
        assert_eq!(s.key_details(&[&key]).await[0].1, twice, "key usage");
        assert_eq!(s.view().await.accounts[0].usage, twice, "account usage");
    }
}
