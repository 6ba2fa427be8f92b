//! Write-behind: one thread owns the SQLite connection and commits whatever has queued up
//! in a single transaction. Counters ride along without waiting; durable changes carry an
//! acknowledgement that fires only after their transaction committed. When a transaction
//! fails, its write-behind changes are held and tried again (see `held.rs`). With a counter
//! log, batches of counters are appended to it and folded in about once a second
//! (`appended.rs`).

mod appended;
mod coalesce;
mod held;
#[cfg(test)]
mod log_tests;
mod queue;
#[cfg(test)]
mod tests;

use super::counter_log::CounterLog;
use super::{SqliteStore, StoreError, WriteOp};
use appended::Appended;
use coalesce::coalesce;
use held::Held;
use queue::{next_batch, Batch, Due, Queued, Shared, MAX_BATCH};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Closes the queue when the last `StoreWriter` clone is dropped.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[derive(Clone)]
pub struct StoreWriter {
    owner: Arc<Owner>,
}

impl StoreWriter {
    /// Starts the writer thread, committing every batch; it ends when every `StoreWriter`
    /// handle is dropped.
    pub fn start(store: SqliteStore) -> Result<StoreWriter, StoreError> {
        StoreWriter::spawn(store, None)
    }

    /// Starts the writer thread with a counter log: batches of counters are appended to it
    /// and folded into SQLite `every` (zero: every batch is committed). `unfolded`: what the
    /// log held at start-up, folded by the first commit.
    pub fn start_with_log(
        store: SqliteStore,
        log: CounterLog,
        unfolded: Vec<WriteOp>,
        every: Duration,
    ) -> Result<StoreWriter, StoreError> {
        StoreWriter::spawn(store, Some(Appended::new(log, unfolded, every)))
    }

    fn spawn(store: SqliteStore, appended: Option<Appended>) -> Result<StoreWriter, StoreError> {
        let shared = Arc::new(Shared::default());
        let for_thread = shared.clone();
        crate::background::spawn_helper("store-writer", move || run(store, &for_thread, appended))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(StoreWriter {
            owner: Arc::new(Owner(shared)),
        })
    }

    fn shared(&self) -> &Shared {
        &self.owner.0
    }

    /// Queues a change; it reaches disk within one batch (or, while the store refuses
    /// writes, as soon as it takes them again).
    pub fn write(&self, op: WriteOp) {
        self.write_many(std::iter::once(op));
    }

    /// Queues several changes under one taking of the lock (a request's counters): the lock
    /// is shared by every worker, and each taking moves it between cores.
    pub fn write_many(&self, ops: impl IntoIterator<Item = WriteOp>) {
        let shared = self.shared();
        let mut queue = shared.queue.lock();
        let before = queue.batch.ops.len();
        queue.batch.ops.extend(ops.into_iter().map(Queued::behind));
        let after = queue.batch.ops.len();
        if after == before {
            return;
        }
        let wake = std::mem::take(&mut queue.idle) || (before < MAX_BATCH && after >= MAX_BATCH);
        drop(queue);
        if wake {
            shared.wake.notify_one();
        }
    }

    /// Queues changes that must be on disk before the caller goes on. On failure they are
    /// dropped, never written later: the caller is told and undoes them.
    pub fn write_durable(
        &self,
        ops: Vec<WriteOp>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> {
        let (ack, done) = oneshot::channel();
        let shared = self.shared();
        let mut queue = shared.queue.lock();
        queue.batch.ops.extend(ops.into_iter().map(Queued::durable));
        queue.batch.acks.push(ack);
        queue.idle = false;
        drop(queue);
        // Also cuts a gathering writer short: someone is waiting.
        shared.wake.notify_one();
        async move {
            match done.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(StoreError::Unavailable(e)),
                Err(_) => Err(StoreError::Unavailable("store writer has stopped".into())),
            }
        }
    }

    /// Resolves when everything queued before it is on disk, changes held from failed
    /// batches included; fails when they could not be written.
    pub fn flush(&self) -> impl std::future::Future<Output = Result<(), StoreError>> {
        self.write_durable(Vec::new())
    }
}

fn run(mut store: SqliteStore, shared: &Shared, mut appended: Option<Appended>) {
    let mut held = Held::default();
    let mut last_batch = Instant::now();
    loop {
        let due = Due {
            retry_at: held.retry_at(),
            fold_at: appended.as_ref().and_then(Appended::fold_at),
        };
        let Some(batch) = next_batch(shared, &mut last_batch, due) else {
            break;
        };
        write_batch(&mut store, &mut held, &mut appended, batch);
    }
    // Closed: held changes and counters still in the log get one last try.
    if !held.is_empty() || appended.as_ref().is_some_and(Appended::has_pending) {
        write_batch(&mut store, &mut held, &mut appended, Batch::default());
        held.abandon();
    }
}

/// Appends a batch of counters to the log, or writes the held changes, the log's counters
/// and then the batch's in one transaction, and tells everyone waiting how it went.
fn write_batch(
    store: &mut SqliteStore,
    held: &mut Held,
    appended: &mut Option<Appended>,
    batch: Batch,
) {
    // While held changes wait, every batch is committed: they go first.
    let batch = match appended {
        Some(log) if held.is_empty() => match log.try_append(batch) {
            Ok(()) => return,
            Err(batch) => batch,
        },
        _ => batch,
    };
    let logged = appended.as_mut().map(Appended::take_pending);
    let folded = appended.as_ref().and_then(Appended::unfolded_through);
    let held_ops = held.take().into_iter().map(Queued::behind);
    let ops = coalesce(
        held_ops
            .chain(logged.into_iter().flatten())
            .chain(batch.ops),
    );
    let result = store
        .apply_folding(ops.iter().map(|q| &q.op), folded)
        .map_err(|e| e.to_string());
    match &result {
        Ok(()) => {
            held.written();
            if let (Some(log), Some(_)) = (appended.as_mut(), folded) {
                log.folded();
            }
        }
        Err(e) => {
            let changes = ops.len();
            let kept = ops.into_iter().filter(|q| !q.durable).map(|q| q.op);
            held.failed(e, changes, kept.collect());
        }
    }
    for ack in batch.acks {
        let _ = ack.send(result.clone());
    }
}
