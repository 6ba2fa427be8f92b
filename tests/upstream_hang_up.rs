//! Claude may close an idle keep-alive connection just as a request goes out on it. Such a
//! request was never answered, so it is sent once more on a new connection: the client sees
//! its answer, and the request counts once. A second hang-up is the client's 502 (refunded).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::hang_up_upstream::HangUpUpstream;
use common::*;

/// One worker, so every request shares one pool of upstream connections.
fn serve(upstream: &HangUpUpstream, sonnet_limit: u32) -> (TestServer, String) {
    let toml = format!(
        "[server]\nworkers = 1\n[tiers.high]\nlimits = {{ sonnet = {sonnet_limit}, opus = 3 }}\nwindow = \"1m\"\n"
    );
    let env = TestEnv::new(&upstream.url(), &toml);
    env.add_account("high", "h1");
    let (key, _) = keygen_offline(&env, "high", &[]);
    (TestServer::start(env), key)
}

#[actix_rt::test]
async fn a_request_claude_hung_up_on_is_sent_again_on_a_new_connection() {
    let upstream = HangUpUpstream::start(1);
    let (server, key) = serve(&upstream, 3);
    for i in 0..3 {
        let res = server.send_model(&key, SONNET).await;
        assert_eq!(res.status, 200, "request {}: {}", i + 1, res.text());
        assert_eq!(res.json()["id"], "msg_hang_up");
    }
    assert_eq!(upstream.answered(), 3);
    assert!(
        upstream.read() > 3,
        "a pooled connection was hung up on and the request sent again ({} read)",
        upstream.read()
    );
    assert!(server
        .wait_for_log("before answering", std::time::Duration::from_secs(2))
        .is_some());
    // Each request counted once: the window (3) is full now, and only now.
    server.assert_sonnet_window_full(&key).await;
}

#[actix_rt::test]
async fn a_second_hang_up_is_a_502_and_the_request_is_given_back() {
    let upstream = HangUpUpstream::start(0);
    let (server, key) = serve(&upstream, 1);
    server.send_model(&key, SONNET).await.assert_error(
        502,
        "api_error",
        "Could not reach Claude (it closed the connection twice without answering)",
    );
    assert_eq!(upstream.read(), 2, "sent again once, not more");
    assert_eq!(upstream.answered(), 0);
    // The failed request did not use the window's one request.
    upstream.set_answers_per_connection(1);
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    server.assert_sonnet_window_full(&key).await;
}
