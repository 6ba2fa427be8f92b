//! Earliest-deadline-first planning of refreshes that must be spaced one success-lock apart.
//! Working backwards from the last deadline, each account gets the latest moment it can
//! start and still leave room for everyone after it; whoever's moment has come goes first.

use crate::domain::Millis;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Refresh by this time (token expiry, or `Millis::MIN` for an urgent request).
    pub deadline: Millis,
    pub cooldown_until: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Refresh the candidate at this index now.
    Refresh(usize),
    /// Someone is due, but the global success lock holds until then.
    BlockedByLock {
        index: usize,
        until: Millis,
    },
    /// Someone is due, but the token endpoint asked everyone to wait.
    Paused {
        until: Millis,
    },
    /// Nothing is due before this time.
    WaitUntil(Millis),
    Idle,
}

/// Latest start per candidate (same order as `deadlines`, which must be ascending), each
/// `spacing` (success lock plus the time an attempt takes) before the next one's.
pub fn latest_starts(deadlines: &[Millis], lead: Millis, spacing: Millis) -> Vec<Millis> {
    let mut starts = vec![0; deadlines.len()];
    let mut next_start: Option<Millis> = None;
    for i in (0..deadlines.len()).rev() {
        let own = deadlines[i].saturating_sub(lead);
        let start = match next_start {
            Some(next) => own.min(next.saturating_sub(spacing)),
            None => own,
        };
        starts[i] = start;
        next_start = Some(start);
    }
    starts
}

/// `candidates` sorted by deadline, ascending.
pub fn decide(
    candidates: &[Candidate],
    now: Millis,
    lead: Millis,
    spacing: Millis,
    lock_until: Millis,
    paused_until: Millis,
) -> Decision {
    if candidates.is_empty() {
        return Decision::Idle;
    }
    let deadlines: Vec<Millis> = candidates.iter().map(|c| c.deadline).collect();
    let starts = latest_starts(&deadlines, lead, spacing);
    let ready =
        (0..candidates.len()).find(|&i| starts[i] <= now && candidates[i].cooldown_until <= now);
    if let Some(index) = ready {
        if now < paused_until {
            return Decision::Paused {
                until: paused_until,
            };
        }
        if now < lock_until {
            return Decision::BlockedByLock {
                index,
                until: lock_until,
            };
        }
        return Decision::Refresh(index);
    }
    let next = (0..candidates.len())
        .map(|i| starts[i].max(candidates[i].cooldown_until))
        .min()
        .unwrap_or(now);
    Decision::WaitUntil(next.max(paused_until))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(deadline: Millis) -> Candidate {
        Candidate {
            deadline,
            cooldown_until: 0,
        }
    }

    #[test]
    fn starts_leave_room_for_everyone_after() {
        // Ten tokens expiring together, one-second lock, half-second lead.
        let starts = latest_starts(&[10_000; 10], 500, 1_000);
        assert_eq!(starts[9], 9_500);
        assert_eq!(starts[0], 500);
        assert!(starts.windows(2).all(|w| w[1] - w[0] == 1_000));
    }

    #[test]
    fn refreshes_the_first_due_and_waits_otherwise() {
        let cands = [c(10_000), c(20_000)];
        assert_eq!(
            decide(&cands, 0, 500, 1_000, 0, 0),
            Decision::WaitUntil(9_500)
        );
        assert_eq!(
            decide(&cands, 9_500, 500, 1_000, 0, 0),
            Decision::Refresh(0)
        );
        assert_eq!(
            decide(&cands, 9_500, 500, 1_000, 9_800, 0),
            Decision::BlockedByLock {
                index: 0,
                until: 9_800
            }
        );
        assert_eq!(
            decide(&cands, 9_500, 500, 1_000, 0, 12_000),
            Decision::Paused { until: 12_000 }
        );
    }

    #[test]
    fn cooldown_lets_the_next_one_go() {
        let cands = [
            Candidate {
                deadline: 1_000,
                cooldown_until: 5_000,
            },
            c(1_500),
        ];
        // B is not due before its own start; when it is, A's cooldown doesn't hold it back.
        assert_eq!(
            decide(&cands, 1_000, 0, 100, 0, 0),
            Decision::WaitUntil(1_500)
        );
        assert_eq!(decide(&cands, 1_500, 0, 100, 0, 0), Decision::Refresh(1));
        let only = [Candidate {
            deadline: 1_000,
            cooldown_until: 5_000,
        }];
        assert_eq!(
            decide(&only, 1_000, 0, 100, 0, 0),
            Decision::WaitUntil(5_000)
        );
    }

    #[test]
    fn urgent_goes_first() {
        let cands = [c(Millis::MIN), c(1_000_000)];
        assert_eq!(decide(&cands, 50, 500, 1_000, 0, 0), Decision::Refresh(0));
    }
}
