//! Claude's answer: its head, and its body as a stream of the bytes as they arrive. A body
//! read to its end gives the connection back to the worker's pool; a body dropped early
//! closes it, which cancels the request at Claude's end.

use super::conn::Conn;
use super::decode::{BodyError, Decoded, Decoder};
use super::fields::Fields;
use super::head::Head;
use super::pool;
use actix_web::http::StatusCode;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Room made in the read buffer before each read.
const READ_SIZE: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error(transparent)]
    Framing(#[from] BodyError),
    #[error("the connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("Claude's answer is larger than {0} bytes")]
    TooLarge(usize),
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: Fields,
    pub body: AnswerBody,
}

pub struct AnswerBody {
    conn: Option<Conn>,
    decoder: Decoder,
    reusable: bool,
    origin: Arc<str>,
}

impl Answer {
    /// `raw_head`: the bytes `head` was parsed from, which its fields point into.
    pub(super) fn new(head: Head, raw_head: Bytes, conn: Conn, origin: Arc<str>) -> Answer {
        let mut body = AnswerBody {
            conn: Some(conn),
            decoder: Decoder::new(head.framing),
            reusable: head.reusable,
            origin,
        };
        if body.decoder.is_done() {
            body.release();
        }
        Answer {
            status: head.status,
            headers: Fields::new(raw_head, head.fields),
            body,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn headers(&self) -> &Fields {
        &self.headers
    }

    /// The whole body, refused beyond `limit` bytes.
    pub async fn read_body(&mut self, limit: usize) -> Result<Bytes, AnswerError> {
        let mut whole = BytesMut::new();
        while let Some(piece) = self.body.next().await {
            let piece = piece?;
            if whole.len() + piece.len() > limit {
                return Err(AnswerError::TooLarge(limit));
            }
            if whole.is_empty() && self.body.conn.is_none() {
                // The body came in one piece: no copy.
                return Ok(piece);
            }
            whole.extend_from_slice(&piece);
        }
        Ok(whole.freeze())
    }
}

impl AnswerBody {
    /// The whole body when it is already here (a sized answer that came with its head, as
    /// most JSON answers do): taken at once, the connection back in the pool. None leaves the
    /// body as it was, to be streamed.
    pub fn take_if_here(&mut self) -> Option<Bytes> {
        let conn = self.conn.as_mut()?;
        if !self.decoder.ends_within(conn.buf.len()) {
            return None;
        }
        match self.decoder.decode(&mut conn.buf) {
            Ok(Decoded::Piece(whole)) => {
                self.release();
                Some(whole)
            }
            _ => None,
        }
    }

    /// The body was read whole: the connection serves the next request, when it may.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.reusable && conn.buf.is_empty() {
                pool::put(&self.origin, conn);
            }
        }
    }

    fn fail(&mut self, e: AnswerError) -> Poll<Option<Result<Bytes, AnswerError>>> {
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Stream for AnswerBody {
    type Item = Result<Bytes, AnswerError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match this.decoder.decode(&mut conn.buf) {
                Err(e) => return this.fail(e.into()),
                Ok(Decoded::Piece(piece)) => {
                    if this.decoder.is_done() {
                        this.release();
                    }
                    return Poll::Ready(Some(Ok(piece)));
                }
                Ok(Decoded::End) => {
                    this.release();
                    return Poll::Ready(None);
                }
                Ok(Decoded::NeedMore) => {
                    conn.buf.reserve(READ_SIZE);
                    match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(0)) => {
                            this.conn = None;
                            return match this.decoder.at_close() {
                                Ok(()) => Poll::Ready(None),
                                Err(e) => Poll::Ready(Some(Err(e.into()))),
                            };
                        }
                        Poll::Ready(Ok(_)) => {}
                        Poll::Ready(Err(e)) => return this.fail(e.into()),
                    }
                }
            }
        }
    }
}
