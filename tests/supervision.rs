//! Issue 4: the refresh coordinator is supervised. When it crashes (a failpoint panics it
//! right after a successful refresh) it is started again with its state reloaded from the
//! store, and refreshing carries on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::refresh_support::*;
use common::*;
use std::time::Duration;

#[actix_rt::test]
async fn a_crashed_refresh_coordinator_restarts_and_keeps_refreshing() {
    let (mock, env) = setup(&refresh_toml("500ms", "300ms", "400ms", 3));
    // Two accounts: the first refresh crashes the coordinator, the second must still happen.
    write_expiring(&env, "supreme", "first", now_ms() + 1_500);
    write_expiring(&env, "supreme", "second", now_ms() + 4_000);
    let run = ServeProc::start(
        env,
        &[],
        &[],
        &[("CLAUDE_ROUTE_FAILPOINT", "refresh-coordinator-panic")],
    );
    let threads_before = actor_threads(run.pid());

    let restarted = run.wait_for_log(
        "refresh coordinator stopped unexpectedly",
        Duration::from_secs(6),
    );
    assert!(
        restarted.is_some(),
        "no restart logged:\n{}",
        run.stderr_lines().join("\n")
    );
    // The token the crashed incarnation saved is not lost, and nothing refreshes it twice.
    assert!(
        run.stderr_lines()
            .iter()
            .any(|l| l.contains("refresh succeeded: first")),
        "the first refresh did not succeed before the crash"
    );
    let second = run.wait_for_log("refresh succeeded: second", Duration::from_secs(6));
    assert!(
        second.is_some(),
        "the restarted coordinator did not refresh `second`:\n{}",
        run.stderr_lines().join("\n")
    );
    assert_eq!(
        calls_for(&mock, "first").len(),
        1,
        "`first` was refreshed again after the restart"
    );
    // The new incarnation moved into the crashed one's thread instead of starting another.
    assert_eq!(actor_threads(run.pid()), threads_before);

    // The admin view answers from the new incarnation.
    let status = common::request(
        "GET",
        &format!("http://{}/admin/status", run.addr),
        &[("authorization", "Bearer test-admin-token")],
        Vec::new(),
    )
    .await;
    assert_eq!(status.status, 200, "{}", status.text());
    assert!(status.json()["refresh"]["timers"].as_u64().is_some());
}

/// The process's actor threads (actix arbiters: `actix-rt|system:0|arbiter:N`, cut to 15
/// characters by the kernel).
fn actor_threads(pid: u32) -> usize {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    let count = tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("actix-rt|system"))
        .count();
    assert!(count > 0, "no actor thread found in /proc/{pid}/task");
    count
}

fn admin_headers() -> [(&'static str, &'static str); 2] {
    [
        ("authorization", "Bearer test-admin-token"),
        ("content-type", "application/json"),
    ]
}

async fn send_sonnet(run: &ServeProc, key: &str) -> Resp {
    common::request(
        "POST",
        &run.url("/v1/messages"),
        &[("x-api-key", key), ("content-type", "application/json")],
        message_request(SONNET).to_string().into_bytes(),
    )
    .await
}

/// A tier's pool actor crashes (a failpoint panics it in the admin pool view): it is started
/// again, the tier's bindings and usage are intact, and requests are served throughout.
#[actix_rt::test]
async fn a_crashed_pool_actor_restarts_with_its_tier_intact() {
    let (mock, env) = setup("");
    env.add_account("supreme", "s1");
    let (key, _) = keygen_offline(&env, "supreme", &[]);
    let run = ServeProc::start(
        env,
        &[],
        &[],
        &[("CLAUDE_ROUTE_FAILPOINT", "pool-actor-panic")],
    );
    for _ in 0..2 {
        let res = send_sonnet(&run, &key).await;
        assert_eq!(res.status, 200, "{}", res.text());
    }

    let pool_url = run.url("/admin/pool");
    let crashed = common::request("GET", &pool_url, &admin_headers(), Vec::new()).await;
    assert_ne!(crashed.status, 200, "the failpoint did not fire");
    assert!(
        run.wait_for_log("stopped unexpectedly", Duration::from_secs(3))
            .is_some(),
        "no restart logged:\n{}",
        run.stderr_lines().join("\n")
    );
    let view = poll_async(Duration::from_secs(3), || {
        let url = pool_url.clone();
        async move {
            let res = common::request("GET", &url, &admin_headers(), Vec::new()).await;
            (res.status == 200).then(|| res.json())
        }
    })
    .await
    .expect("/admin/pool never answered after the restart");
    let s1 = find_pool_account(&view, "supreme", "s1").expect("s1 in the pool view");
    assert_eq!(s1["slots_used"], 1, "the binding survived: {s1}");
    assert_eq!(s1["usage"]["requests"], 2, "the usage survived: {s1}");

    let res = send_sonnet(&run, &key).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(mock.messages_requests().len(), 3);
}

/// The key registry crashes while making a key: that call fails, the registry is started
/// again, the next key is made and served, and the keys made before still work.
#[actix_rt::test]
async fn a_crashed_key_registry_restarts_and_makes_keys_again() {
    let (_mock, env) = setup("");
    env.add_account("supreme", "s1");
    let (old_key, _) = keygen_offline(&env, "supreme", &[]);
    let run = ServeProc::start(
        env,
        &[],
        &[],
        &[("CLAUDE_ROUTE_FAILPOINT", "key-registry-panic")],
    );
    let keys_url = run.url("/admin/keys");
    let body = br#"{"tier":"supreme"}"#.to_vec();

    let crashed = common::request("POST", &keys_url, &admin_headers(), body.clone()).await;
    assert_eq!(crashed.status, 500, "{}", crashed.text());
    assert!(
        run.wait_for_log("key registry stopped unexpectedly", Duration::from_secs(3))
            .is_some(),
        "no restart logged:\n{}",
        run.stderr_lines().join("\n")
    );
    let created = poll_async(Duration::from_secs(3), || {
        let (url, body) = (keys_url.clone(), body.clone());
        async move {
            let res = common::request("POST", &url, &admin_headers(), body).await;
            (res.status == 201).then(|| res.json())
        }
    })
    .await
    .expect("no key was made after the restart");
    let new_key = created["key"].as_str().expect("the new key").to_string();
    for key in [&new_key, &old_key] {
        let res = send_sonnet(&run, key).await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
}
