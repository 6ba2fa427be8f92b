//! One tier's pool as plain data: accounts, slots, bindings, windows, usage.
//! Every method is synchronous and returns the store changes it implies, so the actor that
//! owns it stays exact (one message at a time) and the rules stay unit-testable.

use super::PoolError;
use crate::domain::window::WindowGrant;
use crate::domain::{Credential, Millis, ModelFamily, Tier, Window};
use crate::store::records::BlacklistEntry;
use crate::store::{KeyRecord, Usage, WriteOp};
use foldhash::HashMap as FastMap;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct AccountSlot {
    pub credential: Arc<Credential>,
    /// Live keys bound here: the slot count.
    pub keys: BTreeSet<String>,
    pub blacklist: Option<BlacklistEntry>,
    pub limited_until: Option<Millis>,
    pub usage: Usage,
}

impl AccountSlot {
    pub fn new(credential: Credential) -> AccountSlot {
        AccountSlot {
            credential: Arc::new(credential),
            keys: BTreeSet::new(),
            blacklist: None,
            limited_until: None,
            usage: Usage::default(),
        }
    }
}

/// What an admitted request may use.
#[derive(Debug, Clone)]
pub struct Admission {
    pub account: Arc<str>,
    pub credential: Arc<Credential>,
    /// None for uncounted calls.
    pub family: Option<ModelFamily>,
    pub grant: Option<WindowGrant>,
    /// Redis: the name of this request's count in its window, so that settling gives back
    /// exactly this count (None when uncounted, and in the embedded store).
    pub count_id: Option<Arc<str>>,
    /// Set when this request bound the key; `slots` is the account's count after it.
    pub newly_bound: bool,
    pub slots_used: u32,
    pub slots: u32,
}

/// Store changes: `durable` must be on disk before the caller is answered.
#[derive(Debug, Default)]
pub struct Changes {
    pub durable: Vec<WriteOp>,
    /// The request's count in its window: queued, not waited for.
    pub lazy: Option<WriteOp>,
    /// The binding these changes make, taken back in memory if the store refuses them.
    pub binding: Option<NewBinding>,
}

/// A binding made in memory whose write is still on its way to the store.
#[derive(Debug)]
pub struct NewBinding {
    key_id: String,
    account: String,
    previous: Option<Arc<str>>,
}

/// How a request ended, for its window and the usage totals.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Served(Usage),
    /// Never got a usable answer from Claude: the request is given back.
    Refund,
}

type FamilyWindows = [Option<Window>; 3];

/// What the pool keeps of a key: its windows and usage totals, and its id, shared with the
/// store changes that name it (every request makes one or two).
#[derive(Debug)]
struct KeyTotals {
    id: Arc<str>,
    windows: FamilyWindows,
    usage: Usage,
}

impl KeyTotals {
    fn new(id: Arc<str>) -> KeyTotals {
        KeyTotals {
            id,
            windows: FamilyWindows::default(),
            usage: Usage::default(),
        }
    }
}

/// The changes a settled request makes: at most two.
pub type SettleOps = [Option<WriteOp>; 2];

fn family_slot(family: ModelFamily) -> usize {
    match family {
        ModelFamily::Opus => 0,
        ModelFamily::Sonnet => 1,
        ModelFamily::Other => 2,
    }
}

pub struct PoolState {
    pub tier: Tier,
    pub accounts: BTreeMap<String, AccountSlot>,
    // Read and written by every request: a fast hasher (keys are our own ids, not client input).
    /// The account names are shared: every admission hands one out with its answer.
    pub(super) bindings: FastMap<String, Arc<str>>,
    /// A key's windows per model family and its usage, looked up by `&str`.
    keys: FastMap<Arc<str>, KeyTotals>,
    /// `tier.name`, shared with the usage changes that name it.
    tier_name: Arc<str>,
}

impl PoolState {
    pub fn new(tier: Tier) -> PoolState {
        PoolState {
            tier_name: Arc::from(tier.name.as_str()),
            tier,
            accounts: BTreeMap::new(),
            bindings: FastMap::default(),
            keys: FastMap::default(),
        }
    }

