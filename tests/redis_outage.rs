//! SPEC §11: Redis unreachable → requests get 503 "store unavailable" (fail closed, quickly,
//! never a hang or a crash, never a request served without being counted); recovery is
//! automatic when Redis returns — also when Redis was down when the proxy started.
//! The tests own their redis-server and stop/start it on the same port (no persistence: a
//! restarted Redis is empty and the instances fill it again themselves).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::client::find_key;
use common::redis_instances::*;
use common::redis_server::RedisServer;
use common::*;
use serde_json::json;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

const LIMIT: u32 = 1000;
const TIER_TOML: &str = "[tiers.high]\nslots = 5\n[tiers.high.limits]\nsonnet = 1000\n";
/// The longest any single request may take while Redis is down.
const FAIL_FAST: Duration = Duration::from_secs(2);

/// One request of the load loop.
#[derive(Debug, Clone)]
struct Sample {
    started: Instant,
    took: Duration,
    status: Option<u16>,
    message: String,
}

/// A few tasks sending requests in a loop (key `task % keys`, instances in turn) until
/// `stop` is set; every request is recorded.
struct Load {
    stop: Rc<Cell<bool>>,
    samples: Rc<RefCell<Vec<Sample>>>,
    tasks: Vec<actix_rt::task::JoinHandle<()>>,
}

