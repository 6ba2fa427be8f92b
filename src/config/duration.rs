//! Durations written the way people write them: `300ms`, `60s`, `5h`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

/// Longer than any setting needs, and short enough that adding it to a clock (an `Instant`,
/// milliseconds since 1970) can never overflow.
const LONGEST: Duration = Duration::from_secs(1000 * 365 * 24 * 3600);

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
        let parsed = humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write it like `300ms`, `60s` or `5h`"
            ))
        })?;
        if parsed > LONGEST {
            return Err(serde::de::Error::custom(format!(
                "`{text}` is too long: durations are at most 1000 years"
            )));
        }
        Ok(HumanDuration(parsed))
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
    fn rejects_durations_past_a_millennium() {
        assert!(toml::from_str::<Holder>("d = \"999years\"").is_ok());
        let err = toml::from_str::<Holder>("d = \"500000000000years\"")
            .err()
            .unwrap();
        assert!(err.to_string().contains("at most 1000 years"), "{err}");
    }

    #[test]
    fn rejects_garbage_with_a_hint() {
        let err = toml::from_str::<Holder>("d = \"soon\"").err().unwrap();
        assert!(err.to_string().contains("write it like"), "{err}");
    }
}
