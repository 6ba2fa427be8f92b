//! Merging the layers: defaults, file, environment, flags.

use super::{validate, Config, ConfigError};
use std::path::{Path, PathBuf};
use toml::{Table, Value};

const ENV_PREFIX: &str = "CLAUDE_ROUTE_";
pub const DEFAULT_CONFIG_PATH: &str = "config/claude-route.toml";

/// The common settings that also exist as global command-line flags.
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    pub listen: Option<String>,
    pub store: Option<String>,
    pub account_dir: Option<String>,
    pub upstream: Option<String>,
    pub oauth_token_url: Option<String>,
    pub admin_url: Option<String>,
}

impl FlagOverrides {
    fn entries(&self) -> [(&'static str, &'static str, Option<&String>); 6] {
        [
            ("server", "listen", self.listen.as_ref()),
            ("store", "url", self.store.as_ref()),
            ("accounts", "dir", self.account_dir.as_ref()),
            ("upstream", "base_url", self.upstream.as_ref()),
            ("upstream", "oauth_token_url", self.oauth_token_url.as_ref()),
            ("admin", "url", self.admin_url.as_ref()),
        ]
    }
}

/// Loads the configuration. `explicit` is a `--config` the user typed: it must exist.
pub fn load(explicit: Option<&Path>, flags: &FlagOverrides) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    load_from(explicit, flags, &env)
}

pub fn load_from(
    explicit: Option<&Path>,
    flags: &FlagOverrides,
    env: &[(String, String)],
) -> Result<Config, ConfigError> {
    let mut tree = defaults_tree()?;
    if let Some(file) = read_file_layer(explicit)? {
        merge(&mut tree, file);
    }
    for (name, value) in env {
        apply_env(&mut tree, name, value)?;
    }
    for (section, key, value) in flags.entries() {
        if let Some(value) = value {
            set_path(
                &mut tree,
                &[section.to_string(), key.to_string()],
                Value::String(value.clone()),
            );
        }
    }
    let config: Config =
        serde_path_to_error::deserialize(Value::Table(tree)).map_err(|e| ConfigError::Field {
            field: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    validate::validate(&config)?;
    Ok(config)
}

fn defaults_tree() -> Result<Table, ConfigError> {
    match Value::try_from(Config::default()) {
        Ok(Value::Table(t)) => Ok(t),
        _ => Err(ConfigError::Field {
            field: "(defaults)".into(),
            message: "built-in defaults could not be represented".into(),
        }),
    }
}

fn read_file_layer(explicit: Option<&Path>) -> Result<Option<Table>, ConfigError> {
    let path: PathBuf =
        explicit.map_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH), Path::to_path_buf);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            return Ok(None)
        }
        Err(e) => {
            return Err(ConfigError::File {
                path,
                message: format!("cannot be read: {e}"),
            })
        }
    };
    text.parse::<Table>()
        .map(Some)
        .map_err(|e| ConfigError::File {
            path,
            message: e.to_string(),
        })
}

/// Deep merge: tables merge key by key, anything else replaces.
fn merge(base: &mut Table, over: Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

fn apply_env(tree: &mut Table, name: &str, raw: &str) -> Result<(), ConfigError> {
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    if !rest.contains("__") {
        return Ok(());
    }
    let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Field {
            field: name.to_string(),
            message: "empty name segment; write CLAUDE_ROUTE_<SECTION>__<KEY>".into(),
        });
    }
    let value = match get_path(tree, &path) {
        // The field is a string: take the text as it is (a port "8080" stays a string).
        Some(Value::String(_)) => Value::String(raw.to_string()),
        _ => parse_scalar(raw),
    };
    set_path(tree, &path, value);
    Ok(())
}

fn parse_scalar(raw: &str) -> Value {
    format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

fn get_path<'a>(tree: &'a Table, path: &[String]) -> Option<&'a Value> {
    let (last, parents) = path.split_last()?;
    let mut table = tree;
    for p in parents {
        table = table.get(p)?.as_table()?;
    }
    table.get(last)
}

