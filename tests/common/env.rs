//! A temporary operator directory: account files, config file, store location.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tempfile::TempDir;
use toml::Table;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The access token the test accounts carry: `sk-ant-oat01-<name>`.
pub fn access_token(name: &str) -> String {
    format!("sk-ant-oat01-{name}")
}

pub fn refresh_token(name: &str) -> String {
    format!("sk-ant-ort01-{name}")
}

/// Claude Code's own credentials format.
pub fn claude_code_credential(name: &str, expires_at_ms: i64) -> Value {
    json!({"claudeAiOauth": {
        "accessToken": access_token(name),
        "refreshToken": refresh_token(name),
        "expiresAt": expires_at_ms,
        "scopes": ["user:inference"],
        "subscriptionType": "max"
    }})
}

/// The flat format.
pub fn flat_credential(name: &str, expires_at_ms: i64) -> Value {
    json!({
        "accessToken": access_token(name),
        "refreshToken": refresh_token(name),
        "expiresAt": expires_at_ms
    })
}

/// Deep-merges `extra` into `base`: tables merge key by key, other values replace.
pub fn merge_tables(base: &mut Table, extra: Table) {
    for (key, value) in extra {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge_tables(b, e),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// A temporary directory laid out like an operator's: `account/`, `product/`, the config file.
pub struct TestEnv {
    pub dir: TempDir,
    pub config_path: PathBuf,
    pub config: Table,
}

impl TestEnv {
    /// A directory whose config points upstream at `upstream_url` and merges `extra_toml`.
    pub fn new(upstream_url: &str, extra_toml: &str) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("claude-route-test")
            .tempdir()
            .expect("tempdir");
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join("account")).expect("mkdir account");
        std::fs::create_dir_all(root.join("product")).expect("mkdir product");
        let base = format!(
            r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "3s"
[store]
url = "sqlite:{root}/product/claude-route.db"
[accounts]
dir = "{root}/account"
[upstream]
base_url = "{upstream_url}"
oauth_token_url = "{upstream_url}/v1/oauth/token"
[admin]
token = "{ADMIN_TOKEN}"
token_file = "{root}/product/admin.token"
[keys]
sweep_interval = "200ms"
"#,
            root = root.display()
        );
        let mut config: Table = base.parse().expect("base config parses");
        let extra: Table = extra_toml
            .parse()
            .unwrap_or_else(|e| panic!("extra TOML does not parse: {e}\n{extra_toml}"));
        merge_tables(&mut config, extra);
        let config_path = root.join("claude-route.toml");
        let env = TestEnv {
            dir,
            config_path,
            config,
        };
        env.write_config();
        env
    }

    pub fn write_config(&self) {
        let text = toml::to_string(&self.config).expect("config serializes");
        std::fs::write(&self.config_path, text).expect("write config");
    }

    /// Writes the config file verbatim (for tests of broken configs).
    pub fn write_raw_config(&self, text: &str) {
        std::fs::write(&self.config_path, text).expect("write config");
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn account_dir(&self, tier: &str) -> PathBuf {
        let d = self.path().join("account").join(tier);
        std::fs::create_dir_all(&d).expect("mkdir tier");
        d
    }

    pub fn account_path(&self, tier: &str, name: &str) -> PathBuf {
        self.account_dir(tier).join(format!("{name}.json"))
    }

    /// Writes any file into `account/<tier>/`.
    pub fn write_account_file(&self, tier: &str, file_name: &str, contents: &[u8]) -> PathBuf {
        let p = self.account_dir(tier).join(file_name);
        std::fs::write(&p, contents).expect("write account file");
        p
    }

    /// An account in Claude Code's format, token valid for an hour.
    pub fn add_account(&self, tier: &str, name: &str) -> PathBuf {
        let cred = claude_code_credential(name, now_ms() + 3_600_000);
        self.write_account_file(tier, &format!("{name}.json"), cred.to_string().as_bytes())
    }

    /// An account in the flat format, token valid for an hour.
    pub fn add_flat_account(&self, tier: &str, name: &str) -> PathBuf {
        let cred = flat_credential(name, now_ms() + 3_600_000);
        self.write_account_file(tier, &format!("{name}.json"), cred.to_string().as_bytes())
    }

    pub fn db_path(&self) -> PathBuf {
        self.path().join("product").join("claude-route.db")
    }
}
