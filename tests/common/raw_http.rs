//! HTTP/1 written by hand, for what an HTTP client library will not send: a body shorter
//! than its Content-Length, HTTP/1.0, malformed framing.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// What came back on the connection.
pub struct RawAnswer {
    pub status: u16,
    /// The status line and headers, as sent.
    pub head: String,
    /// The bytes after the head, as sent (chunked framing left in place).
    pub body: Vec<u8>,
    /// The server closed the connection before `wait` ran out.
    pub closed: bool,
}

impl RawAnswer {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}):\n{}\n{}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// An Anthropic-shaped error of this status and type whose message starts so.
    pub fn assert_error(&self, status: u16, kind: &str, message_start: &str) {
        assert_eq!(self.status, status, "{}", self.head);
        let json = self.json();
        assert_eq!(json["type"], "error", "{json}");
        assert_eq!(json["error"]["type"], kind, "{json}");
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with(message_start),
            "message {message:?} does not start with {message_start:?}"
        );
    }
}

/// Sends `parts` in order on one connection, pausing `between` after each, then reads until
/// the server closes or `wait` passes with nothing more.
pub fn exchange(addr: &str, parts: &[&[u8]], between: Duration, wait: Duration) -> RawAnswer {
    let mut stream = TcpStream::connect(addr).expect("connect to the proxy");
    for part in parts {
        // The server may answer (and close) before the whole request is written.
        if stream.write_all(part).is_err() {
            break;
        }
        std::thread::sleep(between);
    }
    read_answer(&mut stream, wait)
}

/// Reads until the server closes, or until `wait` passes with nothing new after a full head.
fn read_answer(stream: &mut TcpStream, wait: Duration) -> RawAnswer {
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let mut bytes = Vec::new();
    let mut closed = false;
    let mut last_byte = Instant::now();
    let mut buf = [0u8; 16 * 1024];
    while last_byte.elapsed() < wait {
        match stream.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => {
                bytes.extend_from_slice(&buf[..n]);
                last_byte = Instant::now();
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                closed = true;
                break;
            }
            Err(_) => {}
        }
    }
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            panic!(
                "no HTTP answer head in {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    RawAnswer {
        status,
        head,
        body: bytes[split + 4..].to_vec(),
        closed,
    }
}

/// A POST of `body` to `path` with these extra header lines, body declared at `declared` bytes.
pub fn post_head(path: &str, headers: &[(&str, &str)], declared: usize) -> Vec<u8> {
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: proxy\r\nContent-Length: {declared}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}
