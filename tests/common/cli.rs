//! Running the `claude-route` binary as a command-line tool.

use super::env::TestEnv;
use std::ffi::OsStr;
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_claude-route");

#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics with the whole output unless the command succeeded.
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.status.success(),
            "command failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// The value after `<label>: ` on the first line that has it.
    pub fn field(&self, label: &str) -> Option<String> {
        let prefix = format!("{label}:");
        self.stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(&prefix).map(|v| v.trim().to_string()))
    }

    /// The key from the last stdout line, `API Key: sk-cli-v1-…`.
    pub fn api_key(&self) -> String {
        let last = self
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let key = last.strip_prefix("API Key: ").unwrap_or_else(|| {
            panic!(
                "last stdout line is not `API Key: …`: {last:?}\nstdout:\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        });
        key.trim().to_string()
    }

    /// The `Key ID: <uuid>` line.
    pub fn key_id(&self) -> String {
        self.field("Key ID")
            .unwrap_or_else(|| panic!("no `Key ID:` line in:\n{}", self.stdout))
    }
}

/// Strips every `CLAUDE_ROUTE_*` variable the test runner might have, so only the config counts.
pub fn clean_env(cmd: &mut Command) {
    for (name, _) in std::env::vars() {
        if name.starts_with("CLAUDE_ROUTE_") {
            cmd.env_remove(name);
        }
    }
}

/// `claude-route <args>` in `cwd` with `RUST_LOG=info`, no `CLAUDE_ROUTE_*` variable but
/// `vars`, stdin closed and stdout/stderr piped: the one way every test starts the binary.
pub fn command<S: AsRef<OsStr>>(cwd: &Path, args: &[S], vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    clean_env(&mut cmd);
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the binary with exactly `args` in `cwd`, killing it after `timeout`.
pub fn run_raw(cwd: &Path, args: &[&str], timeout: Duration) -> CliOutput {
    run_raw_with_env(cwd, args, &[], timeout)
}

/// Runs the binary with exactly `args` in `cwd` plus the environment `vars`, killing it after
/// `timeout`.
pub fn run_raw_with_env(
    cwd: &Path,
    args: &[&str],
    vars: &[(&str, &str)],
    timeout: Duration,
) -> CliOutput {
    let mut child = command(cwd, args, vars)
        .spawn()
        .expect("spawn claude-route");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            let stdout = out_t.join().unwrap_or_default();
            let stderr = err_t.join().unwrap_or_default();
            panic!(
                "`claude-route {}` still running after {timeout:?} ({status}); stdout:\n{stdout}\nstderr:\n{stderr}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CliOutput {
        status,
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    }
}

/// Runs `claude-route --config <env's file> [--admin-url U] <args>` in the env's directory.
pub fn run_cli_with(env: &TestEnv, admin_url: Option<&str>, args: &[&str]) -> CliOutput {
    run_cli_env(env, admin_url, args, &[])
}

/// `claude-route --config <env's file> [--admin-url U] <args>` with extra environment.
pub fn run_cli_env(
    env: &TestEnv,
    admin_url: Option<&str>,
    args: &[&str],
    vars: &[(&str, &str)],
) -> CliOutput {
    let config = env.config_path.to_string_lossy().into_owned();
    let mut full: Vec<&str> = vec!["--config", &config];
    if let Some(url) = admin_url {
        full.push("--admin-url");
        full.push(url);
    }
    full.extend_from_slice(args);
    run_raw_env(env.path(), &full, vars)
}

/// Runs the binary with exactly `args` in `cwd` plus the environment `vars` (30 s at most),
/// echoing the call and its output to the test log.
pub fn run_raw_env(cwd: &Path, args: &[&str], vars: &[(&str, &str)]) -> CliOutput {
    let out = run_raw_with_env(cwd, args, vars, Duration::from_secs(30));
    let env_note = if vars.is_empty() {
        String::new()
    } else {
        format!("{vars:?} ")
    };
    eprintln!(
        "[cli] {env_note}claude-route {} -> {}\n{}{}",
        args.join(" "),
        out.status,
        out.stdout,
        out.stderr
    );
    out
}

/// Runs the CLI with no server (straight to the store).
pub fn run_cli(env: &TestEnv, args: &[&str]) -> CliOutput {
    run_cli_with(env, None, args)
}

/// `keygen <tier> [extra…]` straight to the store; returns (key, key id).
pub fn keygen_offline(env: &TestEnv, tier: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["keygen", tier];
    args.extend_from_slice(extra);
    let out = run_cli(env, &args);
    out.assert_ok();
    (out.api_key(), out.key_id())
}

/// Parses `--json` output: one JSON array, one object, or one object per line.
pub fn parse_json_objects(text: &str) -> Vec<serde_json::Value> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(text.trim()) {
        return match v {
            serde_json::Value::Array(items) => items,
            serde_json::Value::Object(ref m) if m.get("keys").is_some_and(|k| k.is_array()) => {
                m["keys"].as_array().cloned().unwrap_or_default()
            }
            other => vec![other],
        };
    }
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\nin:\n{text}"))
        })
        .collect()
}
