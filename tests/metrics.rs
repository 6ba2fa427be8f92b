//! SPEC §12: `GET /metrics` — Prometheus text, admin token unless `metrics_public`, and
//! values that match what the proxy did.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::admin_support::{call_with_token, parse_prometheus, Exposition};
use common::*;
use serde_json::json;
use std::time::Duration;

const FAMILIES: [(&str, &str); 10] = [
    ("claude_route_requests", "counter"),
    ("claude_route_upstream_latency_seconds", "histogram"),
    ("claude_route_proxy_overhead_seconds", "histogram"),
    ("claude_route_stream_first_byte_seconds", "histogram"),
    ("claude_route_rate_limited", "counter"),
    ("claude_route_slots_used", "gauge"),
    ("claude_route_slots_capacity", "gauge"),
    ("claude_route_accounts", "gauge"),
    ("claude_route_refresh_attempts", "counter"),
    ("claude_route_tokens", "counter"),
];

async fn scrape(server: &TestServer) -> (String, Exposition) {
    let res = server.admin_get("/metrics").await;
    assert_eq!(res.status, 200, "GET /metrics: {}", res.text());
    let ct = res.header("content-type").unwrap_or("");
    assert!(ct.starts_with("text/plain"), "content-type {ct}");
    let text = res.text();
    let exp = parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\nin:\n{text}"));
    exp.check_histograms()
        .unwrap_or_else(|e| panic!("{e}\nin:\n{text}"));
    (text, exp)
}

/// Each family is declared (`# TYPE`, `# HELP`) with its type and has at least one sample.
fn assert_families(exp: &Exposition, text: &str, families: &[(&str, &str)]) {
    for (family, ty) in families {
        assert_eq!(
            exp.type_of(family),
            Some(*ty),
            "family {family} should be a {ty}:\n{text}"
        );
        assert!(exp.helps.contains_key(*family), "no HELP for {family}");
        assert!(
            exp.samples
                .iter()
                .any(|s| exp.family_of(&s.name) == Some(*family)),
            "family {family} has no sample:\n{text}"
        );
    }
}

fn counter_name(family: &str) -> String {
    format!("{family}_total")
}

#[actix_rt::test]
async fn metrics_need_the_admin_token() {
    let (_mock, server) = start_with_accounts("", &[("trial", "a1")]);
    let base = server.base_url();
    for token in [None, Some("wrong")] {
        let res = call_with_token(&base, "GET", "/metrics", token, None).await;
        res.assert_error(401, "authentication_error", "");
        assert!(!res.text().contains("claude_route_"), "{}", res.text());
    }
    let res = call_with_token(&base, "GET", "/metrics", Some(ADMIN_TOKEN), None).await;
    assert_eq!(res.status, 200, "{}", res.text());
}

#[actix_rt::test]
async fn metrics_public_needs_no_token() {
    let (_mock, server) =
        start_with_accounts("[admin]\nmetrics_public = true\n", &[("trial", "a1")]);
    let res = server.get("/metrics", None, &[]).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let exp = parse_prometheus(&res.text()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        exp.type_of("claude_route_slots_capacity"),
        Some("gauge"),
        "{}",
        res.text()
    );
    // The admin API itself stays closed.
    let res = server.get("/admin/pool", None, &[]).await;
    res.assert_error(401, "authentication_error", "");
}

