//! A snapshot of a pool for the admin API: no secrets in it.

use super::PoolState;
use crate::domain::{Millis, Tier};
use crate::store::Usage;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    pub name: String,
    pub slots_used: u32,
    pub slots: u32,
    pub status: &'static str,
    pub blacklist_reason: Option<String>,
    pub blacklisted_since: Option<Millis>,
    pub limited_until: Option<Millis>,
    pub token_expires_at: Option<Millis>,
    pub refreshable: bool,
    pub usage: Usage,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    pub tier: String,
    pub slots_used: u32,
    pub capacity: u32,
    pub accounts: Vec<AccountView>,
    pub usage: Usage,
}

impl PoolView {
    /// A tier's view from its accounts: the totals are summed here.
    pub fn from_accounts(tier: &Tier, accounts: Vec<AccountView>) -> PoolView {
        let mut usage = Usage::default();
        for a in &accounts {
            usage.add(&a.usage);
        }
        PoolView {
            tier: tier.name.clone(),
            slots_used: accounts.iter().map(|a| a.slots_used).sum(),
            capacity: tier
                .slots
                .saturating_mul(u32::try_from(accounts.len()).unwrap_or(u32::MAX)),
            accounts,
            usage,
        }
    }
}

impl PoolState {
    pub fn view(&self, now: Millis) -> PoolView {
        let slots = self.tier.slots;
        let accounts: Vec<AccountView> = self
            .accounts
            .iter()
            .map(|(name, slot)| {
                let limited = slot.limited_until.filter(|t| *t > now);
                let status = if slot.blacklist.is_some() {
                    "blacklisted"
                } else if limited.is_some() {
                    "limited"
                } else {
                    "active"
                };
                AccountView {
                    name: name.clone(),
                    slots_used: u32::try_from(slot.keys.len()).unwrap_or(u32::MAX),
                    slots,
                    status,
                    blacklist_reason: slot.blacklist.as_ref().map(|b| b.reason.clone()),
                    blacklisted_since: slot.blacklist.as_ref().map(|b| b.since),
                    limited_until: limited,
                    token_expires_at: slot.credential.expires_at,
                    refreshable: slot.credential.refresh_token.is_some(),
                    usage: slot.usage,
                }
            })
            .collect();
        PoolView::from_accounts(&self.tier, accounts)
    }
}
