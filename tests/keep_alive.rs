//! `[server] keep_alive`: how long a client's idle connection stays open for its next
//! request, and zero for one answer per connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn serve(keep_alive: &str) -> (MockUpstream, TestServer) {
    let (mock, env) = setup(&format!("[server]\nkeep_alive = \"{keep_alive}\"\n"));
    env.add_account("high", "a1");
    (mock, TestServer::start(env))
}

/// One `GET /healthz` on `stream`; returns the answer's head, its body read whole by its
/// `content-length`.
fn health_check(stream: &mut TcpStream) -> String {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: proxy\r\n\r\n")
        .expect("send the request");
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf).expect("read the answer");
        assert!(
            n > 0,
            "the connection closed before a whole answer: {bytes:?}"
        );
        bytes.extend_from_slice(&buf[..n]);
        let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if bytes.len() >= end + 4 + length {
            assert!(head.starts_with("http/1.1 200"), "{head}");
            return head;
        }
    }
}

/// Waits up to `wait` for the server to close `stream`; how long it took, if it did.
fn closed_within(stream: &mut TcpStream, wait: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => Some(started.elapsed()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(started.elapsed()),
        Ok(n) => panic!("unexpected bytes on an idle connection: {:?}", &buf[..n]),
        Err(_) => None,
    }
}

#[test]
fn an_idle_connection_serves_the_next_request_until_keep_alive_passes() {
    let (_mock, server) = serve("1500ms");
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    health_check(&mut stream);
    std::thread::sleep(Duration::from_millis(200));
    // Idle for less than keep_alive: the same connection takes the next request.
    health_check(&mut stream);
    let closed = closed_within(&mut stream, Duration::from_secs(3))
        .expect("the proxy kept an idle connection open long past keep_alive (1500ms)");
    // The HTTP layer reads its clock every 500 ms, so the deadline may come that much early.
    assert!(
        closed >= Duration::from_millis(900),
        "closed after {closed:?} idle, well before keep_alive (1500ms)"
    );
}

#[test]
fn zero_keep_alive_closes_each_connection_after_its_answer() {
    let (_mock, server) = serve("0s");
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    let head = health_check(&mut stream);
    assert!(head.contains("connection: close"), "{head}");
    assert!(closed_within(&mut stream, Duration::from_secs(5)).is_some());
}
