//! Command-line settings of the bench.

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Benchmark claude-route against the mock upstream and nginx")]
pub struct Args {
    /// Smoke mode: a few requests per phase, small stream steps, 2 s settle.
    #[arg(long)]
    pub quick: bool,
    /// Seconds to wait after the load before reading RSS again.
    #[arg(long, default_value_t = 30.0)]
    pub settle: f64,
    #[arg(long, default_value_t = 20)]
    pub latency_rounds: usize,
    #[arg(long, default_value_t = 500)]
    pub latency_requests: usize,
    /// Connections of the throughput test.
    #[arg(long, default_value_t = 32)]
    pub conns: usize,
    /// Seconds of throughput load per target. Ten one-second rounds: with five, one busy
    /// second of the host's moved a target's req/s by up to 20 % (BENCHMARKS.md, twelfth pass).
    #[arg(long, default_value_t = 10.0)]
    pub tp_secs: f64,
    #[arg(long, default_value_t = 1.0)]
    pub tp_warmup: f64,
    /// The throughput time of each target is split over this many alternating rounds.
    #[arg(long, default_value_t = 10)]
    pub tp_rounds: usize,
    #[arg(long, default_value_t = 10)]
    pub stream_rounds: usize,
    #[arg(long, default_value_t = 20)]
    pub stream_requests: usize,
    #[arg(long, default_value_t = 16)]
    pub stream_deltas: u32,
    #[arg(long, default_value_t = 5)]
    pub stream_interval_ms: u64,
    /// Pad each request's conversation to about this many KB (0: a one-line request). Claude
    /// Code sends 50–200 KB; the body check and, for other clients, the identity line scale
    /// with it.
    #[arg(long, default_value_t = 0)]
    pub body_kb: usize,
    /// The clients' user-agent. `claude-cli/…` is Claude Code; anything else (say
    /// `anthropic-python/0.40.0`) has claude-route put Claude Code's identity into `system`.
    #[arg(long, default_value = super::load::CLAUDE_CODE_USER_AGENT)]
    pub user_agent: String,
    /// Concurrent stream counts of the capacity test.
    #[arg(long, value_delimiter = ',', default_value = "100,250,500,1000,1500")]
    pub steps: Vec<usize>,
    #[arg(long, default_value_t = 64)]
    pub cap_deltas: u32,
    #[arg(long, default_value_t = 20)]
    pub cap_interval_ms: u64,
    /// Stream starts are spread evenly over this many milliseconds.
    #[arg(long, default_value_t = 200)]
    pub ramp_ms: u64,
    /// An event later than this (ms) behind its schedule makes its stream unclean.
    #[arg(long, default_value_t = 100)]
    pub late_ms: u64,
    /// Run every step for every target (default: above 1000, only after a clean step).
    #[arg(long)]
    pub all_steps: bool,
    /// Load generator threads (default: nproc).
    #[arg(long)]
    pub client_threads: Option<usize>,
    /// Workers of every server: the mock, nginx, the stack floor and claude-route (default:
    /// nproc). With 1, nothing a request touches is shared between two serving threads.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Skip nginx even when installed.
    #[arg(long)]
    pub no_nginx: bool,
    /// Skip the stack floor (a bare actix-web + upstream::h1 forwarder: what the HTTP stack costs alone).
    #[arg(long)]
    pub no_floor: bool,
    /// RUST_LOG of claude-route (default: its default level, info).
    #[arg(long, default_value = "info")]
    pub proxy_log: String,
    /// Keep the run's temp dir (configs, store, claude-route's log) and print where it is.
    #[arg(long)]
    pub keep_dir: bool,
    #[arg(long, default_value_t = 4)]
    pub accounts: usize,
    #[arg(long, default_value_t = 8)]
    pub keys: usize,
    /// The Redis store of the second claude-route ("claude-route+redis"), e.g.
    /// redis://127.0.0.1:6379/0 (keys under a fresh prefix). Default: a redis-server of the
    /// bench's own when one is installed.
    #[arg(long)]
    pub redis: Option<String>,
    /// Skip the claude-route on Redis.
    #[arg(long, conflicts_with = "redis")]
    pub no_redis: bool,
    /// The claude-route build to bench (default: target/release/claude-route; `make bench`
    /// sets BENCH_PROXY_BIN to the profile-guided build of `make pgo` when it has one).
    #[arg(long, env = "BENCH_PROXY_BIN")]
    pub proxy_bin: Option<PathBuf>,
    /// Also bench another claude-route build (SQLite store, same settings) as the target
    /// "other build", interleaved with this one: an A/B in one run, on the same noise.
    #[arg(long)]
    pub compare_bin: Option<PathBuf>,
    #[arg(long)]
    pub mock_bin: Option<PathBuf>,
    /// Print every sequential stream (phase 3) on stderr: target, position in its round,
    /// start in CLOCK_MONOTONIC ns (the clock of `perf record -k CLOCK_MONOTONIC`) and time
    /// to first event in ns, to line slow first events up with a scheduler trace.
    #[arg(long)]
    pub dump_streams: bool,
    /// Where the JSON goes (default: target/bench).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl Args {
    pub fn apply_quick(&mut self) {
        if self.quick {
            self.settle = 2.0;
            self.latency_rounds = 2;
            self.latency_requests = 50;
            self.tp_secs = 1.0;
            self.tp_rounds = 1;
            self.tp_warmup = 0.3;
            self.stream_rounds = 2;
            self.stream_requests = 3;
            self.steps = vec![20, 50];
            self.cap_deltas = 16;
        }
    }
}