fn set_path(tree: &mut Table, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut table = tree;
    for p in parents {
        let entry = table
            .entry(p.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        if !entry.is_table() {
            *entry = Value::Table(Table::new());
        }
        let Value::Table(next) = entry else { return };
        table = next;
    }
    table.insert(last.clone(), value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn defaults_match_the_spec_tiers() {
        let c = load_from(Some(file("").path()), &FlagOverrides::default(), &[]).unwrap();
        assert_eq!(c.server.listen, "0.0.0.0:8080");
        assert_eq!(c.tier("trial").unwrap().slots, 7);
        assert_eq!(c.tier("high").unwrap().limits.opus, Some(10));
        assert_eq!(c.tier("supreme").unwrap().slots, 2);
    }

    #[test]
    fn file_merges_into_tier_defaults() {
        let f = file("[tiers.high.limits]\nopus = 4\n");
        let c = load_from(Some(f.path()), &FlagOverrides::default(), &[]).unwrap();
        let high = c.tier("high").unwrap();
        assert_eq!(high.limits.opus, Some(4));
        assert_eq!(high.limits.sonnet, Some(50));
        assert_eq!(high.slots, 3);
    }

    #[test]
    fn env_then_flags_override() {
        let f = file("[server]\nlisten = \"1.2.3.4:1\"\n");
        let e = env(&[
            ("CLAUDE_ROUTE_SERVER__LISTEN", "127.0.0.1:9000"),
            ("CLAUDE_ROUTE_TIERS__TRIAL__SLOTS", "3"),
            ("CLAUDE_ROUTE_REFRESH__LEAD", "300ms"),
        ]);
        let c = load_from(Some(f.path()), &FlagOverrides::default(), &e).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9000");
        assert_eq!(c.tier("trial").unwrap().slots, 3);
        assert_eq!(c.refresh.lead.get().as_millis(), 300);
        let flags = FlagOverrides {
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let c = load_from(Some(f.path()), &flags, &e).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:0");
    }

    #[test]
    fn bad_fields_are_named() {
        let f = file("[tiers.trial]\nslots = \"many\"\n");
        let err = load_from(Some(f.path()), &FlagOverrides::default(), &[]).unwrap_err();
        assert!(err.to_string().contains("tiers.trial.slots"), "{err}");
        let f = file("[server]\nlistn = \"x\"\n");
        let err = load_from(Some(f.path()), &FlagOverrides::default(), &[]).unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
        let e = env(&[("CLAUDE_ROUTE_SYNC__INTERVAL", "often")]);
        let err = load_from(Some(file("").path()), &FlagOverrides::default(), &e).unwrap_err();
        assert!(err.to_string().contains("sync.interval"), "{err}");
    }

    /// (No file at all without `--config` means the defaults: tests/config_errors.rs.)
    #[test]
    fn an_explicit_missing_file_is_an_error() {
        let missing = Path::new("/nonexistent/claude-route.toml");
        assert!(load_from(Some(missing), &FlagOverrides::default(), &[]).is_err());
    }
}

#[cfg(test)]
mod shipped_file {
    use super::*;

    /// The shipped file's commented lines must be the real defaults: uncommented, they load
    /// to exactly what no file at all gives.
    #[test]
    fn commented_defaults_are_the_defaults() {
        let shipped = include_str!("../../config/claude-route.toml");
        let uncommented: String = shipped
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    }) =>
                {
                    rest.to_string()
                }
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, uncommented.as_bytes()).unwrap();
        let loaded = load_from(Some(f.path()), &FlagOverrides::default(), &[]).unwrap();
        let as_toml = |c: &Config| toml::to_string(c).unwrap();
        assert_eq!(as_toml(&loaded), as_toml(&Config::default()));
        assert!(uncommented.contains("listen = \"0.0.0.0:8080\""));
    }
}
