//! The embedded store: one SQLite file (WAL), written only by the writer thread while a
//! server runs, and opened directly by the CLI when none does.

use super::records::{
    BlacklistEntry, KeyRecord, KeyStatus, RefreshRecord, SavedRefresh, StoredState, Usage, WriteOp,
};
use super::StoreError;
use crate::domain::{Credential, ModelFamily, Window};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::collections::HashMap;
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS keys (
    id TEXT PRIMARY KEY, digest TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL, tier TEXT NOT NULL,
    created INTEGER NOT NULL, expires INTEGER, status TEXT NOT NULL, fixed_account TEXT,
    note TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS bindings (
    key_id TEXT PRIMARY KEY, tier TEXT NOT NULL, account TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
    key_id TEXT NOT NULL, family TEXT NOT NULL, started_at INTEGER NOT NULL,
    count INTEGER NOT NULL, PRIMARY KEY (key_id, family));
CREATE TABLE IF NOT EXISTS key_usage (
    key_id TEXT PRIMARY KEY, requests INTEGER NOT NULL, input INTEGER NOT NULL,
    output INTEGER NOT NULL, cache_creation INTEGER NOT NULL, cache_read INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS account_usage (
    tier TEXT NOT NULL, account TEXT NOT NULL, requests INTEGER NOT NULL, input INTEGER NOT NULL,
    output INTEGER NOT NULL, cache_creation INTEGER NOT NULL, cache_read INTEGER NOT NULL,
    PRIMARY KEY (tier, account));
CREATE TABLE IF NOT EXISTS blacklist (
    tier TEXT NOT NULL, account TEXT NOT NULL, reason TEXT NOT NULL, since INTEGER NOT NULL,
    PRIMARY KEY (tier, account));
CREATE TABLE IF NOT EXISTS credentials (
    tier TEXT NOT NULL, account TEXT NOT NULL, access_token TEXT NOT NULL, refresh_token TEXT,
    expires_at INTEGER, PRIMARY KEY (tier, account));
CREATE TABLE IF NOT EXISTS refresh_state (
    tier TEXT NOT NULL, account TEXT NOT NULL, failures TEXT NOT NULL, cooldown_until INTEGER NOT NULL,
    last_error TEXT, PRIMARY KEY (tier, account));
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

pub struct SqliteStore {
    conn: Connection,
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn family_from(s: &str) -> Result<ModelFamily, StoreError> {
    ModelFamily::from_config_name(s).ok_or_else(|| StoreError::Corrupt(format!("family `{s}`")))
}

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<(KeyRecord, String)> {
    let status: String = row.get(6)?;
    Ok((
        KeyRecord {
            id: row.get(0)?,
            digest: row.get(1)?,
            prefix: row.get(2)?,
            tier: row.get(3)?,
            created: row.get(4)?,
            expires: row.get(5)?,
            status: KeyStatus::Active,
            fixed_account: row.get(7)?,
            note: row.get(8)?,
        },
        status,
    ))
}

fn with_status((mut record, status): (KeyRecord, String)) -> Result<KeyRecord, StoreError> {
    record.status = KeyStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("status `{status}`")))?;
    Ok(record)
}

fn usage_from_row(row: &Row<'_>, at: usize) -> rusqlite::Result<Usage> {
    Ok(Usage {
        requests: to_u64(row.get(at)?),
        input_tokens: to_u64(row.get(at + 1)?),
        output_tokens: to_u64(row.get(at + 2)?),
        cache_creation_input_tokens: to_u64(row.get(at + 3)?),
        cache_read_input_tokens: to_u64(row.get(at + 4)?),
    })
}

const KEY_COLUMNS: &str = "id, digest, prefix, tier, created, expires, status, fixed_account, note";

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path)?;
        restrict_permissions(path);
        // WAL + NORMAL: a committed transaction survives a killed process.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore { conn })
    }

    pub fn load_all(&self) -> Result<StoredState, StoreError> {
        let mut state = StoredState {
            keys: self.list_keys()?,
            ..StoredState::default()
        };
        let mut stmt = self
            .conn
            .prepare("SELECT key_id, tier, account FROM bindings")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
        for row in rows {
            let (id, place) = row?;
            state.bindings.insert(id, place);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT key_id, family, started_at, count FROM windows")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?;
        for row in rows {
            let (id, family, started_at, count) = row?;
            let count = u32::try_from(count).unwrap_or(0);
            state
                .windows
                .insert((id, family_from(&family)?), Window { started_at, count });
        }
        let mut stmt = self.conn.prepare(
            "SELECT key_id, requests, input, output, cache_creation, cache_read FROM key_usage",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, usage_from_row(r, 1)?)))?;
        for row in rows {
            let (id, usage) = row?;
            state.key_usage.insert(id, usage);
        }
        let mut stmt = self.conn.prepare(
            "SELECT tier, account, requests, input, output, cache_creation, cache_read FROM account_usage",
        )?;
        let rows = stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), usage_from_row(r, 2)?)))?;
        for row in rows {
            let (place, usage) = row?;
            state.account_usage.insert(place, usage);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT tier, account, reason, since FROM blacklist")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (r.get(0)?, r.get(1)?),
                BlacklistEntry {
                    reason: r.get(2)?,
                    since: r.get(3)?,
                },
            ))
        })?;
        for row in rows {
            let (place, entry) = row?;
            state.blacklist.insert(place, entry);
        }
        let mut stmt = self.conn.prepare(
            "SELECT tier, account, access_token, refresh_token, expires_at FROM credentials",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (r.get(0)?, r.get(1)?),
                Credential {
                    access_token: r.get(2)?,
                    refresh_token: r.get(3)?,
                    expires_at: r.get(4)?,
                },
            ))
        })?;
        for row in rows {
            let (place, credential) = row?;
            state.credentials.insert(place, credential);
        }
        Ok(state)
    }

    /// The refresh coordinator's saved state: per-account records and the global timers
    /// (success lock until, paused until). Read on its own: the coordinator reloads it
    /// whenever it is (re)started.
    pub fn load_refresh(&self) -> Result<SavedRefresh, StoreError> {
        let mut records = HashMap::new();
        let mut stmt = self.conn.prepare(
            "SELECT tier, account, failures, cooldown_until, last_error FROM refresh_state",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                (r.get(0)?, r.get(1)?),
                r.get::<_, String>(2)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        for row in rows {
            let (place, failures, cooldown_until, last_error) = row?;
            let failures: Vec<i64> = serde_json::from_str(&failures).unwrap_or_default();
            records.insert(
                place,
                RefreshRecord {
                    failures,
                    cooldown_until,
                    last_error,
                },
            );
        }
        let meta = |name| Ok::<_, StoreError>(read_meta(&self.conn, name)?.unwrap_or(0));
        Ok(SavedRefresh {
            records,
            timers: (meta("refresh_lock_until")?, meta("refresh_paused_until")?),
        })
    }

    pub fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {KEY_COLUMNS} FROM keys ORDER BY created, id"
        ))?;
        let rows = stmt.query_map([], key_from_row)?;
        rows.map(|r| with_status(r?)).collect()
    }

    pub fn find_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let row = self
            .conn
            .query_row(
                &format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1"),
                [id],
                key_from_row,
            )
            .optional()?;
        row.map(with_status).transpose()
    }

    /// Stores a new key made without a running server; a fixed key's slot is checked and
    /// taken in the same transaction, so two CLIs cannot overfill an account.
    pub fn insert_key_checked(
        &mut self,
        record: &KeyRecord,
        slots: u32,
        now: i64,
    ) -> Result<Result<(), u32>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if let Some(account) = &record.fixed_account {
            let used: i64 = tx.query_row(
                "SELECT COUNT(*) FROM bindings b JOIN keys k ON k.id = b.key_id
                 WHERE b.tier = ?1 AND b.account = ?2 AND k.status = 'active'
                   AND (k.expires IS NULL OR k.expires > ?3)",
                params![record.tier, account, now],
                |r| r.get(0),
            )?;
            let used = u32::try_from(used).unwrap_or(u32::MAX);
            if used >= slots {
                return Ok(Err(used));
            }
            apply_one(
                &tx,
                &WriteOp::Bind {
                    key_id: record.id.clone(),
                    tier: record.tier.clone(),
                    account: account.clone(),
                },
            )?;
        }
        insert_key_row(&tx, record)?;
        tx.commit()?;
        Ok(Ok(()))
    }

    /// Applies a batch in one transaction: all of it lands, or none.
    pub fn apply<'a>(
        &mut self,
        ops: impl IntoIterator<Item = &'a WriteOp>,
    ) -> Result<(), StoreError> {
        self.apply_folding(ops, None)
    }

    /// `apply`, and when `folded` is given, records in the same transaction that the counter
    /// log's lines up to that `seq` are now in SQLite (see `counter_log`).
    pub fn apply_folding<'a>(
        &mut self,
        ops: impl IntoIterator<Item = &'a WriteOp>,
        folded: Option<u64>,
    ) -> Result<(), StoreError> {
        let batch = CachedTransaction::begin(&self.conn)?;
        for op in ops {
            apply_one(&self.conn, op)?;
        }
        if let Some(seq) = folded {
            set_log_folded(&self.conn, seq)?;
        }
        batch.commit()?;
        Ok(())
    }

    /// The last counter-log line this database holds, for the serving process about to open
    /// the log. None: it has never held one (a new or replaced database); from now on it
    /// has, so a log started after this call is its own.
    pub fn take_counter_log(&self) -> Result<Option<u64>, StoreError> {
        let folded = self.counter_log_folded()?;
        if folded.is_none() {
            set_log_folded(&self.conn, 0)?;
        }
        Ok(folded)
    }

    /// The last counter-log line this database holds; None when it never held one.
    pub fn counter_log_folded(&self) -> Result<Option<u64>, StoreError> {
        Ok(read_meta(&self.conn, LOG_FOLDED)?.map(to_u64))
    }
}

