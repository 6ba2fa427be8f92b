//! Folding a batch of writes before it reaches SQLite: under load most of a batch is window
//! counters and usage sums, where only the last window and the total per key matter.

use super::queue::Queued;
use crate::domain::{ModelFamily, Window};
use crate::store::records::{Usage, WriteOp};
use foldhash::HashMap;
use std::sync::Arc;

/// Counters folded per key and account: one batch's, or (`Appended`) everything appended to
/// the counter log since its last fold.
#[derive(Default)]
pub(super) struct Folded {
    windows: HashMap<(Arc<str>, ModelFamily), Window>,
    key_usage: HashMap<Arc<str>, Usage>,
    account_usage: HashMap<(Arc<str>, Arc<str>), Usage>,
}

impl Folded {
    /// Folds a counter in; any other change is handed back.
    pub fn add(&mut self, op: WriteOp) -> Option<WriteOp> {
        match op {
            WriteOp::SetWindow {
                key_id,
                family,
                window,
            } => {
                self.windows.insert((key_id, family), window);
            }
            WriteOp::AddKeyUsage { key_id, usage } => {
                self.key_usage.entry(key_id).or_default().add(&usage)
            }
            WriteOp::AddAccountUsage {
                tier,
                account,
                usage,
            } => self
                .account_usage
                .entry((tier, account))
                .or_default()
                .add(&usage),
            other => return Some(other),
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty() && self.key_usage.is_empty() && self.account_usage.is_empty()
    }

    pub fn drain_into(&mut self, out: &mut Vec<Queued>) {
        let windows = self
            .windows
            .drain()
            .map(|((key_id, family), window)| WriteOp::SetWindow {
                key_id,
                family,
                window,
            });
        let key_usage = self
            .key_usage
            .drain()
            .map(|(key_id, usage)| WriteOp::AddKeyUsage { key_id, usage });
        let account_usage =
            self.account_usage
                .drain()
                .map(|((tier, account), usage)| WriteOp::AddAccountUsage {
                    tier,
                    account,
                    usage,
                });
        out.extend(
            windows
                .chain(key_usage)
                .chain(account_usage)
                .map(Queued::behind),
        );
    }
}

/// The same effect in fewer statements. Only write-behind changes are folded: a durable one
/// must stay itself, to be dropped should its caller be told it failed. Everything else keeps
/// its order; folded counters are written before any op that could remove what they count
/// (an account forgotten) and before a durable change of a kind that is folded.
pub fn coalesce(ops: impl IntoIterator<Item = Queued>) -> Vec<Queued> {
    let ops = ops.into_iter();
    let mut out = Vec::with_capacity(ops.size_hint().0);
    let mut folded = Folded::default();
    for queued in ops {
        if queued.durable {
            if matches!(
                queued.op,
                WriteOp::SetWindow { .. }
                    | WriteOp::AddKeyUsage { .. }
                    | WriteOp::AddAccountUsage { .. }
                    | WriteOp::ForgetAccount { .. }
            ) {
                folded.drain_into(&mut out);
            }
            out.push(queued);
            continue;
        }
        if let Some(other) = folded.add(queued.op) {
            if matches!(other, WriteOp::ForgetAccount { .. }) {
                folded.drain_into(&mut out);
            }
            out.push(Queued::behind(other));
        }
    }
    folded.drain_into(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(n: u64) -> Usage {
        Usage {
            requests: 1,
            input_tokens: n,
            ..Usage::default()
        }
    }

    fn window(count: u32) -> WriteOp {
        WriteOp::SetWindow {
            key_id: "k".into(),
            family: ModelFamily::Sonnet,
            window: Window {
                started_at: 5,
                count,
            },
        }
    }

    fn key_usage(n: u64) -> WriteOp {
        WriteOp::AddKeyUsage {
            key_id: "k".into(),
            usage: usage(n),
        }
    }

    fn behind(ops: Vec<WriteOp>) -> Vec<Queued> {
        ops.into_iter().map(Queued::behind).collect()
    }

    fn ops(out: &[Queued]) -> Vec<&WriteOp> {
        out.iter().map(|q| &q.op).collect()
    }

    /// Folded to two changes: the window of count `window_count`, and one usage addition.
    fn assert_one_window_and_summed_usage(
        out: &[Queued],
        window_count: u32,
        input_tokens: u64,
        requests: u64,
    ) {
        assert_eq!(out.len(), 2);
        assert!(ops(out).iter().any(
            |o| matches!(o, WriteOp::SetWindow { window, .. } if window.count == window_count)
        ));
        assert!(ops(out)
            .iter()
            .any(|o| matches!(o, WriteOp::AddKeyUsage { usage, .. }
            if usage.input_tokens == input_tokens && usage.requests == requests)));
    }

    #[test]
    fn keeps_the_last_window_and_sums_usage() {
        let out = coalesce(behind(vec![
            window(1),
            key_usage(3),
            window(2),
            key_usage(4),
        ]));
        assert_one_window_and_summed_usage(&out, 2, 7, 2);
    }

    #[test]
    fn held_changes_folded_again_ahead_of_newer_ones_keep_the_newest_window() {
        // A failed batch's changes, folded once, then folded again ahead of the next batch.
        let held = coalesce(behind(vec![window(3), key_usage(3)]));
        let out = coalesce(
            held.into_iter()
                .chain(behind(vec![window(2), key_usage(4)])),
        );
        assert_one_window_and_summed_usage(&out, 2, 7, 2);
    }

    #[test]
    fn durable_changes_are_never_folded_and_keep_their_place() {
        let bind = WriteOp::Bind {
            key_id: "k".into(),
            tier: "t".into(),
            account: "a".into(),
        };
        let queued = vec![
            Queued::behind(window(1)),
            Queued::durable(window(2)),
            Queued::durable(bind),
            Queued::behind(window(3)),
        ];
        let out = coalesce(queued);
        let shape: Vec<(bool, &str)> = out.iter().map(|q| (q.durable, q.op.kind())).collect();
        assert_eq!(
            shape,
            [
                (false, "SetWindow"),
                (true, "SetWindow"),
                (true, "Bind"),
                (false, "SetWindow")
            ]
        );
        assert!(matches!(&out[0].op, WriteOp::SetWindow { window, .. } if window.count == 1));
        assert!(matches!(&out[3].op, WriteOp::SetWindow { window, .. } if window.count == 3));
    }

    #[test]
    fn counters_land_before_their_account_is_forgotten() {
        let out = coalesce(behind(vec![
            WriteOp::AddAccountUsage {
                tier: "t".into(),
                account: "a".into(),
                usage: usage(1),
            },
            WriteOp::ForgetAccount {
                tier: "t".into(),
                account: "a".into(),
            },
            WriteOp::Unbind { key_id: "k".into() },
        ]));
        assert!(matches!(out[0].op, WriteOp::AddAccountUsage { .. }));
        assert!(matches!(out[1].op, WriteOp::ForgetAccount { .. }));
        assert!(matches!(out[2].op, WriteOp::Unbind { .. }));
    }
}
