//! SPEC §7 and §11: a served request's usage lands in Redis exactly once even when Redis is
//! briefly away as its answer ends — the settle is sent again until Redis answers (once-only
//! in Redis, so sends whose answers were lost never add twice), and once more at shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::redis_instances::*;
use common::redis_server::RedisServer;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TIER_TOML: &str = "[tiers.high]\nslots = 5\n[tiers.high.limits]\nsonnet = 1000\n";
/// The first line of an outage, from the first write Redis did not answer.
const OUTAGE_BEGINS: &str = "Redis did not answer a write";
const KEPT_WRITES_LANDED: &str = "writes kept for it have landed";

/// One instance on `redis` with account `high/h1` and a key of it.
struct OneInstance {
    mock: MockUpstream,
    key: String,
    key_id: String,
    server: TestServer,
    _accounts: SharedAccounts,
}

impl OneInstance {
    async fn start(redis: &RedisServer) -> OneInstance {
        let mock = MockUpstream::start();
        let accounts = SharedAccounts::new();
        accounts.add_account("high", "h1");
        let server = start_instance(&mock, redis, &accounts, TIER_TOML);
        assert!(wait_pool_accounts(&server, "high", &["h1"], Duration::from_secs(10)).await);
        let (key, created) = server.admin_create_key(&json!({"tier": "high"})).await;
        let key_id = created["id"].as_str().expect("key id").to_string();
        OneInstance {
            mock,
            key,
            key_id,
            server,
            _accounts: accounts,
        }
    }

    /// Sends a Sonnet request (streamed or not) in the background; returns once Claude has
    /// it (so it was admitted), with the task that reads its whole answer.
    async fn send_in_background(&self, stream: bool) -> actix_rt::task::JoinHandle<StreamResp> {
        let mut body = message_request(SONNET);
        body["stream"] = json!(stream);
        let (url, key) = (self.server.url("/v1/messages"), self.key.clone());
        let task = actix_rt::spawn(async move {
            let headers = [("content-type", "application/json"), ("x-api-key", &key)];
            request_stream(&url, &headers, body.to_string().into_bytes(), None).await
        });
        let reached = poll_async(Duration::from_secs(5), || async {
            (!self.mock.messages_requests().is_empty()).then_some(())
        })
        .await;
        assert!(reached.is_some(), "the request never reached Claude");
        task
    }

    /// The key's usage (`/admin/keys/{id}`) and the account's (`/admin/pool`); None while
    /// the admin API cannot read them.
    async fn usage(&self) -> Option<(Value, Value)> {
        let key = self
            .server
            .admin_get(&format!("/admin/keys/{}", self.key_id))
            .await;
        let pool = self.server.admin_get("/admin/pool").await;
        if key.status != 200 || pool.status != 200 {
            return None;
        }
        let account = find_pool_account(&pool.json(), "high", "h1")?;
        Some((key.json()["usage"].clone(), account["usage"].clone()))
    }

    /// The key's and the account's usage become `want` (within 10 s) and still are a moment
    /// later: a send of the settle that ran late would show by then.
    async fn assert_usage_lands_once(&self, want: &Value) {
        let landed = poll_async(Duration::from_secs(10), || async {
            self.usage()
                .await
                .filter(|(key, account)| key == want && account == want)
        })
        .await;
        assert!(
            landed.is_some(),
            "the served request's usage never landed exactly once: (key, account) = {:?}, \
             want {want}",
            self.usage().await
        );
        sleep(Duration::from_millis(1500)).await;
        let later = self.usage().await.expect("usage readable");
        assert_eq!(
            (&later.0, &later.1),
            (want, want),
            "the usage of one request was added more than once (key, account)"
        );
    }

    /// Waits (without blocking the test's runtime) for a log line containing `needle`.
    async fn wait_log(&self, needle: &str, within: Duration) {
        let seen = poll_async(within, || async {
            self.server
                .logs()
                .iter()
                .any(|l| l.contains(needle))
                .then_some(())
        })
        .await;
        assert!(
            seen.is_some(),
            "no log line with `{needle}` within {within:?}; log:\n{}",
            self.server.logs().join("\n")
        );
    }

