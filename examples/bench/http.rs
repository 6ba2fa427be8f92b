//! The load generator's HTTP/1.1 client: raw tokio TCP, hand-written keep-alive requests and
//! a minimal response parser (content-length and chunked bodies). Every body byte is handed
//! to a sink together with the instant the read that delivered it returned, so SSE events
//! are timed at the moment their last byte arrived.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::net::TcpStream;

/// One prepared request: the exact bytes written on the wire.
#[derive(Clone)]
pub struct Request(pub std::sync::Arc<Vec<u8>>);

impl Request {
    pub fn post(host: SocketAddr, path: &str, headers: &[(&str, String)], body: &str) -> Request {
        let mut s = format!("POST {path} HTTP/1.1\r\nhost: {host}\r\n");
        for (name, value) in headers {
            s.push_str(name);
            s.push_str(": ");
            s.push_str(value);
            s.push_str("\r\n");
        }
        s.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
        Request(std::sync::Arc::new(s.into_bytes()))
    }
}

/// Status line facts of a finished response.
pub struct Head {
    pub status: u16,
    /// The server will close the connection after this response.
    pub close: bool,
}

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    pos: usize,
    last_read: Instant,
    total: u64,
}

fn eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "connection closed mid-response",
    )
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            pos: 0,
            last_read: Instant::now(),
            total: 0,
        })
    }

    /// Bytes received on this connection so far.
    pub fn bytes_read(&self) -> u64 {
        self.total
    }

    pub async fn send(&mut self, req: &Request) -> io::Result<()> {
        let bytes = req.0.as_slice();
        let mut off = 0;
        while off < bytes.len() {
            self.stream.writable().await?;
            match self.stream.try_write(&bytes[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads more bytes into the buffer; errors on EOF.
    async fn fill(&mut self) -> io::Result<()> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 8 * 1024 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut tmp = [0u8; 16 * 1024];
        loop {
            self.stream.readable().await?;
            match self.stream.try_read(&mut tmp) {
                Ok(0) => return Err(eof()),
                Ok(n) => {
                    self.last_read = Instant::now();
                    self.total += n as u64;
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    async fn line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(&self.buf[self.pos..], b"\r\n") {
                let line = self.buf[self.pos..self.pos + i].to_vec();
                self.pos += i + 2;
                return Ok(line);
            }
            self.fill().await?;
        }
    }

    /// Passes exactly `n` body bytes to `sink`.
    async fn body_bytes(
        &mut self,
        mut n: usize,
        sink: &mut dyn FnMut(&[u8], Instant),
    ) -> io::Result<()> {
        while n > 0 {
            if self.pos == self.buf.len() {
                self.fill().await?;
            }
            let take = n.min(self.buf.len() - self.pos);
            sink(&self.buf[self.pos..self.pos + take], self.last_read);
            self.pos += take;
            n -= take;
        }
        Ok(())
    }

    /// Reads one whole response; body bytes go to `sink` as they arrive.
    pub async fn response(&mut self, sink: &mut dyn FnMut(&[u8], Instant)) -> io::Result<Head> {
        let head_end = loop {
            if let Some(i) = find(&self.buf[self.pos..], b"\r\n\r\n") {
                break self.pos + i;
            }
            self.fill().await?;
        };
        let head = std::str::from_utf8(&self.buf[self.pos..head_end])
            .map_err(|_| bad("response head is not UTF-8"))?
            .to_ascii_lowercase();
        self.pos = head_end + 4;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = status_line.starts_with("http/1.0");
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.contains("chunked"),
                "connection" => close = value.contains("close"),
                _ => {}
            }
        }
        if chunked {
            loop {
                let line = self.line().await?;
                let size_text = std::str::from_utf8(&line).map_err(|_| bad("chunk size"))?;
                let size_text = size_text.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("chunk size"))?;
                if size == 0 {
                    while !self.line().await?.is_empty() {}
                    break;
                }
                self.body_bytes(size, sink).await?;
                self.line().await?;
            }
        } else if let Some(n) = length {
            self.body_bytes(n, sink).await?;
        } else if !(status == 204 || status == 304 || (100..200).contains(&status)) {
            // Body until EOF.
            loop {
                if self.pos < self.buf.len() {
                    sink(&self.buf[self.pos..], self.last_read);
                    self.pos = self.buf.len();
                }
                match self.fill().await {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
            }
            close = true;
        }
        Ok(Head { status, close })
    }
}

/// Times SSE events: an event ends at a blank line (`\n\n`, `\r` ignored).
#[derive(Default)]
pub struct SseClock {
    newline: bool,
    pub events: Vec<Instant>,
}

impl SseClock {
    pub fn with_capacity(n: usize) -> SseClock {
        SseClock {
            newline: false,
            events: Vec::with_capacity(n),
        }
    }

    pub fn feed(&mut self, data: &[u8], at: Instant) {
        for &b in data {
            match b {
                b'\n' if self.newline => {
                    self.events.push(at);
                    self.newline = false;
                }
                b'\n' => self.newline = true,
                b'\r' => {}
                _ => self.newline = false,
            }
        }
    }
}
