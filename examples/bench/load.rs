//! The load phases. Each generator thread runs its own single-threaded tokio runtime and
//! drives its share of the connections; no allocation or locking on the request path
//! beyond the response buffer.

use super::http::{Conn, Request, SseClock};
use serde_json::json;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// One thing to measure: the mock itself, nginx, claude-route.
pub struct Target {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// Proxy keys, used round-robin by connection; ignored by the mock and nginx.
    pub keys: Vec<String>,
}

/// Claude Code's user-agent: the bench's clients by default.
pub const CLAUDE_CODE_USER_AGENT: &str = "claude-cli/1.0.0";

/// What every request of the run looks like (`--body-kb`, `--user-agent`).
pub struct Shape {
    json_body: String,
    stream_body: String,
    user_agent: String,
}

static SHAPE: OnceLock<Shape> = OnceLock::new();

/// Sets the requests' shape for the whole run; call before the first request is made.
pub fn set_shape(body_kb: usize, user_agent: &str) {
    let body = |stream: bool| conversation(body_kb * 1024, stream);
    let _ = SHAPE.set(Shape {
        json_body: body(false),
        stream_body: body(true),
        user_agent: user_agent.to_string(),
    });
}

fn shape() -> &'static Shape {
    SHAPE.get_or_init(|| Shape {
        json_body: conversation(0, false),
        stream_body: conversation(0, true),
        user_agent: CLAUDE_CODE_USER_AGENT.into(),
    })
}

/// A Messages request of at least `bytes` bytes: a system prompt and a conversation about
/// code, with the newlines, quotes and tabs real ones are full of.
fn conversation(bytes: usize, stream: bool) -> String {
    const TURN: &str = "Here is the file:\n```rust\nfn main() {\n    println!(\"hello, {}\", name);\n}\n```\nThe \"tests\" pass;\tnext step? ";
    let mut messages = vec![json!({"role": "user", "content": "Say hello."})];
    let mut body = String::new();
    loop {
        let mut request =
            json!({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": messages});
        if stream {
            request["stream"] = json!(true);
        }
        if bytes > 0 {
            request["system"] = json!([{"type": "text", "text": TURN.repeat(8)}]);
        }
        body.clear();
        body.push_str(&request.to_string());
        if body.len() >= bytes {
            return body;
        }
        let role = if messages.len() % 2 == 0 {
            "user"
        } else {
            "assistant"
        };
        messages.insert(
            0,
            json!({"role": role, "content": [{"type": "text", "text": TURN.repeat(16)}]}),
        );
    }
}

impl Target {
    fn headers(&self, conn: usize) -> Vec<(&'static str, String)> {
        let key = self.keys.get(conn % self.keys.len().max(1)).cloned();
        vec![
            ("x-api-key", key.unwrap_or_else(|| "sk-cli-v1-none".into())),
            ("user-agent", shape().user_agent.clone()),
            ("anthropic-version", "2023-06-01".into()),
            ("content-type", "application/json".into()),
        ]
    }

    pub fn json_request(&self, conn: usize) -> Request {
        let mut h = self.headers(conn);
        h.push(("accept", "application/json".into()));
        Request::post(self.addr, "/v1/messages", &h, &shape().json_body)
    }

    pub fn stream_request(&self, conn: usize, deltas: u32, interval_ms: u64) -> Request {
        let mut h = self.headers(conn);
        h.push(("accept", "text/event-stream".into()));
        h.push(("x-mock-deltas", deltas.to_string()));
        h.push(("x-mock-interval-ms", interval_ms.to_string()));
        Request::post(self.addr, "/v1/messages", &h, &shape().stream_body)
    }
}

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Runs `make(thread_index)` on `threads` OS threads, each with its own runtime.
pub fn on_threads<T, F, Fut>(threads: usize, make: F) -> Vec<T>
where
    T: Send,
    F: Fn(usize) -> Fut + Sync,
    Fut: Future<Output = T>,
{
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|i| {
                let make = &make;
                s.spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("tokio runtime");
                    rt.block_on(make(i))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("generator thread panicked"))
            .collect()
    })
}

