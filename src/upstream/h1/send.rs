//! One request out and the head of its answer back, on a pooled connection or a new one.

use super::answer::Answer;
use super::conn::{connect, Conn};
use super::endpoint::Endpoint;
use super::head::{self, HeadError};
use super::pool;
use bytes::Bytes;
use std::io::{self, ErrorKind, IoSlice};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// From the start until the answer's head has arrived.
    pub answer: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection ended before a single byte of an answer: the request was not served.
    #[error("the connection was closed before an answer ({0})")]
    HungUp(String),
    #[error("the connection failed: {0}")]
    Io(io::Error),
    #[error("{0}")]
    BadAnswer(#[from] HeadError),
}

impl SendError {
    /// True when the server ended the connection before answering at all — typically an
    /// idle pooled connection it timed out just as the request went out on it.
    pub fn closed_before_answer(&self) -> bool {
        matches!(self, SendError::HungUp(_))
    }
}

fn is_hang_up(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
    )
}

/// Which connection a request goes out on, and whether it is kept afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// A pooled one when there is one; kept for the next request after the answer.
    Pooled,
    /// Always a new one (after a pooled one was hung up); kept afterwards.
    Fresh,
    /// A new one, closed after the answer (its head from `request::closing_head`).
    Once,
}

/// `head` is the request's whole head (request line to the empty line), `body` follows it.
pub async fn send(
    endpoint: &Endpoint,
    head: &[u8],
    body: &[u8],
    timeouts: Timeouts,
    connection: Connection,
) -> Result<Answer, SendError> {
    let exchange = async {
        let pooled = match connection {
            Connection::Pooled => pool::take(&endpoint.origin),
            Connection::Fresh | Connection::Once => None,
        };
        let mut conn = match pooled {
            Some(conn) => conn,
            // Boxed: a TLS handshake's state is most of this future's size, and a request
            // on a pooled connection would carry (and copy) that space for nothing.
            None => Box::pin(connect(endpoint, timeouts.connect))
                .await
                .map_err(|e| SendError::Connect(endpoint.authority.clone(), e))?,
        };
        write_request(&mut conn, head, body)
            .await
            .map_err(|e| match is_hang_up(e.kind()) {
                true => SendError::HungUp(e.to_string()),
                false => SendError::Io(e),
            })?;
        let (mut head, raw_head) = read_head(&mut conn).await?;
        head.reusable &= connection != Connection::Once;
        Ok(Answer::new(head, raw_head, conn, endpoint.origin.clone()))
    };
    match tokio::time::timeout(timeouts.answer, exchange).await {
        Ok(sent) => sent,
        Err(_) => Err(SendError::Timeout(timeouts.answer)),
    }
}

async fn write_request(conn: &mut Conn, head: &[u8], body: &[u8]) -> io::Result<()> {
    let (mut head, mut body) = (head, body);
    while !head.is_empty() {
        let n = conn
            .io
            .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
            .await?;
        if n == 0 {
            return Err(ErrorKind::WriteZero.into());
        }
        let from_head = n.min(head.len());
        head = &head[from_head..];
        body = &body[n - from_head..];
    }
    conn.io.write_all(body).await?;
    conn.io.flush().await
}

