//! The real `claude-route serve` process, started on port 0 in a temporary directory.

use super::cli::{self, command, CliOutput};
use super::env::TestEnv;
use super::wait_until;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(15);
const LISTENING: &str = "listening on http://";

/// The `host:port` from the first `listening on http://…` line among `lines`.
fn listening_addr(lines: &[String]) -> Option<String> {
    lines.iter().find_map(|l| {
        l.find(LISTENING).map(|i| {
            l[i + LISTENING.len()..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_end_matches('/')
                .to_string()
        })
    })
}

/// Copies `src` line by line into `sink` (and the test log, tagged `[tag]`) on a thread.
fn pump(src: impl Read + Send + 'static, sink: Arc<Mutex<Vec<String>>>, tag: String) {
    std::thread::spawn(move || {
        for line in BufReader::new(src).lines() {
            let Ok(line) = line else { break };
            eprintln!("[{tag}] {line}");
            sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
        }
    });
}

pub struct TestServer {
    pub env: TestEnv,
    child: Option<Child>,
    /// `127.0.0.1:<port>` of the current process.
    pub addr: String,
    /// Every stderr line of every process started for this server, in order.
    logs: Arc<Mutex<Vec<String>>>,
    /// Index in `logs` where the current process's lines start.
    run_start: usize,
}

impl TestServer {
    /// Starts `claude-route --config <file> serve` and waits for `listening on http://`.
    pub fn start(env: TestEnv) -> TestServer {
        let mut server = TestServer {
            env,
            child: None,
            addr: String::new(),
            logs: Arc::default(),
            run_start: 0,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let mut cmd = command(
            self.env.path(),
            &[
                OsStr::new("--config"),
                self.env.config_path.as_os_str(),
                OsStr::new("serve"),
            ],
            &[],
        );
        cmd.stdout(Stdio::null());
        let mut child = cmd.spawn().expect("spawn claude-route serve");
        let lines = self.lock_logs().len();
        self.run_start = lines;
        pump(
            child.stderr.take().expect("stderr"),
            self.logs.clone(),
            format!("server {}", child.id()),
        );
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(addr) = listening_addr(&self.logs_since_start()) {
                self.addr = addr;
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "claude-route serve exited ({status}) before listening; log:\n{}",
                    self.logs_since_start().join("\n")
                );
            }
            if start.elapsed() > START_TIMEOUT {
                panic!(
                    "no `{LISTENING}` within {START_TIMEOUT:?}; log:\n{}",
                    self.logs_since_start().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn lock_logs(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `http://<addr><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every log line of every run so far.
    pub fn logs(&self) -> Vec<String> {
        self.lock_logs().clone()
    }

    /// The log lines of the current (or last) process only.
    pub fn logs_since_start(&self) -> Vec<String> {
        self.lock_logs()[self.run_start..].to_vec()
    }

    /// Waits until some log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        wait_until(timeout, || {
            self.lock_logs()
                .iter()
                .find(|l| l.contains(needle))
                .cloned()
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            super::send_signal(pid, sig);
        }
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("server not running");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!("claude-route did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then waits for the process to exit (at most 10 s).
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(10))
    }

    /// SIGKILL, then waits for the process to go away.
    pub fn kill9(&mut self) {
        self.signal("KILL");
        self.wait_exit(Duration::from_secs(10));
    }

    /// Starts a new process with the same directory and config.
    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Graceful stop (asserting exit 0) and start again.
    pub fn restart(&mut self) {
        let status = self.stop();
        assert!(status.success(), "graceful stop exited with {status}");
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    /// Runs the CLI against this server (its admin API at the current address).
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let url = self.base_url();
        let admin = self.child.as_ref().map(|_| url.as_str());
        cli::run_cli_with(&self.env, admin, args)
    }

    /// `keygen <tier> [extra…]` through the running server; returns (key, key id).
    pub fn keygen(&self, tier: &str, extra: &[&str]) -> (String, String) {
        let mut args = vec!["keygen", tier];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        out.assert_ok();
        (out.api_key(), out.key_id())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `claude-route … serve …` process started with arbitrary arguments and environment (e.g. a
/// failpoint, which `TestServer` cannot pass since it strips every `CLAUDE_ROUTE_*` variable),
/// for the log-file, shutdown and crash tests. Stdout and stderr are captured line by line;
/// hand the directory back with `into_env` to start it again.
pub struct ServeProc {
    env: Option<TestEnv>,
    child: Option<Child>,
    stderr: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<String>>>,
    pub addr: String,
    status: Option<ExitStatus>,
}

impl ServeProc {
    /// Runs `claude-route <before…> --config <file> serve <after…>` with `vars` set and waits
    /// for `listening on http://`.
    pub fn start(
        env: TestEnv,
        before: &[&str],
        after: &[&str],
        vars: &[(&str, &str)],
    ) -> ServeProc {
        let config = env.config_path.as_os_str();
        let args: Vec<&OsStr> = before
            .iter()
            .map(OsStr::new)
            .chain([OsStr::new("--config"), config, OsStr::new("serve")])
            .chain(after.iter().map(OsStr::new))
            .collect();
        let mut child = command(env.path(), &args, vars)
            .spawn()
            .expect("spawn claude-route serve");
        let pid = child.id();
        let stderr: Arc<Mutex<Vec<String>>> = Arc::default();
        let stdout: Arc<Mutex<Vec<String>>> = Arc::default();
        pump(
            child.stderr.take().expect("stderr"),
            stderr.clone(),
            format!("serve {pid}"),
        );
        pump(
            child.stdout.take().expect("stdout"),
            stdout.clone(),
            format!("serve {pid} stdout"),
        );
        let mut proc = ServeProc {
            env: Some(env),
            child: Some(child),
            stderr,
            stdout,
            addr: String::new(),
            status: None,
        };
        let addr = wait_until(START_TIMEOUT, || listening_addr(&proc.stderr_lines()));
        proc.addr = addr.unwrap_or_else(|| {
            panic!(
                "no `{LISTENING}` from `serve`; log:\n{}",
                proc.stderr_lines().join("\n")
            )
        });
        proc
    }

    pub fn env(&self) -> &TestEnv {
        self.env.as_ref().expect("env present")
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("process started").id()
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until some stderr line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        wait_until(timeout, || {
            self.stderr_lines().into_iter().find(|l| l.contains(needle))
        })
    }

    /// Sends `sig` (`TERM`, `INT`, …) to the process.
    pub fn signal(&self, sig: &str) {
        super::send_signal(self.pid(), sig);
    }

    /// The exit status once the process has ended, or None while it still runs.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(child) = self.child.as_mut() {
                self.status = child.try_wait().ok().flatten();
            }
        }
        self.status
    }

    /// Waits up to `timeout` for the process to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (without blocking an async runtime) up to `timeout` for the process to end.
    pub async fn wait_exit_async(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if start.elapsed() > timeout {
                return None;
            }
            super::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The directory back (killing the process if it still runs), e.g. to restart it.
    pub fn into_env(mut self) -> TestEnv {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.env.take().expect("env taken once")
    }
}

impl Drop for ServeProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
