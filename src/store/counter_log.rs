//! The counter log: `<db>.counters`, beside the SQLite file. Between folds the store writer
//! appends each batch of request counters (window counts, usage) here instead of committing
//! it, and folds them into SQLite about once a second. A commit is ~14 system calls and
//! ~80 µs of CPU, an append is one `write` (BENCHMARKS.md, fourteenth and fifteenth passes).
//! A `kill -9` loses no more than with a commit per batch: an appended line is in the page
//! cache, as a committed WAL frame is.
//!
//! One line of JSON per batch, `{"seq":N,"counters":[…]}`. The fold's own transaction
//! records the last folded `seq` in SQLite (`meta`), so a crash between a fold and the
//! truncation that follows it counts nothing twice: usage additions are not idempotent. A line
//! that does not read back (a write torn by a crash) is skipped.
//!
//! Only the serving process, which holds the store's lock, opens the log: it takes back what
//! the log holds at start-up and the writer folds it with its first commit.

use super::records::{Usage, WriteOp};
use super::StoreError;
use crate::domain::{ModelFamily, Window};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A log this long is folded without waiting for its time (a pool with very many busy keys).
const MAX_LOG_BYTES: u64 = 4 << 20;

/// One counter as a line holds it: `S` is `&str` when written, `String` when read back.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Counter<S> {
    Window {
        key: S,
        family: S,
        started_at: i64,
        count: u32,
    },
    KeyUsage {
        key: S,
        usage: Usage,
    },
    AccountUsage {
        tier: S,
        account: S,
        usage: Usage,
    },
}

#[derive(Serialize, Deserialize)]
struct Line<S> {
    seq: u64,
    counters: Vec<Counter<S>>,
}

impl<'a> Counter<&'a str> {
    /// None for a change that is not a counter: those are never appended.
    fn of(op: &'a WriteOp) -> Option<Counter<&'a str>> {
        Some(match op {
            WriteOp::SetWindow {
                key_id,
                family,
                window,
            } => Counter::Window {
                key: key_id,
                family: family.as_str(),
                started_at: window.started_at,
                count: window.count,
            },
            WriteOp::AddKeyUsage { key_id, usage } => Counter::KeyUsage {
                key: key_id,
                usage: *usage,
            },
            WriteOp::AddAccountUsage {
                tier,
                account,
                usage,
            } => Counter::AccountUsage {
                tier,
                account,
                usage: *usage,
            },
            _ => return None,
        })
    }
}

impl Counter<String> {
    fn into_op(self) -> Option<WriteOp> {
        Some(match self {
            Counter::Window {
                key,
                family,
                started_at,
                count,
            } => WriteOp::SetWindow {
                key_id: Arc::from(key),
                family: ModelFamily::from_config_name(&family)?,
                window: Window { started_at, count },
            },
            Counter::KeyUsage { key, usage } => WriteOp::AddKeyUsage {
                key_id: Arc::from(key),
                usage,
            },
            Counter::AccountUsage {
                tier,
                account,
                usage,
            } => WriteOp::AddAccountUsage {
                tier: Arc::from(tier),
                account: Arc::from(account),
                usage,
            },
        })
    }
}

/// True for the changes the log takes: window counts and usage.
pub fn is_counter(op: &WriteOp) -> bool {
    Counter::of(op).is_some()
}

pub fn path_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".counters");
    PathBuf::from(name)
}

/// What the log held at start-up that SQLite does not: counters in the order they came.
#[derive(Default)]
pub struct Unfolded {
    pub counters: Vec<WriteOp>,
    pub lines: usize,
    pub skipped: usize,
}

pub struct CounterLog {
    file: File,
    path: PathBuf,
    /// The file's length: an append that fails part-way is cut back to it.
    len: u64,
    /// The last `seq` given out (or folded).
    seq: u64,
    /// The newest line SQLite does not hold yet, and since when one has been waiting.
    unfolded: Option<(u64, Instant)>,
    /// An append failed and could not be cut back: nothing more is appended until a fold
    /// empties the file.
    broken: bool,
    line: Vec<u8>,
}

