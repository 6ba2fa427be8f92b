//! Redis mode: the admin view shows the refresh rules every instance shares, as Redis holds
//! them, in place of this instance's memory of them, which misses what the others did.
//! The plan (timers, next account, in flight) stays this instance's own.

use super::view::RefreshView;
use super::{AccountId, RefreshCoordinator};
use crate::clock::now_ms;
use crate::domain::Millis;
use crate::store::redis::{RedisStore, SharedAccountRefresh, SharedRefresh};
use crate::store::{Backend, StoreError};

/// What reading the shared refresh state takes, taken from the coordinator so the read runs
/// outside it (the coordinator keeps planning while Redis answers).
pub(super) struct SharedReader {
    store: RedisStore,
    failure_window: Millis,
    pub max_failures: usize,
}

impl SharedReader {
    /// None on the embedded store, where this instance's memory is the whole state.
    pub fn of(coordinator: &RefreshCoordinator) -> Option<SharedReader> {
        let Backend::Redis(store) = &coordinator.backend else {
            return None;
        };
        Some(SharedReader {
            store: store.clone(),
            failure_window: RefreshCoordinator::ms(coordinator.cfg.failure_window),
            max_failures: coordinator.cfg.max_failures as usize,
        })
    }

    pub async fn read(&self, accounts: &[AccountId]) -> Result<SharedRefresh, StoreError> {
        self.store
            .shared_refresh(accounts, now_ms(), self.failure_window)
            .await
    }
}

/// `shared.accounts` must be in the order of `view.accounts` (they were read for them).
pub(super) fn merge(
    mut view: RefreshView,
    shared: SharedRefresh,
    max_failures: usize,
) -> RefreshView {
    view.lock_until = shared.lock_until;
    view.paused_until = shared.paused_until;
    let global = shared.lock_until.max(shared.paused_until);
    view.next_at = view.next_at.map(|at| global.map_or(at, |g| at.max(g)));
    for (account, state) in view.accounts.iter_mut().zip(shared.accounts) {
        account.next_attempt =
            shared_next_attempt(account.next_attempt, global, &state, max_failures);
        account.failures_in_window = state.failures_in_window;
        account.cooldown_until = state.cooldown_until;
        account.last_error = state.last_error;
    }
    view
}

/// This instance's next attempt at an account, pushed back to when refresh_begin.lua would let
/// it through: after the account's cooldown and the global lock and pause (`global`), and
/// never once the shared failure cap is reached.
pub(super) fn shared_next_attempt(
    local: Option<Millis>,
    global: Option<Millis>,
    state: &SharedAccountRefresh,
    max_failures: usize,
) -> Option<Millis> {
    if state.failures_in_window >= max_failures {
        return None;
    }
    let wait = state.cooldown_until.max(global);
    local.map(|at| wait.map_or(at, |w| at.max(w)))
}

#[cfg(test)]
mod tests {
    use super::super::view::AccountRefreshView;
    use super::*;

    fn account(name: &str, failures: usize, next_attempt: Option<Millis>) -> AccountRefreshView {
        AccountRefreshView {
            tier: "high".into(),
            account: name.into(),
            failures_in_window: failures,
            cooldown_until: None,
            last_error: None,
            next_attempt,
        }
    }

    fn view(accounts: Vec<AccountRefreshView>) -> RefreshView {
        RefreshView {
            timers: accounts.len(),
            next_account: Some("a".into()),
            next_at: Some(1_000),
            lock_until: None,
            paused_until: None,
            in_flight: Some("a".into()),
            accounts,
        }
    }

    #[test]
    fn another_instances_failure_shows_and_delays_the_next_attempt() {
        let local = view(vec![
            account("a", 0, Some(1_000)),
            account("b", 0, Some(1_000)),
        ]);
        let shared = SharedRefresh {
            lock_until: None,
            paused_until: None,
            accounts: vec![
                SharedAccountRefresh {
                    failures_in_window: 1,
                    cooldown_until: Some(5_000),
                    last_error: Some("token endpoint answered 500".into()),
                },
                SharedAccountRefresh::default(),
            ],
        };
        let merged = merge(local, shared, 3);
        let a = &merged.accounts[0];
        assert_eq!(a.failures_in_window, 1);
        assert_eq!(a.cooldown_until, Some(5_000));
        assert_eq!(a.last_error.as_deref(), Some("token endpoint answered 500"));
        assert_eq!(a.next_attempt, Some(5_000));
        assert_eq!(merged.accounts[1].next_attempt, Some(1_000));
        assert_eq!(
            merged.in_flight.as_deref(),
            Some("a"),
            "in flight stays local"
        );
    }

    #[test]
    fn shared_state_replaces_what_this_instance_remembers() {
        let mut stale = account("a", 2, Some(9_000));
        stale.cooldown_until = Some(9_000);
        stale.last_error = Some("old".into());
        let mut local = view(vec![stale]);
        local.lock_until = Some(2_000);
        let shared = SharedRefresh {
            lock_until: None,
            paused_until: None,
            accounts: vec![SharedAccountRefresh::default()],
        };
        let merged = merge(local, shared, 3);
        assert_eq!(merged.lock_until, None);
        let a = &merged.accounts[0];
        assert_eq!(
            (a.failures_in_window, a.cooldown_until, a.last_error.clone()),
            (0, None, None)
        );
    }

    #[test]
    fn shared_lock_and_pause_show_and_push_the_plan_back() {
        let local = view(vec![account("a", 0, Some(1_000))]);
        let shared = SharedRefresh {
            lock_until: Some(3_000),
            paused_until: Some(4_000),
            accounts: vec![SharedAccountRefresh::default()],
        };
        let merged = merge(local, shared, 3);
        assert_eq!(merged.lock_until, Some(3_000));
        assert_eq!(merged.paused_until, Some(4_000));
        assert_eq!(merged.next_at, Some(4_000));
        assert_eq!(merged.accounts[0].next_attempt, Some(4_000));
    }

    #[test]
    fn failures_at_the_cap_leave_no_next_attempt() {
        let local = view(vec![account("a", 0, Some(1_000))]);
        let shared = SharedRefresh {
            lock_until: None,
            paused_until: None,
            accounts: vec![SharedAccountRefresh {
                failures_in_window: 3,
                ..SharedAccountRefresh::default()
            }],
        };
        assert_eq!(merge(local, shared, 3).accounts[0].next_attempt, None);
    }
}
