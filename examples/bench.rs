//! `make bench`: claude-route's cost against the physical baseline, measured in one run on
//! one box — the mock upstream directly, nginx `proxy_pass` to the same mock (when nginx is
//! installed), and claude-route (release binary, SQLite store, limits on but never reached).
//! Prints tables and the target checklist; writes `target/bench/<time>.json` and
//! `target/bench/latest.json`. See BENCHMARKS.md for the method.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "bench/args.rs"]
mod args;
#[path = "bench/http.rs"]
mod http;
#[path = "bench/load.rs"]
mod load;
#[path = "bench/own_redis.rs"]
mod own_redis;
#[path = "bench/procs.rs"]
mod procs;
#[path = "bench/report.rs"]
mod report;
#[path = "bench/stats.rs"]
mod stats;
#[path = "bench/summary.rs"]
mod summary;

use args::Args;
use clap::Parser;
use load::Target;
use procs::Res;
use serde_json::json;
use stats::{ms, Summary};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use summary::{Run, Throughput};

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
    let floor_bin = examples_dir.join("stack_floor");
    for (bin, hint) in [
        (&mock_bin, "cargo build --release --examples"),
        (&floor_bin, "cargo build --release --examples"),
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
    load::set_shape(args.body_kb, &args.user_agent);
    let nproc = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads = args.client_threads.unwrap_or(nproc).max(1);
    let workers = args.workers.unwrap_or(nproc).max(1);
    let machine = procs::machine();
    let loadavg = procs::loadavg();
    if loadavg >= 0.5 {
        println!("note: load average {loadavg:.2} before the run — other work on this box makes the figures noisy");
    }
    println!(
        "claude-route bench on {} cores, {}, kernel {}",
        nproc, machine["cpu"], machine["kernel"]
    );
    if args.body_kb > 0 || args.user_agent != load::CLAUDE_CODE_USER_AGENT {
        println!(
            "requests: ~{} KB bodies, user-agent {}",
            args.body_kb, args.user_agent
        );
    }

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
        .disable_cleanup(args.keep_dir)
        .tempdir()?;
    if args.keep_dir {
        println!("keeping {}", tmp.path().display());
    }
    let (mock, mock_addr) = procs::start_mock(&mock_bin, workers)?;
    println!("mock upstream  http://{mock_addr} ({workers} workers)");

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
            let (proc, addr) = procs::start_nginx(&bin, &dir, mock_addr, workers)?;
            println!(
                "nginx          http://{addr} ({workers} workers, {})",
                bin.display()
            );
            Some((proc, addr))
        }
    };

    let floor = if args.no_floor {
        println!("stack floor: skipped (--no-floor)");
        None
    } else {
        let (proc, addr) = procs::start_floor(&floor_bin, mock_addr, workers)?;
        println!("stack floor    http://{addr} (bare actix-web + upstream::h1 forwarder, {workers} workers)");
        Some((proc, addr))
    };

    let settings = procs::ProxySettings {
        accounts: args.accounts,
        keys: args.keys,
        rust_log: &args.proxy_log,
        workers,
    };
    let home = tmp.path().join("claude-route");
    let (proxy, proxy_addr, proxy_log, keys) =
        procs::launch_proxy(&proxy_bin, &home, mock_addr, &settings, None)?;
    println!(
        "claude-route   http://{proxy_addr} (SQLite store, RUST_LOG={}, {workers} workers, {} accounts, {} keys; {})",
        args.proxy_log,
        args.accounts,
        keys.len(),
        proxy_bin.display()
    );
    // One more claude-route on the Redis store (keys under a fresh prefix).
    let redis_choice = own_redis::choose(
        args.redis.as_deref(),
        args.no_redis,
        &tmp.path().join("redis"),
    )?;
    let redis = match &redis_choice.url {
        None => {
            println!("claude-route on Redis: {}", redis_choice.note);
            None
        }
        Some(url) => {
            let home = tmp.path().join("claude-route-redis");
            let launched = procs::launch_proxy(&proxy_bin, &home, mock_addr, &settings, Some(url))?;
            println!("claude-route   http://{} (Redis store {url})", launched.1);
            Some(launched)
        }
    };
    let other = match &args.compare_bin {
        None => None,
        Some(bin) => {
            let home = tmp.path().join("claude-route-other");
            let launched = procs::launch_proxy(bin, &home, mock_addr, &settings, None)?;
            println!("other build    http://{} ({})", launched.1, bin.display());
            Some(launched)
        }
    };
    std::thread::sleep(Duration::from_secs(1));
    let rss_idle = procs::rss_kib(proxy.pid());
    let fds_idle = procs::open_fds(proxy.pid());

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
    if let Some((_, addr)) = &floor {
        targets.push(Target {
            name: "stack floor",
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
    if let Some((_, addr, _, keys)) = &redis {
        targets.push(Target {
            name: "claude-route+redis",
            addr: *addr,
            keys: keys.clone(),
        });
    }
    if let Some((_, addr, _, keys)) = &other {
        targets.push(Target {
            name: "other build",
            addr: *addr,
            keys: keys.clone(),
        });
    }
    let pids: Vec<u32> = targets
        .iter()
        .map(|t| match t.name {
            "direct" => mock.pid(),
            "nginx" => nginx.as_ref().map_or(0, |(p, _)| p.pid()),
            "stack floor" => floor.as_ref().map_or(0, |(p, _)| p.pid()),
            "claude-route+redis" => redis.as_ref().map_or(0, |r| r.0.pid()),
            "other build" => other.as_ref().map_or(0, |r| r.0.pid()),
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
        "[2/4] throughput: {} connections, {} s per target in {} rounds, after {} s warm-up",
        args.conns, args.tp_secs, args.tp_rounds, args.tp_warmup
    );
    // Rounds alternate the targets so a burst of other work on the box hits them all alike.
    let rounds = args.tp_rounds.max(1);
    let mut sums = vec![(0u64, 0u64, 0f64, procs::CpuTicks::default()); targets.len()];
    for t in &targets {
        load::throughput(t, args.conns, threads, args.tp_warmup);
    }
    for round in 0..rounds {
        for k in 0..targets.len() {
            let i = (round + k) % targets.len();
            let cpu0 = procs::cpu_ticks(pids[i]);
            let (ok, err, secs) = load::throughput(
                &targets[i],
                args.conns,
                threads,
                args.tp_secs / rounds as f64,
            );
            let s = &mut sums[i];
            *s = (
                s.0 + ok,
                s.1 + err,
                s.2 + secs,
                s.3.plus(procs::cpu_ticks(pids[i]).since(cpu0)),
            );
        }
    }
    // CPU of the process serving the target (ticks are 10 ms), per request.
    let tp: Vec<Throughput> = sums
        .iter()
        .map(|&(ok, err, secs, ticks)| Throughput {
            rps: ok as f64 / secs,
            errors: err,
            cpu_us_per_req: ticks.total() as f64 * 10_000.0 / ok.max(1) as f64,
            kernel_us_per_req: ticks.system as f64 * 10_000.0 / ok.max(1) as f64,
        })
        .collect();

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
        args.dump_streams,
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
            // Every target runs every step up to 1000 (the memory target is at 1000 streams);
            // above that, only while its previous step was clean.
            if failed[i] && n > 1000 && !args.all_steps {
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
            // Why streams were incomplete, most frequent first.
            let mut why: Vec<(String, usize)> = Vec::new();
            for reason in results.iter().filter_map(|r| r.failure.clone()) {
                match why.iter_mut().find(|(r, _)| *r == reason) {
                    Some((_, n)) => *n += 1,
                    None => why.push((reason, 1)),
                }
            }
            why.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
            if incomplete > 0 {
                println!(
                    "  {} at {n} streams: {incomplete} incomplete ({why:?})",
                    t.name
                );
            }
            let late: Vec<u64> = results.iter().map(|r| r.max_late).collect();
            let first_ev: Vec<u64> = results
                .iter()
                .filter(|r| r.complete)
                .map(|r| r.first_event)
                .collect();
            let mut cell = json!({
                "clean": clean, "incomplete": incomplete,
                "incomplete_why": why.iter().map(|(r, n)| json!({"why": r, "streams": n})).collect::<Vec<_>>(),
                "worst_lateness_p99_ms": ms(stats::percentile(&late, 99.0)),
                "worst_lateness_max_ms": ms(late.iter().copied().max().unwrap_or(0)),
                "first_event_p99_ms": ms(stats::percentile(&first_ev, 99.0)),
            });
            if let Some(s) = sampler {
                let peak = s.stop();
                rss_peak = rss_peak.max(peak);
                if n == 1000 {
                    rss_at_1000 = Some(peak);
                }
                cell["rss_peak_kib"] = json!(peak);
            }
            // Capacity: the largest step clean with every step before it clean.
            if clean != n {
                failed[i] = true;
            } else if !failed[i] {
                best[i] = n;
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
    let fds_after = procs::open_fds(proxy.pid());

    let run = Run {
        args: &args,
        machine,
        redis: redis_choice.note.clone(),
        client: format!("raw tokio TCP, hand-written HTTP/1.1 keep-alive, {threads} threads"),
        proxy_bin: proxy_bin.display().to_string(),
        workers,
        names: targets.iter().map(|t| t.name).collect(),
        proxy: proxy_i,
        steps,
        lat: lat_sum,
        lat_errors: lat.iter().map(|(_, e)| *e).collect(),
        tp,
        first,
        gaps,
        stream_errors: st.iter().map(|(_, _, e)| *e).collect(),
        stalls: lat_stalls + stream_stalls,
        cap_rows,
        best,
        rss_idle,
        rss_peak,
        rss_at_1000,
        rss_after,
        fds: (fds_idle, fds_after),
        load_secs,
    };
    run.print();
    let checks = run.checks();
    report::checklist(&checks);
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let out = run.json(&stamp, &checks);
    let dir = args.out.clone().unwrap_or_else(|| target_dir.join("bench"));
    let path = report::write_json(&dir, &stamp.replace(':', "-"), &out)?;
    println!("\nwrote {} and latest.json", path.display());
    drop(other);
    drop(redis);
    drop(redis_choice);
    drop(proxy);
    drop(nginx);
    drop(floor);
    drop(mock);
    Ok(())
}
