//! Tier settings and the defaults of SPEC §3.

use super::HumanDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierConfig {
    /// Keys one account of this tier can serve.
    pub slots: u32,
    /// Model families keys of this tier may use: any of `opus`, `sonnet`, `other`.
    pub families: Vec<String>,
    /// Requests per window and family; a missing family or 0 means unlimited.
    pub limits: TierLimits,
    /// Length of a request window.
    pub window: HumanDuration,
    /// Default key lifetime in days; 0 means keys never expire.
    pub key_days: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TierLimits {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opus: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sonnet: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub other: Option<u32>,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig {
            slots: 1,
            families: vec!["opus".into(), "sonnet".into(), "other".into()],
            limits: TierLimits::default(),
            window: HumanDuration(Duration::from_secs(5 * 3600)),
            key_days: 30,
        }
    }
}

fn tier(slots: u32, families: &[&str], limits: TierLimits, key_days: u32) -> TierConfig {
    TierConfig {
        slots,
        families: families.iter().map(|f| f.to_string()).collect(),
        limits,
        key_days,
        ..TierConfig::default()
    }
}

pub fn default_tiers() -> BTreeMap<String, TierConfig> {
    let sonnet_only = |n| TierLimits {
        sonnet: Some(n),
        ..TierLimits::default()
    };
    let all = ["opus", "sonnet", "other"];
    let mut tiers = BTreeMap::new();
    tiers.insert("trial".into(), tier(7, &["sonnet"], sonnet_only(42), 1));
    tiers.insert("medium".into(), tier(7, &["sonnet"], sonnet_only(42), 30));
    let high = TierLimits {
        opus: Some(10),
        sonnet: Some(50),
        other: None,
    };
    tiers.insert("high".into(), tier(3, &all, high, 30));
    let supreme = TierLimits {
        opus: Some(15),
        sonnet: Some(75),
        other: None,
    };
    tiers.insert("supreme".into(), tier(2, &all, supreme, 30));
    tiers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SPEC §3's table, row by row.
    #[test]
    fn defaults_are_the_spec_table() {
        // (tier, slots, families, opus, sonnet, other, key lifetime in days)
        let rows = [
            ("trial", 7, "sonnet", None, Some(42), None, 1),
            ("medium", 7, "sonnet", None, Some(42), None, 30),
            ("high", 3, "opus,sonnet,other", Some(10), Some(50), None, 30),
            (
                "supreme",
                2,
                "opus,sonnet,other",
                Some(15),
                Some(75),
                None,
                30,
            ),
        ];
        let tiers = default_tiers();
        assert_eq!(tiers.len(), rows.len());
        for (name, slots, families, opus, sonnet, other, days) in rows {
            let t = &tiers[name];
            let l = &t.limits;
            assert_eq!(
                (
                    t.slots,
                    t.families.join(","),
                    l.opus,
                    l.sonnet,
                    l.other,
                    t.key_days
                ),
                (slots, families.to_string(), opus, sonnet, other, days),
                "tier {name}"
            );
            assert_eq!(t.window.get(), Duration::from_secs(5 * 3600), "tier {name}");
        }
    }
}
