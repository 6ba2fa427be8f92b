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
            let r = &a["refresh"];
            let failures = r["failures_in_window"].as_u64().unwrap_or(0);
            let refresh = if failures == 0 {
                String::new()
            } else {
                format!(
                    "  refresh failures {failures}{}{}",
                    r["cooldown_until"]
                        .as_i64()
                        .map_or(String::new(), |t| format!(
                            ", cooldown {}",
                            relative(t, now)
                        )),
                    r["last_error"]
                        .as_str()
                        .map_or(String::new(), |e| format!(", last: {e}"))
                )
            };
            println!(
                "  {:<24} slots {:>5}  token {:<12}  {:>6} req  {}{}",
                a["name"].as_str().unwrap_or("?"),
                format!("{}/{}", a["slots_used"], a["slots"]),
                a["token_expires_at"]
                    .as_i64()
                    .map_or("no expiry".into(), |t| relative(t, now)),
                a["usage"]["requests"],
                account_status(&a, now),
                refresh
            );
        }
    }
    Ok(())
}

pub fn recover(config: &Config, account: &str, as_json: bool) -> Result<(), String> {
    let answer = call_running(
        config,
        "POST",
        "/admin/recover",
        Some(json!({"account": account})),
    )?;
    if as_json {
        println!("{answer}");
    } else {
        println!("recovered {account}");
    }
    Ok(())
}

pub fn sync(config: &Config, as_json: bool) -> Result<(), String> {
    let report = call_running(config, "POST", "/admin/sync", None)?;
    if as_json {
        println!("{report}");
    } else {
        println!(
            "sync finished: added={} updated={} removed={} skipped={}",
            report["added"], report["updated"], report["removed"], report["skipped"]
        );
    }
    Ok(())
}

pub fn status(config: &Config, as_json: bool) -> Result<(), String> {
    let s = call_running(config, "GET", "/admin/status", None)?;
    if as_json {
        println!("{s}");
        return Ok(());
    }
    let now = now_ms();
    let when = |v: &Value| v.as_i64().map_or("-".to_string(), |t| relative(t, now));
    println!("version      {}", s["version"].as_str().unwrap_or("?"));
    println!("uptime       {}s", s["uptime_secs"]);
    println!(
        "store        {} ({})",
        s["store"]["url"].as_str().unwrap_or("?"),
        if s["store"]["healthy"].as_bool() == Some(true) {
            "healthy"
        } else {
            "UNAVAILABLE"
        }
    );
    let r = &s["refresh"];
    println!(
        "refresh      {} timers; next: {} {}; global lock: {}; paused: {}",
        r["timers"],
        r["next_account"].as_str().unwrap_or("-"),
        when(&r["next_at"]),
        r["lock_until"].as_i64().map_or("free".into(), |t| format!(
            "held, frees {}",
            relative(t, now)
        )),
        when(&r["paused_until"])
    );
    for a in r["accounts"].as_array().cloned().unwrap_or_default() {
        if a["failures_in_window"].as_u64().unwrap_or(0) > 0 || !a["last_error"].is_null() {
            println!(
                "  {:<24} failures {}  cooldown {}  last error: {}",
                a["account"].as_str().unwrap_or("?"),
                a["failures_in_window"],
                when(&a["cooldown_until"]),
                a["last_error"].as_str().unwrap_or("-")
            );
        }
    }
    match s["last_sync"].as_object() {
        Some(l) => println!(
            "last sync    {}: added={} updated={} removed={} skipped={}",
            when(&l["finished_at"]),
            l["added"],
            l["updated"],
            l["removed"],
            l["skipped"]
        ),
        None => println!("last sync    -"),
    }
    Ok(())
}