/// The answer's head, and the bytes it was read from.
async fn read_head(conn: &mut Conn) -> Result<(head::Head, Bytes), SendError> {
    loop {
        if !conn.buf.is_empty() {
            if let Some((len, head)) = head::parse(&conn.buf)? {
                return Ok((head, conn.buf.split_to(len).freeze()));
            }
        }
        conn.buf.reserve(8 * 1024);
        let nothing_yet = conn.buf.is_empty();
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) if nothing_yet => return Err(SendError::HungUp("end of stream".into())),
            Ok(0) => {
                return Err(SendError::Io(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "the answer ended inside its head",
                )))
            }
            Ok(_) => {}
            Err(e) if nothing_yet && is_hang_up(e.kind()) => {
                return Err(SendError::HungUp(e.to_string()))
            }
            Err(e) => return Err(SendError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn output_size<F: Fn(A, B, C, D, E) -> R, A, B, C, D, E, R>(_f: &F) -> usize {
        std::mem::size_of::<R>()
    }

    #[test]
    fn a_request_on_a_pooled_connection_does_not_carry_a_handshake() {
        let sending = output_size(&send);
        let connecting = std::mem::size_of_val(&connect(
            &Endpoint::parse("https://api.anthropic.com").unwrap(),
            Duration::from_secs(1),
        ));
        assert!(
            sending < connecting,
            "send's future ({sending} bytes) holds connect's ({connecting} bytes) inline: box it"
        );
    }
    use std::io::{Read, Write};
    use std::net::TcpListener;

    const TIMEOUTS: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        answer: Duration::from_secs(5),
    };

    /// A one-connection server: reads a request, then writes `reply` and closes.
    fn server(replies: Vec<&'static [u8]>) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for reply in replies {
                let (mut socket, _) = listener.accept().unwrap();
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request);
                let _ = socket.write_all(reply);
            }
        });
        Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap()
    }

    const HEAD: &[u8] = b"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n";

    #[actix_rt::test]
    async fn a_close_before_any_answer_is_a_hang_up() {
        let endpoint = server(vec![b""]);
        let e = send(&endpoint, HEAD, b"{}", TIMEOUTS, Connection::Pooled)
            .await
            .err()
            .unwrap();
        assert!(e.closed_before_answer(), "{e}");
    }

    #[actix_rt::test]
    async fn a_close_inside_the_answer_is_not_sent_again() {
        let endpoint = server(vec![b"HTTP/1.1 200 OK\r\ncontent-le"]);
        let e = send(&endpoint, HEAD, b"{}", TIMEOUTS, Connection::Pooled)
            .await
            .err()
            .unwrap();
        assert!(!e.closed_before_answer(), "{e}");
        assert!(e.to_string().contains("inside its head"), "{e}");
    }

    #[actix_rt::test]
    async fn nothing_listening_is_a_connect_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let e = send(&endpoint, HEAD, b"{}", TIMEOUTS, Connection::Pooled)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, SendError::Connect(..)), "{e}");
        assert!(!e.closed_before_answer());
    }

    #[actix_rt::test]
    async fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let short = Timeouts {
            connect: Duration::from_secs(5),
            answer: Duration::from_millis(200),
        };
        let e = send(&endpoint, HEAD, b"{}", short, Connection::Pooled)
            .await
            .err()
            .unwrap();
        assert!(matches!(e, SendError::Timeout(_)), "{e}");
        drop(listener);
    }

    #[actix_rt::test]
    async fn an_answer_read_whole_leaves_its_connection_for_the_next_request() {
        // One connection answers twice; a second connection would never be accepted.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            for body in ["first", "second"] {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request);
                let reply = format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
                socket.write_all(reply.as_bytes()).unwrap();
            }
        });
        let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        for expected in ["first", "second"] {
            let mut answer = send(&endpoint, HEAD, b"{}", TIMEOUTS, Connection::Pooled)
                .await
                .unwrap();
            assert_eq!(answer.status.as_u16(), 200);
            assert_eq!(
                &answer.read_body(1024).await.unwrap()[..],
                expected.as_bytes()
            );
        }
        assert_eq!(pool::take(&endpoint.origin).map(|_| ()), Some(()));
    }

    #[actix_rt::test]
    async fn a_connection_for_one_request_is_not_kept() {
        let endpoint = server(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]);
        let mut answer = send(&endpoint, HEAD, b"{}", TIMEOUTS, Connection::Once)
            .await
            .unwrap();
        assert_eq!(&answer.read_body(1024).await.unwrap()[..], b"ok");
        assert!(pool::take(&endpoint.origin).is_none());
    }
}
