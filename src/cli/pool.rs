//! `pool` and `recover`: the running server's view of its accounts.

use super::admin_client::call_running;
use crate::clock::{now_ms, rfc3339};
use crate::config::Config;
use serde_json::{json, Value};

/// "in 3h12m" / "3m ago", as an operator reads a time at a glance.
pub fn relative(ms: i64, now: i64) -> String {
    let delta = (ms - now) / 1000;
    let abs = delta.unsigned_abs();
    let text = if abs >= 86_400 {
        format!("{}d{}h", abs / 86_400, (abs % 86_400) / 3600)
    } else if abs >= 3600 {
        format!("{}h{:02}m", abs / 3600, (abs % 3600) / 60)
    } else if abs >= 60 {
        format!("{}m{:02}s", abs / 60, abs % 60)
    } else {
        format!("{abs}s")
    };
    if delta >= 0 {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

fn account_status(a: &Value, now: i64) -> String {
    match a["status"].as_str() {
        Some("blacklisted") => format!(
            "blacklisted: {} ({})",
            a["blacklist_reason"].as_str().unwrap_or("?"),
            a["blacklisted_since"]
                .as_i64()
                .map_or("?".into(), |t| relative(t, now))
        ),
        Some("limited") => format!(
            "limited until {}",
            a["limited_until"].as_i64().map_or("?".into(), rfc3339)
        ),
        Some(s) => s.to_string(),
        None => "?".into(),
    }
}

pub fn pool(config: &Config, as_json: bool) -> Result<(), String> {
    let view = call_running(config, "GET", "/admin/pool", None)?;
    if as_json {
        println!("{view}");
        return Ok(());
    }
    let now = now_ms();
    for tier in view["tiers"].as_array().cloned().unwrap_or_default() {
        println!(
            "{} — slots {}/{}, {} requests, {} in / {} out tokens",
            tier["tier"].as_str().unwrap_or("?"),
            tier["slots_used"],
            tier["capacity"],
            tier["usage"]["requests"],
            tier["usage"]["input_tokens"],
            tier["usage"]["output_tokens"]
        );
        for a in tier["accounts"].as_array().cloned().unwrap_or_default() {
            println!(
                "  {:<24} slots {:>5}  token {:<12}  {}",
                a["name"].as_str().unwrap_or("?"),
                format!("{}/{}", a["slots_used"], a["slots"]),
                a["token_expires_at"]
                    .as_i64()
                    .map_or("no expiry".into(), |t| relative(t, now)),
                account_status(&a, now)
            );
        }
    }
    Ok(())
}

pub fn recover(config: &Config, account: &str) -> Result<(), String> {
    call_running(
        config,
        "POST",
        "/admin/recover",
        Some(json!({"account": account})),
    )?;
    println!("recovered {account}");
    Ok(())
}
