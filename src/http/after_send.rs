//! Settling that waits until the worker has written the answer: one long-lived task per
//! worker drains a queue, woken when something is queued. A task spawned per request did the
//! same at the price of a task's allocation, set-up and teardown on every answer.

use super::relay::SettleTicket;
use crate::upstream::usage::UsageReader;
use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

#[derive(Default)]
struct Queue {
    waiting: Vec<(SettleTicket, UsageReader)>,
    /// The drain task's waker while it sleeps; `None` while it runs or before it exists.
    drain: Option<Waker>,
    started: bool,
}

impl Drop for Queue {
    /// A worker that ends with settlements queued settles them: served answers are counted.
    fn drop(&mut self) {
        settle(&mut self.waiting);
    }
}

thread_local! {
    static QUEUE: RefCell<Queue> = RefCell::default();
}

/// Settles `ticket` as served once the worker's current task has yielded (its answer
/// written). Only from inside a worker's task set (a handler, or a body the worker polls).
pub fn settle_after_send(ticket: SettleTicket, usage: UsageReader) {
    let mut item = Some((ticket, usage));
    let _ = QUEUE.try_with(|cell| {
        let mut queue = cell.borrow_mut();
        queue.waiting.extend(item.take());
        if let Some(drain) = queue.drain.take() {
            drain.wake();
        } else if !queue.started {
            queue.started = true;
            actix_rt::spawn(drain());
        }
    });
    // The thread is ending and its queue is gone: settled at once.
    if let Some((ticket, mut usage)) = item {
        ticket.settle_served(&mut usage);
    }
}

fn settle(waiting: &mut Vec<(SettleTicket, UsageReader)>) {
    for (ticket, mut usage) in waiting.drain(..) {
        ticket.settle_served(&mut usage);
    }
}

/// Dropped with the drain task (its worker's task set went away): the next settlement
/// starts a new one.
struct Started;

impl Drop for Started {
    fn drop(&mut self) {
        let _ = QUEUE.try_with(|cell| {
            if let Ok(mut queue) = cell.try_borrow_mut() {
                queue.started = false;
                queue.drain = None;
            }
        });
    }
}

async fn drain() {
    let _started = Started;
    // Swapped with the queue's list, so neither is allocated again once grown.
    let mut taken = Vec::new();
    poll_fn(|cx| loop {
        QUEUE.with(|cell| {
            let mut queue = cell.borrow_mut();
            std::mem::swap(&mut queue.waiting, &mut taken);
            if taken.is_empty() {
                queue.drain = Some(cx.waker().clone());
            }
        });
        if taken.is_empty() {
            return Poll::<()>::Pending;
        }
        // Outside the borrow: settling may queue again (it never does today).
        settle(&mut taken);
    })
    .await
}
