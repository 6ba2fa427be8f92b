//! The writer's inbox and how the writer thread waits on it.
//!
//! The queue is a plain locked list, not a channel: a counter written while the writer is
//! already gathering a batch must not wake it — on a busy proxy that wake-up per request
//! was a thread switch per request.

use crate::store::WriteOp;
use parking_lot::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A batch this large is committed without waiting for more.
pub(super) const MAX_BATCH: usize = 4096;

/// Counters may wait this long for company before they are committed (the ~10 ms a
/// `kill -9` can lose); a change someone waits for is committed at once.
const GATHER: Duration = Duration::from_millis(5);

/// How long after a batch the writer keeps looking for work by itself (see `next_batch`).
pub(super) const LINGER: Duration = Duration::from_secs(1);

pub(super) type Ack = oneshot::Sender<Result<(), String>>;

/// One queued change. A durable one belongs to a caller waiting for an acknowledgement: if
/// its batch fails the caller is told and undoes it, so it must never be written later.
#[derive(Debug)]
pub(super) struct Queued {
    pub op: WriteOp,
    pub durable: bool,
}

impl Queued {
    pub fn behind(op: WriteOp) -> Queued {
        Queued { op, durable: false }
    }

    pub fn durable(op: WriteOp) -> Queued {
        Queued { op, durable: true }
    }
}

/// What the writer takes off the queue in one go: the changes in the order they came, and
/// everyone waiting for them.
#[derive(Default)]
pub(super) struct Batch {
    pub ops: Vec<Queued>,
    pub acks: Vec<Ack>,
}

#[derive(Default)]
pub(super) struct Queue {
    pub batch: Batch,
    /// The writer sleeps until woken (it has been quiet for `LINGER`); whoever queues first
    /// wakes it. Otherwise it looks at the queue by itself every `GATHER`.
    pub idle: bool,
    /// Every handle is gone: commit what is left and stop.
    pub closed: bool,
}

#[derive(Default)]
pub(super) struct Shared {
    pub queue: Mutex<Queue>,
    pub wake: Condvar,
}

impl Shared {
    pub fn close(&self) {
        self.queue.lock().closed = true;
        self.wake.notify_one();
    }
}

/// Waits for work, then — when nothing waits for an acknowledgement — lingers up to
/// `GATHER` so that one transaction carries many requests' counters. None: closed and empty.
///
/// For `LINGER` after a batch the writer looks at the queue every `GATHER` on its own instead
/// of sleeping until woken: on a busy proxy no request pays for waking it (a wake-up landed in
/// the middle of the next request, and on two cores cost it tens of microseconds).
///
/// `retry_at`: changes held from a failed batch are due then. Until that time only someone
/// waiting for an acknowledgement (or closing) starts a batch, so a full disk is not retried
/// in a tight loop while callers who wait still get an answer at once.
pub(super) fn next_batch(
    shared: &Shared,
    last_batch: &mut Instant,
    retry_at: Option<Instant>,
) -> Option<Batch> {
    let mut queue = shared.queue.lock();
    let mut gave_back = false;
    loop {
        if !queue.batch.acks.is_empty() {
            break;
        }
        if queue.closed && queue.batch.ops.is_empty() {
            return None;
        }
        if let Some(at) = retry_at {
            if queue.closed || Instant::now() >= at {
                break;
            }
            shared.wake.wait_until(&mut queue, at);
            continue;
        }
        if queue.batch.ops.len() >= MAX_BATCH {
            break;
        }
        if !queue.batch.ops.is_empty() {
            let deadline = Instant::now() + GATHER;
            while queue.batch.acks.is_empty() && !queue.closed && queue.batch.ops.len() < MAX_BATCH
            {
                if shared.wake.wait_until(&mut queue, deadline).timed_out() {
                    break;
                }
            }
            break;
        }
        if last_batch.elapsed() < LINGER {
            shared.wake.wait_for(&mut queue, GATHER);
        } else if !gave_back {
            // Before sleeping, this thread hands back the memory its batches freed: an idle
            // thread never returns any by itself. The queue stays open meanwhile, so look again.
            MutexGuard::unlocked(&mut queue, crate::allocator::give_back_freed_memory);
            gave_back = true;
        } else {
            queue.idle = true;
            shared.wake.wait(&mut queue);
            queue.idle = false;
        }
    }
    *last_batch = Instant::now();
    // The next batch starts with room for one like this: growing the list a push at a time
    // copied it over and over while the workers waited on the lock.
    let room = queue.batch.ops.len();
    let taken = std::mem::replace(
        &mut queue.batch,
        Batch {
            ops: Vec::with_capacity(room),
            acks: Vec::new(),
        },
    );
    Some(taken)
}
