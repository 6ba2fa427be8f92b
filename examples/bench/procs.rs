//! The processes under test: the mock upstream, nginx, claude-route — each a child that is
//! killed when its guard drops — plus what /proc tells about them (RSS, CPU time).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A child process, killed and reaped on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    pub fn new(child: Child) -> Proc {
        Proc { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn check_alive(&mut self, name: &str) -> Res<()> {
        match self.child.try_wait()? {
            Some(status) => Err(format!("{name} exited early: {status}").into()),
            None => Ok(()),
        }
    }
}

impl Drop for Proc {
    /// SIGTERM first (nginx's master then stops its workers; claude-route flushes its store),
    /// SIGKILL after 5 s.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        // Quiet: the child may have exited already.
        let _ = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> Res<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn wait_for_port(addr: SocketAddr, proc: &mut Proc, name: &str) -> Res<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        proc.check_alive(name)?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{name} did not accept connections on {addr} within 10 s").into())
}

/// The mock upstream binary, built next to this example.
pub fn start_mock(bin: &Path, workers: usize) -> Res<(Proc, SocketAddr)> {
    start_example(bin, "mock_upstream", &[], workers)
}

/// The stack floor (a bare actix-web + upstream::h1 forwarder) in front of `upstream`.
pub fn start_floor(bin: &Path, upstream: SocketAddr, workers: usize) -> Res<(Proc, SocketAddr)> {
    let upstream = format!("http://{upstream}");
    start_example(bin, "stack_floor", &["--upstream", &upstream], workers)
}

/// An example server that prints `… listening on http://ADDR` once bound.
fn start_example(
    bin: &Path,
    name: &str,
    extra: &[&str],
    workers: usize,
) -> Res<(Proc, SocketAddr)> {
    let mut child = Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--workers", &workers.to_string()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("mock has no stdout")?;
    let mut proc = Proc { child };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr: SocketAddr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("{name} printed no address: {line:?}"))?;
    wait_for_port(addr, &mut proc, name)?;
    Ok((proc, addr))
}

/// The nginx binary, if one is installed.
pub fn find_nginx() -> Option<PathBuf> {
    find_program(
        "nginx",
        &["/usr/sbin", "/usr/local/sbin", "/usr/local/nginx/sbin"],
    )
}

/// `name` on the PATH, else in one of `more_dirs`.
pub fn find_program(name: &str, more_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(more_dirs.iter().copied())
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    found
}

/// nginx as a plain keep-alive reverse proxy to the mock, unbuffered so SSE flows through.
pub fn start_nginx(
    bin: &Path,
    dir: &Path,
    upstream: SocketAddr,
    workers: usize,
) -> Res<(Proc, SocketAddr)> {
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let d = dir.display();
    for sub in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let conf = format!(
        r#"worker_processes {workers};
worker_rlimit_nofile 65536;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    upstream mock {{
        server {upstream};
        keepalive 512;
        keepalive_requests 10000000;
    }}
    server {{
        listen {addr} backlog=8192;
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            tcp_nodelay on;
        }}
    }}
}}
"#
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut proc = Proc { child };
    wait_for_port(addr, &mut proc, "nginx")?;
    Ok((proc, addr))
}

