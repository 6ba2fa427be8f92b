//! Every Redis key name the proxy uses, built in one place under the configured prefix.
//! Lua scripts receive the prefix and build the same names; `scripts/names.lua` mirrors this.

#[derive(Debug, Clone)]
pub struct KeyNames {
    prefix: String,
}

impl KeyNames {
    pub fn new(prefix: &str) -> KeyNames {
        KeyNames {
            prefix: prefix.trim_end_matches(':').to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Hash: one client key's record (id, digest, prefix, tier, created, expires, status, fixed, note).
    pub fn key(&self, id: &str) -> String {
        format!("{}:key:{id}", self.prefix)
    }

    /// String: digest → key id.
    pub fn digest(&self, digest: &str) -> String {
        format!("{}:digest:{digest}", self.prefix)
    }

    /// Set: every key id.
    pub fn all_keys(&self) -> String {
        format!("{}:keys", self.prefix)
    }

    /// Set: the tier's account names.
    pub fn accounts(&self, tier: &str) -> String {
        format!("{}:accounts:{tier}", self.prefix)
    }

    /// Hash: key id → account, for the tier.
    pub fn bindings(&self, tier: &str) -> String {
        format!("{}:bindings:{tier}", self.prefix)
    }

    /// Set: live key ids bound to an account (its slot count).
    pub fn slots(&self, tier: &str, account: &str) -> String {
        format!("{}:slots:{tier}:{account}", self.prefix)
    }

    /// Hash: account → "since|reason".
    pub fn blacklist(&self, tier: &str) -> String {
        format!("{}:blacklist:{tier}", self.prefix)
    }

    /// Hash: account → limited-until (ms).
    pub fn limited(&self, tier: &str) -> String {
        format!("{}:limited:{tier}", self.prefix)
    }

    /// Hash: access, refresh, expires.
    pub fn credential(&self, tier: &str, account: &str) -> String {
        format!("{}:cred:{tier}:{account}", self.prefix)
    }

    /// Hash: started, count, and `a:<count id>` for each admitted request not yet settled —
    /// expires with the window.
    pub fn window(&self, key_id: &str, family: &str) -> String {
        format!("{}:window:{key_id}:{family}", self.prefix)
    }

    /// String with PX: an admission the proxy withdrew before Redis ran it (refused if it runs).
    pub fn withdrawn(&self, count_id: &str) -> String {
        format!("{}:withdrawn:{count_id}", self.prefix)
    }

    /// String with PX: a served request whose usage has been added (added again: nothing).
    pub fn settled(&self, settle_id: &str) -> String {
        format!("{}:settled:{settle_id}", self.prefix)
    }

    /// Hash of usage counters for a key.
    pub fn key_usage(&self, key_id: &str) -> String {
        format!("{}:usage:key:{key_id}", self.prefix)
    }

    /// Hash of usage counters for an account.
    pub fn account_usage(&self, tier: &str, account: &str) -> String {
        format!("{}:usage:acct:{tier}:{account}", self.prefix)
    }

    /// String with PX: the global success lock.
    pub fn refresh_lock(&self) -> String {
        format!("{}:refresh:lock", self.prefix)
    }

    /// String with PX: one refresh in progress anywhere.
    pub fn refresh_mutex(&self) -> String {
        format!("{}:refresh:mutex", self.prefix)
    }

    /// String with PX: the token endpoint asked everyone to wait.
    pub fn refresh_paused(&self) -> String {
        format!("{}:refresh:paused", self.prefix)
    }

    /// String with PX: an account's cooldown after a failure.
    pub fn refresh_cooldown(&self, tier: &str, account: &str) -> String {
        format!("{}:refresh:cooldown:{tier}:{account}", self.prefix)
    }

    /// Sorted set of failure times (ms).
    pub fn refresh_failures(&self, tier: &str, account: &str) -> String {
        format!("{}:refresh:failures:{tier}:{account}", self.prefix)
    }

    /// String: last refresh error of an account.
    pub fn refresh_error(&self, tier: &str, account: &str) -> String {
        format!("{}:refresh:error:{tier}:{account}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_live_under_the_prefix() {
        let k = KeyNames::new("cr:");
        assert_eq!(k.slots("high", "a1"), "cr:slots:high:a1");
        assert_eq!(k.window("id", "opus"), "cr:window:id:opus");
        assert_eq!(k.refresh_lock(), "cr:refresh:lock");
    }
}