/// `meta` row: the last counter-log `seq` folded into this database.
const LOG_FOLDED: &str = "counter_log_folded";

fn set_log_folded(conn: &Connection, seq: u64) -> rusqlite::Result<usize> {
    set_meta(conn, LOG_FOLDED, to_i64(seq))
}

/// One named number of the `meta` table; None when it was never set.
fn read_meta(conn: &Connection, name: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT value FROM meta WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()
}

fn set_meta(conn: &Connection, name: &str, value: i64) -> rusqlite::Result<usize> {
    exec(
        conn,
        "INSERT OR REPLACE INTO meta (name, value) VALUES (?1, ?2)",
        params![name, value],
    )
}

/// A transaction whose `BEGIN` and `COMMIT` come from the statement cache: the writer opens
/// one every few milliseconds all day, and rusqlite's own parses both each time (~4 % of
/// the writer's samples under load). Rolled back unless committed, as rusqlite's is.
struct CachedTransaction<'a> {
    conn: &'a Connection,
    committed: bool,
}

impl<'a> CachedTransaction<'a> {
    fn begin(conn: &'a Connection) -> rusqlite::Result<CachedTransaction<'a>> {
        conn.prepare_cached("BEGIN")?.execute([])?;
        Ok(CachedTransaction {
            conn,
            committed: false,
        })
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        self.conn.prepare_cached("COMMIT")?.execute([])?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for CachedTransaction<'_> {
    fn drop(&mut self) {
        // A failed statement or COMMIT leaves the transaction open; the next batch must be
        // able to begin its own.
        if !self.committed && !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

/// Runs one statement through the connection's statement cache: the writer repeats the same
/// few statements all day, so each is parsed once.
fn exec(tx: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    tx.prepare_cached(sql)?.execute(params)
}

fn insert_key_row(tx: &Connection, k: &KeyRecord) -> rusqlite::Result<usize> {
    exec(
        tx,
        &format!("INSERT OR REPLACE INTO keys ({KEY_COLUMNS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)"),
        params![
            k.id,
            k.digest,
            k.prefix,
            k.tier,
            k.created,
            k.expires,
            k.status.as_str(),
            k.fixed_account,
            k.note
        ],
    )
}

fn apply_one(tx: &Connection, op: &WriteOp) -> Result<(), StoreError> {
    match op {
        WriteOp::InsertKey(k) => {
            insert_key_row(tx, k)?;
        }
        WriteOp::SetKeyStatus { id, status } => {
            exec(
                tx,
                "UPDATE keys SET status = ?2 WHERE id = ?1",
                params![id, status.as_str()],
            )?;
        }
        WriteOp::Bind {
            key_id,
            tier,
            account,
        } => {
            exec(
                tx,
                "INSERT OR REPLACE INTO bindings (key_id, tier, account) VALUES (?1, ?2, ?3)",
                params![key_id, tier, account],
            )?;
        }
        WriteOp::Unbind { key_id } => {
            exec(tx, "DELETE FROM bindings WHERE key_id = ?1", [key_id])?;
        }
        WriteOp::SetWindow {
            key_id,
            family,
            window,
        } => {
            exec(
                tx,
                "INSERT OR REPLACE INTO windows (key_id, family, started_at, count) VALUES (?1,?2,?3,?4)",
                params![key_id, family.as_str(), window.started_at, window.count],
            )?;
        }
        WriteOp::AddKeyUsage { key_id, usage: u } => {
            exec(
                tx,
                "INSERT INTO key_usage (key_id, requests, input, output, cache_creation, cache_read)
                 VALUES (?1,?2,?3,?4,?5,?6) ON CONFLICT(key_id) DO UPDATE SET
                 requests = requests + ?2, input = input + ?3, output = output + ?4,
                 cache_creation = cache_creation + ?5, cache_read = cache_read + ?6",
                params![key_id, to_i64(u.requests), to_i64(u.input_tokens), to_i64(u.output_tokens),
                    to_i64(u.cache_creation_input_tokens), to_i64(u.cache_read_input_tokens)],
            )?;
        }
        WriteOp::AddAccountUsage {
            tier,
            account,
            usage: u,
        } => {
            exec(
                tx,
                "INSERT INTO account_usage (tier, account, requests, input, output, cache_creation, cache_read)
                 VALUES (?1,?2,?3,?4,?5,?6,?7) ON CONFLICT(tier, account) DO UPDATE SET
                 requests = requests + ?3, input = input + ?4, output = output + ?5,
                 cache_creation = cache_creation + ?6, cache_read = cache_read + ?7",
                params![tier, account, to_i64(u.requests), to_i64(u.input_tokens), to_i64(u.output_tokens),
                    to_i64(u.cache_creation_input_tokens), to_i64(u.cache_read_input_tokens)],
            )?;
        }
        WriteOp::Blacklist {
            tier,
            account,
            entry,
        } => {
            exec(
                tx,
                "INSERT OR REPLACE INTO blacklist (tier, account, reason, since) VALUES (?1,?2,?3,?4)",
                params![tier, account, entry.reason, entry.since],
            )?;
        }
        WriteOp::Unblacklist { tier, account } => {
            exec(
                tx,
                "DELETE FROM blacklist WHERE tier = ?1 AND account = ?2",
                params![tier, account],
            )?;
        }
        WriteOp::SetCredential {
            tier,
            account,
            credential: c,
        } => {
            // Never let an older credential replace a newer one; one without expiry (a setup
            // token from a file) replaces a different one (see `Credential::supersedes`).
            exec(
                tx,
                "INSERT INTO credentials (tier, account, access_token, refresh_token, expires_at)
                 VALUES (?1,?2,?3,?4,?5) ON CONFLICT(tier, account) DO UPDATE SET
                 access_token = ?3, refresh_token = ?4, expires_at = ?5
                 WHERE COALESCE(expires_at, -1) <= COALESCE(?5, -1)
                    OR (?5 IS NULL AND access_token <> ?3)",
                params![tier, account, c.access_token, c.refresh_token, c.expires_at],
            )?;
        }
        WriteOp::SetRefreshState {
            tier,
            account,
            state,
        } => {
            let failures = serde_json::to_string(&state.failures).unwrap_or_else(|_| "[]".into());
            exec(
                tx,
                "INSERT OR REPLACE INTO refresh_state (tier, account, failures, cooldown_until, last_error)
                 VALUES (?1,?2,?3,?4,?5)",
                params![tier, account, failures, state.cooldown_until, state.last_error],
            )?;
        }
        WriteOp::SetRefreshTimers {
            lock_until,
            paused_until,
        } => {
            for (name, value) in [
                ("refresh_lock_until", lock_until),
                ("refresh_paused_until", paused_until),
            ] {
                set_meta(tx, name, *value)?;
            }
        }
        WriteOp::ForgetAccount { tier, account } => {
            for table in [
                "bindings",
                "blacklist",
                "credentials",
                "account_usage",
                "refresh_state",
            ] {
                exec(
                    tx,
                    &format!("DELETE FROM {table} WHERE tier = ?1 AND account = ?2"),
                    params![tier, account],
                )?;
            }
        }
    }
    Ok(())
}

#[cfg(unix)]
pub(super) fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(not(unix))]
pub(super) fn restrict_permissions(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ModelFamily, Window};

    fn window(key_id: &str, count: u32) -> WriteOp {
        WriteOp::SetWindow {
            key_id: key_id.into(),
            family: ModelFamily::Sonnet,
            window: Window {
                started_at: 5,
                count,
            },
        }
    }

    fn served(key_id: &str) -> WriteOp {
        WriteOp::AddKeyUsage {
            key_id: key_id.into(),
            usage: Usage {
                requests: 1,
                ..Usage::default()
            },
        }
    }

    #[test]
    fn a_batch_that_fails_half_way_leaves_nothing_and_the_next_one_lands() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut store = SqliteStore::open(&path).expect("open");
        store
            .conn
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON key_usage \
                 BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
            )
            .expect("trigger");
        // Twice: a transaction left open by the first failure would refuse the second BEGIN.
        for _ in 0..2 {
            let failed = store.apply([&window("a", 1), &served("a")]);
            assert!(failed.is_err(), "the refused write must fail the batch");
            assert!(store.load_all().expect("load").windows.is_empty());
        }
        store
            .conn
            .execute_batch("DROP TRIGGER refuse;")
            .expect("drop");
        store
            .apply([&window("a", 2), &served("a")])
            .expect("the next batch lands");
        let stored = SqliteStore::open(&path)
            .expect("reopen")
            .load_all()
            .expect("load");
        assert_eq!(
            stored.windows[&("a".to_string(), ModelFamily::Sonnet)].count,
            2
        );
        assert_eq!(stored.key_usage["a"].requests, 1);
    }
}
