//! Write-behind: one thread owns the SQLite connection and commits whatever has queued up
//! in a single transaction. Counters ride along without waiting; durable changes carry an
//! acknowledgement that fires only after their transaction committed. When a transaction
//! fails, its write-behind changes are held and tried again (see `held.rs`).

mod coalesce;
mod held;
mod queue;
#[cfg(test)]
mod tests;

use super::{SqliteStore, StoreError, WriteOp};
use coalesce::coalesce;
use held::Held;
use queue::{next_batch, Batch, Queued, Shared, MAX_BATCH};
use std::sync::Arc;
use std::time::Instant;
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
    /// Starts the writer thread; it ends when every `StoreWriter` handle is dropped.
    pub fn start(store: SqliteStore) -> Result<StoreWriter, StoreError> {
        let shared = Arc::new(Shared::default());
        let for_thread = shared.clone();
        crate::background::spawn_helper("store-writer", move || run(store, &for_thread))
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

fn run(mut store: SqliteStore, shared: &Shared) {
    let mut held = Held::default();
    let mut last_batch = Instant::now();
    while let Some(batch) = next_batch(shared, &mut last_batch, held.retry_at()) {
        write_batch(&mut store, &mut held, batch);
    }
    // Closed: held changes get one last try.
    if !held.is_empty() {
        write_batch(&mut store, &mut held, Batch::default());
        held.abandon();
    }
}

/// Writes the held changes and then the batch's, in one transaction, and tells everyone
/// waiting how it went.
fn write_batch(store: &mut SqliteStore, held: &mut Held, batch: Batch) {
    let held_ops = held.take().into_iter().map(Queued::behind);
    let ops = coalesce(held_ops.chain(batch.ops));
    let result = store
        .apply(ops.iter().map(|q| &q.op))
        .map_err(|e| e.to_string());
    match &result {
        Ok(()) => held.written(),
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