    pub fn add_account(&mut self, name: &str, slot: AccountSlot) {
        self.accounts.insert(name.to_string(), slot);
    }

    /// Restores a stored binding of a live key; returns false when its account is gone.
    pub fn restore_binding(&mut self, key_id: &str, account: &str) -> bool {
        match self.accounts.get_mut(account) {
            Some(slot) => {
                slot.keys.insert(key_id.to_string());
                self.bindings.insert(key_id.to_string(), Arc::from(account));
                true
            }
            None => false,
        }
    }

    pub fn restore_window(&mut self, key_id: &str, family: ModelFamily, window: Window) {
        self.set_window(key_id, family, window);
    }

    fn window(&self, key_id: &str, family: ModelFamily) -> Option<Window> {
        self.keys.get(key_id)?.windows[family_slot(family)]
    }

    /// The key's totals, changed by `change`; returns the key's shared id.
    fn change_key(&mut self, key_id: &str, change: impl FnOnce(&mut KeyTotals)) -> Arc<str> {
        if let Some(totals) = self.keys.get_mut(key_id) {
            change(totals);
            return totals.id.clone();
        }
        let mut totals = KeyTotals::new(Arc::from(key_id));
        change(&mut totals);
        let id = totals.id.clone();
        self.keys.insert(id.clone(), totals);
        id
    }

    fn set_window(&mut self, key_id: &str, family: ModelFamily, window: Window) -> Arc<str> {
        self.change_key(key_id, |k| k.windows[family_slot(family)] = Some(window))
    }

    pub fn restore_key_usage(&mut self, key_id: &str, usage: Usage) {
        self.change_key(key_id, |k| k.usage = usage);
    }

    pub fn bound_account(&self, key_id: &str) -> Option<&str> {
        self.bindings.get(key_id).map(|a| &**a)
    }

    pub fn key_usage(&self, key_id: &str) -> Usage {
        self.keys.get(key_id).map(|k| k.usage).unwrap_or_default()
    }

    fn usable(slot: &AccountSlot) -> bool {
        slot.blacklist.is_none()
    }

    /// Least-loaded usable account with a free slot; ties go to the smaller name.
    fn has_room(&self, slot: &AccountSlot) -> bool {
        (slot.keys.len() as u64) < u64::from(self.tier.slots)
    }

    fn has_free_slot(&self, account: &str) -> bool {
        self.accounts.get(account).is_some_and(|s| self.has_room(s))
    }

    fn pick_account(&self) -> Result<String, PoolError> {
        let usable: Vec<(&String, &AccountSlot)> = self
            .accounts
            .iter()
            .filter(|(_, s)| Self::usable(s))
            .collect();
        if usable.is_empty() {
            return Err(PoolError::NoAccounts {
                tier: self.tier.display_name(),
            });
        }
        usable
            .into_iter()
            .filter(|(_, s)| self.has_room(s))
            .min_by_key(|(name, s)| (s.keys.len(), (*name).clone()))
            .map(|(name, _)| name.clone())
            .ok_or_else(|| PoolError::AtCapacity {
                tier: self.tier.display_name(),
            })
    }

    fn bind(&mut self, key_id: &str, account: &str, changes: &mut Changes) {
        let previous = self.move_binding(key_id, Some(account));
        changes.durable.push(WriteOp::Bind {
            key_id: key_id.to_string(),
            tier: self.tier.name.clone(),
            account: account.to_string(),
        });
        changes.binding = Some(NewBinding {
            key_id: key_id.to_string(),
            account: account.to_string(),
            previous,
        });
    }

    /// Points a key at `account` (or at none), moving its slot; returns where it was.
    fn move_binding(&mut self, key_id: &str, account: Option<&str>) -> Option<Arc<str>> {
        let previous = match account {
            Some(account) => self.bindings.insert(key_id.to_string(), Arc::from(account)),
            None => self.bindings.remove(key_id),
        };
        if let Some(slot) = previous
            .as_ref()
            .and_then(|old| self.accounts.get_mut(&**old))
        {
            slot.keys.remove(key_id);
        }
        if let Some(slot) = account.and_then(|a| self.accounts.get_mut(a)) {
            slot.keys.insert(key_id.to_string());
        }
        previous
    }

