//! A scriptable stand-in for the Anthropic API and its OAuth token endpoint.
//!
//! It runs an actix-web server on its own thread (own `actix_rt::System`), records every
//! request it receives and answers according to the script the test set up through the
//! shared [`MockState`].

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::wait_until;

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path plus query string, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// Every header in arrival order; names lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub at: Instant,
}

impl Recorded {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The token after `Bearer ` in the authorization header.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "upstream body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A canned answer: status, body and extra headers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Answer {
            status,
            body: body.into(),
            headers: vec![("content-type".into(), "application/json".into())],
        }
    }

    /// An Anthropic-shaped error answer.
    pub fn error(status: u16, kind: &str, message: &str) -> Self {
        let body = json!({"type":"error","error":{"type":kind,"message":message}});
        Answer::new(status, body.to_string())
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// What happened to one SSE stream the mock served.
#[derive(Debug, Clone, Default)]
pub struct StreamRecord {
    /// Each event with the moment it was handed to the HTTP server.
    pub sent: Vec<(Instant, Bytes)>,
    /// The receiving side (the proxy) went away before the stream ended.
    pub cancelled: bool,
    /// Every event was sent.
    pub finished: bool,
}

impl StreamRecord {
    pub fn bytes(&self) -> Vec<u8> {
        self.sent.iter().flat_map(|(_, b)| b.to_vec()).collect()
    }
}

/// The mock's shared, scriptable state.
pub struct MockState {
    pub recorded: Mutex<Vec<Recorded>>,
    /// Answers used (and removed) one per API request, before anything else.
    pub queued: Mutex<VecDeque<Answer>>,
    /// Answer used for every API request when the queue is empty.
    pub fixed: Mutex<Option<Answer>>,
    /// Wait before sending response headers.
    pub delay: Mutex<Duration>,
    /// Number of `content_block_delta` events and the pause before each.
    pub stream_deltas: Mutex<(usize, Duration)>,
    pub streams: Mutex<Vec<StreamRecord>>,
    pub stream_cancelled: AtomicBool,
    pub oauth_queued: Mutex<VecDeque<Answer>>,
    pub oauth_fixed: Mutex<Option<Answer>>,
    pub oauth_count: AtomicUsize,
    /// Wait before answering a token request (a slow token endpoint).
    pub oauth_delay: Mutex<Duration>,
}

impl Default for MockState {
    fn default() -> Self {
        MockState {
            recorded: Mutex::default(),
            queued: Mutex::default(),
            fixed: Mutex::default(),
            delay: Mutex::new(Duration::ZERO),
            stream_deltas: Mutex::new((3, Duration::from_millis(10))),
            streams: Mutex::default(),
            stream_cancelled: AtomicBool::new(false),
            oauth_queued: Mutex::default(),
            oauth_fixed: Mutex::default(),
            oauth_count: AtomicUsize::new(0),
            oauth_delay: Mutex::new(Duration::ZERO),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running mock upstream. Dropping it stops its server.
pub struct MockUpstream {
    pub state: Arc<MockState>,
    pub port: u16,
    handle: actix_web::dev::ServerHandle,
}

impl MockUpstream {
    pub fn start() -> MockUpstream {
        let state = Arc::new(MockState::default());
        let (tx, rx) = std::sync::mpsc::channel();
        let thread_state = state.clone();
        std::thread::spawn(move || {
            let sys = actix_rt::System::new();
            sys.block_on(async move {
                let data = web::Data::from(thread_state);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(256 << 20))
                        .default_service(web::to(super::mock_routes::handle))
                })
                .workers(2)
                .bind(("127.0.0.1", 0))
                .expect("mock upstream bind");
                let port = server.addrs()[0].port();
                let server = server.run();
                let _ = tx.send((port, server.handle()));
                let _ = server.await;
            });
        });
        let (port, handle) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("mock upstream did not start");
        MockUpstream {
            state,
            port,
            handle,
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request received so far (API and OAuth).
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.recorded).clone()
    }

    /// Requests that went anywhere but the OAuth token endpoint.
    pub fn api_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| !r.path.starts_with("/v1/oauth/token"))
            .collect()
    }

    /// `POST /v1/messages` requests (with or without a query string).
    pub fn messages_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.method == "POST"
                    && (r.path == "/v1/messages" || r.path.starts_with("/v1/messages?"))
            })
            .collect()
    }

    /// The last request received; panics when there is none.
    pub fn last(&self) -> Recorded {
        self.api_requests()
            .pop()
            .expect("the mock upstream received no request")
    }

    pub fn oauth_calls(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/v1/oauth/token"))
            .collect()
    }

    pub fn clear(&self) {
        lock(&self.state.recorded).clear();
    }

    /// The next API request gets `answer` (queued: each answer is used once, in order).
    pub fn push_answer(&self, answer: Answer) {
        lock(&self.state.queued).push_back(answer);
    }

    /// Every API request gets `answer` (None: back to the normal answers).
    pub fn set_fixed_answer(&self, answer: Option<Answer>) {
        *lock(&self.state.fixed) = answer;
    }

    pub fn set_delay(&self, delay: Duration) {
        *lock(&self.state.delay) = delay;
    }

    /// Streams send `deltas` content_block_delta events, each after a pause of `interval`.
    pub fn set_stream(&self, deltas: usize, interval: Duration) {
        *lock(&self.state.stream_deltas) = (deltas, interval);
    }

    pub fn streams(&self) -> Vec<StreamRecord> {
        lock(&self.state.streams).clone()
    }

    /// True once the proxy dropped a stream before it ended.
    pub fn stream_cancelled(&self) -> bool {
        self.state.stream_cancelled.load(Ordering::SeqCst)
    }

    pub fn push_oauth_answer(&self, answer: Answer) {
        lock(&self.state.oauth_queued).push_back(answer);
    }

    pub fn set_oauth_delay(&self, delay: Duration) {
        *lock(&self.state.oauth_delay) = delay;
    }

    pub fn set_oauth_fixed_answer(&self, answer: Option<Answer>) {
        *lock(&self.state.oauth_fixed) = answer;
    }

    /// Waits until at least `n` requests satisfy `pred`, returning them.
    pub fn wait_for_requests(
        &self,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Recorded) -> bool,
    ) -> Vec<Recorded> {
        let found = wait_until(timeout, || {
            let hits: Vec<_> = self.requests().into_iter().filter(&pred).collect();
            (hits.len() >= n).then_some(hits)
        });
        found.unwrap_or_else(|| panic!("mock upstream: fewer than {n} matching requests"))
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        // The stop command is sent when `stop` is called; the returned future only waits.
        drop(self.handle.stop(false));
    }
}

