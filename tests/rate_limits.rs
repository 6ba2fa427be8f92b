//! SPEC §6: request windows per key and model family, exact under concurrency, with the
//! `x-ratelimit-*` headers on successful answers and a 429 `rate_limit_error` when full.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use futures_util::future::join_all;
use std::time::Duration;

/// A running server with one `high` account `h1`, tier settings from `tier_toml` (the body
/// of `[tiers.high]`), and a key of that tier (key, key id).
fn serve_high(tier_toml: &str) -> (MockUpstream, TestServer, String, String) {
    let (mock, env) = setup(&format!("[tiers.high]\n{tier_toml}\n"));
    env.add_account("high", "h1");
    let (key, id) = keygen_offline(&env, "high", &[]);
    (mock, TestServer::start(env), key, id)
}

/// Asserts a 429 window-full answer for `family` ("Sonnet", "Opus") and returns the reset
/// time (ms) it announces.
fn assert_window_full(res: &Resp, family: &str, limit: u32) -> i64 {
    res.assert_error(
        429,
        "rate_limit_error",
        &format!("Rate limit exceeded for {family}"),
    );
    let retry = res
        .header("retry-after")
        .unwrap_or_else(|| panic!("429 without retry-after: {:?}", res.headers));
    let retry: i64 = retry
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("retry-after `{retry}` is not whole seconds: {e}"));
    assert!(retry >= 0, "retry-after {retry}");
    let reset = res
        .header("x-ratelimit-reset-requests")
        .unwrap_or_else(|| panic!("429 without x-ratelimit-reset-requests: {:?}", res.headers))
        .to_string();
    let reset_ms = rfc3339_ms(&reset);
    let message = res.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains(&reset),
        "the message should name the reset time `{reset}`: {message}"
    );
    assert!(
        message.contains(&limit.to_string()),
        "the message should name the limit {limit}: {message}"
    );
    // retry-after points at the reset. Both are whole seconds: the RFC 3339 time may be
    // truncated to its second (up to 1 s before the real reset) and retry-after rounded up.
    let until_reset = (reset_ms - now_ms()) as f64 / 1000.0;
    assert!(
        (retry as f64) >= until_reset - 1.0 && (retry as f64) <= until_reset + 2.5,
        "retry-after {retry} s does not match the reset in {until_reset:.1} s"
    );
    reset_ms
}

/// The proxy's `x-ratelimit-*` headers of a successful answer: (limit, remaining, reset ms).
fn grant_headers(res: &Resp) -> (u32, u32, i64) {
    let get = |name: &str| {
        res.header(name)
            .unwrap_or_else(|| panic!("answer without {name}: {:?}", res.headers))
            .to_string()
    };
    (
        get("x-ratelimit-limit-requests").parse().expect("limit"),
        get("x-ratelimit-remaining-requests")
            .parse()
            .expect("remaining"),
        rfc3339_ms(&get("x-ratelimit-reset-requests")),
    )
}

#[actix_rt::test]
async fn hundred_simultaneous_requests_against_ten_left_admit_exactly_ten() {
    // A long window so that the burst can never straddle two windows.
    let (mock, server, key, _) = serve_high("limits = { sonnet = 12, opus = 3 }\nwindow = \"1m\"");
    for _ in 0..2 {
        let res = server.send_model(&key, SONNET).await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    // 10 left. Slow answers keep the admitted ones in flight while the rest arrive.
    mock.set_delay(Duration::from_millis(300));
    let results = join_all((0..100).map(|_| server.send_model(&key, SONNET))).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 10, "exactly the 10 remaining requests are admitted");
    let mut resets = Vec::new();
    for res in results.iter().filter(|r| r.status != 200) {
        resets.push(assert_window_full(res, "Sonnet", 12));
    }
    assert_eq!(resets.len(), 90);
    assert_eq!(
        mock.messages_requests().len(),
        12,
        "2 before the burst + 10 admitted reached upstream"
    );
    // All the admitted answers share one window; remaining counts down to 0 without repeats.
    let mut remaining: Vec<u32> = results
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| grant_headers(r).1)
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..10).collect::<Vec<u32>>());
    mock.set_delay(Duration::ZERO);
    assert_window_full(&server.send_model(&key, SONNET).await, "Sonnet", 12);
}

#[actix_rt::test]
async fn window_full_answer_names_the_family_the_limit_and_the_reset() {
    let (mock, server, key, _) = serve_high("limits = { sonnet = 10, opus = 3 }\nwindow = \"3s\"");
    let before = now_ms();
    let mut first_reset = 0;
    for i in 0..10u32 {
        let res = server.send_model(&key, SONNET).await;
        assert_eq!(res.status, 200, "request {}: {}", i + 1, res.text());
        let (limit, remaining, reset) = grant_headers(&res);
        assert_eq!(limit, 10);
        assert_eq!(remaining, 9 - i, "remaining after request {}", i + 1);
        if i == 0 {
            first_reset = reset;
            // The window opened at the first request and lasts 3 s.
            assert!(
                reset >= before + 3000 - 1000 && reset <= now_ms() + 3000 + 1000,
                "reset {reset} is not ~3 s after the first request ({before})"
            );
        } else {
            assert_eq!(
                reset, first_reset,
                "one window: the reset time does not move"
            );
        }
    }
    let res = server.send_model(&key, SONNET).await;
    let reset = assert_window_full(&res, "Sonnet", 10);
    assert!(
        (reset - first_reset).abs() <= 1000,
        "the 429 names the window's reset ({first_reset}), got {reset}"
    );
    assert_eq!(
        mock.messages_requests().len(),
        10,
        "the refused request never reached upstream"
    );
}