#[actix_rt::test]
async fn metrics_match_what_the_proxy_did() {
    let (mock, server) = start_with_accounts(
        "[tiers.high]\nlimits = { sonnet = 1 }\n",
        &[("high", "h1"), ("trial", "t1"), ("trial", "t2")],
    );

    // Before any traffic the text parses and the pool gauges are there (labelled families
    // with no series yet may be left out, as Prometheus clients do).
    let (text, exp) = scrape(&server).await;
    assert_families(&exp, &text, &FAMILIES[5..8]);
    assert_eq!(
        exp.value("claude_route_slots_capacity", &[("tier", "high")]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        exp.value("claude_route_slots_capacity", &[("tier", "trial")]),
        Some(14.0),
        "{text}"
    );
    assert_eq!(
        exp.value("claude_route_slots_used", &[("tier", "high")]),
        Some(0.0),
        "{text}"
    );

    let (key, created) = server.admin_create_key(&json!({"tier": "high"})).await;
    let id = created["id"].as_str().unwrap().to_string();
    // 1. JSON, Opus.
    let res = server.send_model(&key, OPUS).await;
    assert_eq!(res.status, 200, "{}", res.text());
    // 2. A stream, Opus.
    let mut body = message_request(OPUS);
    body["stream"] = json!(true);
    let s = server.post_stream(&key, &body, None).await;
    assert_eq!(s.status, 200);
    assert!(String::from_utf8_lossy(&s.bytes()).contains("message_stop"));
    // 3. JSON, Sonnet: the one request the window allows.
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    // 4. Sonnet again: 429 from the proxy's own window.
    server.assert_sonnet_window_full(&key).await;
    assert_eq!(mock.messages_requests().len(), 3);
    server
        .wait_key_usage(&id, &usage_json(3, 30, 15, 6, 9))
        .await;

    // Token counters are settled when an answer ends; give them a moment.
    let tokens_ok = |exp: &Exposition| {
        exp.value(
            "claude_route_tokens_total",
            &[("tier", "high"), ("kind", "input")],
        ) == Some(30.0)
            && exp.value(
                "claude_route_tokens_total",
                &[("tier", "high"), ("kind", "output")],
            ) == Some(15.0)
    };
    let mut last = scrape(&server).await;
    for _ in 0..40 {
        if tokens_ok(&last.1) {
            break;
        }
        sleep(Duration::from_millis(50)).await;
        last = scrape(&server).await;
    }
    let (text, exp) = last;

    // Every family but the refresh attempts (none happened) is declared now.
    let seen: Vec<(&str, &str)> = FAMILIES
        .iter()
        .copied()
        .filter(|(f, _)| *f != "claude_route_refresh_attempts")
        .collect();
    assert_families(&exp, &text, &seen);

    // requests_total: exactly these samples.
    let requests = counter_name("claude_route_requests");
    let want = [
        ("opus", "200", 2.0),
        ("sonnet", "200", 1.0),
        ("sonnet", "429", 1.0),
    ];
    for (family, status, n) in want {
        assert_eq!(
            exp.value(
                &requests,
                &[("tier", "high"), ("family", family), ("status", status)]
            ),
            Some(n),
            "{requests}{{high,{family},{status}}}:\n{text}"
        );
    }
    let total: f64 = exp.all(&requests).iter().map(|s| s.value).sum();
    assert_eq!(total, 4.0, "requests_total sums to {total}:\n{text}");

    // rate_limited_total.
    assert_eq!(
        exp.value(
            "claude_route_rate_limited_total",
            &[("tier", "high"), ("family", "sonnet")]
        ),
        Some(1.0),
        "{text}"
    );
    let limited: f64 = exp
        .all("claude_route_rate_limited_total")
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(limited, 1.0, "{text}");

    // tokens_total: three answers of 10 in / 5 out / 2 cache creation / 3 cache read.
    for (kind, n) in [
        ("input", 30.0),
        ("output", 15.0),
        ("cache_creation", 6.0),
        ("cache_read", 9.0),
    ] {
        assert_eq!(
            exp.value(
                "claude_route_tokens_total",
                &[("tier", "high"), ("kind", kind)]
            ),
            Some(n),
            "tokens {kind}:\n{text}"
        );
    }

    // Slots and accounts.
    assert_eq!(
        exp.value("claude_route_slots_used", &[("tier", "high")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        exp.value("claude_route_slots_capacity", &[("tier", "high")]),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        exp.value("claude_route_slots_used", &[("tier", "trial")]),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        exp.value(
            "claude_route_accounts",
            &[("tier", "high"), ("status", "active")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        exp.value(
            "claude_route_accounts",
            &[("tier", "trial"), ("status", "active")]
        ),
        Some(2.0),
        "{text}"
    );

    // Histograms: three upstream calls, one stream.
    for (family, n) in [
        ("claude_route_upstream_latency_seconds", 3.0),
        ("claude_route_proxy_overhead_seconds", 3.0),
        ("claude_route_stream_first_byte_seconds", 1.0),
    ] {
        assert_eq!(
            exp.value(&format!("{family}_count"), &[("tier", "high")]),
            Some(n),
            "{family}_count:\n{text}"
        );
        let sum = exp
            .value(&format!("{family}_sum"), &[("tier", "high")])
            .unwrap_or(-1.0);
        assert!(
            (0.0..30.0).contains(&sum),
            "{family}_sum {sum} is not a plausible number of seconds"
        );
    }

    // No refresh was attempted.
    let refreshes: f64 = exp
        .all("claude_route_refresh_attempts_total")
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(refreshes, 0.0, "{text}");

    // Nothing secret in the scrape.
    for secret in [
        key.as_str(),
        ADMIN_TOKEN,
        &access_token("h1"),
        "sk-ant-ort01-h1",
    ] {
        assert!(!text.contains(secret), "/metrics shows {secret}");
    }
}

#[actix_rt::test]
async fn metrics_count_refreshes_blacklists_and_upstream_errors() {
    let (mock, server) = start_with_accounts(
        "[refresh]\nsuccess_lock = \"100ms\"\n",
        &[("trial", "a1"), ("trial", "a2")],
    );
    let (key, _) = server.admin_create_key(&json!({"tier": "trial"})).await;
    // An expired token: one successful refresh, the request retried and served.
    mock.push_answer(Answer::error(
        401,
        "authentication_error",
        "OAuth token has expired",
    ));
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());
    // An upstream 529 passes through and is counted.
    mock.push_answer(Answer::error(529, "overloaded_error", "Overloaded"));
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 529, "{}", res.text());
    // A revoked upstream token blacklists a1; the request moves to a2.
    mock.push_answer(Answer::error(
        403,
        "permission_error",
        "OAuth token has been revoked",
    ));
    let res = server.send_model(&key, SONNET).await;
    assert_eq!(res.status, 200, "{}", res.text());

    let (text, exp) = scrape(&server).await;
    let ok: f64 = exp
        .all("claude_route_refresh_attempts_total")
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(ok, 1.0, "one refresh attempt:\n{text}");
    assert_families(&exp, &text, &[("claude_route_refresh_attempts", "counter")]);
    let requests = counter_name("claude_route_requests");
    assert_eq!(
        exp.value(
            &requests,
            &[("tier", "trial"), ("family", "sonnet"), ("status", "200")]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        exp.value(
            &requests,
            &[("tier", "trial"), ("family", "sonnet"), ("status", "529")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        exp.value(
            "claude_route_accounts",
            &[("tier", "trial"), ("status", "blacklisted")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        exp.value(
            "claude_route_accounts",
            &[("tier", "trial"), ("status", "active")]
        ),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn the_parser_rejects_broken_text() {
    let good = "# HELP x_total A counter.\n# TYPE x counter\nx_total{a=\"1\"} 2\n\
                # TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\n\
                h_sum 0.3\nh_count 2\n# EOF\n";
    let exp = parse_prometheus(good).expect("good text parses");
    exp.check_histograms().expect("good histogram");
    assert_eq!(exp.value("x_total", &[("a", "1")]), Some(2.0));
    for bad in [
        "# TYPE x counter\nx_total{a=\"1\" 2\n",
        "# TYPE x counter\nx_total{a=1} 2\n",
        "# TYPE x counter\nx_total two\n",
        "y 1\n",
        "# TYPE x counter\nx_total 1 2 3\n",
    ] {
        assert!(parse_prometheus(bad).is_err(), "accepted: {bad}");
    }
    let not_cumulative = "# TYPE h histogram\nh_bucket{le=\"0.1\"} 3\nh_bucket{le=\"+Inf\"} 2\n\
                          h_sum 0.3\nh_count 2\n";
    assert!(parse_prometheus(not_cumulative)
        .expect("parses")
        .check_histograms()
        .is_err());
    let no_inf = "# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_sum 0.3\nh_count 1\n";
    assert!(parse_prometheus(no_inf)
        .expect("parses")
        .check_histograms()
        .is_err());
    let count_differs = "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.3\nh_count 3\n";
    assert!(parse_prometheus(count_differs)
        .expect("parses")
        .check_histograms()
        .is_err());
}
