//! Where log lines go: stderr, and a file too with `--log-file`. Lines queue in memory and a
//! flusher thread writes them out a few milliseconds after the first one arrived; urgent
//! lines (and a queue grown large) are written at once, after everything queued before them.

use parking_lot::{Condvar, Mutex};
use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an info line may wait for company.
const GATHER: Duration = Duration::from_millis(20);
/// A queue this large is written by whoever adds to it, not left to the flusher.
const MAX_PENDING: usize = 1 << 20;
/// After writing, the flusher looks for lines every `GATHER` by itself for this long before
/// it sleeps until woken: on a busy proxy no request pays for waking it (a wake-up landed in
/// the middle of the request that logged, and on two cores cost it tens of microseconds).
const LINGER: Duration = Duration::from_secs(1);
/// A buffer kept for the next turn is at most this large; a burst's is let go.
const MAX_SPARE: usize = 256 * 1024;

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The flusher sleeps until woken; the next line wakes it.
    asleep: bool,
}

struct Outputs {
    stderr: bool,
    file: Option<File>,
    /// The buffer the queue gets next (see `flush`).
    spare: Vec<u8>,
}

impl Outputs {
    fn write(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.stderr {
            let _ = std::io::stderr().write_all(bytes);
        }
        if let Some(file) = &mut self.file {
            let _ = file.write_all(bytes);
        }
    }
}

pub struct Sink {
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Held while writing, and while taking what to write, so lines leave in order.
    outputs: Mutex<Outputs>,
    /// Every line is written at once (one-shot commands).
    immediate: bool,
}

impl Sink {
    /// `batched`: info lines gather in memory (a thread flushes them); otherwise every line
    /// is written when it is logged.
    pub fn start(file: Option<File>, batched: bool) -> Result<Arc<Sink>, String> {
        Sink::with_outputs(
            Outputs {
                stderr: true,
                file,
                spare: Vec::new(),
            },
            batched,
        )
    }

    fn with_outputs(outputs: Outputs, batched: bool) -> Result<Arc<Sink>, String> {
        let sink = Arc::new(Sink {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            outputs: Mutex::new(outputs),
            immediate: !batched,
        });
        if batched {
            let flusher = sink.clone();
            crate::background::spawn_helper("log-flusher", move || flusher.run_flusher())
                .map_err(|e| format!("cannot start the log flusher: {e}"))?;
        }
        Ok(sink)
    }

    pub fn push(&self, line: &[u8], urgent: bool) {
        let mut pending = self.pending.lock();
        pending.bytes.extend_from_slice(line);
        let now = urgent || self.immediate || pending.bytes.len() >= MAX_PENDING;
        let wake = std::mem::take(&mut pending.asleep);
        drop(pending);
        if now {
            self.flush();
        }
        // Whoever took `asleep` must wake the flusher, even after writing the line itself.
        if wake {
            self.wake.notify_one();
        }
    }

    /// Writes everything queued so far.
    pub fn flush(&self) {
        let mut outputs = self.outputs.lock();
        // Two buffers take turns: the queue gets back an empty one with room, instead of
        // growing from nothing after every write while the workers wait on its lock.
        let mut bytes = std::mem::take(&mut outputs.spare);
        std::mem::swap(&mut bytes, &mut self.pending.lock().bytes);
        outputs.write(&bytes);
        if bytes.capacity() <= MAX_SPARE {
            bytes.clear();
            outputs.spare = bytes;
        }
    }

    fn run_flusher(&self) {
        let mut last_write = Instant::now();
        loop {
            let has_lines = !self.pending.lock().bytes.is_empty();
            if has_lines {
                self.flush();
                last_write = Instant::now();
            } else if last_write.elapsed() >= LINGER {
                // Before sleeping, hand back what this thread freed (an idle thread never does).
                crate::allocator::give_back_freed_memory();
                let mut pending = self.pending.lock();
                while pending.bytes.is_empty() {
                    pending.asleep = true;
                    self.wake.wait(&mut pending);
                }
                pending.asleep = false;
            }
            std::thread::sleep(GATHER);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn file_sink(batched: bool) -> (Arc<Sink>, tempfile::NamedTempFile) {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        let out = file.reopen().expect("reopen");
        let outputs = Outputs {
            stderr: false,
            file: Some(out),
            spare: Vec::new(),
        };
        (Sink::with_outputs(outputs, batched).expect("sink"), file)
    }

    fn read(file: &tempfile::NamedTempFile) -> String {
        std::fs::read_to_string(file.path()).expect("read")
    }

    #[test]
    fn an_urgent_line_goes_out_at_once_after_the_lines_before_it() {
        let (sink, file) = file_sink(true);
        sink.push(b"info 1\n", false);
        sink.push(b"info 2\n", false);
        sink.push(b"warn 3\n", true);
        assert_eq!(read(&file), "info 1\ninfo 2\nwarn 3\n");
    }

    #[test]
    fn batched_lines_reach_the_file_shortly() {
        let (sink, file) = file_sink(true);
        sink.push(b"info\n", false);
        wait_for_text(&file, "info\n");
    }

    fn wait_for_text(file: &tempfile::NamedTempFile, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while read(file) != text {
            assert!(Instant::now() < deadline, "the file never read {text:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_sleeping_flusher_still_writes_info_lines_after_an_urgent_one() {
        let (sink, file) = file_sink(true);
        sink.push(b"info 1\n", false);
        wait_for_text(&file, "info 1\n");
        // Quiet for longer than LINGER: the flusher now sleeps until a line wakes it.
        std::thread::sleep(LINGER + Duration::from_millis(300));
        sink.push(b"warn 2\n", true);
        assert_eq!(read(&file), "info 1\nwarn 2\n");
        sink.push(b"info 3\n", false);
        wait_for_text(&file, "info 1\nwarn 2\ninfo 3\n");
    }

    #[test]
    fn unbatched_lines_are_written_when_logged() {
        let (sink, file) = file_sink(false);
        sink.push(b"one\n", false);
        assert_eq!(read(&file), "one\n");
    }
}
