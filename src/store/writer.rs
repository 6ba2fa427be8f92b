//! Write-behind: one thread owns the SQLite connection and commits whatever has queued up
//! in a single transaction. Counters ride along without waiting; durable changes carry an
//! acknowledgement that fires only after their transaction committed.
//!
//! The queue is a plain locked list, not a channel: a counter written while the writer is
//! already gathering a batch must not wake it — on a busy proxy that wake-up per request
//! was a thread switch per request.

use super::coalesce::coalesce;
use super::{SqliteStore, StoreError, WriteOp};
use parking_lot::{Condvar, Mutex};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// A batch this large is committed without waiting for more.
const MAX_BATCH: usize = 4096;

/// Counters may wait this long for company before they are committed (the ~10 ms a
/// `kill -9` can lose); a change someone waits for is committed at once.
const GATHER: Duration = Duration::from_millis(5);

/// How long after a batch the writer keeps looking for work by itself (see `next_batch`).
const LINGER: Duration = Duration::from_secs(1);

type Ack = oneshot::Sender<Result<(), String>>;

#[derive(Default)]
struct Queue {
    ops: Vec<WriteOp>,
    acks: Vec<Ack>,
    /// The writer sleeps until woken (it has been quiet for `LINGER`); whoever queues first
    /// wakes it. Otherwise it looks at the queue by itself every `GATHER`.
    idle: bool,
    /// Every handle is gone: commit what is left and stop.
    closed: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    fn close(&self) {
        self.queue.lock().closed = true;
        self.wake.notify_one();
    }
}

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
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(store, &for_thread))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(StoreWriter {
            owner: Arc::new(Owner(shared)),
        })
    }

    fn shared(&self) -> &Shared {
        &self.owner.0
    }

    /// Queues a change; it reaches disk within one batch.
    pub fn write(&self, op: WriteOp) {
        let shared = self.shared();
        let mut queue = shared.queue.lock();
        queue.ops.push(op);
        let wake = std::mem::take(&mut queue.idle) || queue.ops.len() == MAX_BATCH;
        drop(queue);
        if wake {
            shared.wake.notify_one();
        }
    }

    /// Queues changes that must be on disk before the caller goes on.
    pub fn write_durable(
        &self,
        ops: Vec<WriteOp>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> {
        let (ack, done) = oneshot::channel();
        let shared = self.shared();
        let mut queue = shared.queue.lock();
        queue.ops.extend(ops);
        queue.acks.push(ack);
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

    /// Resolves when everything queued before it is on disk.
    pub fn flush(&self) -> impl std::future::Future<Output = Result<(), StoreError>> {
        self.write_durable(Vec::new())
    }
}

/// Waits for work, then — when nothing waits for an acknowledgement — lingers up to
/// `GATHER` so that one transaction carries many requests' counters. None: closed and empty.
///
/// For `LINGER` after a batch the writer looks at the queue every `GATHER` on its own instead
/// of sleeping until woken: on a busy proxy no request pays for waking it (a wake-up landed in
/// the middle of the next request, and on two cores cost it tens of microseconds).
fn next_batch(shared: &Shared, last_batch: &mut Instant) -> Option<(Vec<WriteOp>, Vec<Ack>)> {
    let mut queue = shared.queue.lock();
    loop {
        if !queue.acks.is_empty() || queue.ops.len() >= MAX_BATCH {
            break;
        }
        if !queue.ops.is_empty() {
            let deadline = Instant::now() + GATHER;
            while queue.acks.is_empty() && !queue.closed && queue.ops.len() < MAX_BATCH {
                if shared.wake.wait_until(&mut queue, deadline).timed_out() {
                    break;
                }
            }
            break;
        }
        if queue.closed {
            return None;
        }
        if last_batch.elapsed() < LINGER {
            shared.wake.wait_for(&mut queue, GATHER);
        } else {
            queue.idle = true;
            shared.wake.wait(&mut queue);
            queue.idle = false;
        }
    }
    *last_batch = Instant::now();
    Some((
        std::mem::take(&mut queue.ops),
        std::mem::take(&mut queue.acks),
    ))
}

fn run(mut store: SqliteStore, shared: &Shared) {
    let mut last_batch = Instant::now();
    while let Some((ops, acks)) = next_batch(shared, &mut last_batch) {
        let ops = coalesce(ops);
        let result = store.apply(&ops).map_err(|e| e.to_string());
        if let Err(e) = &result {
            log::error!("store write of {} changes failed: {e}", ops.len());
        }
        for ack in acks {
            let _ = ack.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::KeyStatus;

    fn writer_on(dir: &std::path::Path) -> (StoreWriter, std::path::PathBuf) {
        let path = dir.join("w.db");
        let store = SqliteStore::open(&path).expect("open");
        (StoreWriter::start(store).expect("start"), path)
    }

    fn key(id: &str) -> crate::store::KeyRecord {
        let mut k =
            crate::store::KeyRecord::mint("supreme", Some(86_400_000), None, String::new(), 0).1;
        k.id = id.into();
        k
    }

    #[actix_rt::test]
    async fn flush_commits_everything_queued_before_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, path) = writer_on(dir.path());
        for i in 0..10 {
            writer.write(WriteOp::InsertKey(key(&format!("k{i}"))));
        }
        writer.flush().await.expect("flush");
        let stored = SqliteStore::open(&path)
            .expect("reopen")
            .load_all()
            .expect("load");
        assert_eq!(stored.keys.len(), 10);
        assert!(stored.keys.iter().all(|k| k.status == KeyStatus::Active));
    }

    fn wait_for_keys(path: &std::path::Path, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let stored = SqliteStore::open(path)
                .expect("reopen")
                .load_all()
                .expect("load");
            if stored.keys.len() == n {
                return;
            }
            assert!(Instant::now() < deadline, "write {n} never reached disk");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn counters_reach_disk_whether_the_writer_lingers_or_sleeps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, path) = writer_on(dir.path());
        // Right after start the writer looks for work by itself.
        writer.write(WriteOp::InsertKey(key("lingering")));
        wait_for_keys(&path, 1);
        // Quiet for longer than LINGER: it sleeps until the next write wakes it.
        std::thread::sleep(LINGER + Duration::from_millis(300));
        writer.write(WriteOp::InsertKey(key("woken")));
        wait_for_keys(&path, 2);
    }

    #[test]
    fn dropping_the_last_handle_commits_what_is_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (writer, path) = writer_on(dir.path());
        writer.write(WriteOp::InsertKey(key("last")));
        drop(writer);
        wait_for_keys(&path, 1);
    }
}
