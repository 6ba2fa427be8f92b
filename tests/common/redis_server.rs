//! A Redis for the tests (SPEC §11, DESIGN "Tests"): its own `redis-server` child on a free
//! port, without persistence, which a test can stop and start again on the same port to play
//! an outage; or, when `REDIS_URL` is set, that Redis. Every user gets a unique key prefix and
//! only keys under that prefix are ever cleaned. No Redis at all is a loud failure, never a
//! skipped test.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the test's Redis comes from.
enum Source {
    /// A `redis-server` child this harness started (and may stop and start again).
    Own {
        port: u16,
        child: Option<Child>,
        dir: tempfile::TempDir,
        /// AOF with fsync on every write: what the README tells operators to run, so a
        /// killed and restarted Redis comes back with everything it acknowledged.
        persistent: bool,
    },
    /// `REDIS_URL`: shared with others, so only our prefixes are touched.
    External,
}

pub struct RedisServer {
    url: String,
    prefix: String,
    /// Every prefix handed out, cleaned on drop when the Redis is shared.
    prefixes: Vec<String>,
    source: Source,
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("crtest-{}", uuid::Uuid::new_v4().simple())
}

fn redis_server_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("REDIS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("redis-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    for candidate in ["/usr/bin/redis-server", "/usr/local/bin/redis-server"] {
        if std::path::Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "no Redis for the Redis tests: `redis-server` is not installed (not on PATH, not in \
         /usr/bin or /usr/local/bin) and REDIS_URL is not set. Install redis-server, point \
         REDIS_SERVER_BIN at it, or set REDIS_URL=redis://host:port/db. These tests never skip."
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free port for redis-server")
}

/// One PING with short timeouts; true when Redis answered PONG.
fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(300)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    redis::cmd("PING")
        .query::<String>(&mut conn)
        .is_ok_and(|p| p == "PONG")
}

impl RedisServer {
    /// The Redis `REDIS_URL` names when set, otherwise a `redis-server` of our own.
    pub fn start() -> RedisServer {
        match std::env::var("REDIS_URL") {
            Ok(url) if !url.trim().is_empty() => RedisServer::external(url.trim()),
            _ => RedisServer::own(),
        }
    }

    /// Always a `redis-server` of our own (outage tests stop and start it). Panics with a
    /// clear message when none can be started.
    pub fn own() -> RedisServer {
        RedisServer::own_with(false)
    }

    /// Our own `redis-server` with AOF (`appendfsync always`): survives being killed.
    pub fn own_persistent() -> RedisServer {
        RedisServer::own_with(true)
    }

