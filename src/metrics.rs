//! Prometheus metrics: one registry for the process, updated on the request path with
//! atomics and read at scrape time. Pool gauges are filled in by the scrape itself.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub tier: String,
    pub family: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierFamily {
    pub tier: String,
    pub family: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabel {
    pub tier: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountStatusLabels {
    pub tier: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub tier: String,
    pub kind: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 50 µs … ~100 s
    Histogram::new(exponential_buckets(0.00005, 2.5, 17))
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub upstream_latency: HistogramFamily<TierLabel>,
    pub proxy_overhead: HistogramFamily<TierLabel>,
    pub stream_first_byte: HistogramFamily<TierLabel>,
    pub rate_limited: Family<TierFamily, Counter>,
    pub slots_used: Family<TierLabel, Gauge>,
    pub slots_capacity: Family<TierLabel, Gauge>,
    pub accounts: Family<AccountStatusLabels, Gauge>,
    pub refresh_attempts: Family<OutcomeLabel, Counter>,
    pub tokens: Family<TokenLabels, Counter>,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("claude_route");
        let m = Metrics {
            requests: Family::default(),
            upstream_latency: Family::new_with_constructor(latency_histogram),
            proxy_overhead: Family::new_with_constructor(latency_histogram),
            stream_first_byte: Family::new_with_constructor(latency_histogram),
            rate_limited: Family::default(),
            slots_used: Family::default(),
            slots_capacity: Family::default(),
            accounts: Family::default(),
            refresh_attempts: Family::default(),
            tokens: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "Client requests by tier, model family and status",
            m.requests.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Time from sending upstream to Claude's response headers",
            m.upstream_latency.clone(),
        );
        registry.register(
            "proxy_overhead_seconds",
            "Time the proxy itself adds before and after the upstream call",
            m.proxy_overhead.clone(),
        );
        registry.register(
            "stream_first_byte_seconds",
            "Time from the request's arrival to the first relayed byte of a streamed answer",
            m.stream_first_byte.clone(),
        );
        registry.register(
            "rate_limited",
            "Requests refused by a full window",
            m.rate_limited.clone(),
        );
        registry.register(
            "slots_used",
            "Keys bound to the tier's accounts",
            m.slots_used.clone(),
        );
        registry.register(
            "slots_capacity",
            "Slots the tier's accounts offer",
            m.slots_capacity.clone(),
        );
        registry.register(
            "accounts",
            "Accounts by tier and status",
            m.accounts.clone(),
        );
        registry.register(
            "refresh_attempts",
            "OAuth refresh attempts by outcome",
            m.refresh_attempts.clone(),
        );
        registry.register("tokens", "Tokens used, by tier and kind", m.tokens.clone());
        Metrics { registry, ..m }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

pub fn tier_label(tier: &str) -> TierLabel {
    TierLabel {
        tier: tier.to_string(),
    }
}

pub fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub fn count_refresh(outcome: &str) {
    metrics()
        .refresh_attempts
        .get_or_create(&OutcomeLabel {
            outcome: outcome.to_string(),
        })
        .inc();
}
