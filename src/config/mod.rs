//! Settings: built-in defaults ← config file ← `CLAUDE_ROUTE_<SECTION>__<KEY>` env ← flags.
//!
//! Every layer is merged as a TOML tree first and deserialized once, so an error from any
//! layer names the field it is about (`tiers.trial.slots: invalid type …`).

mod duration;
mod layers;
mod tiers;
mod validate;

pub use duration::HumanDuration;
pub use layers::{load, FlagOverrides};
pub use tiers::{TierConfig, TierLimits};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("config field {field}: {message}")]
    Field { field: String, message: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub upstream: UpstreamConfig,
    pub accounts: AccountsConfig,
    pub refresh: RefreshConfig,
    pub sync: SyncConfig,
    pub admin: AdminConfig,
    pub keys: KeysConfig,
    pub tiers: BTreeMap<String, TierConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig::default(),
            store: StoreConfig::default(),
            upstream: UpstreamConfig::default(),
            accounts: AccountsConfig::default(),
            refresh: RefreshConfig::default(),
            sync: SyncConfig::default(),
            admin: AdminConfig::default(),
            keys: KeysConfig::default(),
            tiers: tiers::default_tiers(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the proxy listens on.
    pub listen: String,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// A request body that stops arriving for this long is refused (408), so a client that
    /// declares more than it sends cannot hold a connection and a worker's buffer forever.
    pub body_timeout: HumanDuration,
    /// How long in-flight requests may run after SIGTERM/SIGINT.
    pub shutdown_grace: HumanDuration,
    /// How long a client's idle connection is kept open for its next request; zero closes
    /// every connection after one answer. Longer than clients keep theirs (SDKs: ~5 s), so a
    /// client never sends on a connection the proxy is closing at that moment.
    pub keep_alive: HumanDuration,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "0.0.0.0:8080".into(),
            body_limit: 32 * 1024 * 1024,
            body_timeout: HumanDuration(Duration::from_secs(30)),
            shutdown_grace: HumanDuration(Duration::from_secs(30)),
            keep_alive: HumanDuration(Duration::from_secs(75)),
            workers: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sqlite:<path>` (embedded) or `redis://host:port/db`.
    pub url: String,
    /// Prefix of every Redis key name.
    pub prefix: String,
    /// Embedded store: how often the request counters appended to the counter log are folded
    /// into SQLite; "0s" commits every batch instead.
    pub fold_counters_every: HumanDuration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: "sqlite:product/claude-route.db".into(),
            prefix: "claude-route".into(),
            fold_counters_every: HumanDuration(Duration::from_secs(1)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    pub base_url: String,
    pub oauth_token_url: String,
    pub oauth_client_id: String,
    pub user_agent: String,
    /// Insert Claude Code's identity line for clients that are not Claude Code.
    pub identity_prompt: bool,
    pub connect_timeout: HumanDuration,
    /// Longest wait for upstream response headers (Claude may think for minutes).
    pub response_timeout: HumanDuration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            base_url: "https://api.anthropic.com".into(),
            oauth_token_url: "https://platform.claude.com/v1/oauth/token".into(),
            oauth_client_id: "9d1c250a-e61b-44d9-88ed-5944d1962f5e".into(),
            user_agent: "claude-cli/2.0.0 (external, cli)".into(),
            identity_prompt: true,
            connect_timeout: HumanDuration(Duration::from_secs(10)),
            response_timeout: HumanDuration(Duration::from_secs(600)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccountsConfig {
    pub dir: PathBuf,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        AccountsConfig {
            dir: PathBuf::from("account"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshConfig {
    pub lead: HumanDuration,
    pub success_lock: HumanDuration,
    pub cooldown: HumanDuration,
    pub max_failures: u32,
    pub failure_window: HumanDuration,
    /// How long a request whose token Claude called expired waits for its urgent refresh
    /// before it is answered 503 "expired, retry after …" (the refresh still happens).
    pub urgent_wait: HumanDuration,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            lead: HumanDuration(Duration::from_secs(60)),
            success_lock: HumanDuration(Duration::from_secs(60)),
            cooldown: HumanDuration(Duration::from_secs(180)),
            max_failures: 3,
            failure_window: HumanDuration(Duration::from_secs(24 * 3600)),
            urgent_wait: HumanDuration(Duration::from_secs(10)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    pub interval: HumanDuration,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            interval: HumanDuration(Duration::from_secs(4 * 3600)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Admin bearer token; empty means "generate one into token_file".
    pub token: String,
    pub token_file: PathBuf,
    pub metrics_public: bool,
    /// Where the CLI finds the running server; empty means derived from server.listen.
    pub url: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            token: String::new(),
            token_file: PathBuf::from("product/admin.token"),
            metrics_public: false,
            url: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// How often expired keys are swept and their slots released (spec: within 60 s).
    pub sweep_interval: HumanDuration,
}

impl Default for KeysConfig {
    fn default() -> Self {
        KeysConfig {
            sweep_interval: HumanDuration(Duration::from_secs(30)),
        }
    }
}

impl Config {
    /// The tier named `name`, if configured.
    pub fn tier(&self, name: &str) -> Option<&TierConfig> {
        self.tiers.get(name)
    }

    /// Path of the SQLite file when the store is embedded.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        self.store.url.strip_prefix("sqlite:").map(PathBuf::from)
    }

    /// Base URL the CLI uses to reach the running server's admin API.
    pub fn admin_base_url(&self) -> String {
        if !self.admin.url.is_empty() {
            return self.admin.url.trim_end_matches('/').to_string();
        }
        let listen = self.server.listen.replace("0.0.0.0", "127.0.0.1");
        let listen = listen.replace("[::]", "[::1]");
        format!("http://{listen}")
    }
}
