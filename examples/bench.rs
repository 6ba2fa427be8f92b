//! `make bench`: claude-route's cost against the physical baseline, measured in one run on
//! one box — the mock upstream directly, nginx `proxy_pass` to the same mock (when nginx is
//! installed), and claude-route (release binary, SQLite store, limits on but never reached).
//! Prints tables and the target checklist; writes `target/bench/<time>.json` and
//! `target/bench/latest.json`. See BENCHMARKS.md for the method.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod http;
mod load;
mod procs;
mod report;
mod stats;

use clap::Parser;
use load::Target;
use procs::Res;
use report::{fmt_mib, fmt_signed_us, fmt_us, table, Check};
use serde_json::json;
use stats::{added_us, ratio, us, Summary};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

#[derive(Parser, Debug)]
#[command(about = "Benchmark claude-route against the mock upstream and nginx")]
struct Args {
    /// Smoke mode: a few requests per phase, small stream steps, 2 s settle.
    #[arg(long)]
    quick: bool,
    /// Seconds to wait after the load before reading RSS again.
    #[arg(long, default_value_t = 30.0)]
    settle: f64,
    #[arg(long, default_value_t = 20)]
    latency_rounds: usize,
    #[arg(long, default_value_t = 500)]
    latency_requests: usize,
    /// Connections of the throughput test.
    #[arg(long, default_value_t = 32)]
    conns: usize,
    #[arg(long, default_value_t = 5.0)]
    tp_secs: f64,
    #[arg(long, default_value_t = 1.0)]
    tp_warmup: f64,
    #[arg(long, default_value_t = 10)]
    stream_rounds: usize,
    #[arg(long, default_value_t = 20)]
    stream_requests: usize,
    #[arg(long, default_value_t = 16)]
    stream_deltas: u32,
    #[arg(long, default_value_t = 5)]
    stream_interval_ms: u64,
    /// Concurrent stream counts of the capacity test.
    #[arg(long, value_delimiter = ',', default_value = "100,250,500,1000,1500")]
    steps: Vec<usize>,
    #[arg(long, default_value_t = 64)]
    cap_deltas: u32,
    #[arg(long, default_value_t = 20)]
    cap_interval_ms: u64,
    /// Stream starts are spread evenly over this many milliseconds.
    #[arg(long, default_value_t = 200)]
    ramp_ms: u64,
    /// An event later than this (ms) behind its schedule makes its stream unclean.
    #[arg(long, default_value_t = 100)]
    late_ms: u64,
    /// Keep stepping a target up after a step with unclean streams.
    #[arg(long)]
    all_steps: bool,
    /// Load generator threads (default: nproc).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Skip nginx even when installed.
    #[arg(long)]
    no_nginx: bool,
    /// RUST_LOG of claude-route (default: its default level, info).
    #[arg(long, default_value = "info")]
    proxy_log: String,
    #[arg(long, default_value_t = 4)]
    accounts: usize,
    #[arg(long, default_value_t = 8)]
    keys: usize,
    /// Also bench claude-route on a Redis store (hook; not implemented by claude-route yet).
    #[arg(long)]
    redis: Option<String>,
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    #[arg(long)]
    mock_bin: Option<PathBuf>,
    /// Where the JSON goes (default: target/bench).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl Args {
    fn apply_quick(&mut self) {
        if self.quick {
            self.settle = 2.0;
            self.latency_rounds = 2;
            self.latency_requests = 50;
            self.tp_secs = 1.0;
            self.tp_warmup = 0.3;
            self.stream_rounds = 2;
            self.stream_requests = 3;
            self.steps = vec![20, 50];
            self.cap_deltas = 16;
        }
    }
}

