//! Model families: what a tier's rules and windows are keyed by.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFamily {
    Opus,
    Sonnet,
    Other,
}

/// `needle` (lowercase ASCII) in `hay`, whatever the case of `hay`; no copy made.
pub fn contains_ignoring_case(hay: &str, needle: &str) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

impl ModelFamily {
    pub const ALL: [ModelFamily; 3] = [ModelFamily::Opus, ModelFamily::Sonnet, ModelFamily::Other];

    /// `opus` anywhere in the name (any case) is Opus, `sonnet` is Sonnet, the rest Other.
    pub fn of_model(model: &str) -> ModelFamily {
        if contains_ignoring_case(model, "opus") {
            ModelFamily::Opus
        } else if contains_ignoring_case(model, "sonnet") {
            ModelFamily::Sonnet
        } else {
            ModelFamily::Other
        }
    }

    pub fn from_config_name(name: &str) -> Option<ModelFamily> {
        match name {
            "opus" => Some(ModelFamily::Opus),
            "sonnet" => Some(ModelFamily::Sonnet),
            "other" => Some(ModelFamily::Other),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ModelFamily::Opus => "opus",
            ModelFamily::Sonnet => "sonnet",
            ModelFamily::Other => "other",
        }
    }

    /// "Opus", as people read it in messages.
    pub fn display(self) -> &'static str {
        match self {
            ModelFamily::Opus => "Opus",
            ModelFamily::Sonnet => "Sonnet",
            ModelFamily::Other => "Other",
        }
    }

    pub fn index(self) -> usize {
        match self {
            ModelFamily::Opus => 0,
            ModelFamily::Sonnet => 1,
            ModelFamily::Other => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_models() {
        assert_eq!(
            ModelFamily::of_model("claude-opus-4-1-20250805"),
            ModelFamily::Opus
        );
        assert_eq!(ModelFamily::of_model("claude-3-OPUS"), ModelFamily::Opus);
        assert_eq!(
            ModelFamily::of_model("claude-sonnet-4-5"),
            ModelFamily::Sonnet
        );
        assert_eq!(
            ModelFamily::of_model("claude-3-5-haiku-20241022"),
            ModelFamily::Other
        );
    }

    proptest! {
        #[test]
        fn family_follows_substring(prefix in "[a-z0-9-]{0,10}", suffix in "[a-z0-9-]{0,10}") {
            let opus = format!("{prefix}opus{suffix}");
            prop_assert_eq!(ModelFamily::of_model(&opus), ModelFamily::Opus);
            let name = format!("{prefix}{suffix}");
            if !name.contains("opus") && !name.contains("sonnet") {
                prop_assert_eq!(ModelFamily::of_model(&name), ModelFamily::Other);
            }
        }
    }
}
