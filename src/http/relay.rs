//! The answer's body on its way to the client: every chunk passed on the moment it arrives,
//! watched for usage, and the request settled exactly once — at the end, on an upstream error,
//! or when the client goes away (dropped body: served, counted).

use crate::actors::pool::{Outcome, PoolHandle, Settle};
use crate::domain::{Millis, ModelFamily};
use crate::store::KeyRecord;
use crate::upstream::usage::UsageReader;
use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What settling a request needs to know.
pub struct SettleTicket {
    pub pool: PoolHandle,
    pub key: Arc<KeyRecord>,
    pub account: Arc<str>,
    pub family: ModelFamily,
    pub window_started: Option<Millis>,
    pub count_id: Option<Arc<str>>,
}

impl SettleTicket {
    /// A served answer: reading the usage and settling wait until the worker has sent the
    /// last bytes, so the client is not kept waiting for our bookkeeping. Only from inside a
    /// worker's task set (a handler, or a body the worker polls).
    pub fn settle_after_send(self, usage: UsageReader) {
        super::after_send::settle_after_send(self, usage);
    }

    /// A served answer, its usage read to the end now.
    pub fn settle_served(self, usage: &mut UsageReader) {
        self.settle(Outcome::Served(usage.finish()));
    }

    pub fn settle(self, outcome: Outcome) {
        if let Outcome::Served(usage) = &outcome {
            crate::metrics::tier_metrics(&self.key.tier).count_tokens(usage);
        }
        self.pool.settle(Settle {
            key: self.key,
            account: self.account,
            family: self.family,
            window_started: self.window_started,
            count_id: self.count_id,
            outcome,
        });
    }
}

/// A streamed answer's first byte, to be timed once: (request start, whose key, for its tier).
pub type FirstByteClock = Option<(std::time::Instant, Arc<KeyRecord>)>;

/// `S` is `Unpin` (the upstream body is): held as it is, not boxed again inside the box the
/// response body already is.
pub struct Relay<S> {
    inner: S,
    usage: UsageReader,
    ticket: Option<SettleTicket>,
    first_byte: FirstByteClock,
}

impl<S> Relay<S> {
    pub fn new(
        inner: S,
        usage: UsageReader,
        ticket: Option<SettleTicket>,
        first_byte: FirstByteClock,
    ) -> Relay<S> {
        Relay {
            inner,
            usage,
            ticket,
            first_byte,
        }
    }

    fn settle_served(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            ticket.settle_served(&mut self.usage);
        }
    }

    /// At the answer's end. (Only from `poll_next`, which always runs inside the worker's
    /// task set.)
    fn settle_served_after_send(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            let usage = std::mem::replace(&mut self.usage, UsageReader::Ignore);
            ticket.settle_after_send(usage);
        }
    }
}

impl<S, E> Stream for Relay<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some((started, key)) = self.first_byte.take() {
                    crate::metrics::tier_metrics(&key.tier)
                        .stream_first_byte
                        .observe(started.elapsed().as_secs_f64());
                }
                if self.ticket.is_some() {
                    self.usage.feed(&chunk);
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                log::warn!("upstream stream broke off: {e}");
                self.settle_served();
                Poll::Ready(Some(Err(std::io::Error::other(e.to_string()))))
            }
            Poll::Ready(None) => {
                self.settle_served_after_send();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S> Drop for Relay<S> {
    fn drop(&mut self) {
        // The client left mid-answer: it was served, and dropping `inner` cancels upstream.
        self.settle_served();
    }
}
