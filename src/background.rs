//! Threads that do the proxy's bookkeeping (the store writer, the log flusher) run at a
//! lower priority than the HTTP workers: when one is woken next to a request, the scheduler
//! lets the worker finish instead of switching to the helper in the middle of it.

/// How much lower: low enough that a helper's wake-up does not preempt a worker, high
/// enough that it still gets its share of a busy box (it needs a few % of a core).
#[cfg(target_os = "linux")]
const HELPER_NICE: libc::c_int = 10;

/// Starts a bookkeeping thread called `name`, below the workers' priority.
pub fn spawn_helper(
    name: &str,
    work: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name(name.into()).spawn(|| {
        lower_this_threads_priority();
        work()
    })
}

/// A refusal is harmless: the helper just runs at the normal priority.
#[cfg(target_os = "linux")]
fn lower_this_threads_priority() {
    // SAFETY: setpriority only reads its integer arguments; on Linux the nice value is per
    // thread, and PRIO_PROCESS with 0 names the calling thread.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, HELPER_NICE) };
}

/// Elsewhere PRIO_PROCESS would lower the whole process: left alone.
#[cfg(not(target_os = "linux"))]
fn lower_this_threads_priority() {}
