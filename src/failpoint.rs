//! Crash points for the durability tests: `CLAUDE_ROUTE_FAILPOINT=<name>` makes the process
//! abort (like `kill -9`) the moment it reaches that point. Unset, a check costs one env read
//! on rare paths only (credential writes).

pub fn hit(name: &str) {
    if std::env::var("CLAUDE_ROUTE_FAILPOINT").is_ok_and(|v| v == name) {
        log::error!("failpoint {name}: aborting");
        std::process::abort();
    }
}
