//! Durations written the way people write them: `300ms`, `60s`, `5h`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn get(self) -> Duration {
        self.0
    }

    pub fn as_millis(self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{text}` is not a duration ({e}); write it like `300ms`, `60s` or `5h`"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        d: HumanDuration,
    }

    #[test]
    fn parses_human_strings() {
        let h: Holder = toml::from_str("d = \"300ms\"").unwrap();
        assert_eq!(h.d.get(), Duration::from_millis(300));
        let h: Holder = toml::from_str("d = \"5h\"").unwrap();
        assert_eq!(h.d.get(), Duration::from_secs(5 * 3600));
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        let err = toml::from_str::<Holder>("d = \"soon\"").err().unwrap();
        assert!(err.to_string().contains("write it like"), "{err}");
    }
}
