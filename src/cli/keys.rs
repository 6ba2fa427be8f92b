//! `keygen` and `keys`: through the running server when one answers, else straight to the
//! store, so a server never keeps acting on a stale copy of a key.

use super::admin_client::{call, CallError};
use crate::account_files::account_exists;
use crate::clock::now_ms;
use crate::config::Config;
use crate::domain::{valid_account_name, Tier};
use crate::http::admin::{key_view, KeyView};
use crate::store::owner::StoreOwner;
use crate::store::{counter_log, KeyRecord, KeyStatus, SqliteStore, StoredState, WriteOp};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

fn parse_ttl(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("`{text}` is not a duration like 2h or 90s ({e})"))
}

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// trial, medium, high, supreme, or any configured tier
    tier: String,
    /// Fix the key to this account for good (takes a slot at once)
    #[arg(long)]
    account: Option<String>,
    /// Lifetime in days (0: never expires); default: the tier's key_days
    #[arg(long)]
    days: Option<u32>,
    /// Exact lifetime such as 2h or 90s (overrides --days)
    #[arg(long, value_parser = parse_ttl)]
    ttl: Option<std::time::Duration>,
    /// A note kept with the key (who it is for)
    #[arg(long)]
    note: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum KeysAction {
    /// List keys (never the secrets)
    List {
        #[arg(long)]
        tier: Option<String>,
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one key
    Show { id: String },
    /// Revoke a key; its slot is freed
    Revoke { id: String },
}

impl KeysAction {
    /// Whether `--json` means something to this action.
    pub fn prints_json(&self) -> bool {
        !matches!(self, KeysAction::Revoke { .. })
    }
}

fn open_store(config: &Config) -> Result<SqliteStore, String> {
    let path = config
        .sqlite_path()
        .ok_or("no server answers, and only the embedded store can be opened directly")?;
    SqliteStore::open(&path).map_err(|e| e.to_string())
}

/// The store, to change it directly: only while no server serves it. A server keeps keys
/// in memory and would never see a change written behind its back.
fn open_store_for_writing(config: &Config) -> Result<SqliteStore, String> {
    if let Some(pid) = config.sqlite_path().and_then(|p| StoreOwner::holder(&p)) {
        return Err(format!(
            "a claude-route server (pid {pid}) serves this store but does not answer at {}; \
             pass --admin-url with the address it listens on",
            config.admin_base_url()
        ));
    }
    open_store(config)
}

fn print_created(view: &Value) {
    println!("Tier: {}", view["tier"].as_str().unwrap_or(""));
    println!("Key ID: {}", view["id"].as_str().unwrap_or(""));
    println!("Expires: {}", view["expires"].as_str().unwrap_or("never"));
    if let Some(account) = view["account"].as_str() {
        println!("Account: {account} (fixed)");
    }
    if let Some(note) = view["note"].as_str().filter(|n| !n.is_empty()) {
        println!("Note: {note}");
    }
    println!("API Key: {}", view["key"].as_str().unwrap_or(""));
}

pub fn keygen(config: &Config, args: KeygenArgs) -> Result<(), String> {
    let tier = config
        .tier(&args.tier)
        .map(|t| Tier::from_config(&args.tier, t))
        .ok_or_else(|| {
            let known: Vec<&str> = config.tiers.keys().map(String::as_str).collect();
            format!(
                "unknown tier `{}`; configured tiers: {}",
                args.tier,
                known.join(", ")
            )
        })?;
    if let Some(account) = &args.account {
        if !valid_account_name(account) {
            return Err(format!(
                "`{account}` is not a valid account name (letters, digits, '.', '_', '-')"
            ));
        }
    }
    let body = json!({"tier": args.tier, "account": args.account, "days": args.days,
            "ttl": args.ttl.map(|t| humantime::format_duration(t).to_string()), "note": args.note});
    match call(config, "POST", "/admin/keys", Some(body)) {
        Ok(view) => {
            print_created(&view);
            Ok(())
        }
        Err(CallError::Failed(message)) => Err(message),
        Err(CallError::NotRunning) => keygen_offline(config, &tier, args),
    }
}

fn keygen_offline(config: &Config, tier: &Tier, args: KeygenArgs) -> Result<(), String> {
    if let Some(account) = &args.account {
        if !account_exists(&config.accounts.dir, &tier.name, account) {
            return Err(format!(
                "no account `{account}` in the {} tier (expected {})",
                tier.name,
                config
                    .accounts
                    .dir
                    .join(&tier.name)
                    .join(format!("{account}.json"))
                    .display()
            ));
        }
    }
    let now = now_ms();
    let lifetime = tier.key_lifetime(args.days, args.ttl)?;
    let (key, record) = KeyRecord::mint(
        &tier.name,
        lifetime,
        args.account.clone(),
        args.note.unwrap_or_default(),
        now,
    );
    let inserted = match config.sqlite_path() {
        Some(_) => open_store_for_writing(config)?
            .insert_key_checked(&record, tier.slots, now)
            .map_err(|e| e.to_string())?,
        None => {
            super::redis_offline::insert(config, tier, &record)?;
            Ok(())
        }
    };
    match inserted {
        Ok(()) => {}
        Err(used) => {
            return Err(format!(
                "account `{}` has no free slot ({used}/{} keys)",
                args.account.unwrap_or_default(),
                tier.slots
            ))
        }
    }
    let mut view = serde_json::to_value(key_view(
        &record,
        record.fixed_account.clone(),
        Default::default(),
    ))
    .map_err(|e| e.to_string())?;
    view["key"] = Value::String(key.secret().to_string());
    print_created(&view);
    Ok(())
}

fn offline_views(config: &Config) -> Result<Vec<KeyView>, String> {
    let Some(path) = config.sqlite_path() else {
        return super::redis_offline::views(config);
    };
    let store = open_store(config)?;
    let mut state = store.load_all().map_err(|e| e.to_string())?;
    add_logged_counters(&path, &store, &mut state)?;
    Ok(state
        .keys
        .iter()
        .map(|k| {
            let account = state.bindings.get(&k.id).map(|(_, a)| a.clone());
            let usage = state.key_usage.get(&k.id).copied().unwrap_or_default();
            key_view(k, account, usage)
        })
        .collect())
}

/// Adds the usage the counter log holds and SQLite does not yet (a server that was killed
/// before its fold, or one that serves the file but does not answer).
fn add_logged_counters(
    db: &std::path::Path,
    store: &SqliteStore,
    state: &mut StoredState,
) -> Result<(), String> {
    let folded = store.counter_log_folded().map_err(|e| e.to_string())?;
    let counters = counter_log::peek(db, folded)
        .map_err(|e| format!("cannot read {}: {e}", counter_log::path_for(db).display()))?;
    state.add_counters(&counters);
    Ok(())
}

fn print_table(keys: &[Value]) {
    println!(
        "{:<36}  {:<14}  {:<8}  {:<8}  {:<16}  {:<20}  NOTE",
        "ID", "PREFIX", "TIER", "STATUS", "ACCOUNT", "EXPIRES"
    );
    for k in keys {
        let s = |f: &str| k[f].as_str().unwrap_or("-").to_string();
        println!(
            "{:<36}  {:<14}  {:<8}  {:<8}  {:<16}  {:<20}  {}",
            s("id"),
            s("prefix"),
            s("tier"),
            s("status"),
            s("account"),
            k["expires"].as_str().unwrap_or("never"),
            k["note"].as_str().unwrap_or("")
        );
    }
}

fn print_one(k: &Value) {
    for field in [
        "id", "prefix", "tier", "status", "created", "expires", "account", "note",
    ] {
        let value = match &k[field] {
            Value::String(s) => s.clone(),
            Value::Null => "-".into(),
            other => other.to_string(),
        };
        println!("{field:<8} {value}");
    }
    let u = &k["usage"];
    println!(
        "usage    {} requests, {} in / {} out tokens, cache {} created / {} read",
        u["requests"],
        u["input_tokens"],
        u["output_tokens"],
        u["cache_creation_input_tokens"],
        u["cache_read_input_tokens"]
    );
}

pub fn keys(config: &Config, action: KeysAction, json: bool) -> Result<(), String> {
    match action {
        KeysAction::List { tier, status } => {
            let mut query = Vec::new();
            if let Some(t) = &tier {
                query.push(format!("tier={t}"));
            }
            if let Some(s) = &status {
                query.push(format!("status={s}"));
            }
            let path = format!("/admin/keys?{}", query.join("&"));
            let keys: Vec<Value> = match call(config, "GET", &path, None) {
                Ok(v) => v["keys"].as_array().cloned().unwrap_or_default(),
                Err(CallError::Failed(m)) => return Err(m),
                Err(CallError::NotRunning) => offline_views(config)?
                    .into_iter()
                    .filter(|k| tier.as_ref().is_none_or(|t| &k.tier == t))
                    .filter(|k| status.as_ref().is_none_or(|s| k.status == s))
                    .filter_map(|k| serde_json::to_value(k).ok())
                    .collect(),
            };
            if json {
                println!("{}", Value::Array(keys));
            } else {
                print_table(&keys);
            }
            Ok(())
        }
        KeysAction::Show { id } => {
            let key = match call(config, "GET", &format!("/admin/keys/{id}"), None) {
                Ok(v) => v,
                Err(CallError::Failed(m)) => return Err(m),
                Err(CallError::NotRunning) => offline_views(config)?
                    .into_iter()
                    .find(|k| k.id == id)
                    .and_then(|k| serde_json::to_value(k).ok())
                    .ok_or_else(|| format!("no key with id `{id}`; `keys list` shows the ids"))?,
            };
            if json {
                println!("{key}");
            } else {
                print_one(&key);
            }
            Ok(())
        }
        KeysAction::Revoke { id } => {
            match call(config, "DELETE", &format!("/admin/keys/{id}"), None) {
                Ok(_) => {}
                Err(CallError::Failed(m)) => return Err(m),
                Err(CallError::NotRunning) => revoke_offline(config, &id)?,
            }
            println!("revoked {id}");
            Ok(())
        }
    }
}

fn revoke_offline(config: &Config, id: &str) -> Result<(), String> {
    if config.sqlite_path().is_none() {
        return super::redis_offline::revoke(config, id);
    }
    let mut store = open_store_for_writing(config)?;
    store
        .find_key(id)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no key with id `{id}`; `keys list` shows the ids"))?;
    store
        .apply(&[
            WriteOp::SetKeyStatus {
                id: id.to_string(),
                status: KeyStatus::Revoked,
            },
            WriteOp::Unbind {
                key_id: id.to_string(),
            },
        ])
        .map_err(|e| e.to_string())
}
