//! A raw HTTP/1.1 upstream that answers a set number of requests per connection and then
//! hangs up on the next one after reading it — what a server does when it times out an idle
//! keep-alive connection just as a request goes out on it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const MESSAGE: &str = r#"{"id":"msg_hang_up","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"output_tokens":2}}"#;

#[derive(Default)]
pub struct HangUpCounts {
    /// Requests read whole, answered or not.
    pub read: AtomicUsize,
    pub answered: AtomicUsize,
    pub connections: AtomicUsize,
    /// Answers given per connection before hanging up on the next request.
    pub answers_per_connection: AtomicUsize,
}

pub struct HangUpUpstream {
    pub port: u16,
    pub counts: Arc<HangUpCounts>,
}

impl HangUpUpstream {
    pub fn start(answers_per_connection: usize) -> HangUpUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind hang-up upstream");
        let port = listener.local_addr().expect("local addr").port();
        let counts = Arc::new(HangUpCounts::default());
        counts
            .answers_per_connection
            .store(answers_per_connection, Ordering::SeqCst);
        let shared = counts.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let counts = shared.clone();
                std::thread::spawn(move || serve(stream, &counts));
            }
        });
        HangUpUpstream { port, counts }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn read(&self) -> usize {
        self.counts.read.load(Ordering::SeqCst)
    }

    pub fn answered(&self) -> usize {
        self.counts.answered.load(Ordering::SeqCst)
    }

    pub fn set_answers_per_connection(&self, n: usize) {
        self.counts
            .answers_per_connection
            .store(n, Ordering::SeqCst);
    }
}

fn serve(stream: TcpStream, counts: &HangUpCounts) {
    let mut writer = stream.try_clone().expect("clone stream");
    let mut reader = BufReader::new(stream);
    let mut answered_here = 0;
    while read_request(&mut reader) {
        counts.read.fetch_add(1, Ordering::SeqCst);
        if answered_here >= counts.answers_per_connection.load(Ordering::SeqCst) {
            return; // hang up: the request was read, no answer begins
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            MESSAGE.len()
        );
        // Counted before it is written: the proxy can have relayed the answer, and the test
        // read the count, before this thread runs again after the write.
        counts.answered.fetch_add(1, Ordering::SeqCst);
        if writer.write_all(head.as_bytes()).is_err()
            || writer.write_all(MESSAGE.as_bytes()).is_err()
        {
            counts.answered.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        answered_here += 1;
    }
}

/// Reads one request (head and content-length body); false at the end of the connection.
fn read_request(reader: &mut BufReader<TcpStream>) -> bool {
    let mut length = 0usize;
    let mut line = String::new();
    let mut first = true;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) => {}
        }
        if line == "\r\n" && !first {
            break;
        }
        first = false;
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).is_ok()
}
