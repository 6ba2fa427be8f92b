//! Each worker thread's idle connections to Claude, reused most recent first (the one most
//! likely still open). An idle connection is closed after `KEEP_IDLE`, before servers
//! usually time it out, and at most `MAX_IDLE` are kept, so a peak of streams leaves no
//! lasting trail of sockets and buffers.

use super::conn::Conn;
use crate::clock::coarse_monotonic;
use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

pub const KEEP_IDLE: Duration = Duration::from_secs(15);
const MAX_IDLE: usize = 512;

struct Idle {
    origin: Arc<str>,
    conn: Conn,
    /// `coarse_monotonic` when it was put back.
    since: Duration,
}

thread_local! {
    static IDLE: RefCell<Vec<Idle>> = const { RefCell::new(Vec::new()) };
    static REAPER: Cell<bool> = const { Cell::new(false) };
}

/// Drops the connections idle for `KEEP_IDLE` or longer; how many it dropped. They sit
/// at the front: `put` appends, and `take` removes without reordering.
fn drop_expired(idle: &mut Vec<Idle>) -> usize {
    let now = coarse_monotonic();
    let expired = idle
        .iter()
        .take_while(|i| now.saturating_sub(i.since) >= KEEP_IDLE)
        .count();
    idle.drain(..expired);
    expired
}

/// An idle connection to `origin`, if one was kept and is not too old.
pub fn take(origin: &str) -> Option<Conn> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        drop_expired(&mut idle);
        let at = idle.iter().rposition(|i| &*i.origin == origin)?;
        Some(idle.remove(at).conn)
    })
}

/// A kept connection's read buffer is kept with it up to this size: the next answer is read
/// into the same memory once the last one's pieces are gone, instead of into a new block
/// per request (allocating and retiring those cost more than the rest of reading).
const KEPT_BUFFER: usize = 64 * 1024;

/// Keeps a connection whose last answer was read whole, for the next request to `origin`.
pub fn put(origin: &Arc<str>, mut conn: Conn) {
    if conn.buf.capacity() > KEPT_BUFFER {
        conn.buf = bytes::BytesMut::new();
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            origin: origin.clone(),
            conn,
            since: coarse_monotonic(),
        });
    });
}

/// Idle connections kept on this thread.
pub fn idle_count() -> usize {
    IDLE.with(|idle| idle.borrow().len())
}

/// Closes this thread's connections idle for `KEEP_IDLE` or longer; how many it closed.
pub fn close_expired() -> usize {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let closed = drop_expired(&mut idle);
        if idle.is_empty() {
            idle.shrink_to_fit();
        }
        closed
    })
}

/// Once per worker: a timer that closes expired idle connections even when no request
/// comes to take one, and gives their memory back.
pub fn start_reaper() {
    if REAPER.with(|r| r.replace(true)) {
        return;
    }
    actix_rt::spawn(async move {
        let mut tick = actix_rt::time::interval(KEEP_IDLE / 4);
        loop {
            tick.tick().await;
            if close_expired() > 0 && idle_count() == 0 {
                crate::allocator::give_back_freed_memory();
            }
        }
    });
}