impl CounterLog {
    /// Opens the log of the store at `db`. `folded`: the last `seq` SQLite holds, or None
    /// when the database has never folded a log (it is new, or was replaced): a log found
    /// then belongs to another database and is emptied.
    pub fn open(db: &Path, folded: Option<u64>) -> Result<(CounterLog, Unfolded), StoreError> {
        let path = path_for(db);
        let shown = path.display().to_string();
        let unavailable =
            |e: std::io::Error| StoreError::Unavailable(format!("cannot open {shown}: {e}"));
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(unavailable)?;
        super::sqlite::restrict_permissions(&path);
        let mut unfolded = Unfolded::default();
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).map_err(unavailable)?;
        // A last line without its newline was cut short: it goes, or the next append would
        // be glued to it.
        let complete = complete_lines(&bytes);
        if complete < bytes.len() {
            file.set_len(complete as u64).map_err(unavailable)?;
            unfolded.skipped += 1;
        }
        let seq = read_lines(&bytes[..complete], folded, &mut unfolded);
        if folded.is_none() && unfolded.skipped > 0 {
            log::warn!(
                "{shown} holds {} lines the database has no record of (was the database replaced?): ignored",
                unfolded.skipped
            );
        } else if unfolded.skipped > 0 {
            log::warn!(
                "{shown}: {} unreadable lines skipped (a write cut short by a crash)",
                unfolded.skipped
            );
        }
        let mut log = CounterLog {
            file,
            path,
            len: 0,
            seq,
            unfolded: None,
            broken: false,
            line: Vec::new(),
        };
        if unfolded.lines > 0 {
            log.unfolded = Some((seq, Instant::now()));
            log.len = complete as u64;
        } else {
            log.empty().map_err(unavailable)?;
        }
        Ok((log, unfolded))
    }

    /// Appends one batch of counters as one line (any other change is left out: the caller
    /// appends counters only). On failure the file is cut back to what it was, so a
    /// half-written line never sits before later ones.
    pub fn append<'a>(
        &mut self,
        ops: impl IntoIterator<Item = &'a WriteOp>,
    ) -> std::io::Result<()> {
        if self.broken {
            return Err(std::io::Error::other(
                "an earlier append could not be undone",
            ));
        }
        let counters: Vec<Counter<&str>> = ops.into_iter().filter_map(Counter::of).collect();
        let seq = self.seq + 1;
        self.line.clear();
        serde_json::to_writer(&mut self.line, &Line { seq, counters })?;
        self.line.push(b'\n');
        if let Err(e) = self.file.write_all(&self.line) {
            if self.file.set_len(self.len).is_err() {
                self.broken = true;
            }
            return Err(e);
        }
        self.len += self.line.len() as u64;
        self.seq = seq;
        self.unfolded.get_or_insert((seq, Instant::now())).0 = seq;
        Ok(())
    }

    /// The `seq` a fold now records, when something appended is not in SQLite yet.
    pub fn unfolded_through(&self) -> Option<u64> {
        self.unfolded.map(|(seq, _)| seq)
    }

    /// When the waiting lines are due to be folded: `every` after the oldest, or now once the
    /// file is long.
    pub fn fold_at(&self, every: Duration) -> Option<Instant> {
        let (_, since) = self.unfolded?;
        if self.len >= MAX_LOG_BYTES {
            return Some(since);
        }
        Some(since + every)
    }

    /// SQLite now holds everything appended: the file starts over.
    pub fn folded(&mut self) {
        self.unfolded = None;
        if let Err(e) = self.empty() {
            // Harmless: the lines left are at or below the folded seq, skipped when read.
            log::warn!("{} not emptied after a fold: {e}", self.path.display());
        }
    }

    fn empty(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.len = 0;
        self.broken = false;
        Ok(())
    }
}

/// What the log of the store at `db` holds beyond `folded`, read without touching it: for the
/// CLI showing a store no server serves.
pub fn peek(db: &Path, folded: Option<u64>) -> std::io::Result<Vec<WriteOp>> {
    let bytes = match std::fs::read(path_for(db)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut unfolded = Unfolded::default();
    read_lines(&bytes[..complete_lines(&bytes)], folded, &mut unfolded);
    Ok(unfolded.counters)
}

/// The length of the complete (newline-ended) lines at the start of `bytes`.
fn complete_lines(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// Reads complete lines into `unfolded`, those after `folded` only; returns the last `seq`.
fn read_lines(lines: &[u8], folded: Option<u64>, unfolded: &mut Unfolded) -> u64 {
    let mut seq = folded.unwrap_or(0);
    for line in lines.split(|&b| b == b'\n') {
        match (serde_json::from_slice::<Line<String>>(line), folded) {
            (Err(_), _) if line.is_empty() => {}
            (Ok(read), Some(folded)) => {
                seq = seq.max(read.seq);
                if read.seq > folded {
                    unfolded.lines += 1;
                    let ops = read.counters.into_iter().map(Counter::into_op);
                    unfolded.counters.extend(ops.flatten());
                }
            }
            _ => unfolded.skipped += 1,
        }
    }
    seq
}

#[cfg(test)]
mod tests;
