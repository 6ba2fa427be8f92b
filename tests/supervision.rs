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
