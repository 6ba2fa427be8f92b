//! A binding the store refused is taken back in memory: memory must match the disk.

use super::state::{AccountSlot, PoolState};
use crate::config::TierConfig;
use crate::domain::{Credential, Tier};

fn pool(accounts: &[&str]) -> PoolState {
    let config = TierConfig {
        slots: 2,
        ..TierConfig::default()
    };
    let mut pool = PoolState::new(Tier::from_config("trial", &config));
    for name in accounts {
        let credential = Credential {
            access_token: format!("token-{name}"),
            refresh_token: None,
            expires_at: None,
        };
        pool.add_account(name, AccountSlot::new(credential));
    }
    pool
}

fn slots_used(pool: &PoolState, account: &str) -> usize {
    pool.accounts[account].keys.len()
}

#[test]
fn a_refused_first_binding_frees_its_slot() {
    let mut pool = pool(&["a1"]);
    let changes = pool.bind_fixed("k1", "a1").unwrap();
    assert_eq!(slots_used(&pool, "a1"), 1);
    pool.take_back(changes.binding.as_ref().unwrap());
    assert_eq!(pool.bound_account("k1"), None);
    assert_eq!(slots_used(&pool, "a1"), 0);
}

#[test]
fn a_refused_rebinding_goes_back_to_the_account_on_disk() {
    let mut pool = pool(&["a1", "a2"]);
    assert!(pool.restore_binding("k1", "a1"));
    let changes = pool.bind_fixed("k1", "a2").unwrap();
    assert_eq!(pool.bound_account("k1"), Some("a2"));
    pool.take_back(changes.binding.as_ref().unwrap());
    assert_eq!(pool.bound_account("k1"), Some("a1"));
    assert_eq!(slots_used(&pool, "a1"), 1);
    assert_eq!(slots_used(&pool, "a2"), 0);
}

#[test]
fn a_binding_changed_since_is_left_alone() {
    let mut pool = pool(&["a1", "a2"]);
    let refused = pool.bind_fixed("k1", "a1").unwrap();
    pool.bind_fixed("k1", "a2").unwrap();
    pool.take_back(refused.binding.as_ref().unwrap());
    assert_eq!(pool.bound_account("k1"), Some("a2"));
    assert_eq!(slots_used(&pool, "a1"), 0);
    assert_eq!(slots_used(&pool, "a2"), 1);
}
