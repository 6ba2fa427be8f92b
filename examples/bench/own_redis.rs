//! The bench's own `redis-server` for the "claude-route+redis" target: a free port, a temp
//! dir, and the persistence the README tells operators to run (AOF, fsync every second). The
//! machine's shared Redis is never touched unless `--redis URL` names it.

use super::procs::{find_program, free_port, wait_for_port, Proc, Res};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};

/// The Redis the "claude-route+redis" target runs on, and what the report says of it.
pub struct RedisChoice {
    /// Our own `redis-server`: held only to be stopped when the choice drops.
    _server: Option<Proc>,
    /// None: the target is skipped.
    pub url: Option<String>,
    pub note: String,
}

/// `named` (`--redis URL`) if given; none when `skip`; else our own in `dir` when installed.
pub fn choose(named: Option<&str>, skip: bool, dir: &Path) -> Res<RedisChoice> {
    let choice = |server, url: Option<String>, note: String| RedisChoice {
        _server: server,
        url,
        note,
    };
    Ok(match (named, skip) {
        (Some(url), _) => choice(
            None,
            Some(url.into()),
            format!("claude-route+redis on {url}"),
        ),
        (None, true) => choice(None, None, "skipped (--no-redis)".into()),
        (None, false) => match start_own(dir)? {
            Some((server, url)) => {
                let note =
                    format!("claude-route+redis on its own redis-server ({url}, AOF everysec)");
                choice(Some(server), Some(url), note)
            }
            None => choice(None, None, "skipped (no redis-server installed)".into()),
        },
    })
}

/// Starts one in `dir` and returns it with its URL; None when `redis-server` is not installed.
fn start_own(dir: &Path) -> Res<Option<(Proc, String)>> {
    // REDIS_SERVER_BIN names the binary, as for the tests (tests/common/redis_server.rs).
    let named = std::env::var_os("REDIS_SERVER_BIN").map(std::path::PathBuf::from);
    let Some(bin) = named.or_else(|| find_program("redis-server", &["/usr/bin", "/usr/local/bin"]))
    else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir)?;
    let port = free_port()?;
    // redis-server logs to stdout.
    let log_path = dir.join("redis.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(&bin)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let mut proc = Proc::new(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_for_port(addr, &mut proc, "redis-server").map_err(|e| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        format!("{e}; its log:\n{log}")
    })?;
    Ok(Some((proc, format!("redis://{addr}/0"))))
}
