//! A tier's rules, resolved from config into the shape the hot path reads.

use super::ModelFamily;
use crate::config::TierConfig;
use std::time::Duration;

/// The longest lifetime a key may be given (100 years).
pub const MAX_KEY_DAYS: u32 = 36_500;

#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    pub slots: u32,
    allowed: [bool; 3],
    limits: [Option<u32>; 3],
    pub window: Duration,
    pub key_days: u32,
}

impl Tier {
    pub fn from_config(name: &str, c: &TierConfig) -> Tier {
        let mut allowed = [false; 3];
        for f in c
            .families
            .iter()
            .filter_map(|f| ModelFamily::from_config_name(f))
        {
            allowed[f.index()] = true;
        }
        let nonzero = |l: Option<u32>| l.filter(|n| *n > 0);
        Tier {
            name: name.to_string(),
            slots: c.slots,
            allowed,
            limits: [
                nonzero(c.limits.opus),
                nonzero(c.limits.sonnet),
                nonzero(c.limits.other),
            ],
            window: c.window.get(),
            key_days: c.key_days,
        }
    }

    pub fn allows(&self, family: ModelFamily) -> bool {
        self.allowed[family.index()]
    }

    /// Requests per window for `family`; None is unlimited.
    pub fn limit(&self, family: ModelFamily) -> Option<u32> {
        self.limits[family.index()]
    }

    /// A new key's lifetime in ms: `ttl` when given, else `days` (or the tier's default);
    /// None (0 days) never expires. Longer than [`MAX_KEY_DAYS`] is refused: such an expiry is
    /// a typo, and 0 says "never" plainly.
    pub fn key_lifetime(
        &self,
        days: Option<u32>,
        ttl: Option<Duration>,
    ) -> Result<Option<i64>, String> {
        const DAY_MS: i64 = 24 * 3600 * 1000;
        let lifetime = match ttl {
            Some(ttl) => Some(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)),
            None => {
                let days = days.unwrap_or(self.key_days);
                (days > 0).then(|| i64::from(days) * DAY_MS)
            }
        };
        match lifetime {
            Some(ms) if ms > i64::from(MAX_KEY_DAYS) * DAY_MS => Err(format!(
                "a key may live at most {MAX_KEY_DAYS} days; use days = 0 for a key that never expires"
            )),
            _ => Ok(lifetime),
        }
    }

    /// "Trial", as messages print it.
    pub fn display_name(&self) -> String {
        capitalize(&self.name)
    }

    /// The message a client gets when it asks for a family its tier does not have.
    pub fn family_refusal(&self) -> String {
        let allowed: Vec<&str> = ModelFamily::ALL
            .iter()
            .filter(|f| self.allows(**f))
            .map(|f| f.display())
            .collect();
        format!(
            "{} tier can only use {} models",
            self.display_name(),
            allowed.join(" and ")
        )
    }
}

pub fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `[A-Za-z0-9._-]{1,64}`: the only names that may become file names or store keys.
pub fn valid_account_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

pub fn valid_tier_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn default_trial_rules() {
        let c = Config::default();
        let trial = Tier::from_config("trial", c.tier("trial").unwrap());
        assert!(trial.allows(ModelFamily::Sonnet));
        assert!(!trial.allows(ModelFamily::Opus));
        assert_eq!(trial.limit(ModelFamily::Sonnet), Some(42));
        assert_eq!(
            trial.family_refusal(),
            "Trial tier can only use Sonnet models"
        );
        let high = Tier::from_config("high", c.tier("high").unwrap());
        assert_eq!(high.limit(ModelFamily::Other), None);
    }

    #[test]
    fn account_names() {
        assert!(valid_account_name("alice.max-1_b"));
        assert!(!valid_account_name("../etc"));
        assert!(!valid_account_name(".."));
        assert!(!valid_account_name("a b"));
        assert!(!valid_account_name(""));
        assert!(!valid_account_name(&"a".repeat(65)));
    }
}