    fn own_with(persistent: bool) -> RedisServer {
        let bin = redis_server_bin();
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let dir = tempfile::Builder::new()
                .prefix("claude-route-redis")
                .tempdir()
                .expect("tempdir for redis-server");
            let port = free_port();
            let mut server = RedisServer {
                url: format!("redis://127.0.0.1:{port}/0"),
                prefix: unique_prefix(),
                prefixes: Vec::new(),
                source: Source::Own {
                    port,
                    child: None,
                    dir,
                    persistent,
                },
            };
            server.prefixes.push(server.prefix.clone());
            match server.spawn(&bin) {
                Ok(()) => return server,
                // Most likely someone took the port in between: try another one.
                Err(log) => last_log = log,
            }
        }
        panic!(
            "could not start {} (5 attempts); last output:\n{last_log}\n\
             Install a working redis-server or set REDIS_URL=redis://host:port/db.",
            bin.display()
        )
    }

    fn external(url: &str) -> RedisServer {
        assert!(
            ping(url),
            "REDIS_URL={url} is set but that Redis does not answer PING; fix it or unset \
             REDIS_URL to let the tests start their own redis-server"
        );
        let prefix = unique_prefix();
        RedisServer {
            url: url.to_string(),
            prefixes: vec![prefix.clone()],
            prefix,
            source: Source::External,
        }
    }

    /// Spawns `redis-server` on this server's port and waits for PING; Err(log) when it
    /// exits or does not answer in time.
    fn spawn(&mut self, bin: &std::path::Path) -> Result<(), String> {
        let url = self.url.clone();
        let Source::Own {
            port,
            child,
            dir,
            persistent,
        } = &mut self.source
        else {
            panic!("spawn() on an external Redis");
        };
        assert!(child.is_none(), "redis-server already running");
        let log_path = dir.path().join("redis.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open redis log");
        let mut cmd = Command::new(bin);
        cmd.arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            .arg("--appendonly")
            .arg(if *persistent { "yes" } else { "no" })
            .arg("--appendfsync")
            .arg("always")
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg("")
            .arg("--daemonize")
            .arg("no")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("clone log handle")))
            .stderr(Stdio::from(log));
        let mut spawned = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); install redis-server or set REDIS_URL=redis://host:port/db",
                bin.display()
            )
        });
        let start = Instant::now();
        loop {
            if ping(&url) {
                *child = Some(spawned);
                return Ok(());
            }
            let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
            if let Ok(Some(status)) = spawned.try_wait() {
                return Err(format!("redis-server exited ({status}):\n{}", read_log()));
            }
            if start.elapsed() > START_TIMEOUT {
                let _ = spawned.kill();
                let _ = spawned.wait();
                return Err(format!(
                    "redis-server did not answer PING within {START_TIMEOUT:?}:\n{}",
                    read_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:<port>/0` (or `REDIS_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// This test's unique key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Another unique prefix on the same Redis (cleaned like the first).
    pub fn new_prefix(&mut self) -> String {
        let p = unique_prefix();
        self.prefixes.push(p.clone());
        p
    }

    /// True for a server this harness started (which `stop`/`start_again` can control).
    pub fn is_own(&self) -> bool {
        matches!(self.source, Source::Own { .. })
    }

    pub fn port(&self) -> Option<u16> {
        match &self.source {
            Source::Own { port, .. } => Some(*port),
            Source::External => None,
        }
    }

    /// A `[store]` section pointing a server at this Redis with this test's prefix.
    pub fn store_toml(&self) -> String {
        format!(
            "[store]\nurl = \"{}\"\nprefix = \"{}\"\n",
            self.url, self.prefix
        )
    }

    /// Kills the `redis-server` (an abrupt outage: connections drop, nothing is saved) and
    /// waits until the port no longer answers.
    pub fn stop(&mut self) {
        let url = self.url.clone();
        let Source::Own { child, .. } = &mut self.source else {
            panic!("stop() needs a redis-server of our own (RedisServer::own), not REDIS_URL");
        };
        let mut running = child.take().expect("redis-server is not running");
        let _ = running.kill();
        let _ = running.wait();
        let start = Instant::now();
        while ping(&url) {
            assert!(
                start.elapsed() < STOP_TIMEOUT,
                "Redis at {url} still answers after the kill"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Freezes the `redis-server` (SIGSTOP): connections stay open but nothing is answered,
    /// like a hung or partitioned Redis. Its data is kept.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Lets a frozen `redis-server` run again (SIGCONT).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let Source::Own { child, .. } = &self.source else {
            panic!("signals need a redis-server of our own (RedisServer::own), not REDIS_URL");
        };
        let pid = child.as_ref().expect("redis-server is not running").id();
        super::send_signal(pid, sig);
    }

    /// Starts `redis-server` again on the same port (empty: there is no persistence).
    pub fn start_again(&mut self) {
        let bin = redis_server_bin();
        if let Err(log) = self.spawn(&bin) {
            panic!("could not start redis-server again on {}: {log}", self.url);
        }
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.source {
            Source::Own { child, .. } => child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_none()),
            Source::External => true,
        }
    }

    /// A plain (blocking) connection for checks from the test.
    pub fn connection(&self) -> redis::Connection {
        let client = redis::Client::open(self.url.as_str()).expect("Redis URL");
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url));
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        conn
    }

    /// Every Redis key under `prefix` (`<prefix>:*`).
    pub fn keys_under(&self, prefix: &str) -> Vec<String> {
        self.scan(&format!("{prefix}:*"))
    }

    /// Every key in the database; only on a server of our own (a shared one is not ours to
    /// look through).
    pub fn all_keys(&self) -> Vec<String> {
        assert!(
            self.is_own(),
            "all_keys() only on a redis-server of our own"
        );
        self.scan("*")
    }

    fn scan(&self, pattern: &str) -> Vec<String> {
        let mut conn = self.connection();
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query(&mut conn)
                .expect("SCAN");
            out.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        out
    }

    /// Deletes every key under this harness's prefixes (and nothing else).
    pub fn clean(&self) {
        let mut conn = self.connection();
        for prefix in &self.prefixes {
            for chunk in self.keys_under(prefix).chunks(500) {
                let _: i64 = redis::cmd("DEL")
                    .arg(chunk)
                    .query(&mut conn)
                    .expect("DEL test keys");
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        match &mut self.source {
            Source::Own { child, .. } => {
                if let Some(mut c) = child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
            Source::External => {
                if ping(&self.url) {
                    self.clean();
                }
            }
        }
    }
}