    /// The store refused a binding's write: memory goes back to what the disk holds, so the
    /// slot is free again and the key's next request binds (and writes) anew. A binding
    /// changed again since is left alone.
    pub fn take_back(&mut self, binding: &NewBinding) {
        if self.bound_account(&binding.key_id) != Some(binding.account.as_str()) {
            return;
        }
        let previous = binding
            .previous
            .as_deref()
            .filter(|a| self.accounts.contains_key(*a));
        self.move_binding(&binding.key_id, previous);
    }

    /// The account a key's request goes to, binding (or re-binding) it when needed.
    fn resolve_account(
        &mut self,
        key: &KeyRecord,
        changes: &mut Changes,
    ) -> Result<(Arc<str>, bool), PoolError> {
        if let Some(fixed) = &key.fixed_account {
            let usable = self.accounts.get(fixed).is_some_and(Self::usable);
            if !usable {
                return Err(PoolError::FixedAccountUnavailable {
                    account: fixed.clone(),
                });
            }
            let newly = self.bound_account(&key.id) != Some(fixed.as_str());
            if newly {
                // No sequence may overfill an account, a fixed key's own included.
                if !self.has_free_slot(fixed) {
                    return Err(PoolError::FixedAccountFull {
                        account: fixed.clone(),
                    });
                }
                self.bind(&key.id, fixed, changes);
            }
            return Ok((Arc::from(fixed.as_str()), newly));
        }
        if let Some(current) = self.bindings.get(&key.id) {
            if self.accounts.get(&**current).is_some_and(Self::usable) {
                return Ok((current.clone(), false));
            }
        }
        let account = self.pick_account()?;
        self.bind(&key.id, &account, changes);
        Ok((Arc::from(account), true))
    }

    /// Binds if needed, then counts the request in its window. The changes are returned
    /// even when admission fails: a binding made on the way stands.
    pub fn admit(
        &mut self,
        key: &KeyRecord,
        family: Option<ModelFamily>,
        now: Millis,
    ) -> (Result<Admission, PoolError>, Changes) {
        let mut changes = Changes::default();
        let result = self.admit_into(key, family, now, &mut changes);
        (result, changes)
    }

    fn admit_into(
        &mut self,
        key: &KeyRecord,
        family: Option<ModelFamily>,
        now: Millis,
        changes: &mut Changes,
    ) -> Result<Admission, PoolError> {
        if family.is_some_and(|f| !self.tier.allows(f)) {
            return Err(PoolError::FamilyNotAllowed {
                message: self.tier.family_refusal(),
            });
        }
        let (account, newly_bound) = self.resolve_account(key, changes)?;
        let slot = self.accounts.get(&*account).ok_or(PoolError::Unavailable)?;
        let credential = slot.credential.clone();
        let slots_used = u32::try_from(slot.keys.len()).unwrap_or(u32::MAX);
        if credential.is_expired(now) {
            return Err(PoolError::TokenExpired {
                account: account.to_string(),
                retry_at: None,
            });
        }
        let grant = match family.and_then(|f| self.tier.limit(f).map(|l| (f, l))) {
            None => None,
            Some((f, limit)) => Some(self.count_in_window(&key.id, f, limit, now, changes)?),
        };
        Ok(Admission {
            account,
            credential,
            family,
            grant,
            count_id: None,
            newly_bound,
            slots_used,
            slots: self.tier.slots,
        })
    }

    fn window_ms(&self) -> Millis {
        i64::try_from(self.tier.window.as_millis()).unwrap_or(i64::MAX)
    }

