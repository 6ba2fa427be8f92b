//! Folding a batch of writes before it reaches SQLite: under load most of a batch is window
//! counters and usage sums, where only the last window and the total per key matter.

use super::records::{Usage, WriteOp};
use crate::domain::{ModelFamily, Window};
use std::collections::HashMap;

#[derive(Default)]
struct Folded {
    windows: HashMap<(String, ModelFamily), Window>,
    key_usage: HashMap<String, Usage>,
    account_usage: HashMap<(String, String), Usage>,
}

impl Folded {
    fn drain_into(&mut self, out: &mut Vec<WriteOp>) {
        out.extend(
            self.windows
                .drain()
                .map(|((key_id, family), window)| WriteOp::SetWindow {
                    key_id,
                    family,
                    window,
                }),
        );
        out.extend(
            self.key_usage
                .drain()
                .map(|(key_id, usage)| WriteOp::AddKeyUsage { key_id, usage }),
        );
        out.extend(self.account_usage.drain().map(|((tier, account), usage)| {
            WriteOp::AddAccountUsage {
                tier,
                account,
                usage,
            }
        }));
    }
}

/// The same effect in fewer statements. Everything else keeps its order; folded counters
/// are written before any op that could remove what they count (an account forgotten).
pub fn coalesce(ops: Vec<WriteOp>) -> Vec<WriteOp> {
    let mut out = Vec::with_capacity(ops.len());
    let mut folded = Folded::default();
    for op in ops {
        match op {
            WriteOp::SetWindow {
                key_id,
                family,
                window,
            } => {
                folded.windows.insert((key_id, family), window);
            }
            WriteOp::AddKeyUsage { key_id, usage } => {
                folded.key_usage.entry(key_id).or_default().add(&usage)
            }
            WriteOp::AddAccountUsage {
                tier,
                account,
                usage,
            } => folded
                .account_usage
                .entry((tier, account))
                .or_default()
                .add(&usage),
            other => {
                if matches!(other, WriteOp::ForgetAccount { .. }) {
                    folded.drain_into(&mut out);
                }
                out.push(other);
            }
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

    #[test]
    fn keeps_the_last_window_and_sums_usage() {
        let w = |count| Window {
            started_at: 5,
            count,
        };
        let ops = vec![
            WriteOp::SetWindow {
                key_id: "k".into(),
                family: ModelFamily::Sonnet,
                window: w(1),
            },
            WriteOp::AddKeyUsage {
                key_id: "k".into(),
                usage: usage(3),
            },
            WriteOp::SetWindow {
                key_id: "k".into(),
                family: ModelFamily::Sonnet,
                window: w(2),
            },
            WriteOp::AddKeyUsage {
                key_id: "k".into(),
                usage: usage(4),
            },
        ];
        let out = coalesce(ops);
        assert_eq!(out.len(), 2);
        assert!(out
            .iter()
            .any(|o| matches!(o, WriteOp::SetWindow { window, .. } if window.count == 2)));
        assert!(out.iter().any(|o| matches!(o, WriteOp::AddKeyUsage { usage, .. } if usage.input_tokens == 7 && usage.requests == 2)));
    }

    #[test]
    fn counters_land_before_their_account_is_forgotten() {
        let ops = vec![
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
        ];
        let out = coalesce(ops);
        assert!(matches!(out[0], WriteOp::AddAccountUsage { .. }));
        assert!(matches!(out[1], WriteOp::ForgetAccount { .. }));
        assert!(matches!(out[2], WriteOp::Unbind { .. }));
    }
}
