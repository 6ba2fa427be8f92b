use super::*;
use crate::domain::{ModelFamily, Window};
use crate::store::records::{KeyRecord, KeyStatus, StoredState, Usage};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn writer_on(dir: &Path) -> (StoreWriter, PathBuf) {
    let path = dir.join("w.db");
    let store = SqliteStore::open(&path).expect("open");
    (StoreWriter::start(store).expect("start"), path)
}

fn key(id: &str) -> KeyRecord {
    let mut k = KeyRecord::mint("supreme", Some(86_400_000), None, String::new(), 0).1;
    k.id = id.into();
    k
}

pub(super) fn stored(path: &Path) -> StoredState {
    SqliteStore::open(path)
        .expect("reopen")
        .load_all()
        .expect("load")
}

#[actix_rt::test]
async fn flush_commits_everything_queued_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (writer, path) = writer_on(dir.path());
    for i in 0..10 {
        writer.write(WriteOp::InsertKey(Box::new(key(&format!("k{i}")))));
    }
    writer.flush().await.expect("flush");
    let stored = stored(&path);
    assert_eq!(stored.keys.len(), 10);
    assert!(stored.keys.iter().all(|k| k.status == KeyStatus::Active));
}

/// Polls the file until `done` holds (the writer commits on its own time).
fn wait_for(path: &Path, what: &str, done: impl Fn(&StoredState) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(&stored(path)) {
        assert!(Instant::now() < deadline, "{what} never reached disk");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_for_keys(path: &Path, n: usize) {
    wait_for(path, &format!("key {n}"), |s| s.keys.len() == n);
}

#[test]
fn counters_reach_disk_whether_the_writer_lingers_or_sleeps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (writer, path) = writer_on(dir.path());
    // Right after start the writer looks for work by itself.
    writer.write(WriteOp::InsertKey(Box::new(key("lingering"))));
    wait_for_keys(&path, 1);
    // Quiet for longer than LINGER: it sleeps until the next write wakes it.
    std::thread::sleep(queue::LINGER + Duration::from_millis(300));
    writer.write(WriteOp::InsertKey(Box::new(key("woken"))));
    wait_for_keys(&path, 2);
}

#[test]
fn changes_queued_together_wake_a_sleeping_writer_and_keep_their_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (writer, path) = writer_on(dir.path());
    std::thread::sleep(queue::LINGER + Duration::from_millis(300));
    let window = |count| WriteOp::SetWindow {
        key_id: "k".into(),
        family: ModelFamily::Sonnet,
        window: Window {
            started_at: 5,
            count,
        },
    };
    writer.write_many([window(1), window(3), window(2)]);
    writer.write_many([]);
    wait_for(&path, "the last window", |s| {
        s.windows
            .get(&("k".to_string(), ModelFamily::Sonnet))
            .is_some_and(|w| w.count == 2)
    });
}

#[test]
fn dropping_the_last_handle_commits_what_is_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (writer, path) = writer_on(dir.path());
    writer.write(WriteOp::InsertKey(Box::new(key("last"))));
    drop(writer);
    wait_for_keys(&path, 1);
}

/// Makes the store refuse every usage and window write (as a full disk would) until
/// `allow` is called: a second connection to the same file adds triggers that abort them.
struct Refusal {
    db: rusqlite::Connection,
}

impl Refusal {
    fn refuse(path: &Path) -> Refusal {
        let db = rusqlite::Connection::open(path).expect("open");
        db.busy_timeout(Duration::from_secs(5)).expect("busy");
        let mut sql = String::new();
        for table in ["key_usage", "windows"] {
            for event in ["INSERT", "UPDATE"] {
                sql.push_str(&format!(
                    "CREATE TRIGGER refuse_{table}_{event} BEFORE {event} ON {table} \
                     BEGIN SELECT RAISE(ABORT, 'disk full'); END;"
                ));
            }
        }
        db.execute_batch(&sql).expect("triggers");
        Refusal { db }
    }

    fn allow(self) {
        let mut sql = String::new();
        for table in ["key_usage", "windows"] {
            for event in ["INSERT", "UPDATE"] {
                sql.push_str(&format!("DROP TRIGGER refuse_{table}_{event};"));
            }
        }
        self.db.execute_batch(&sql).expect("drop triggers");
    }
}

pub(super) fn served(key_id: &str, input_tokens: u64) -> WriteOp {
    WriteOp::AddKeyUsage {
        key_id: key_id.into(),
        usage: Usage {
            requests: 1,
            input_tokens,
            ..Usage::default()
        },
    }
}