#[actix_rt::test]
async fn families_are_independent_and_other_is_unlimited_on_high() {
    let (mock, server, key, _) = serve_high("limits = { sonnet = 10, opus = 3 }\nwindow = \"1m\"");
    for i in 0..3 {
        let res = server.send_model(&key, OPUS).await;
        assert_eq!(res.status, 200, "opus {}: {}", i + 1, res.text());
        let (limit, remaining, _) = grant_headers(&res);
        assert_eq!((limit, remaining), (3, 2 - i));
    }
    assert_window_full(&server.send_model(&key, OPUS).await, "Opus", 3);

    // A full Opus window does not block Sonnet.
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(grant_headers(&res).0, 10);
    assert_eq!(grant_headers(&res).1, 9);

    // Haiku (family `other`) is unlimited on high: no window, no x-ratelimit headers.
    for i in 0..15 {
        let res = server.send_model(&key, HAIKU).await;
        assert_eq!(res.status, 200, "haiku {}: {}", i + 1, res.text());
        for name in [
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
        ] {
            assert_eq!(
                res.header(name),
                None,
                "unlimited family must not carry {name}"
            );
        }
    }
    assert_eq!(mock.messages_requests().len(), 3 + 1 + 15);
    // Still full for Opus.
    assert_window_full(&server.send_model(&key, OPUS).await, "Opus", 3);
}

#[actix_rt::test]
async fn a_new_window_opens_after_the_old_one_ends() {
    let (_mock, server, key, _) =
        serve_high("limits = { sonnet = 2, opus = 3 }\nwindow = \"1500ms\"");
    let first = server.send_model(&key, SONNET).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let (_, _, reset) = grant_headers(&first);
    assert_eq!(server.send_model(&key, SONNET).await.status, 200);
    let refused = server.send_model(&key, SONNET).await;
    assert_window_full(&refused, "Sonnet", 2);

    let admitted = poll_async(Duration::from_secs(4), || {
        let fut = server.send_model(&key, SONNET);
        async {
            let res = fut.await;
            if res.status == 200 {
                return Some((now_ms(), res));
            }
            assert_window_full(&res, "Sonnet", 2);
            None
        }
    })
    .await;
    let (at, res) = admitted.expect("no request admitted within 4 s of a 1.5 s window");
    assert!(
        at >= reset - 100,
        "admitted at {at}, before the old window ended at {reset}"
    );
    let (limit, remaining, new_reset) = grant_headers(&res);
    assert_eq!(
        (limit, remaining),
        (2, 1),
        "a fresh window: one request used"
    );
    assert!(
        new_reset >= reset + 1000,
        "the new window ends later ({new_reset}) than the old one ({reset})"
    );
    assert_eq!(server.send_model(&key, SONNET).await.status, 200);
    assert_window_full(&server.send_model(&key, SONNET).await, "Sonnet", 2);
}

#[actix_rt::test]
async fn admitted_requests_are_logged_with_their_count() {
    let (_mock, server, key, _) = serve_high("limits = { sonnet = 10, opus = 3 }\nwindow = \"1m\"");
    for i in 1..=2 {
        assert_eq!(server.send_model(&key, SONNET).await.status, 200);
        let line = format!("rate limit check passed: {i}/10 requests");
        assert!(
            server.wait_for_log(&line, Duration::from_secs(2)).is_some(),
            "log line `{line}` missing"
        );
    }
}

#[actix_rt::test]
async fn count_tokens_and_models_are_never_counted() {
    let (mock, server, key, _) = serve_high("limits = { sonnet = 1, opus = 3 }\nwindow = \"1m\"");
    for _ in 0..3 {
        let res = server
            .post_raw(
                "/v1/messages/count_tokens",
                Some(&key),
                message_request(SONNET).to_string().into_bytes(),
                &[],
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.text());
        let res = server.get("/v1/models", Some(&key), &[]).await;
        assert_eq!(res.status, 200, "{}", res.text());
    }
    assert_eq!(mock.api_requests().len(), 6);
    assert_eq!(server.send_model(&key, SONNET).await.status, 200);
    assert_window_full(&server.send_model(&key, SONNET).await, "Sonnet", 1);
    // A full window does not block count_tokens either.
    let res = server
        .post_raw(
            "/v1/messages/count_tokens",
            Some(&key),
            message_request(SONNET).to_string().into_bytes(),
            &[],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
}
