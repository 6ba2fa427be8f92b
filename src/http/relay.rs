//! The answer's body on its way to the client: every chunk passed on the moment it arrives,
//! watched for usage, and the request settled exactly once — at the end, on an upstream error,
//! or when the client goes away (dropped body: served, counted).

use crate::actors::pool::{Outcome, PoolActor, Settle};
use crate::domain::{Millis, ModelFamily};
use crate::upstream::usage::UsageReader;
use actix::Addr;
use bytes::Bytes;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What settling a request needs to know.
pub struct SettleTicket {
    pub pool: Addr<PoolActor>,
    pub key_id: String,
    pub account: Arc<str>,
    pub family: ModelFamily,
    pub window_started: Option<Millis>,
}

impl SettleTicket {
    pub fn settle(self, outcome: Outcome) {
        self.pool.do_send(Settle {
            key_id: self.key_id,
            account: self.account,
            family: self.family,
            window_started: self.window_started,
            outcome,
        });
    }
}

pub struct Relay<S> {
    inner: Pin<Box<S>>,
    usage: UsageReader,
    ticket: Option<SettleTicket>,
}

impl<S> Relay<S> {
    pub fn new(inner: S, usage: UsageReader, ticket: Option<SettleTicket>) -> Relay<S> {
        Relay {
            inner: Box::pin(inner),
            usage,
            ticket,
        }
    }

    fn settle_served(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            ticket.settle(Outcome::Served(self.usage.finish()));
        }
    }
}

impl<S, E> Stream for Relay<S>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: std::fmt::Display,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
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
                self.settle_served();
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
