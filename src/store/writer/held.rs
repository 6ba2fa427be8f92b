//! What a failed batch leaves behind. Write-behind changes (usage, window counts, refresh
//! records, …) have nobody to tell, so they are held and written ahead of a later batch —
//! dropping them would leave the totals on disk short of those in memory. Changes a caller
//! waited for were reported as failed and undone by that caller: those are never held.

use crate::store::backoff::retry_after;
#[cfg(test)]
use crate::store::backoff::FIRST_RETRY;
use crate::store::WriteOp;
use std::collections::BTreeMap;
use std::time::Instant;

/// Held changes are folded per key and account, so they stay small; only the rare changes
/// that cannot be folded (refresh records, blacklist entries, …) grow during a long outage.
/// Past this many the oldest are dropped, and the log says which.
pub(super) const MAX_HELD: usize = 100_000;

/// The store refuses writes since `since`.
struct Outage {
    since: Instant,
    failures: u32,
    retry_at: Instant,
    last_error: String,
}

#[derive(Default)]
pub(super) struct Held {
    ops: Vec<WriteOp>,
    outage: Option<Outage>,
}

impl Held {
    /// The held changes, to go ahead of the next batch's own (they are older).
    pub fn take(&mut self) -> Vec<WriteOp> {
        std::mem::take(&mut self.ops)
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// When the held changes are due again; None when nothing is held.
    pub fn retry_at(&self) -> Option<Instant> {
        match &self.outage {
            Some(outage) if !self.ops.is_empty() => Some(outage.retry_at),
            _ => None,
        }
    }

    /// A batch was written, held changes included.
    pub fn written(&mut self) {
        if let Some(outage) = self.outage.take() {
            log::warn!(
                "store writes succeed again after {} failed attempts over {:.1}s; held changes written",
                outage.failures,
                outage.since.elapsed().as_secs_f64()
            );
        }
    }

    /// A batch of `changes` (after folding) failed: `kept` are its write-behind changes,
    /// held for the next attempt; the others were refused to their callers.
    pub fn failed(&mut self, error: &str, changes: usize, kept: Vec<WriteOp>) {
        let refused = changes.saturating_sub(kept.len());
        self.ops = kept;
        let dropped = self.cap();
        let now = Instant::now();
        let outage = self.outage.get_or_insert(Outage {
            since: now,
            failures: 0,
            retry_at: now,
            last_error: String::new(),
        });
        outage.failures += 1;
        outage.last_error = error.to_string();
        outage.retry_at = now + retry_after(outage.failures);
        if outage.failures == 1 {
            log::error!(
                "store write of {changes} changes failed: {error}; holding {} write-behind changes \
                 to retry until the store takes them ({refused} durable changes reported failed \
                 to their callers)",
                self.ops.len()
            );
        } else {
            log::debug!(
                "store write of {changes} changes failed again ({} so far): {error}",
                outage.failures
            );
        }
        if !dropped.is_empty() {
            log::error!(
                "store writes failing: dropped the {} oldest held changes ({}), at most {MAX_HELD} are held",
                dropped.len(),
                kinds(&dropped)
            );
        }
    }

    /// The writer stops with changes still held: they are lost.
    pub fn abandon(&mut self) {
        let lost = self.take();
        if let (false, Some(outage)) = (lost.is_empty(), &self.outage) {
            log::error!(
                "store writer stopped with {} unsaved changes ({}): {}",
                lost.len(),
                kinds(&lost),
                outage.last_error
            );
        }
    }

    /// Drops the oldest held changes beyond `MAX_HELD`.
    fn cap(&mut self) -> Vec<WriteOp> {
        let excess = self.ops.len().saturating_sub(MAX_HELD);
        self.ops.drain(..excess).collect()
    }
}

/// "3 SetRefreshState, 1 Unbind": what a list of changes holds, for the log.
fn kinds(ops: &[WriteOp]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for op in ops {
        *counts.entry(op.kind()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(kind, n)| format!("{n} {kind}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unbind(i: usize) -> WriteOp {
        WriteOp::Unbind {
            key_id: format!("k{i}"),
        }
    }

    #[test]
    fn past_the_cap_the_oldest_held_changes_are_dropped() {
        let mut held = Held::default();
        let ops: Vec<WriteOp> = (0..MAX_HELD + 3).map(unbind).collect();
        held.failed("disk full", ops.len(), ops);
        let kept = held.take();
        assert_eq!(kept.len(), MAX_HELD);
        assert!(matches!(&kept[0], WriteOp::Unbind { key_id } if key_id == "k3"));
        assert!(held.retry_at().is_none(), "nothing held, nothing due");
    }

    #[test]
    fn held_changes_are_due_after_the_backoff_and_forgotten_once_written() {
        let mut held = Held::default();
        let before = Instant::now();
        held.failed("disk full", 2, vec![unbind(1)]);
        let due = held.retry_at().expect("due");
        assert!(due >= before + FIRST_RETRY);
        let ops = held.take();
        held.failed("disk full", 1, ops);
        assert!(
            held.retry_at().expect("due") >= due + FIRST_RETRY,
            "doubled"
        );
        held.take();
        held.written();
        assert!(held.outage.is_none());
        assert!(held.retry_at().is_none());
    }
}
