//! Where log lines go: stderr, and a file too with `--log-file`. Lines queue in memory and a
//! flusher thread writes them out a few milliseconds after the first one arrived; urgent
//! lines (and a queue grown large) are written at once, after everything queued before them.

use parking_lot::{Condvar, Mutex};
use std::fs::File;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// How long an info line may wait for company.
const GATHER: Duration = Duration::from_millis(20);
/// A queue this large is written by whoever adds to it, not left to the flusher.
const MAX_PENDING: usize = 1 << 20;

struct Outputs {
    stderr: bool,
    file: Option<File>,
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
    pending: Mutex<Vec<u8>>,
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
        Sink::with_outputs(Outputs { stderr: true, file }, batched)
    }

    fn with_outputs(outputs: Outputs, batched: bool) -> Result<Arc<Sink>, String> {
        let sink = Arc::new(Sink {
            pending: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            outputs: Mutex::new(outputs),
            immediate: !batched,
        });
        if batched {
            let flusher = sink.clone();
            std::thread::Builder::new()
                .name("log-flusher".into())
                .spawn(move || flusher.run_flusher())
                .map_err(|e| format!("cannot start the log flusher: {e}"))?;
        }
        Ok(sink)
    }

    pub fn push(&self, line: &[u8], urgent: bool) {
        let mut pending = self.pending.lock();
        let was_empty = pending.is_empty();
        pending.extend_from_slice(line);
        let now = urgent || self.immediate || pending.len() >= MAX_PENDING;
        drop(pending);
        if now {
            self.flush();
        } else if was_empty {
            self.wake.notify_one();
        }
    }

    /// Writes everything queued so far.
    pub fn flush(&self) {
        let mut outputs = self.outputs.lock();
        let bytes = std::mem::take(&mut *self.pending.lock());
        outputs.write(&bytes);
    }

    fn run_flusher(&self) {
        loop {
            {
                let mut pending = self.pending.lock();
                while pending.is_empty() {
                    self.wake.wait(&mut pending);
                }
            }
            std::thread::sleep(GATHER);
            self.flush();
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
        let deadline = Instant::now() + Duration::from_secs(5);
        while read(&file) != "info\n" {
            assert!(
                Instant::now() < deadline,
                "an info line never reached the file"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn unbatched_lines_are_written_when_logged() {
        let (sink, file) = file_sink(false);
        sink.push(b"one\n", false);
        assert_eq!(read(&file), "one\n");
    }
}
