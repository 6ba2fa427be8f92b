//! The writer's side of the counter log (`store::counter_log`): a batch of counters nobody
//! waits for is appended there instead of committed, and kept folded in memory until the next
//! commit takes it into SQLite — when a change that is not a counter comes, someone waits, the
//! fold is due (`[store] fold_counters_every`), or the writer stops.

use super::coalesce::{coalesce, Folded};
use super::queue::{Batch, Queued};
use crate::store::counter_log::{is_counter, CounterLog};
use crate::store::WriteOp;
use std::time::{Duration, Instant};

pub(super) struct Appended {
    log: CounterLog,
    /// Everything appended since the last fold, folded per key and account.
    pending: Folded,
    every: Duration,
    /// An append failed and the log said so; the next one that works says so too.
    failing: bool,
}

impl Appended {
    /// `unfolded`: what the log held at start-up that SQLite does not; the first commit takes it.
    pub fn new(log: CounterLog, unfolded: Vec<WriteOp>, every: Duration) -> Appended {
        let mut pending = Folded::default();
        for op in unfolded {
            pending.add(op);
        }
        Appended {
            log,
            pending,
            every,
            failing: false,
        }
    }

    /// Appends the batch instead of committing it when it is counters only, nobody waits
    /// and no fold is due; otherwise (or when the append fails) hands it back to be committed.
    pub fn try_append(&mut self, batch: Batch) -> Result<(), Batch> {
        let appendable = !self.every.is_zero()
            && batch.acks.is_empty()
            && !batch.ops.is_empty()
            && batch.ops.iter().all(|q| !q.durable && is_counter(&q.op))
            && self.fold_at().is_none_or(|at| Instant::now() < at);
        if !appendable {
            return Err(batch);
        }
        let ops = coalesce(batch.ops);
        if let Err(e) = self.log.append(ops.iter().map(|q| &q.op)) {
            if !std::mem::replace(&mut self.failing, true) {
                log::warn!("counter log append failed: {e}; committing counters instead");
            }
            return Err(Batch {
                ops,
                acks: Vec::new(),
            });
        }
        if std::mem::take(&mut self.failing) {
            log::warn!("counter log appends succeed again");
        }
        for queued in ops {
            self.pending.add(queued.op);
        }
        Ok(())
    }

    /// When the counters waiting in the log are due to be folded; None when none wait.
    pub fn fold_at(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        self.log.fold_at(self.every)
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The counters waiting in the log, for the commit that folds them.
    pub fn take_pending(&mut self) -> Vec<Queued> {
        let mut out = Vec::new();
        self.pending.drain_into(&mut out);
        out
    }

    /// The `seq` the next commit records as folded, when the log holds lines SQLite lacks.
    pub fn unfolded_through(&self) -> Option<u64> {
        self.log.unfolded_through()
    }

    /// A commit took everything appended so far.
    pub fn folded(&mut self) {
        self.log.folded();
    }
}
