//! How long one refresh step takes: the success lock alone would space refreshes too tightly,
//! because each attempt's own round trip comes on top of it. The plan budgets the slowest
//! recent attempt, doubled for jitter.

use crate::domain::Millis;
use std::collections::VecDeque;

/// Until an attempt has been timed, assume a token round trip takes a second.
const ASSUMED_ATTEMPT_MS: Millis = 1_000;
/// How many recent attempts the estimate looks at.
const REMEMBERED: usize = 8;

#[derive(Debug, Default)]
pub struct AttemptTimes {
    recent: VecDeque<Millis>,
}

impl AttemptTimes {
    pub fn record(&mut self, took: Millis) {
        if self.recent.len() == REMEMBERED {
            self.recent.pop_front();
        }
        self.recent.push_back(took.max(0));
    }

    /// Time to budget for one attempt on top of the success lock.
    pub fn budget(&self) -> Millis {
        match self.recent.iter().max() {
            Some(slowest) => slowest.saturating_mul(2),
            None => ASSUMED_ATTEMPT_MS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assumes_a_second_until_timed_then_doubles_the_slowest_recent() {
        let mut times = AttemptTimes::default();
        assert_eq!(times.budget(), 1_000);
        times.record(40);
        times.record(90);
        times.record(60);
        assert_eq!(times.budget(), 180);
    }

    #[test]
    fn forgets_old_attempts() {
        let mut times = AttemptTimes::default();
        times.record(5_000);
        for _ in 0..REMEMBERED {
            times.record(10);
        }
        assert_eq!(times.budget(), 20);
    }
}