/// A claude-route home: config, store, accounts — limits on, never reached.
/// `store`: `None` for SQLite in `dir`, or a `redis://` URL (keys under a fresh prefix).
pub fn write_proxy_config(
    dir: &Path,
    upstream: SocketAddr,
    settings: &ProxySettings,
    store: Option<&str>,
) -> Res<PathBuf> {
    let account_dir = dir.join("account");
    std::fs::create_dir_all(account_dir.join("supreme"))?;
    std::fs::create_dir_all(dir.join("product"))?;
    let expires = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() + 10 * 3600 * 1000;
    for i in 0..settings.accounts.max(1) {
        std::fs::write(
            account_dir.join("supreme").join(format!("bench{i}.json")),
            format!(
                r#"{{"accessToken":"sk-ant-oat01-x","refreshToken":"sk-ant-ort01-x","expiresAt":{expires}}}"#
            ),
        )?;
    }
    let store = match store {
        None => format!(
            "url = \"sqlite:{}\"",
            dir.join("product").join("db").display()
        ),
        Some(url) => format!(
            "url = \"{url}\"\nprefix = \"claude-route-bench-{}-{expires}\"",
            std::process::id()
        ),
    };
    let config = format!(
        r#"[server]
listen = "127.0.0.1:0"
workers = {workers}

[store]
{store}

[accounts]
dir = "{accounts}"

[upstream]
base_url = "http://{upstream}"
oauth_token_url = "http://{upstream}/v1/oauth/token"

[admin]
token = "bench"

[tiers.supreme]
slots = 1000
limits = {{ opus = 100000000, sonnet = 100000000 }}
"#,
        accounts = account_dir.display(),
        workers = settings.workers,
    );
    let path = dir.join("claude-route.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// `claude-route keygen supreme`, through the running server's admin API.
pub fn keygen(bin: &Path, config: &Path, server: SocketAddr) -> Res<String> {
    let out = Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(["--admin-url", &format!("http://{server}")])
        .args(["keygen", "supreme", "--note", "bench"])
        .env("RUST_LOG", "warn")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "keygen failed ({}): {}{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    stdout
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("API Key: "))
        .map(|k| k.trim().to_string())
        .ok_or_else(|| format!("keygen printed no `API Key:` line: {stdout}").into())
}

/// Starts `claude-route serve`, its log in `<dir>/claude-route.log`; returns its address.
pub fn start_proxy(
    bin: &Path,
    config: &Path,
    dir: &Path,
    rust_log: &str,
) -> Res<(Proc, SocketAddr, PathBuf)> {
    let log_path = dir.join("claude-route.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(bin)
        .arg("--config")
        .arg(config)
        .arg("serve")
        // The `listening on` line is what tells us the address, whatever the level.
        .env(
            "RUST_LOG",
            format!("{rust_log},claude_route::http::server=info"),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut proc = Proc { child };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        proc.check_alive("claude-route").map_err(|e| {
            format!(
                "{e}; log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )
        })?;
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(rest) = text.split("listening on http://").nth(1) {
            let addr_text: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            let addr: SocketAddr = addr_text
                .parse()
                .map_err(|e| format!("bad address {addr_text:?}: {e}"))?;
            wait_for_port(addr, &mut proc, "claude-route")?;
            return Ok((proc, addr, log_path));
        }
        if Instant::now() > deadline {
            return Err(
                format!("claude-route logged no `listening on` line within 20 s:\n{text}").into(),
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How every claude-route of a run is set up.
pub struct ProxySettings<'a> {
    pub accounts: usize,
    pub keys: usize,
    pub rust_log: &'a str,
    pub workers: usize,
}

/// A configured claude-route home with `keys` keys, serving: (process, address, log, keys).
pub fn launch_proxy(
    bin: &Path,
    home: &Path,
    upstream: SocketAddr,
    settings: &ProxySettings,
    store: Option<&str>,
) -> Res<(Proc, SocketAddr, PathBuf, Vec<String>)> {
    let config = write_proxy_config(home, upstream, settings, store)?;
    let (proc, addr, log) = start_proxy(bin, &config, home, settings.rust_log)?;
    let keys = (0..settings.keys.max(1))
        .map(|_| keygen(bin, &config, addr))
        .collect::<Res<Vec<_>>>()?;
    Ok((proc, addr, log, keys))
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of a process (sockets included).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// CPU time in ticks (10 ms): user space and kernel apart, since a proxy spends most of its
/// time in the kernel and only the user-space part is its own code.
#[derive(Clone, Copy, Default, Debug)]
pub struct CpuTicks {
    pub user: u64,
    pub system: u64,
}

impl CpuTicks {
    pub fn total(self) -> u64 {
        self.user + self.system
    }

    pub fn since(self, earlier: CpuTicks) -> CpuTicks {
        CpuTicks {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }

    pub fn plus(self, other: CpuTicks) -> CpuTicks {
        CpuTicks {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }
}

/// CPU time of a process and its direct children (nginx workers).
pub fn cpu_ticks(pid: u32) -> CpuTicks {
    let own = |pid: &str| -> CpuTicks {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
        let after = stat.rsplit(')').next().unwrap_or_default();
        let fields: Vec<&str> = after.split_whitespace().collect();
        let get = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0)
        };
        CpuTicks {
            user: get(11),
            system: get(12),
        }
    };
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .map(own)
        .fold(own(&pid.to_string()), CpuTicks::plus)
}

/// The soft RLIMIT_NOFILE of this process (children inherit it).
pub fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// The 1-minute load average.
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// `nproc`, CPU model, kernel: where the figures came from.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "cpu": model,
        "kernel": kernel,
        "loadavg_before": loadavg(),
    })
}
