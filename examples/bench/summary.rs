//! Everything one run measured, turned into tables, the target checklist and JSON.

use super::args::Args;
use super::report::{fmt_mib, fmt_signed_us, fmt_us, table, Check};
use super::stats::{added_us, ratio, us, Summary};
use serde_json::{json, Value};

pub struct Throughput {
    pub rps: f64,
    pub errors: u64,
    /// CPU time of the process serving the target, per request.
    pub cpu_us_per_req: f64,
    /// The kernel's part of it (system time): sockets and scheduling, not the proxy's code.
    pub kernel_us_per_req: f64,
}

pub struct Run<'a> {
    pub args: &'a Args,
    pub machine: Value,
    /// Which Redis the "claude-route+redis" target ran on, or why it was skipped.
    pub redis: String,
    pub client: String,
    /// The claude-route build benched.
    pub proxy_bin: String,
    /// Workers of every server.
    pub workers: usize,
    pub names: Vec<&'static str>,
    pub proxy: usize,
    pub steps: Vec<usize>,
    pub lat: Vec<Summary>,
    pub lat_errors: Vec<usize>,
    pub tp: Vec<Throughput>,
    pub first: Vec<Summary>,
    pub gaps: Vec<Summary>,
    pub stream_errors: Vec<usize>,
    /// Proxy samples 30 ms or more above direct's median (Nagle/delayed-ACK signature).
    pub stalls: usize,
    pub cap_rows: Vec<Value>,
    pub best: Vec<usize>,
    pub rss_idle: u64,
    pub rss_peak: u64,
    pub rss_at_1000: Option<u64>,
    pub rss_after: u64,
    /// Open descriptors of claude-route idle and after the settle time.
    pub fds: (usize, usize),
    pub load_secs: f64,
}