    fn log_lines_with(&self, needle: &str) -> Vec<String> {
        let logs = self.server.logs();
        logs.into_iter().filter(|l| l.contains(needle)).collect()
    }
}

/// The mock's answers, JSON or streamed: input 10, output 5, cache creation 2, cache read 3.
fn one_request() -> Value {
    usage_json(1, 10, 5, 2, 3)
}

/// A streamed answer is still arriving when Redis goes away: the client gets all of it, the
/// settle finds Redis down and is sent again until Redis is back (with its data: AOF); then
/// the key and the account show the request's usage, once. The outage is logged once, not
/// per attempt.
#[actix_rt::test]
async fn usage_due_while_redis_is_down_lands_once_when_it_returns() {
    let mut redis = RedisServer::own_persistent();
    let one = OneInstance::start(&redis).await;
    one.mock.set_stream(8, Duration::from_millis(150));
    let streaming = one.send_in_background(true).await;
    redis.stop();
    let res = streaming.await.expect("request task");
    assert_eq!(res.status, 200);
    assert!(one.mock.streams()[0].finished, "the whole answer was sent");
    // The settle's first sends fail while Redis stays down.
    sleep(Duration::from_millis(800)).await;
    redis.start_again();

    one.assert_usage_lands_once(&one_request()).await;
    one.wait_log(KEPT_WRITES_LANDED, Duration::from_secs(2))
        .await;
    assert_eq!(
        one.log_lines_with(OUTAGE_BEGINS).len(),
        1,
        "one line per outage, not per attempt"
    );
}

/// Redis hangs as a JSON answer ends: every send of the settle times out, and each one waits
/// in Redis's socket. When Redis resumes it runs them all; the request's usage is added once.
#[actix_rt::test]
async fn usage_sent_again_while_redis_hung_lands_once() {
    let redis = RedisServer::own();
    let one = OneInstance::start(&redis).await;
    one.mock.set_delay(Duration::from_millis(400));
    let answering = one.send_in_background(false).await;
    redis.freeze();
    let res = answering.await.expect("request task");
    assert_eq!(res.status, 200);
    // The first send times out after 1 s; another is sent (and times out) meanwhile.
    sleep(Duration::from_millis(2300)).await;
    redis.thaw();

    one.assert_usage_lands_once(&one_request()).await;
}

/// Usage still waiting for Redis when the proxy is stopped is sent once more before it
/// exits: Redis returns between two sends, and the graceful stop does not wait for the next.
#[actix_rt::test]
async fn usage_waiting_at_shutdown_is_sent_once_more() {
    let mut redis = RedisServer::own_persistent();
    let mut one = OneInstance::start(&redis).await;
    one.mock.set_delay(Duration::from_millis(400));
    let answering = one.send_in_background(false).await;
    redis.stop();
    assert_eq!(answering.await.expect("request task").status, 200);
    one.wait_log(OUTAGE_BEGINS, Duration::from_secs(5)).await;
    // Sent again 0.1, 0.3, 0.7, 1.5, 3.1 and 6.3 s after the first failure: Redis returns
    // after the fifth, and the proxy stops long before the sixth.
    sleep(Duration::from_millis(3400)).await;
    redis.start_again();
    let back = Instant::now();
    let ready = poll_async(Duration::from_secs(2), || async {
        (one.server.get("/readyz", None, &[]).await.status == 200).then_some(())
    })
    .await;
    assert!(ready.is_some(), "the proxy does not see Redis again");
    assert!(
        one.log_lines_with(KEPT_WRITES_LANDED).is_empty(),
        "the usage landed before the stop ({:?} after Redis returned): the test proves nothing",
        back.elapsed()
    );
    let status = one.server.stop();
    assert!(status.success(), "graceful stop exited with {status}");

    let mut conn = redis.connection();
    let usage: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
        .arg(format!("{}:usage:key:{}", redis.prefix(), one.key_id))
        .query(&mut conn)
        .expect("read the key's usage from Redis");
    let want: std::collections::HashMap<String, u64> = [
        ("requests", 1),
        ("input_tokens", 10),
        ("output_tokens", 5),
        ("cache_creation_input_tokens", 2),
        ("cache_read_input_tokens", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(
        usage,
        want,
        "the usage waiting at shutdown was not sent once more; log:\n{}",
        one.server.logs().join("\n")
    );
}
