//! A worker that goes quiet hands its freed memory back. mimalloc returns a thread's freed
//! pages only while that thread allocates, so after a burst (1,500 streams, say) an idle
//! worker would keep everything the burst freed for as long as it stays idle.

use std::cell::Cell;
use std::time::Duration;

/// How often a worker looks whether it has been quiet: memory goes back 5–10 s after the
/// last request.
const LOOK_EVERY: Duration = Duration::from_secs(5);

thread_local! {
    static SERVED: Cell<bool> = const { Cell::new(false) };
    static STARTED: Cell<bool> = const { Cell::new(false) };
}

/// Marks this worker busy: called once per request (a thread-local write).
pub fn note_request() {
    SERVED.with(|s| s.set(true));
}

/// What a worker decides at each look.
#[derive(Debug, Default)]
struct QuietWatch {
    given_back: bool,
}

impl QuietWatch {
    /// True when memory should go back now: the first look with no request since the last.
    fn look(&mut self, served_since_last: bool) -> bool {
        if served_since_last {
            self.given_back = false;
            return false;
        }
        !std::mem::replace(&mut self.given_back, true)
    }
}

/// Once per worker thread, from the app factory.
pub fn start_watch() {
    if STARTED.with(|s| s.replace(true)) {
        return;
    }
    actix_rt::spawn(async move {
        let mut watch = QuietWatch::default();
        let mut tick = actix_rt::time::interval(LOOK_EVERY);
        loop {
            tick.tick().await;
            if watch.look(SERVED.with(|s| s.replace(false))) {
                crate::allocator::give_back_freed_memory();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_goes_back_once_per_quiet_spell() {
        let mut watch = QuietWatch::default();
        assert!(!watch.look(true), "busy: keep it");
        assert!(!watch.look(true));
        assert!(watch.look(false), "the first quiet look gives it back");
        assert!(!watch.look(false), "already given back");
        assert!(!watch.look(false));
        assert!(!watch.look(true), "busy again");
        assert!(watch.look(false), "and quiet again: once more");
    }

    #[test]
    fn a_worker_that_never_served_gives_back_once() {
        let mut watch = QuietWatch::default();
        assert!(watch.look(false));
        assert!(!watch.look(false));
    }
}