/// Sends one request on a kept-alive connection (reconnecting when needed); returns the
/// status and the SSE event arrival times when `events` is given.
async fn exchange(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    req: &Request,
    mut events: Option<&mut SseClock>,
) -> Res<u16> {
    // A kept-alive connection the server closed while idle fails before any answer byte:
    // retry that once on a fresh connection, as HTTP clients do.
    for attempt in 0..2 {
        let reused = conn.is_some();
        if conn.is_none() {
            *conn = Some(Conn::connect(addr).await?);
        }
        let c = conn.as_mut().ok_or("no connection")?;
        let before = c.bytes_read();
        let sent = c.send(req).await;
        let result = match (sent, events.as_deref_mut()) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(clock)) => c.response(&mut |b, t| clock.feed(b, t)).await,
            (Ok(()), None) => c.response(&mut |_, _| {}).await,
        };
        match result {
            Ok(head) => {
                if head.close {
                    *conn = None;
                }
                return Ok(head.status);
            }
            Err(e) => {
                let stale = reused && c.bytes_read() == before;
                *conn = None;
                if !stale || attempt == 1 {
                    return Err(e.into());
                }
            }
        }
    }
    Err("unreachable".into())
}

/// Latency at concurrency 1: `rounds` × `per_round` sequential requests per target,
/// targets alternating each round (order rotated), one keep-alive connection each.
/// Returns nanosecond samples per target and the error count.
pub fn latency(
    targets: &[Target],
    rounds: usize,
    per_round: usize,
    warmup: usize,
) -> Res<Vec<(Vec<u64>, usize)>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let reqs: Vec<Request> = targets.iter().map(|t| t.json_request(0)).collect();
        let mut conns: Vec<Option<Conn>> = targets.iter().map(|_| None).collect();
        let mut out: Vec<(Vec<u64>, usize)> = targets
            .iter()
            .map(|_| (Vec::with_capacity(rounds * per_round), 0))
            .collect();
        for (i, t) in targets.iter().enumerate() {
            for _ in 0..warmup {
                let status = exchange(&mut conns[i], t.addr, &reqs[i], None).await?;
                if status != 200 {
                    return Err(format!("{}: warm-up request answered {status}", t.name).into());
                }
            }
        }
        for round in 0..rounds {
            for k in 0..targets.len() {
                let i = (round + k) % targets.len();
                for _ in 0..per_round {
                    let start = Instant::now();
                    let ok = matches!(
                        exchange(&mut conns[i], targets[i].addr, &reqs[i], None).await,
                        Ok(200)
                    );
                    let ns = start.elapsed().as_nanos() as u64;
                    if ok {
                        out[i].0.push(ns);
                    } else {
                        out[i].1 += 1;
                    }
                }
            }
        }
        Ok(out)
    })
}

/// Closed-loop throughput: `conns` keep-alive connections over `threads` threads, each
/// sending its next request as soon as the previous answer is complete, for `secs`.
/// Returns (completed 200s, errors, elapsed seconds).
pub fn throughput(target: &Target, conns: usize, threads: usize, secs: f64) -> (u64, u64, f64) {
    let threads = threads.clamp(1, conns.max(1));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let per_thread = on_threads(threads, |t| async move {
        let mine: Vec<usize> = (0..conns).filter(|c| c % threads == t).collect();
        let tasks = mine.into_iter().map(|c| async move {
            let req = target.json_request(c);
            let mut conn = None;
            let (mut ok, mut err) = (0u64, 0u64);
            while Instant::now() < deadline {
                match exchange(&mut conn, target.addr, &req, None).await {
                    Ok(200) => ok += 1,
                    _ => err += 1,
                }
            }
            (ok, err)
        });
        futures_util::future::join_all(tasks).await
    });
    let elapsed = start.elapsed().as_secs_f64();
    let (ok, err) = per_thread
        .into_iter()
        .flatten()
        .fold((0, 0), |(a, b), (o, e)| (a + o, b + e));
    (ok, err, elapsed)
}

/// First-event times, inter-delta gaps (ns) and the error count of one target.
pub type StreamSamples = (Vec<u64>, Vec<u64>, usize);

