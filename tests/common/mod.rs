//! Black-box test harness: the real `claude-route` binary against a mock Anthropic upstream.
#![allow(dead_code, unused_imports)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod admin;
pub mod admin_support;
pub mod cli;
pub mod client;
pub mod env;
pub mod hang_up_upstream;
pub mod mock_routes;
pub mod mock_upstream;
pub mod raw_http;
pub mod redis_instances;
pub mod redis_server;
pub mod refresh_support;
pub mod server;

pub use admin::{find_pool_account, rfc3339_ms, usage_json};
pub use cli::{keygen_offline, parse_json_objects, run_cli, run_cli_with, run_raw, CliOutput};
pub use client::{message_request, request, request_stream, Resp, StreamResp, HAIKU, OPUS, SONNET};
pub use env::{access_token, now_ms, TestEnv, ADMIN_TOKEN};
pub use mock_upstream::{Answer, MockUpstream, Recorded};
pub use server::{ServeProc, TestServer};

use std::time::{Duration, Instant};

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `sig` (`TERM`, `KILL`, `STOP`, …) to process `pid` with `kill`, asserting it worked.
pub fn send_signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// A mock upstream plus a directory configured against it (server not started).
pub fn setup(extra_toml: &str) -> (MockUpstream, TestEnv) {
    let mock = MockUpstream::start();
    let env = TestEnv::new(&mock.url(), extra_toml);
    (mock, env)
}

/// A mock upstream and a running server with one Claude Code-format account per
/// `(tier, name)`.
pub fn start_with_accounts(
    extra_toml: &str,
    accounts: &[(&str, &str)],
) -> (MockUpstream, TestServer) {
    let (mock, env) = setup(extra_toml);
    for (tier, name) in accounts {
        env.add_account(tier, name);
    }
    let server = TestServer::start(env);
    (mock, server)
}

/// Async sleep usable inside actix tests without blocking the runtime.
pub async fn sleep(d: Duration) {
    actix_rt::time::sleep(d).await;
}

/// Polls an async check every 50 ms until it returns `Some` or `timeout` passes.
pub async fn poll_async<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        sleep(Duration::from_millis(50)).await;
    }
}