pub(super) fn window(key_id: &str, count: u32) -> WriteOp {
    WriteOp::SetWindow {
        key_id: key_id.into(),
        family: ModelFamily::Sonnet,
        window: Window {
            started_at: 7,
            count,
        },
    }
}

fn key_requests(s: &StoredState, key_id: &str) -> Option<(u64, u64)> {
    s.key_usage
        .get(key_id)
        .map(|u| (u.requests, u.input_tokens))
}

fn window_count(s: &StoredState, key_id: &str) -> Option<u32> {
    s.windows
        .get(&(key_id.to_string(), ModelFamily::Sonnet))
        .map(|w| w.count)
}

/// A writer whose store refuses usage, with one served request's usage (`k`, 10 tokens)
/// already handed to it.
fn refused_after_one_request(dir: &Path) -> (StoreWriter, PathBuf, Refusal) {
    let (writer, path) = writer_on(dir);
    let refusal = Refusal::refuse(&path);
    writer.write(served("k", 10));
    (writer, path, refusal)
}

#[actix_rt::test]
async fn usage_of_failed_batches_is_written_once_the_store_takes_writes_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (writer, path, refusal) = refused_after_one_request(dir.path());
    writer.write(window("k", 1));
    writer.write(served("k", 20));
    writer.write(window("k", 2));
    assert!(writer.flush().await.is_err(), "the store refuses usage");
    // Newer changes while the store still refuses: added to the held ones, newest window wins.
    writer.write(served("k", 30));
    writer.write(window("k", 3));
    assert!(
        writer.flush().await.is_err(),
        "the store still refuses usage"
    );
    assert_eq!(key_requests(&stored(&path), "k"), None);

    refusal.allow();
    // No flush: the writer tries the held changes again by itself.
    wait_for(&path, "the held usage", |s| key_requests(s, "k").is_some());
    let s = stored(&path);
    assert_eq!(key_requests(&s, "k"), Some((3, 60)), "each request once");
    assert_eq!(window_count(&s, "k"), Some(3), "the newest window");
    // And nothing is written twice later on.
    writer.write(served("k", 1));
    writer.flush().await.expect("flush");
    assert_eq!(key_requests(&stored(&path), "k"), Some((4, 61)));
}

#[actix_rt::test]
async fn a_durable_change_whose_caller_was_told_it_failed_is_never_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (writer, path, refusal) = refused_after_one_request(dir.path());
    // Its batch carries the refused usage, or the held usage comes along: either way it fails.
    let refused = writer.write_durable(vec![WriteOp::InsertKey(Box::new(key("refused")))]);
    assert!(refused.await.is_err(), "the key's batch failed");
    refusal.allow();
    writer
        .flush()
        .await
        .expect("flush once the store takes writes");
    let s = stored(&path);
    assert_eq!(key_requests(&s, "k"), Some((1, 10)), "the usage is kept");
    assert!(
        s.keys.iter().all(|k| k.id != "refused"),
        "the refused key was written after all: {:?}",
        s.keys
    );
    // A durable change after the outage is written as ever.
    writer
        .write_durable(vec![WriteOp::InsertKey(Box::new(key("later")))])
        .await
        .expect("durable write");
    assert!(stored(&path).keys.iter().any(|k| k.id == "later"));
}

/// Fails flushes until the held changes' backoff has grown to seconds.
async fn fail_until_backed_off(writer: &StoreWriter) {
    for _ in 0..7 {
        assert!(writer.flush().await.is_err(), "the store refuses usage");
    }
}

#[actix_rt::test]
async fn a_caller_waiting_is_answered_at_once_while_held_changes_back_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (writer, path, refusal) = refused_after_one_request(dir.path());
    fail_until_backed_off(&writer).await;
    refusal.allow();
    let started = Instant::now();
    writer.flush().await.expect("flush");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "the flush waited out the backoff: {:?}",
        started.elapsed()
    );
    assert_eq!(key_requests(&stored(&path), "k"), Some((1, 10)));
}

#[actix_rt::test]
async fn held_changes_get_one_last_try_when_the_writer_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (writer, path, refusal) = refused_after_one_request(dir.path());
    // The next retry is seconds away: only the last try can write them in time.
    fail_until_backed_off(&writer).await;
    refusal.allow();
    let started = Instant::now();
    drop(writer);
    wait_for(&path, "the held usage", |s| key_requests(s, "k").is_some());
    assert!(started.elapsed() < Duration::from_secs(2));
}