    fn count_in_window(
        &mut self,
        key_id: &str,
        family: ModelFamily,
        limit: u32,
        now: Millis,
        changes: &mut Changes,
    ) -> Result<WindowGrant, PoolError> {
        let current = self.window(key_id, family);
        match Window::admit(current, now, self.window_ms(), limit) {
            Ok((next, grant)) => {
                let key_id = self.set_window(key_id, family, next);
                changes.lazy = Some(WriteOp::SetWindow {
                    key_id,
                    family,
                    window: next,
                });
                Ok(grant)
            }
            Err(full) => Err(PoolError::RateLimited {
                family,
                limit: full.limit,
                resets_at: full.resets_at,
            }),
        }
    }

    /// Ends a request: usage added when served, the window given back when refunded.
    pub fn settle(
        &mut self,
        key_id: &str,
        account: &Arc<str>,
        family: ModelFamily,
        window_started: Option<Millis>,
        outcome: Outcome,
    ) -> SettleOps {
        match outcome {
            Outcome::Served(usage) => {
                let usage = Usage {
                    requests: 1,
                    ..usage
                };
                let key_id = self.change_key(key_id, |k| k.usage.add(&usage));
                let for_key = WriteOp::AddKeyUsage { key_id, usage };
                let for_account = self.accounts.get_mut(&**account).map(|slot| {
                    slot.usage.add(&usage);
                    WriteOp::AddAccountUsage {
                        tier: self.tier_name.clone(),
                        account: account.clone(),
                        usage,
                    }
                });
                [Some(for_key), for_account]
            }
            Outcome::Refund => {
                let refunded = window_started
                    .and_then(|started| Window::refund(self.window(key_id, family), started));
                let Some(next) = refunded else {
                    return [None, None];
                };
                let key_id = self.set_window(key_id, family, next);
                [
                    Some(WriteOp::SetWindow {
                        key_id,
                        family,
                        window: next,
                    }),
                    None,
                ]
            }
        }
    }

    /// A key that expired or was revoked gives its slot back.
    pub fn release(&mut self, key_id: &str) -> Vec<WriteOp> {
        if self.move_binding(key_id, None).is_none() {
            return Vec::new();
        }
        vec![WriteOp::Unbind {
            key_id: key_id.to_string(),
        }]
    }

    /// Reserves a slot on `account` for a new fixed key.
    pub fn bind_fixed(&mut self, key_id: &str, account: &str) -> Result<Changes, PoolError> {
        let slot = self
            .accounts
            .get(account)
            .ok_or_else(|| PoolError::UnknownAccount {
                tier: self.tier.name.clone(),
                account: account.to_string(),
            })?;
        if !self.has_room(slot) {
            return Err(PoolError::AccountFull {
                account: account.to_string(),
                slots: self.tier.slots,
            });
        }
        let mut changes = Changes::default();
        self.bind(key_id, account, &mut changes);
        Ok(changes)
    }

    pub fn blacklist(&mut self, account: &str, reason: &str, now: Millis) -> Option<WriteOp> {
        let slot = self.accounts.get_mut(account)?;
        let entry = BlacklistEntry {
            reason: reason.to_string(),
            since: now,
        };
        slot.blacklist = Some(entry.clone());
        Some(WriteOp::Blacklist {
            tier: self.tier.name.clone(),
            account: account.to_string(),
            entry,
        })
    }

    /// Lifts a blacklist; None when the account is unknown.
    pub fn recover(&mut self, account: &str) -> Option<WriteOp> {
        let slot = self.accounts.get_mut(account)?;
        slot.blacklist = None;
        slot.limited_until = None;
        Some(WriteOp::Unblacklist {
            tier: self.tier.name.clone(),
            account: account.to_string(),
        })
    }

    pub fn mark_limited(&mut self, account: &str, until: Millis) {
        if let Some(slot) = self.accounts.get_mut(account) {
            slot.limited_until = Some(until);
        }
    }

    /// Takes a credential when it is newer than the one held.
    pub fn update_credential(&mut self, account: &str, credential: Credential) -> bool {
        match self.accounts.get_mut(account) {
            Some(slot) if credential.is_newer_than(&slot.credential) => {
                slot.credential = Arc::new(credential);
                true
            }
            _ => false,
        }
    }
}
