//! Logging to stderr, and with `--log-file` to that file too, for `tail -f`.

use crate::logger::{Logger, Sink};
use std::path::Path;

/// `serve` logs at info by default; the operator's commands only warn.
pub fn init(serving: bool, log_file: Option<&Path>) -> Result<(), String> {
    let default = if serving { "info" } else { "warn" };
    let mut spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| default.to_string());
    // actix-http logs a client's malformed HTTP (already answered 400/408/431) as an error:
    // not the operator's to fix, and anyone could fill the log with it. Naming actix_http in
    // RUST_LOG brings it back.
    if !spec.contains("actix_http") {
        spec.push_str(",actix_http::h1::dispatcher=off");
    }
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