/// Time to first event and inter-delta gaps (ns) of sequential streams, per target,
/// targets alternating by round. Returns (first-event samples, gap samples, errors).
pub fn stream_latency(
    targets: &[Target],
    rounds: usize,
    per_round: usize,
    deltas: u32,
    interval_ms: u64,
    dump: bool,
) -> Res<Vec<StreamSamples>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let reqs: Vec<Request> = targets
            .iter()
            .map(|t| t.stream_request(0, deltas, interval_ms))
            .collect();
        let mut conns: Vec<Option<Conn>> = targets.iter().map(|_| None).collect();
        let mut out: Vec<StreamSamples> = targets.iter().map(|_| (vec![], vec![], 0)).collect();
        for round in 0..rounds {
            for k in 0..targets.len() {
                let i = (round + k) % targets.len();
                for position in 0..per_round {
                    let mut clock = SseClock::with_capacity(deltas as usize + 8);
                    let start = Instant::now();
                    let start_monotonic = dump.then(monotonic_ns);
                    let status =
                        exchange(&mut conns[i], targets[i].addr, &reqs[i], Some(&mut clock)).await;
                    let ev = &clock.events;
                    // head (2 events) + deltas + tail (3 events)
                    if !matches!(status, Ok(200)) || ev.len() != deltas as usize + 5 {
                        out[i].2 += 1;
                        continue;
                    }
                    let first_event = ev[0].duration_since(start).as_nanos() as u64;
                    out[i].0.push(first_event);
                    if let Some(at) = start_monotonic {
                        eprintln!("stream {} {position} {at} {first_event}", targets[i].name);
                    }
                    for w in ev[2..deltas as usize + 2].windows(2) {
                        out[i].1.push(w[1].duration_since(w[0]).as_nanos() as u64);
                    }
                }
            }
        }
        Ok(out)
    })
}

/// CLOCK_MONOTONIC now, in ns: what `Instant` reads on Linux, and what perf can stamp with.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// One stream of the capacity test.
#[derive(Clone)]
pub struct StreamResult {
    pub complete: bool,
    /// Why an incomplete stream was: its status, its event count, or its error.
    pub failure: Option<String>,
    /// Worst lateness of any event against its schedule (request sent + k·interval), ns.
    pub max_late: u64,
    pub first_event: u64,
}

/// `n` concurrent streams of `deltas` × `interval_ms`, started evenly over `ramp`.
pub fn capacity(
    target: &Target,
    n: usize,
    threads: usize,
    deltas: u32,
    interval_ms: u64,
    ramp: Duration,
) -> Vec<StreamResult> {
    let threads = threads.clamp(1, n.max(1));
    let t0 = Instant::now() + Duration::from_millis(20);
    let interval = Duration::from_millis(interval_ms);
    let per_thread = on_threads(threads, |t| async move {
        let mine: Vec<usize> = (0..n).filter(|c| c % threads == t).collect();
        let tasks = mine.into_iter().map(|c| async move {
            let req = target.stream_request(c, deltas, interval_ms);
            let start = t0 + ramp.mul_f64(c as f64 / n.max(1) as f64);
            tokio::time::sleep_until(start.into()).await;
            let mut conn = None;
            let mut clock = SseClock::with_capacity(deltas as usize + 8);
            let sent = Instant::now();
            let status = exchange(&mut conn, target.addr, &req, Some(&mut clock)).await;
            let ev = &clock.events;
            let complete = matches!(status, Ok(200)) && ev.len() == deltas as usize + 5;
            let failure = (!complete).then(|| match &status {
                Ok(200) => format!("{} of {} events", ev.len(), deltas + 5),
                Ok(code) => format!("status {code}"),
                Err(e) => format!("error: {e}"),
            });
            let mut max_late = 0u64;
            for (e, at) in ev.iter().enumerate() {
                // events 0,1: head at 0; 2..=deltas+1: delta k=e−1 at k·interval; tail at the last delta
                let k = (e.saturating_sub(1)).min(deltas as usize) as u32;
                let due = sent + interval * k;
                max_late = max_late.max(at.saturating_duration_since(due).as_nanos() as u64);
            }
            let first_event = ev
                .first()
                .map_or(u64::MAX, |t| t.duration_since(sent).as_nanos() as u64);
            StreamResult {
                complete,
                failure,
                max_late,
                first_event,
            }
        });
        futures_util::future::join_all(tasks).await
    });
    per_thread.into_iter().flatten().collect()
}
