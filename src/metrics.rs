//! Prometheus metrics: one registry for the process, updated on the request path with
//! atomics and read at scrape time. Pool gauges are filled in by the scrape itself.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::cell::RefCell;
use std::rc::Rc;
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

/// One tier's request-path metrics, looked up once per thread: a request then touches only
/// the metrics' own counters, never the families' maps (no label strings built, hashed and
/// dropped per request).
pub struct TierMetrics {
    tier: String,
    pub upstream_latency: Histogram,
    pub proxy_overhead: Histogram,
    pub stream_first_byte: Histogram,
    /// input, output, cache_creation, cache_read
    tokens: [Counter; 4],
    /// By (model family, status), as they occur.
    requests: RefCell<Vec<(&'static str, u16, Counter)>>,
}

const TOKEN_KINDS: [&str; 4] = ["input", "output", "cache_creation", "cache_read"];

impl TierMetrics {
    fn new(tier: &str) -> TierMetrics {
        let m = metrics();
        let label = tier_label(tier);
        TierMetrics {
            tier: tier.to_string(),
            upstream_latency: m.upstream_latency.get_or_create(&label).clone(),
            proxy_overhead: m.proxy_overhead.get_or_create(&label).clone(),
            stream_first_byte: m.stream_first_byte.get_or_create(&label).clone(),
            tokens: TOKEN_KINDS.map(|kind| {
                m.tokens
                    .get_or_create(&TokenLabels {
                        tier: tier.to_string(),
                        kind: kind.to_string(),
                    })
                    .clone()
            }),
            requests: RefCell::new(Vec::new()),
        }
    }

    /// Counts a finished request.
    pub fn count_request(&self, family: &'static str, status: u16) {
        let mut seen = self.requests.borrow_mut();
        if let Some((_, _, counter)) = seen.iter().find(|(f, s, _)| *s == status && *f == family) {
            counter.inc();
            return;
        }
        let counter = metrics()
            .requests
            .get_or_create(&RequestLabels {
                tier: self.tier.clone(),
                family: family.to_string(),
                status,
            })
            .clone();
        counter.inc();
        seen.push((family, status, counter));
    }

    /// Adds a served request's tokens.
    pub fn count_tokens(&self, usage: &crate::store::Usage) {
        let counts = [
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_creation_input_tokens,
            usage.cache_read_input_tokens,
        ];
        for (counter, n) in self.tokens.iter().zip(counts) {
            if n > 0 {
                counter.inc_by(n);
            }
        }
    }
}

thread_local! {
    static TIER_METRICS: RefCell<Vec<Rc<TierMetrics>>> = const { RefCell::new(Vec::new()) };
}

/// This thread's handles on `tier`'s metrics (made afresh while the thread is ending, when a
/// dropped answer settles after its thread-locals are gone).
pub fn tier_metrics(tier: &str) -> Rc<TierMetrics> {
    TIER_METRICS
        .try_with(|cell| {
            let mut known = cell.try_borrow_mut().ok()?;
            if let Some(found) = known.iter().find(|t| t.tier == tier) {
                return Some(found.clone());
            }
            let made = Rc::new(TierMetrics::new(tier));
            known.push(made.clone());
            Some(made)
        })
        .ok()
        .flatten()
        .unwrap_or_else(|| Rc::new(TierMetrics::new(tier)))
}
