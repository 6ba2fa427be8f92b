//! The flags the bench's helper servers share: `--listen ADDR` and `--workers N`, and the
//! keep-alive they share with the bench's nginx.

/// How long the helper servers keep an idle connection: nginx's `keepalive_timeout` in the
/// bench, so no target reconnects between its rounds while the others run (~7 s) and the
/// first stream of a round measures the proxy, not a timeout setting.
pub const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(120);

/// The value after `name` on the command line.
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// `--listen` (default: a free loopback port) and `--workers` (default: one per core).
pub fn listen_and_workers() -> (String, usize) {
    let listen = arg("--listen").unwrap_or_else(|| "127.0.0.1:0".into());
    let workers = arg("--workers")
        .and_then(|w| w.parse().ok())
        .filter(|&w: &usize| w > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    (listen, workers)
}
