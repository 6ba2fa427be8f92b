//! The writer with a counter log: counters wait in the log and land in SQLite once.

use super::tests::{served, stored, window};
use super::*;
use crate::domain::ModelFamily;
use crate::store::counter_log::{self, CounterLog};
use crate::store::records::KeyRecord;
use std::path::{Path, PathBuf};

const NEVER: Duration = Duration::from_secs(3600);

/// Opens the store and its log as a serving process does.
fn open_logged(path: &Path) -> (SqliteStore, CounterLog, Vec<WriteOp>) {
    let store = SqliteStore::open(path).expect("open");
    let folded = store.take_counter_log().expect("meta");
    let (log, unfolded) = CounterLog::open(path, folded).expect("log");
    (store, log, unfolded.counters)
}

fn logged_writer(path: &Path, every: Duration) -> StoreWriter {
    let (store, log, unfolded) = open_logged(path);
    StoreWriter::start_with_log(store, log, unfolded, every).expect("start")
}

fn db_in(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("w.db")
}

/// (requests, input tokens) of key `k` in SQLite.
fn on_disk(path: &Path) -> Option<(u64, u64)> {
    stored(path)
        .key_usage
        .get("k")
        .map(|u| (u.requests, u.input_tokens))
}

fn log_len(path: &Path) -> u64 {
    std::fs::metadata(counter_log::path_for(path))
        .expect("log file")
        .len()
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[actix_rt::test]
async fn counters_wait_in_the_log_until_a_flush_folds_them_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_in(&dir);
    let writer = logged_writer(&path, NEVER);
    writer.write_many([served("k", 10), window("k", 1)]);
    wait_until("the append", || log_len(&path) > 0);
    assert_eq!(on_disk(&path), None, "appended, not committed");
    writer.flush().await.expect("flush");
    assert_eq!(on_disk(&path), Some((1, 10)));
    assert_eq!(log_len(&path), 0, "the fold empties the log");
    writer.write_many([served("k", 5), window("k", 2)]);
    wait_until("the second append", || log_len(&path) > 0);
    writer.flush().await.expect("flush");
    let s = stored(&path);
    assert_eq!(on_disk(&path), Some((2, 15)), "each request once");
    let window = s.windows[&("k".to_string(), ModelFamily::Sonnet)];
    assert_eq!(window.count, 2);
}

#[test]
fn the_fold_comes_by_itself_when_due() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_in(&dir);
    let writer = logged_writer(&path, Duration::from_millis(100));
    writer.write(served("k", 10));
    wait_until("the fold", || on_disk(&path) == Some((1, 10)));
    wait_until("the log emptied", || log_len(&path) == 0);
    drop(writer);
}

#[test]
fn a_change_that_is_not_a_counter_is_committed_with_the_logged_counters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_in(&dir);
    let writer = logged_writer(&path, NEVER);
    writer.write(served("k", 10));
    wait_until("the append", || log_len(&path) > 0);
    let mut key = KeyRecord::mint("supreme", None, None, String::new(), 0).1;
    key.id = "k".into();
    writer.write(WriteOp::InsertKey(Box::new(key)));
    wait_until("the key", || stored(&path).keys.len() == 1);
    assert_eq!(on_disk(&path), Some((1, 10)), "in the same commit");
    assert_eq!(log_len(&path), 0);
}

#[actix_rt::test]
async fn what_a_crash_left_in_the_log_is_taken_back_and_counted_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_in(&dir);
    // A server appended two batches and died before folding them.
    let (store, mut log, _) = open_logged(&path);
    log.append(&[served("k", 10), window("k", 1)])
        .expect("append");
    log.append(&[served("k", 20), window("k", 2)])
        .expect("append");
    drop((store, log));

    let left = std::fs::read(counter_log::path_for(&path)).expect("log");
    let (store, log, unfolded) = open_logged(&path);
    let mut state = store.load_all().expect("load");
    state.add_counters(&unfolded);
    assert_eq!(state.key_usage["k"].input_tokens, 30, "served from memory");
    let writer = StoreWriter::start_with_log(store, log, unfolded, NEVER).expect("start");
    writer.flush().await.expect("flush");
    assert_eq!(on_disk(&path), Some((2, 30)));
    drop(writer);

    assert_eq!(log_len(&path), 0, "the fold empties the log");

    // A crash between the fold and the emptying: the same lines are back. The fold recorded
    // the last line it took, so they count nothing again.
    std::fs::write(counter_log::path_for(&path), left).expect("put the lines back");
    let (_, _, unfolded) = open_logged(&path);
    assert!(unfolded.is_empty(), "{unfolded:?}");
    assert_eq!(on_disk(&path), Some((2, 30)));
}

#[actix_rt::test]
async fn a_fold_the_store_refuses_is_retried_and_lands_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_in(&dir);
    let writer = logged_writer(&path, Duration::from_millis(50));
    let refusal = rusqlite::Connection::open(&path).expect("open");
    refusal.busy_timeout(Duration::from_secs(5)).expect("busy");
    refusal
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON key_usage \
             BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        )
        .expect("trigger");
    writer.write(served("k", 10));
    wait_until("the append", || log_len(&path) > 0);
    assert!(writer.flush().await.is_err(), "the fold is refused");
    assert!(
        log_len(&path) > 0,
        "the log keeps what the fold could not write"
    );
    refusal.execute_batch("DROP TRIGGER refuse;").expect("drop");
    wait_until("the held usage", || on_disk(&path) == Some((1, 10)));
    wait_until("the log emptied", || log_len(&path) == 0);
    writer.flush().await.expect("flush");
    drop(writer);
    let (_, _, unfolded) = open_logged(&path);
    assert!(unfolded.is_empty(), "{unfolded:?}");
    assert_eq!(on_disk(&path), Some((1, 10)), "once");
}

#[test]
fn folding_every_zero_commits_every_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = db_in(&dir);
    let writer = logged_writer(&path, Duration::ZERO);
    writer.write(served("k", 10));
    wait_until("the commit", || on_disk(&path) == Some((1, 10)));
    assert_eq!(log_len(&path), 0, "nothing appended");
    drop(writer);
}