/// Samples a process's RSS every 10 ms on a thread; `stop` returns the peak (KiB).
struct RssPeak {
    stop: std::sync::Arc<AtomicBool>,
    peak: std::sync::Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl RssPeak {
    fn start(pid: u32) -> RssPeak {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let peak = std::sync::Arc::new(AtomicU64::new(procs::rss_kib(pid)));
        let (s, p) = (stop.clone(), peak.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(procs::rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssPeak {
            stop,
            peak,
            handle: Some(handle),
        }
    }

    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

fn main() {
    let mut args = Args::parse();
    args.apply_quick();
    if let Err(e) = run(args) {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Res<()> {
    let exe = std::env::current_exe()?;
    let examples_dir = exe.parent().ok_or("no exe dir")?.to_path_buf();
    let profile_dir = examples_dir.parent().ok_or("no profile dir")?.to_path_buf();
    let target_dir = profile_dir.parent().ok_or("no target dir")?.to_path_buf();
    let mock_bin = args
        .mock_bin
        .clone()
        .unwrap_or_else(|| examples_dir.join("mock_upstream"));
    let proxy_bin = args
        .proxy_bin
        .clone()
        .unwrap_or_else(|| profile_dir.join("claude-route"));
    for (bin, hint) in [
        (&mock_bin, "cargo build --release --examples"),
        (&proxy_bin, "cargo build --release"),
    ] {
        if !bin.is_file() {
            return Err(format!(
                "{} not found: run `{hint}` (or `make bench`)",
                bin.display()
            )
            .into());
        }
    }
    let nproc = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = args.client_threads.unwrap_or(nproc).max(1);
    let machine = procs::machine();
    println!(
        "claude-route bench on {} cores, {}, kernel {}",
        nproc, machine["cpu"], machine["kernel"]
    );

    // Every stream costs the bench one socket and the proxy two; keep the steps that fit.
    let nofile = procs::open_files_limit();
    let mut steps = args.steps.clone();
    steps.retain(|&n| (2 * n + 256) as u64 <= nofile);
    if steps.len() < args.steps.len() {
        println!(
            "RLIMIT_NOFILE is {nofile}: stream steps above {} skipped (raise it with `ulimit -n`; `make bench` does)",
            steps.last().copied().unwrap_or(0)
        );
    }

    let tmp = tempfile::Builder::new()
        .prefix("claude-route-bench")
        .tempdir()?;
    let (mock, mock_addr) = procs::start_mock(&mock_bin, nproc)?;
    println!("mock upstream  http://{mock_addr} ({nproc} workers)");

    let nginx = match (args.no_nginx, procs::find_nginx()) {
        (true, _) => {
            println!("nginx: skipped (--no-nginx)");
            None
        }
        (false, None) => {
            println!("nginx not installed: skipped");
            None
        }
        (false, Some(bin)) => {
            let dir = tmp.path().join("nginx");
            std::fs::create_dir_all(&dir)?;
            let (proc, addr) = procs::start_nginx(&bin, &dir, mock_addr, nproc)?;
            println!(
                "nginx          http://{addr} ({nproc} workers, {})",
                bin.display()
            );
            Some((proc, addr))
        }
    };

    if let Some(url) = &args.redis {
        // Hook: once claude-route has a Redis store (SPEC §11), start a second claude-route
        // with `[store] url = "<url>"` here and add it as one more target.
        println!("redis store ({url}): skipped — claude-route has no Redis store yet");
    }

    let home = tmp.path().join("claude-route");
    let config = procs::write_proxy_config(&home, mock_addr, args.accounts)?;
    let keys = (0..args.keys.max(1))
        .map(|_| procs::keygen(&proxy_bin, &config))
        .collect::<Res<Vec<_>>>()?;
    let (proxy, proxy_addr, proxy_log) =
        procs::start_proxy(&proxy_bin, &config, &home, &args.proxy_log)?;
    println!(
        "claude-route   http://{proxy_addr} (RUST_LOG={}, {} accounts, {} keys)",
        args.proxy_log,
        args.accounts,
        keys.len()
    );
    std::thread::sleep(Duration::from_secs(1));
    let rss_idle = procs::rss_kib(proxy.pid());

    let mut targets = vec![Target {
        name: "direct",
        addr: mock_addr,
        keys: vec![],
    }];
    if let Some((_, addr)) = &nginx {
        targets.push(Target {
            name: "nginx",
            addr: *addr,
            keys: vec![],
        });
    }
    targets.push(Target {
        name: "claude-route",
        addr: proxy_addr,
        keys: keys.clone(),
    });
    let proxy_i = targets.len() - 1;
    let nginx_i = nginx.as_ref().map(|_| 1);
    let pids: Vec<u32> = targets
        .iter()
        .map(|t| match t.name {
            "direct" => mock.pid(),
            "nginx" => nginx.as_ref().map_or(0, |(p, _)| p.pid()),
            _ => proxy.pid(),
        })
        .collect();
    let started = Instant::now();

    // 1. Added latency at concurrency 1.
    println!(
        "\n[1/4] latency: {} rounds x {} requests per target, c=1, interleaved",
        args.latency_rounds, args.latency_requests
    );
    let lat = load::latency(
        &targets,
        args.latency_rounds,
        args.latency_requests,
        200.min(args.latency_requests * 2),
    )
    .map_err(|e| format!("{e}; claude-route log: {}", proxy_log.display()))?;
    let lat_sum: Vec<Summary> = lat.iter().map(|(s, _)| Summary::of(s)).collect();
    let stall = |s: &[u64], floor: u64| s.iter().filter(|&&v| v >= floor + 30_000_000).count();
    let lat_stalls = stall(&lat[proxy_i].0, lat_sum[0].p50);

    // 2. Throughput.
    println!(
        "[2/4] throughput: {} connections, {} s per target after {} s warm-up",
        args.conns, args.tp_secs, args.tp_warmup
    );
    let mut tp = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        load::throughput(t, args.conns, threads, args.tp_warmup);
        let cpu0: Vec<u64> = pids.iter().map(|&p| procs::cpu_ticks(p)).collect();
        let (ok, err, secs) = load::throughput(t, args.conns, threads, args.tp_secs);
        let cpu1: Vec<u64> = pids.iter().map(|&p| procs::cpu_ticks(p)).collect();
        // CPU of the process serving this target (ticks are 10 ms), per request.
        let cpu_ms = (cpu1[i] - cpu0[i]) as f64 * 10.0;
        let mock_ms = (cpu1[0] - cpu0[0]) as f64 * 10.0;
        tp.push((
            ok as f64 / secs,
            err,
            cpu_ms * 1000.0 / ok.max(1) as f64,
            mock_ms * 1000.0 / ok.max(1) as f64,
        ));
    }

    // 3. Streaming latency.
    println!(
        "[3/4] streaming: {} rounds x {} streams of {}x{} ms per target, c=1",
        args.stream_rounds, args.stream_requests, args.stream_deltas, args.stream_interval_ms
    );
    let st = load::stream_latency(
        &targets,
        args.stream_rounds,
        args.stream_requests,
        args.stream_deltas,
        args.stream_interval_ms,
    )?;
    let first: Vec<Summary> = st.iter().map(|(f, _, _)| Summary::of(f)).collect();
    let gaps: Vec<Summary> = st.iter().map(|(_, g, _)| Summary::of(g)).collect();
    let stream_stalls = stall(&st[proxy_i].0, first[0].p50) + stall(&st[proxy_i].1, gaps[0].p50);

    // 4. Concurrent streams.
    println!(
        "[4/4] concurrent streams of {}x{} ms, steps {:?}, clean = every event within {} ms of schedule",
        args.cap_deltas, args.cap_interval_ms, steps, args.late_ms
    );
    let late_ns = args.late_ms * 1_000_000;
    let mut cap_rows: Vec<serde_json::Value> = Vec::new();
    let mut best = vec![0usize; targets.len()];
    let mut failed = vec![false; targets.len()];
    let mut rss_peak = rss_idle;
    let mut rss_at_1000: Option<u64> = None;
    for &n in &steps {
        let mut row = json!({"streams": n});
        for (i, t) in targets.iter().enumerate() {
            if failed[i] {
                continue;
            }
            let sampler = (i == proxy_i).then(|| RssPeak::start(proxy.pid()));
            let results = load::capacity(
                t,
                n,
                threads,
                args.cap_deltas,
                args.cap_interval_ms,
                Duration::from_millis(args.ramp_ms),
            );
            let clean = results
                .iter()
                .filter(|r| r.complete && r.max_late <= late_ns)
                .count();
            let incomplete = results.iter().filter(|r| !r.complete).count();
            let late: Vec<u64> = results.iter().map(|r| r.max_late).collect();
            let first_ev: Vec<u64> = results
                .iter()
                .filter(|r| r.complete)
                .map(|r| r.first_event)
                .collect();
            let mut cell = json!({
                "clean": clean, "incomplete": incomplete,
                "worst_lateness_p99_ms": us(stats::percentile(&late, 99.0)) / 1000.0,
                "worst_lateness_max_ms": us(late.iter().copied().max().unwrap_or(0)) / 1000.0,
                "first_event_p99_ms": us(stats::percentile(&first_ev, 99.0)) / 1000.0,
            });
            if let Some(s) = sampler {
                let peak = s.stop();
                rss_peak = rss_peak.max(peak);
                if n == 1000 {
                    rss_at_1000 = Some(peak);
                }
                cell["rss_peak_kib"] = json!(peak);
            }
            if clean == n {
                best[i] = n;
            } else if !args.all_steps {
                failed[i] = true;
            }
            row[t.name] = cell;
            std::thread::sleep(Duration::from_millis(300));
        }
        cap_rows.push(row);
    }
    let load_secs = started.elapsed().as_secs_f64();

    println!("settling {} s before the last RSS reading", args.settle);
    std::thread::sleep(Duration::from_secs_f64(args.settle));
    let rss_after = procs::rss_kib(proxy.pid());

    // ---- Report ----
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    let rows: Vec<Vec<String>> = (0..targets.len())
        .map(|i| {
            let added = |a: u64, b: u64| {
                if i == 0 {
                    "-".into()
                } else {
                    fmt_signed_us(added_us(a, b))
                }
            };
            vec![
                names[i].to_string(),
                fmt_us(us(lat_sum[i].p50)),
                fmt_us(us(lat_sum[i].p99)),
                fmt_us(us(lat_sum[i].max)),
                added(lat_sum[i].p50, lat_sum[0].p50),
                added(lat_sum[i].p99, lat_sum[0].p99),
                lat[i].1.to_string(),
            ]
        })
        .collect();
    table(
        &format!(
            "latency, c=1, non-streaming, {} samples each (µs)",
            lat_sum[0].n
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
    let rows: Vec<Vec<String>> = (0..targets.len())
        .map(|i| {
            let r = |b: Option<usize>| {
                b.and_then(|b| ratio(tp[i].0, tp[b].0))
                    .map_or("-".into(), |r| format!("{r:.3}"))
            };
            vec![
                names[i].to_string(),
                format!("{:.0}", tp[i].0),
                r(Some(0)),
                r(nginx_i),
                format!("{:.1}", tp[i].2),
                tp[i].1.to_string(),
            ]
        })
        .collect();
    table(
        &format!("throughput, {} connections, {} s", args.conns, args.tp_secs),
        &[
            "target",
            "req/s",
            "x direct",
            "x nginx",
            "own CPU µs/req",
            "errors",
        ],
        &rows,
    );
    let rows: Vec<Vec<String>> = (0..targets.len())
        .map(|i| {
            let added = |a: u64, b: u64| {
                if i == 0 {
                    "-".into()
                } else {
                    fmt_signed_us(added_us(a, b))
                }
            };
            vec![
                names[i].to_string(),
                fmt_us(us(first[i].p50)),
                fmt_us(us(first[i].p99)),
                added(first[i].p50, first[0].p50),
                added(first[i].p99, first[0].p99),
                fmt_us(us(gaps[i].p99)),
                added(gaps[i].p99, gaps[0].p99),
                st[i].2.to_string(),
            ]
        })
        .collect();
    table(
        &format!(
            "streaming, c=1, {} streams of {}x{} ms each (µs)",
            first[0].n, args.stream_deltas, args.stream_interval_ms
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
    let rows: Vec<Vec<String>> = cap_rows
        .iter()
        .map(|row| {
            let mut cells = vec![row["streams"].to_string()];
            for name in &names {
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
    header.extend(names.iter().map(|n| *n));
    header.push("claude-route RSS peak");
    table("concurrent streams: clean / started", &header, &rows);
    table(
        "claude-route memory (VmRSS)",
        &[
            "idle",
            "peak (streams)",
            "at 1000 streams",
            &format!("{} s after load", args.settle),
        ],
        &[vec![
            fmt_mib(rss_idle),
            fmt_mib(rss_peak),
            rss_at_1000.map_or("-".into(), fmt_mib),
            fmt_mib(rss_after),
        ]],
    );

    let mb = 1024u64;
    let added_p50 = added_us(lat_sum[proxy_i].p50, lat_sum[0].p50);
    let added_p99 = added_us(lat_sum[proxy_i].p99, lat_sum[0].p99);
    let tp_vs_nginx = nginx_i.and_then(|n| ratio(tp[proxy_i].0, tp[n].0));
    let added_first_p99 = added_us(first[proxy_i].p99, first[0].p99);
    let checks = vec![
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
            tp_vs_nginx.map_or("nginx not run".into(), |r| format!("{r:.3}x")),
            tp_vs_nginx.map(|r| r >= 0.9),
        ),
        Check::new(
            "streaming added 1st-event p99",
            "<= 300 µs",
            format!("{added_first_p99:+.1} µs"),
            Some(added_first_p99 <= 300.0),
        ),
        Check::new(
            "no Nagle stall (+30 ms outliers)",
            "0",
            format!("{}", lat_stalls + stream_stalls),
            Some(lat_stalls + stream_stalls == 0),
        ),
        Check::new(
            "clean concurrent streams",
            ">= 1000",
            best[proxy_i].to_string(),
            steps.contains(&1000).then_some(best[proxy_i] >= 1000),
        ),
        Check::new(
            "RSS idle",
            "<= 20 MiB",
            fmt_mib(rss_idle),
            Some(rss_idle <= 20 * mb),
        ),
        Check::new(
            "RSS at 1000 streams",
            "<= 100 MiB",
            rss_at_1000.map_or("not run".into(), fmt_mib),
            steps
                .contains(&1000)
                .then(|| rss_at_1000.unwrap_or(0) <= 100 * mb),
        ),
        Check::new(
            "RSS after load",
            "<= idle + 10 MiB",
            fmt_mib(rss_after),
            Some(rss_after <= rss_idle + 10 * mb),
        ),
    ];
    report::checklist(&checks);

    let per_target = |f: &dyn Fn(usize) -> serde_json::Value| -> serde_json::Value {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), f(i)))
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let now = SystemTime::now();
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let out = json!({
        "time": stamp,
        "machine": machine,
        "quick": args.quick,
        "client": format!("raw tokio TCP, HTTP/1.1 keep-alive, {threads} threads"),
        "claude_route_log": args.proxy_log,
        "nginx": nginx.is_some(),
        "redis": "skipped: not implemented",
        "load_seconds": load_secs.round(),
        "latency": {
            "rounds": args.latency_rounds, "requests_per_round": args.latency_requests,
            "targets": per_target(&|i| { let mut v = lat_sum[i].json(); v["errors"] = json!(lat[i].1); v }),
            "added_p50_us": added_p50, "added_p99_us": added_p99,
        },
        "throughput": {
            "connections": args.conns, "seconds": args.tp_secs,
            "targets": per_target(&|i| json!({"rps": tp[i].0.round(), "errors": tp[i].1, "cpu_us_per_req": (tp[i].2 * 10.0).round() / 10.0})),
            "ratio_to_direct": ratio(tp[proxy_i].0, tp[0].0), "ratio_to_nginx": tp_vs_nginx,
        },
        "streaming": {
            "deltas": args.stream_deltas, "interval_ms": args.stream_interval_ms,
            "targets": per_target(&|i| json!({"first_event": first[i].json(), "gap": gaps[i].json(), "errors": st[i].2})),
            "added_first_event_p50_us": added_us(first[proxy_i].p50, first[0].p50),
            "added_first_event_p99_us": added_first_p99,
            "added_gap_p99_us": added_us(gaps[proxy_i].p99, gaps[0].p99),
        },
        "concurrent_streams": {
            "deltas": args.cap_deltas, "interval_ms": args.cap_interval_ms, "ramp_ms": args.ramp_ms, "late_ms": args.late_ms,
            "steps": cap_rows, "max_clean": per_target(&|i| json!(best[i])),
        },
        "memory_kib": {"idle": rss_idle, "peak": rss_peak, "at_1000_streams": rss_at_1000, "after": rss_after, "settle_s": args.settle},
        "targets": checks.iter().map(Check::json).collect::<Vec<_>>(),
    });
    let dir = args.out.clone().unwrap_or_else(|| target_dir.join("bench"));
    let path = report::write_json(&dir, &stamp.replace(':', "-"), &out)?;
    println!("\nwrote {} and latest.json", path.display());
    drop(proxy);
    drop(nginx);
    drop(mock);
    Ok(())
}
