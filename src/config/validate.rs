//! Checks that serde cannot express; each error names the field and what to write instead.

use super::{Config, ConfigError};
use std::net::SocketAddr;

fn bad(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Field {
        field: field.into(),
        message: message.into(),
    }
}

pub fn validate(c: &Config) -> Result<(), ConfigError> {
    if c.server.listen.parse::<SocketAddr>().is_err() {
        return Err(bad(
            "server.listen",
            format!(
                "`{}` is not an address; write it like 0.0.0.0:8080",
                c.server.listen
            ),
        ));
    }
    if c.server.body_limit == 0 {
        return Err(bad("server.body_limit", "must be at least 1 byte"));
    }
    if c.server.body_timeout.get().is_zero() {
        return Err(bad("server.body_timeout", "must be longer than zero"));
    }
    let url = &c.store.url;
    if !(url.starts_with("sqlite:") || url.starts_with("redis://") || url.starts_with("rediss://"))
    {
        return Err(bad(
            "store.url",
            format!(
                "`{}` is neither sqlite:<path> nor redis://host:port/db",
                crate::store::redacted_url(url)
            ),
        ));
    }
    for (field, value) in [
        ("upstream.base_url", &c.upstream.base_url),
        ("upstream.oauth_token_url", &c.upstream.oauth_token_url),
    ] {
        if !(value.starts_with("http://") || value.starts_with("https://")) {
            return Err(bad(
                field,
                format!(
                    "`{}` must start with http:// or https://",
                    crate::store::redacted_url(value)
                ),
            ));
        }
        // The check the upstream client makes: a bad URL stops start-up, not a request.
        if let Err(e) = crate::upstream::h1::Endpoint::parse(value) {
            let shown = crate::store::redacted_url(value);
            return Err(bad(field, format!("`{shown}` is not a valid URL: {e}")));
        }
    }
    if c.refresh.max_failures == 0 {
        return Err(bad("refresh.max_failures", "must be at least 1"));
    }
    if c.tiers.is_empty() {
        return Err(bad("tiers", "at least one tier is needed"));
    }
    for (name, tier) in &c.tiers {
        let at = |f: &str| format!("tiers.{name}.{f}");
        if !crate::domain::tier::valid_tier_name(name) {
            return Err(bad(
                format!("tiers.{name}"),
                "tier names use lowercase letters, digits, '-' and '_'",
            ));
        }
        if tier.slots == 0 {
            return Err(bad(at("slots"), "must be at least 1"));
        }
        if tier.families.is_empty() {
            return Err(bad(
                at("families"),
                "name at least one of opus, sonnet, other",
            ));
        }
        for family in &tier.families {
            if crate::domain::ModelFamily::from_config_name(family).is_none() {
                return Err(bad(
                    at("families"),
                    format!("`{family}` is not a family; use opus, sonnet or other"),
                ));
            }
        }
        if tier.window.get().is_zero() {
            return Err(bad(at("window"), "must be longer than zero"));
        }
        if tier.key_days > crate::domain::tier::MAX_KEY_DAYS {
            return Err(bad(
                at("key_days"),
                format!(
                    "at most {} days; 0 makes keys that never expire",
                    crate::domain::tier::MAX_KEY_DAYS
                ),
            ));
        }
    }
    Ok(())
}