pub(super) fn record(state: &MockState, req: &HttpRequest, body: &Bytes) {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.path().to_string());
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    lock(&state.recorded).push(Recorded {
        method: req.method().as_str().to_string(),
        path,
        headers,
        body: body.clone(),
        at: Instant::now(),
    });
}

pub(super) fn take_answer(
    queue: &Mutex<VecDeque<Answer>>,
    fixed: &Mutex<Option<Answer>>,
) -> Option<Answer> {
    if let Some(a) = lock(queue).pop_front() {
        return Some(a);
    }
    lock(fixed).clone()
}

pub(super) fn current_delay(state: &MockState) -> Duration {
    *lock(&state.delay)
}

pub(super) fn current_oauth_delay(state: &MockState) -> Duration {
    *lock(&state.oauth_delay)
}

pub(super) fn stream_shape(state: &MockState) -> (usize, Duration) {
    *lock(&state.stream_deltas)
}

/// Registers a new stream and returns its index.
pub(super) fn new_stream(state: &MockState) -> usize {
    let mut streams = lock(&state.streams);
    streams.push(StreamRecord::default());
    streams.len() - 1
}

pub(super) fn stream_sent(state: &MockState, index: usize, at: Instant, event: Bytes) {
    lock(&state.streams)[index].sent.push((at, event));
}

pub(super) fn stream_end(state: &MockState, index: usize, cancelled: bool) {
    let mut streams = lock(&state.streams);
    if cancelled {
        streams[index].cancelled = true;
        state.stream_cancelled.store(true, Ordering::SeqCst);
    } else {
        streams[index].finished = true;
    }
}

/// Builds a response from a canned answer.
pub(super) fn respond(answer: &Answer) -> HttpResponse {
    let status = actix_web::http::StatusCode::from_u16(answer.status)
        .unwrap_or(actix_web::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = HttpResponse::build(status);
    for (n, v) in &answer.headers {
        builder.append_header((n.as_str(), v.as_str()));
    }
    builder.body(answer.body.clone())
}
