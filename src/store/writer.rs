//! Write-behind: one thread owns the SQLite connection and commits whatever has queued up
//! in a single transaction. Counters ride along without waiting; durable changes carry an
//! acknowledgement that fires only after their transaction committed.

use super::coalesce::coalesce;
use super::{SqliteStore, StoreError, WriteOp};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const MAX_BATCH: usize = 4096;

type Ack = oneshot::Sender<Result<(), String>>;

struct Job {
    ops: Vec<WriteOp>,
    ack: Option<Ack>,
}

#[derive(Clone)]
pub struct StoreWriter {
    tx: mpsc::Sender<Job>,
}

impl StoreWriter {
    /// Starts the writer thread; it ends when every `StoreWriter` handle is dropped.
    pub fn start(store: SqliteStore) -> Result<StoreWriter, StoreError> {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(store, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the writer: {e}")))?;
        Ok(StoreWriter { tx })
    }

    /// Queues a change; it reaches disk within one batch.
    pub fn write(&self, op: WriteOp) {
        if self
            .tx
            .send(Job {
                ops: vec![op],
                ack: None,
            })
            .is_err()
        {
            log::error!("store writer has stopped; a change was not saved");
        }
    }

    /// Queues changes that must be on disk before the caller goes on.
    pub fn write_durable(
        &self,
        ops: Vec<WriteOp>,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> {
        let (ack, done) = oneshot::channel();
        let sent = self
            .tx
            .send(Job {
                ops,
                ack: Some(ack),
            })
            .is_ok();
        async move {
            if !sent {
                return Err(StoreError::Unavailable("store writer has stopped".into()));
            }
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

/// Counters may wait this long for company before they are committed (the ~10 ms a
/// `kill -9` can lose); a change someone waits for is committed at once.
const GATHER: Duration = Duration::from_millis(5);

/// Takes what is queued; when nothing waits for an acknowledgement, lingers up to
/// `GATHER` so that one transaction carries many requests' counters.
fn gather(first: Job, rx: &mpsc::Receiver<Job>) -> Vec<Job> {
    let deadline = Instant::now() + GATHER;
    let mut jobs = vec![first];
    while jobs.len() < MAX_BATCH {
        let urgent = jobs.iter().any(|j| j.ack.is_some());
        let next = if urgent {
            rx.try_recv().ok()
        } else {
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .ok()
        };
        match next {
            Some(job) => jobs.push(job),
            None => break,
        }
    }
    jobs
}

fn run(mut store: SqliteStore, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = gather(first, &rx);
        let ops = coalesce(jobs.iter_mut().flat_map(|j| j.ops.drain(..)).collect());
        let result = store.apply(&ops).map_err(|e| e.to_string());
        if let Err(e) = &result {
            log::error!("store write of {} changes failed: {e}", ops.len());
        }
        for job in jobs {
            if let Some(ack) = job.ack {
                let _ = ack.send(result.clone());
            }
        }
    }
}
