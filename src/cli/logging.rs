//! Logging to stderr, and with `--log-file` to that file too, for `tail -f`.

use crate::logger::{Logger, Sink};
use std::path::Path;

/// `serve` logs at info by default; the operator's commands only warn.
pub fn init(serving: bool, log_file: Option<&Path>) -> Result<(), String> {
    let default = if serving { "info" } else { "warn" };
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| default.to_string());
    let filter = env_filter::Builder::new().parse(&spec).build();
    let file = match log_file {
        None => None,
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
            Some(file)
        }
    };
    let sink = Sink::start(file, serving)?;
    if Logger::new(filter, sink).install() {
        flush_before_panic_reports();
    }
    Ok(())
}

/// A panic's report goes straight to stderr; the lines logged before it go first.
fn flush_before_panic_reports() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        log::logger().flush();
        report(info);
    }));
}
