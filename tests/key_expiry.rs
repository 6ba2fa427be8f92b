//! SPEC §4: a key that expires releases its slot within the sweep interval, whether or not it
//! is used again, and is refused as expired.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::time::Duration;

#[actix_rt::test]
async fn an_expired_key_frees_its_slot_unused_and_is_refused() {
    let (_mock, server) = start_with_accounts("[tiers.trial]\nslots = 1\n", &[("trial", "t1")]);
    let short = server.cli(&["keygen", "trial", "--ttl", "1500ms"]);
    short.assert_ok();
    let short_key = short.api_key();
    let bound = server.send_model(&short_key, SONNET).await;
    assert_eq!(bound.status, 200, "{}", bound.text());

    // The only slot is taken: another key is refused for capacity.
    let (waiting, _) = server.keygen("trial", &[]);
    server.send_model(&waiting, SONNET).await.assert_error(
        503,
        "api_error",
        "All Trial accounts are at capacity",
    );

    // Nobody uses the short key again; its slot still comes free after it expires.
    let freed = poll_async(Duration::from_secs(5), || async {
        let pool = server.pool_account("trial", "t1").await;
        (pool["slots_used"] == 0).then_some(())
    })
    .await;
    assert!(freed.is_some(), "the expired key kept its slot");
    assert!(server
        .wait_for_log("key expired:", Duration::from_secs(1))
        .is_some());

    server.send_model(&short_key, SONNET).await.assert_error(
        401,
        "authentication_error",
        "API key has expired",
    );
    let now_bound = server.send_model(&waiting, SONNET).await;
    assert_eq!(now_bound.status, 200, "{}", now_bound.text());
}