impl Run<'_> {
    /// The column of a target, when it ran.
    fn column(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| *n == name)
    }

    fn nginx(&self) -> Option<usize> {
        self.column("nginx")
    }

    /// The stack floor's column: what claude-route costs beyond the HTTP stack it is built on,
    /// the part its own code can change.
    fn floor(&self) -> Option<usize> {
        self.column("stack floor")
    }

    fn added(&self, i: usize, a: u64, b: u64) -> String {
        if i == 0 {
            "-".into()
        } else {
            fmt_signed_us(added_us(a, b))
        }
    }

    pub fn print(&self) {
        let n = self.names.len();
        let rows: Vec<Vec<String>> = (0..n)
            .map(|i| {
                let (s, d) = (&self.lat[i], &self.lat[0]);
                vec![
                    self.names[i].to_string(),
                    fmt_us(us(s.p50)),
                    fmt_us(us(s.p99)),
                    fmt_us(us(s.max)),
                    self.added(i, s.p50, d.p50),
                    self.added(i, s.p99, d.p99),
                    self.lat_errors[i].to_string(),
                ]
            })
            .collect();
        table(
            &format!(
                "latency, c=1, non-streaming, {} samples each (µs)",
                self.lat[0].n
            ),
            &[
                "target",
                "p50",
                "p99",
                "max",
                "added p50",
                "added p99",
                "errors",
            ],
            &rows,
        );
        let rows: Vec<Vec<String>> = (0..n)
            .map(|i| {
                let r = |base: Option<usize>| {
                    self.tp_ratio(i, base)
                        .map_or("-".into(), |r| format!("{r:.3}"))
                };
                vec![
                    self.names[i].to_string(),
                    format!("{:.0}", self.tp[i].rps),
                    r(Some(0)),
                    r(self.nginx()),
                    r(self.floor()),
                    format!("{:.1}", self.tp[i].cpu_us_per_req),
                    format!("{:.1}", self.tp[i].kernel_us_per_req),
                    self.tp[i].errors.to_string(),
                ]
            })
            .collect();
        table(
            &format!(
                "throughput, {} connections, {} s",
                self.args.conns, self.args.tp_secs
            ),
            &[
                "target",
                "req/s",
                "x direct",
                "x nginx",
                "x floor",
                "own CPU µs/req",
                "of it kernel",
                "errors",
            ],
            &rows,
        );
        let rows: Vec<Vec<String>> = (0..n)
            .map(|i| {
                let (f, g) = (&self.first[i], &self.gaps[i]);
                vec![
                    self.names[i].to_string(),
                    fmt_us(us(f.p50)),
                    fmt_us(us(f.p99)),
                    self.added(i, f.p50, self.first[0].p50),
                    self.added(i, f.p99, self.first[0].p99),
                    fmt_us(us(g.p99)),
                    self.added(i, g.p99, self.gaps[0].p99),
                    self.stream_errors[i].to_string(),
                ]
            })
            .collect();
        table(
            &format!(
                "streaming, c=1, {} streams of {}x{} ms each (µs)",
                self.first[0].n, self.args.stream_deltas, self.args.stream_interval_ms
            ),
            &[
                "target",
                "1st event p50",
                "1st p99",
                "added p50",
                "added p99",
                "gap p99",
                "added gap p99",
                "errors",
            ],
            &rows,
        );
        let rows: Vec<Vec<String>> = self
            .cap_rows
            .iter()
            .map(|row| {
                let mut cells = vec![row["streams"].to_string()];
                for name in &self.names {
                    cells.push(match row.get(*name) {
                        Some(c) => format!(
                            "{}/{} (worst {:.1} ms)",
                            c["clean"],
                            row["streams"],
                            c["worst_lateness_max_ms"].as_f64().unwrap_or(0.0)
                        ),
                        None => "-".into(),
                    });
                }
                cells.push(
                    row["claude-route"]["rss_peak_kib"]
                        .as_u64()
                        .map_or("-".into(), fmt_mib),
                );
                cells
            })
            .collect();
        let mut header = vec!["streams"];
        header.extend(self.names.iter().copied());
        header.push("claude-route RSS peak");
        table(
            "concurrent streams: clean / started (worst event lateness)",
            &header,
            &rows,
        );
        let after = format!("{} s after load", self.args.settle);
        table(
            "claude-route memory (VmRSS)",
            &[
                "idle",
                "peak (streams)",
                "at 1000 streams",
                &after,
                "open fds idle/after",
            ],
            &[vec![
                fmt_mib(self.rss_idle),
                fmt_mib(self.rss_peak),
                self.rss_at_1000.map_or("-".into(), fmt_mib),
                fmt_mib(self.rss_after),
                format!("{}/{}", self.fds.0, self.fds.1),
            ]],
        );
    }

    /// Target `i`'s req/s over the `base` column's, when that ran.
    fn tp_ratio(&self, i: usize, base: Option<usize>) -> Option<f64> {
        base.and_then(|b| ratio(self.tp[i].rps, self.tp[b].rps))
    }

    fn tp_vs_nginx(&self) -> Option<f64> {
        self.tp_ratio(self.proxy, self.nginx())
    }

    pub fn checks(&self) -> Vec<Check> {
        let p = self.proxy;
        let mib = 1024u64;
        let added_p50 = added_us(self.lat[p].p50, self.lat[0].p50);
        let added_p99 = added_us(self.lat[p].p99, self.lat[0].p99);
        let first_p99 = added_us(self.first[p].p99, self.first[0].p99);
        let tp = self.tp_vs_nginx();
        let ran_1000 = self.steps.contains(&1000);
        vec![
            Check::new(
                "added latency p50",
                "<= 50 µs",
                format!("{added_p50:+.1} µs"),
                Some(added_p50 <= 50.0),
            ),
            Check::new(
                "added latency p99",
                "<= 120 µs",
                format!("{added_p99:+.1} µs"),
                Some(added_p99 <= 120.0),
            ),
            Check::new(
                "throughput vs nginx",
                ">= 0.9x",
                tp.map_or("nginx not run".into(), |r| format!("{r:.3}x")),
                tp.map(|r| r >= 0.9),
            ),
            Check::new(
                "streaming added 1st-event p99",
                "<= 300 µs",
                format!("{first_p99:+.1} µs"),
                Some(first_p99 <= 300.0),
            ),
            Check::new(
                "no Nagle stall (+30 ms samples)",
                "0",
                self.stalls.to_string(),
                Some(self.stalls == 0),
            ),
            Check::new(
                "clean concurrent streams",
                ">= 1000",
                self.best[p].to_string(),
                ran_1000.then_some(self.best[p] >= 1000),
            ),
            Check::new(
                "RSS idle",
                "<= 20 MiB",
                fmt_mib(self.rss_idle),
                Some(self.rss_idle <= 20 * mib),
            ),
            Check::new(
                "RSS at 1000 streams",
                "<= 100 MiB",
                self.rss_at_1000.map_or("not run".into(), fmt_mib),
                self.rss_at_1000.map(|r| r <= 100 * mib),
            ),
            Check::new(
                "RSS after load",
                "<= idle + 10 MiB",
                fmt_mib(self.rss_after),
                Some(self.rss_after <= self.rss_idle + 10 * mib),
            ),
        ]
    }

    fn per_target(&self, f: &dyn Fn(usize) -> Value) -> Value {
        let map: serde_json::Map<String, Value> = self
            .names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), f(i)))
            .collect();
        map.into()
    }

    pub fn json(&self, stamp: &str, checks: &[Check]) -> Value {
        let (a, p) = (self.args, self.proxy);
        json!({
            "time": stamp,
            "machine": self.machine,
            "quick": a.quick,
            "client": self.client,
            "claude_route_bin": self.proxy_bin,
            "workers": self.workers,
            "claude_route_rust_log": a.proxy_log,
            "request_body_kb": a.body_kb,
            "user_agent": a.user_agent,
            "nginx": self.nginx().is_some(),
            "redis": self.redis,
            "load_seconds": self.load_secs.round(),
            "latency": {
                "rounds": a.latency_rounds, "requests_per_round": a.latency_requests,
                "targets": self.per_target(&|i| {
                    let mut v = self.lat[i].json();
                    v["errors"] = json!(self.lat_errors[i]);
                    v
                }),
                "added_p50_us": added_us(self.lat[p].p50, self.lat[0].p50),
                "added_p99_us": added_us(self.lat[p].p99, self.lat[0].p99),
            },
            "throughput": {
                "connections": a.conns, "seconds": a.tp_secs,
                "targets": self.per_target(&|i| json!({
                    "rps": self.tp[i].rps.round(),
                    "errors": self.tp[i].errors,
                    "cpu_us_per_req": (self.tp[i].cpu_us_per_req * 10.0).round() / 10.0,
                    "kernel_us_per_req": (self.tp[i].kernel_us_per_req * 10.0).round() / 10.0,
                })),
                "ratio_to_direct": self.tp_ratio(p, Some(0)),
                "ratio_to_nginx": self.tp_vs_nginx(),
                "ratio_to_floor": self.tp_ratio(p, self.floor()),
            },
            "streaming": {
                "deltas": a.stream_deltas, "interval_ms": a.stream_interval_ms,
                "targets": self.per_target(&|i| json!({
                    "first_event": self.first[i].json(),
                    "gap": self.gaps[i].json(),
                    "errors": self.stream_errors[i],
                })),
                "added_first_event_p50_us": added_us(self.first[p].p50, self.first[0].p50),
                "added_first_event_p99_us": added_us(self.first[p].p99, self.first[0].p99),
                "added_gap_p99_us": added_us(self.gaps[p].p99, self.gaps[0].p99),
            },
            "concurrent_streams": {
                "deltas": a.cap_deltas, "interval_ms": a.cap_interval_ms,
                "ramp_ms": a.ramp_ms, "late_ms": a.late_ms,
                "steps": self.cap_rows,
                "max_clean": self.per_target(&|i| json!(self.best[i])),
            },
            "memory_kib": {
                "idle": self.rss_idle, "peak": self.rss_peak,
                "at_1000_streams": self.rss_at_1000, "after": self.rss_after, "settle_s": a.settle,
                "open_fds_idle": self.fds.0, "open_fds_after": self.fds.1,
            },
            "targets": checks.iter().map(Check::json).collect::<Vec<_>>(),
        })
    }
}