impl Load {
    fn start(tasks: usize, bases: Vec<String>, keys: Vec<String>) -> Load {
        let stop = Rc::new(Cell::new(false));
        let samples: Rc<RefCell<Vec<Sample>>> = Rc::default();
        let handles = (0..tasks)
            .map(|t| {
                let (stop, samples, bases, keys) =
                    (stop.clone(), samples.clone(), bases.clone(), keys.clone());
                actix_rt::spawn(async move {
                    let mut n = t;
                    while !stop.get() {
                        let k = t % keys.len();
                        let base = &bases[n % bases.len()];
                        let started = Instant::now();
                        let res = try_message(base, &keys[k], &format!("key-{k}")).await;
                        let took = started.elapsed();
                        let (status, message) = match &res {
                            Ok(r) => (Some(r.status), error_message(r)),
                            Err(e) => (None, e.clone()),
                        };
                        samples.borrow_mut().push(Sample {
                            started,
                            took,
                            status,
                            message,
                        });
                        n += 1;
                        sleep(Duration::from_millis(10)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            samples,
            tasks: handles,
        }
    }

    fn since(&self, t: Instant) -> Vec<Sample> {
        self.samples
            .borrow()
            .iter()
            .filter(|s| s.started >= t)
            .cloned()
            .collect()
    }

    /// When the first request started at or after `t` was answered 200, polled for up to
    /// `within`.
    async fn first_ok_since(&self, t: Instant, within: Duration) -> Option<Instant> {
        poll_async(within, || {
            let ok = self
                .since(t)
                .iter()
                .find(|s| s.status == Some(200))
                .map(|s| s.started + s.took);
            async move { ok }
        })
        .await
    }

    async fn finish(self) -> Vec<Sample> {
        self.stop.set(true);
        for t in self.tasks {
            t.await.expect("a load task panicked");
        }
        self.samples.borrow().clone()
    }
}

fn summary(samples: &[Sample]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in samples {
        let label = match s.status {
            Some(st) => format!("{st} {}", s.message.chars().take(60).collect::<String>()),
            None => format!("no answer: {}", s.message),
        };
        *out.entry(label).or_default() += 1;
    }
    out
}

/// Requests that reached the mock for `key-{k}` after `t`.
fn upstream_count(mock: &MockUpstream, k: usize, after: Instant) -> usize {
    let marker = format!("key-{k}");
    mock.messages_requests()
        .iter()
        .filter(|r| r.at >= after && marker_of(r) == marker)
        .count()
}

async fn create_key(server: &TestServer) -> String {
    server.admin_create_key(&json!({"tier": "high"})).await.0
}

/// Every request of `all` started at or after `from` was answered 200 (`after`: what happened
/// just before, for the message).
fn assert_all_served_from(all: &[Sample], from: Instant, after: &str) {
    let tail: Vec<Sample> = all.iter().filter(|s| s.started >= from).cloned().collect();
    assert!(
        tail.iter().all(|s| s.status == Some(200)),
        "after {after} every request is served: {:?}",
        summary(&tail)
    );
}

/// Requests of every key (key `k` on instance `k % 2`) are served, and each key's window
/// counts exactly what Claude received for it since `test_start` (see
/// `window_counts_what_claude_received`).
async fn check_windows_count_forwarded(
    servers: &[TestServer],
    keys: &[String],
    mock: &MockUpstream,
    test_start: Instant,
    during: &str,
) {
    for (k, key) in keys.iter().enumerate() {
        window_counts_what_claude_received(
            &servers[k % 2].base_url(),
            key,
            k,
            mock,
            test_start,
            during,
        )
        .await;
    }
}

/// A request of key `k` (marker `key-k`) is served, and its rate-limit window counts exactly
/// what Claude received for that key since `test_start`: never less (a request served
/// uncounted), and — once the proxy has withdrawn the admissions whose answer Redis lost
/// during `during` (each answered 503) — never more. Asked again every 200 ms for up to 10 s
/// while the withdrawals land.
async fn window_counts_what_claude_received(
    base_url: &str,
    key: &str,
    k: usize,
    mock: &MockUpstream,
    test_start: Instant,
    during: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = try_message(base_url, key, &format!("key-{k}"))
            .await
            .expect("request after recovery");
        assert_eq!(res.status, 200, "key {k} after recovery: {}", res.text());
        let remaining: u32 = res
            .header("x-ratelimit-remaining-requests")
            .expect("x-ratelimit-remaining-requests")
            .parse()
            .expect("number");
        let counted = (LIMIT - remaining) as usize;
        let forwarded = upstream_count(mock, k, test_start);
        assert!(
            counted >= forwarded,
            "key {k}: Claude received {forwarded} requests but the window counts only \
             {counted}: requests were served uncounted"
        );
        if counted == forwarded {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "key {k}: the window counts {counted} but Claude received {forwarded}: requests \
             refused during {during} stayed counted"
        );
        sleep(Duration::from_millis(200)).await;
    }
}

/// Under load, Redis is killed: every request gets 503 `store unavailable` quickly and
/// nothing reaches Claude; the proxies keep running. Redis comes back (same port, with the
/// AOF persistence the README asks for, so with everything it kept): within ~2 s requests
/// succeed again without restarting anything, and every request that reached Claude since
/// is counted in its window.
#[actix_rt::test]
async fn redis_outage_under_load_fails_closed_and_recovers() {
    let test_start = Instant::now();
    let mut redis = RedisServer::own_persistent();
    let mock = MockUpstream::start();
    let accounts = SharedAccounts::new();
    accounts.add_account("high", "h1");
    accounts.add_account("high", "h2");
    let mut servers = start_instances(2, &mock, &redis, &accounts, TIER_TOML);
    for s in &servers {
        assert!(wait_pool_accounts(s, "high", &["h1", "h2"], Duration::from_secs(10)).await);
    }
    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(create_key(&servers[i % 2]).await);
    }
    let bases: Vec<String> = servers.iter().map(TestServer::base_url).collect();
    let load = Load::start(4, bases.clone(), keys.clone());

    // Phase 1: Redis up, requests are served.
    sleep(Duration::from_millis(600)).await;
    let before = load.samples.borrow().clone();
    assert!(
        before.iter().any(|s| s.status == Some(200)),
        "nothing served while Redis was up: {:?}",
        summary(&before)
    );

    // Phase 2: Redis killed.
    redis.stop();
    let down_at = Instant::now();
    sleep(Duration::from_millis(300)).await;
    // Whatever was admitted before the kill has reached the mock by now.
    let upstream_at_outage = mock.messages_requests().len();
    sleep(Duration::from_millis(2200)).await;
    let during = load.since(down_at);
    assert!(
        during.len() >= 8,
        "the load loop stalled while Redis was down (a hang?): {} requests in 2.5 s: {:?}",
        during.len(),
        summary(&during)
    );
    for s in &during {
        assert!(
            s.took < FAIL_FAST,
            "a request took {:?} while Redis was down (must fail fast); all: {:?}",
            s.took,
            summary(&during)
        );
        assert!(
            s.status == Some(503) && s.message.starts_with("store unavailable"),
            "while Redis is down every request must get 503 `store unavailable…`; got {:?}; \
             all: {:?}",
            s,
            summary(&during)
        );
    }
    assert_eq!(
        mock.messages_requests().len(),
        upstream_at_outage,
        "nothing may reach Claude while Redis is down (it could not be counted)"
    );
    for (i, s) in servers.iter_mut().enumerate() {
        assert!(s.is_running(), "instance {i} died during the outage");
    }
    let health = servers[0].get("/healthz", None, &[]).await;
    assert_eq!(health.status, 200, "/healthz during the outage");
    let ready = servers[0].get("/readyz", None, &[]).await;
    assert_eq!(
        ready.status,
        503,
        "/readyz during the outage: {}",
        ready.text()
    );

    // Phase 3: Redis back on the same port, empty.
    redis.start_again();
    let up_at = Instant::now();
    let recovered = load
        .first_ok_since(up_at, Duration::from_millis(2500))
        .await;
    let after = load.since(up_at);
    let Some(first_ok) = recovered else {
        // Diagnostics: does a key made now work (is it only the old keys that are gone)?
        let fresh = servers[0]
            .admin_post("/admin/keys", &json!({"tier": "high"}))
            .await;
        let fresh_key = find_key(&fresh.json());
        let fresh_try = match &fresh_key {
            Some(k) => {
                let r = servers[0].send_model(k, SONNET).await;
                format!("{} {}", r.status, r.text())
            }
            None => "no key".to_string(),
        };
        panic!(
            "no request succeeded within ~2 s after Redis came back; answers since: {:?}; \
             a key created now: POST /admin/keys → {} / its request → {fresh_try}",
            summary(&after),
            fresh.status
        );
    };
    let recovery = first_ok.duration_since(up_at);
    assert!(
        recovery <= Duration::from_millis(2500),
        "requests succeed again only {recovery:?} after Redis came back"
    );

    // Phase 4: steady again; then every forwarded request since the restart is counted.
    sleep(Duration::from_millis(800)).await;
    let all = load.finish().await;
    assert_all_served_from(&all, first_ok + Duration::from_millis(300), "recovery");
    check_windows_count_forwarded(&servers, &keys, &mock, test_start, "the outage").await;
}

/// Redis is down when the proxy starts: it starts anyway, `/readyz` is 503, requests get
/// 503 `store unavailable` quickly; when Redis comes up, requests succeed within ~3 s.
#[actix_rt::test]
async fn proxy_started_while_redis_is_down_recovers_when_it_comes_up() {
    let mut redis = RedisServer::own();
    redis.stop();
    let mock = MockUpstream::start();
    let accounts = SharedAccounts::new();
    accounts.add_account("high", "h1");
    let mut server = start_instance(&mock, &redis, &accounts, TIER_TOML);

    assert!(server.is_running());
    assert_eq!(server.get("/healthz", None, &[]).await.status, 200);
    let ready = server.get("/readyz", None, &[]).await;
    assert_eq!(
        ready.status,
        503,
        "/readyz with Redis down: {}",
        ready.text()
    );
    // A well-formed key the proxy cannot look up: 503, not 401, and fast.
    let unknown = format!("sk-cli-v1-{}", "A1b2C3d4".repeat(4));
    for _ in 0..3 {
        let t = Instant::now();
        let res = server.send_model(&unknown, SONNET).await;
        assert!(t.elapsed() < FAIL_FAST, "took {:?}", t.elapsed());
        res.assert_error(503, "api_error", "store unavailable");
    }
    assert!(server.is_running(), "the proxy died while Redis was down");
    assert!(mock.messages_requests().is_empty());

    redis.start_again();
    let up_at = Instant::now();
    let served = poll_async(Duration::from_millis(3500), || {
        let s = &server;
        async move {
            let created = s.admin_post("/admin/keys", &json!({"tier": "high"})).await;
            if !(200..300).contains(&created.status) {
                return None;
            }
            let key = find_key(&created.json())?;
            let res = s.send_model(&key, SONNET).await;
            (res.status == 200).then_some(key)
        }
    })
    .await;
    let took = up_at.elapsed();
    let Some(key) = served else {
        let pool = server.admin_get("/admin/pool").await;
        panic!(
            "no request succeeded within ~3 s after Redis came up; /admin/pool now: {} {}",
            pool.status,
            pool.text()
        );
    };
    assert!(
        took <= Duration::from_millis(3500),
        "requests succeed only {took:?} after Redis came up"
    );
    assert_eq!(mock.messages_requests().len(), 1);
    assert_eq!(server.send_model(&key, SONNET).await.status, 200);
}

/// Polls `/readyz` until it answers `want`; returns the last answer's status and body.
async fn wait_ready(server: &TestServer, want: u16, within: Duration) -> Result<(), String> {
    let hit = poll_async(within, || async move {
        let r = server.get("/readyz", None, &[]).await;
        (r.status == want).then_some(())
    })
    .await;
    match hit {
        Some(()) => Ok(()),
        None => {
            let r = server.get("/readyz", None, &[]).await;
            Err(format!("{} {}", r.status, r.text()))
        }
    }
}

/// §12: `/readyz` follows the store — 200 while Redis answers (accounts loaded), 503 while
/// it is down, 200 again when it is back.
#[actix_rt::test]
async fn readyz_follows_redis() {
    let mut redis = RedisServer::own();
    let mock = MockUpstream::start();
    let accounts = SharedAccounts::new();
    accounts.add_account("high", "h1");
    let server = start_instance(&mock, &redis, &accounts, TIER_TOML);
    assert!(wait_pool_accounts(&server, "high", &["h1"], Duration::from_secs(10)).await);

    if let Err(last) = wait_ready(&server, 200, Duration::from_secs(3)).await {
        panic!("/readyz with Redis up and an account loaded must be 200; got {last}");
    }
    redis.stop();
    if let Err(last) = wait_ready(&server, 503, Duration::from_secs(3)).await {
        panic!("/readyz with Redis down must be 503; got {last}");
    }
    // A real outage: longer than the proxy's 500 ms health ping.
    sleep(Duration::from_millis(1200)).await;
    redis.start_again();
    if let Err(last) = wait_ready(&server, 200, Duration::from_secs(3)).await {
        panic!("/readyz after Redis came back must be 200; got {last}");
    }
}

/// While Redis is down the expired-key sweep is skipped, and the log says so once per
/// outage, not once per sweep; the first sweep Redis answers again is logged.
#[actix_rt::test]
async fn a_redis_outage_is_logged_once_by_the_key_sweep() {
    let mut redis = RedisServer::own();
    let mock = MockUpstream::start();
    let accounts = SharedAccounts::new();
    accounts.add_account("high", "h1");
    let toml = format!("{TIER_TOML}[keys]\nsweep_interval = \"50ms\"\n");
    let server = start_instance(&mock, &redis, &accounts, &toml);
    assert!(wait_pool_accounts(&server, "high", &["h1"], Duration::from_secs(10)).await);
    let skipped = |server: &TestServer| {
        server
            .logs_since_start()
            .iter()
            .filter(|l| l.contains("key sweep skipped while Redis does not answer"))
            .count()
    };
    let resumed = |server: &TestServer| {
        server
            .logs_since_start()
            .iter()
            .any(|l| l.contains("key sweep resumed"))
    };

    redis.stop();
    let first_skip = wait_until(Duration::from_secs(5), || {
        (skipped(&server) > 0).then_some(())
    });
    assert!(
        first_skip.is_some(),
        "no sweep was skipped while Redis was down"
    );
    // Twenty more sweeps' worth of outage.
    sleep(Duration::from_millis(1000)).await;
    assert_eq!(skipped(&server), 1, "{:#?}", server.logs_since_start());
    assert!(!resumed(&server));

    redis.start_again();
    assert!(
        wait_until(Duration::from_secs(5), || resumed(&server).then_some(())).is_some(),
        "the sweep never said Redis answers again: {:#?}",
        server.logs_since_start()
    );
    assert_eq!(skipped(&server), 1);
}

/// Redis hangs (SIGSTOP: connections stay open, nothing is answered) under load: every
/// request gets 503 `store unavailable` within the 1 s response timeout (never a hang) and
/// nothing reaches Claude; when Redis resumes with its data, the same keys are served again
/// within ~2 s. No request reaches Claude without being counted: each key's window counts
/// at least what Claude received; it may count more only by admissions Redis executed after
/// the proxy had given up on them (each of those was answered 503).
#[actix_rt::test]
async fn redis_hang_under_load_fails_fast_and_recovers_with_its_data() {
    let test_start = Instant::now();
    let redis = RedisServer::own();
    let mock = MockUpstream::start();
    let accounts = SharedAccounts::new();
    accounts.add_account("high", "h1");
    let servers = start_instances(2, &mock, &redis, &accounts, TIER_TOML);
    for s in &servers {
        assert!(wait_pool_accounts(s, "high", &["h1"], Duration::from_secs(10)).await);
    }
    let mut keys = Vec::new();
    for i in 0..3 {
        keys.push(create_key(&servers[i % 2]).await);
    }
    let bases: Vec<String> = servers.iter().map(TestServer::base_url).collect();
    let load = Load::start(4, bases, keys.clone());
    sleep(Duration::from_millis(600)).await;

    redis.freeze();
    let frozen_at = Instant::now();
    sleep(Duration::from_millis(1500)).await;
    // Requests admitted before the freeze have all been answered by now.
    let upstream_frozen = mock.messages_requests().len();
    sleep(Duration::from_millis(1500)).await;
    let during = load.since(frozen_at);
    assert!(
        !during.is_empty(),
        "no request finished while Redis hung: the proxy hangs with it"
    );
    for s in &during {
        assert!(
            s.took < FAIL_FAST,
            "a request took {:?} while Redis hung (must fail within the response timeout); \
             all: {:?}",
            s.took,
            summary(&during)
        );
        assert!(
            s.status == Some(503) && s.message.starts_with("store unavailable"),
            "while Redis hangs every request must get 503 `store unavailable…`; got {s:?}; \
             all: {:?}",
            summary(&during)
        );
    }
    assert_eq!(
        mock.messages_requests().len(),
        upstream_frozen,
        "nothing may reach Claude while Redis hangs"
    );

    redis.thaw();
    let up_at = Instant::now();
    let recovered = load
        .first_ok_since(up_at, Duration::from_millis(2500))
        .await;
    let Some(first_ok) = recovered else {
        panic!(
            "no request succeeded within ~2 s after Redis resumed; answers since: {:?}",
            summary(&load.since(up_at))
        );
    };
    sleep(Duration::from_millis(800)).await;
    let all = load.finish().await;
    assert_all_served_from(&all, first_ok + Duration::from_millis(300), "Redis resumed");

    check_windows_count_forwarded(&servers, &keys, &mock, test_start, "the hang").await;
}

/// One instance on `redis` with account `high/h1` and a key of it.
struct OneInstance {
    mock: MockUpstream,
    key: String,
    base: String,
    _accounts: SharedAccounts,
    _server: TestServer,
}

impl OneInstance {
    async fn start(redis: &RedisServer) -> OneInstance {
        let mock = MockUpstream::start();
        let accounts = SharedAccounts::new();
        accounts.add_account("high", "h1");
        let mut servers = start_instances(1, &mock, redis, &accounts, TIER_TOML);
        let server = servers.remove(0);
        assert!(wait_pool_accounts(&server, "high", &["h1"], Duration::from_secs(10)).await);
        OneInstance {
            key: create_key(&server).await,
            base: server.base_url(),
            mock,
            _accounts: accounts,
            _server: server,
        }
    }
}

/// Redis hangs while a request waits for its admission: the client gets 503 `store
/// unavailable` within the response timeout; Redis, once it resumes, runs the admission it
/// had queued, and the proxy withdraws it — the window counts only what Claude received.
#[actix_rt::test]
async fn a_request_refused_while_redis_hung_is_not_counted() {
    let redis = RedisServer::own();
    let one = OneInstance::start(&redis).await;
    let (mock, key, base) = (&one.mock, &one.key, &one.base);
    let test_start = Instant::now();
    let served = try_message(base, key, "key-0")
        .await
        .expect("first request");
    assert_eq!(served.status, 200, "{}", served.text());

    redis.freeze();
    let refused = try_message(base, key, "key-0").await;
    redis.thaw();
    let refused = refused.expect("an answer while Redis hangs");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        error_message(&refused).starts_with("store unavailable"),
        "{}",
        refused.text()
    );

    window_counts_what_claude_received(base, key, 0, mock, test_start, "the hang").await;
}

/// Claude fails a request (a 500: the request is given back) while Redis is down: the client
/// gets its answer at once, and the refund is tried again until Redis is back (with its
/// data: AOF) — the failed request is not counted.
#[actix_rt::test]
async fn a_refund_due_while_redis_is_down_lands_when_it_returns() {
    let mut redis = RedisServer::own_persistent();
    let one = OneInstance::start(&redis).await;
    let (mock, key, base) = (&one.mock, &one.key, &one.base);

    mock.push_answer(Answer::error(500, "api_error", "Internal server error"));
    mock.set_delay(Duration::from_millis(600));
    let failing = actix_rt::spawn({
        let (base, key) = (base.clone(), key.clone());
        async move { try_message(&base, &key, "key-0").await }
    });
    // Once Claude has the request, it was admitted (and counted); then Redis goes away.
    let reached = Instant::now();
    while mock.messages_requests().is_empty() {
        assert!(
            reached.elapsed() < Duration::from_secs(5),
            "the request never reached Claude"
        );
        sleep(Duration::from_millis(5)).await;
    }
    redis.stop();
    let failed = failing.await.expect("request task").expect("an answer");
    assert_eq!(failed.status, 500, "{}", failed.text());
    // The refund's first tries fail while Redis is down.
    sleep(Duration::from_millis(500)).await;
    redis.start_again();
    mock.set_delay(Duration::ZERO);

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut served = 0;
    loop {
        let res = try_message(base, key, "key-0")
            .await
            .expect("request after the hang");
        assert_eq!(res.status, 200, "{}", res.text());
        served += 1;
        let remaining: u32 = res
            .header("x-ratelimit-remaining-requests")
            .expect("x-ratelimit-remaining-requests")
            .parse()
            .expect("number");
        let counted = LIMIT - remaining;
        if counted == served {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the window counts {counted} after {served} served requests: the refund of the \
             request Claude failed while Redis was down was lost"
        );
        sleep(Duration::from_millis(200)).await;
    }
}

/// Redis restarts empty (no persistence) faster than any health check can see it down: the
/// proxy notices the new Redis by its run id and syncs the accounts into it again, so new
/// keys work within ~2 s; the keys Redis forgot are refused (fail closed), never served.
#[actix_rt::test]
async fn a_quick_empty_restart_is_noticed_and_the_accounts_come_back() {
    let mut redis = RedisServer::own();
    let mock = MockUpstream::start();
    let accounts = SharedAccounts::new();
    accounts.add_account("high", "h1");
    let server = start_instance(&mock, &redis, &accounts, TIER_TOML);
    assert!(wait_pool_accounts(&server, "high", &["h1"], Duration::from_secs(10)).await);
    let old_key = create_key(&server).await;
    assert_eq!(server.send_model(&old_key, SONNET).await.status, 200);

    redis.stop();
    redis.start_again();
    let up_at = Instant::now();
    let served = poll_async(Duration::from_millis(2500), || {
        let s = &server;
        async move {
            let created = s.admin_post("/admin/keys", &json!({"tier": "high"})).await;
            let key = find_key(&created.json())?;
            (s.send_model(&key, SONNET).await.status == 200).then_some(())
        }
    })
    .await;
    assert!(
        served.is_some(),
        "the accounts were not synced into the restarted Redis within 2.5 s ({:?})",
        up_at.elapsed()
    );
    server.send_model(&old_key, SONNET).await.assert_error(
        401,
        "authentication_error",
        "Unauthorized API key",
    );
}
