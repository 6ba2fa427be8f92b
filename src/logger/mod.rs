//! The process's logger: `RUST_LOG` filtering (env_filter), env_logger's line format
//! (`[2026-11-27T23:33:50Z INFO  module] message`), and a sink that batches lines.
//!
//! Serving logs one line per request; a `write` per line was a system call per request. So
//! info lines gather for a few milliseconds and go out together, while warnings and errors
//! — and everything the operator's one-shot commands print — are written at once.

mod format;
mod sink;

pub use sink::Sink;

use log::{Level, Log, Metadata, Record};
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    /// Each thread formats into its own buffer, reused from line to line.
    static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

pub struct Logger {
    filter: env_filter::Filter,
    sink: Arc<Sink>,
}

impl Logger {
    pub fn new(filter: env_filter::Filter, sink: Arc<Sink>) -> Logger {
        Logger { filter, sink }
    }

    /// Installs the logger; false when one was installed already.
    pub fn install(self) -> bool {
        let max = self.filter.filter();
        let installed = log::set_boxed_logger(Box::new(self)).is_ok();
        if installed {
            log::set_max_level(max);
        }
        installed
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let urgent = record.level() <= Level::Warn;
        let written = LINE.try_with(|cell| {
            // A message whose formatting logs again gets a buffer of its own.
            let Ok(mut line) = cell.try_borrow_mut() else {
                return false;
            };
            line.clear();
            format::line(&mut line, record);
            self.sink.push(&line, urgent);
            true
        });
        if written != Ok(true) {
            let mut line = Vec::new();
            format::line(&mut line, record);
            self.sink.push(&line, urgent);
        }
    }

    fn flush(&self) {
        self.sink.flush();
    }
}
