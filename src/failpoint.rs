//! Crash points for the durability tests: `CLAUDE_ROUTE_FAILPOINT=<name>` makes the process
//! abort (like `kill -9`) the moment it reaches that point. Unset, a check costs one env read
//! on rare paths only (credential writes).

pub fn hit(name: &str) {
    if std::env::var("CLAUDE_ROUTE_FAILPOINT").is_ok_and(|v| v == name) {
        log::error!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// Panics the first time `name` is reached in this process (`CLAUDE_ROUTE_FAILPOINT=<name>`),
/// to show that a crashed actor is restarted and carries on.
pub fn panic_once(name: &str) {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if std::env::var("CLAUDE_ROUTE_FAILPOINT").is_ok_and(|v| v == name)
        && !FIRED.swap(true, std::sync::atomic::Ordering::SeqCst)
    {
        log::error!("failpoint {name}: panicking");
        panic!("failpoint {name}");
    }
}
