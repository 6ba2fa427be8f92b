//! How long a store write that found the store away waits before it is tried again: the same
//! for SQLite's write-behind and Redis's kept writes, so a store that stays away is asked
//! seldom and one that returns is noticed within seconds.

use std::time::Duration;

/// The first wait after a failure.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);
/// Each further failure doubles the wait, up to this.
pub const LAST_RETRY: Duration = Duration::from_secs(5);

/// The wait after the `failures`-th failure in a row (1: the first).
pub fn retry_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_RETRY * 2u32.pow(doublings)).min(LAST_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_doubles_from_100ms_to_5s() {
        let waits: Vec<u128> = (1..=9).map(|f| retry_after(f).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(retry_after(u32::MAX), LAST_RETRY);
    }
}
