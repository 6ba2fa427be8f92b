//! The real `claude-route serve` process, started on port 0 in a temporary directory.

use super::cli::{self, clean_env, CliOutput, BIN};
use super::env::TestEnv;
use super::wait_until;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(15);

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
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&self.env.config_path)
            .arg("serve")
            .current_dir(self.env.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        clean_env(&mut cmd);
        let mut child = cmd.spawn().expect("spawn claude-route serve");
        let stderr = child.stderr.take().expect("stderr");
        let lines = self.lock_logs().len();
        self.run_start = lines;
        let logs = self.logs.clone();
        let pid = child.id();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[server {pid}] {line}");
                logs.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        self.child = Some(child);
        let marker = "listening on http://";
        let start = Instant::now();
        loop {
            let found = self.logs_since_start().iter().find_map(|l| {
                l.find(marker).map(|i| {
                    l[i + marker.len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .trim_end_matches('/')
                        .to_string()
                })
            });
            if let Some(addr) = found {
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
                    "no `listening on http://` within {START_TIMEOUT:?}; log:\n{}",
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
            let status = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.to_string())
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -{sig} {pid} failed");
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
