//! Who owns an embedded store: a serving claude-route holds `<db>.lock` locked (flock) for its
//! whole life. A running server keeps keys, bindings and counts in memory, so a second server
//! on the same file, or the CLI writing the file behind the server's back, would leave it
//! acting on a stale copy. The kernel drops the lock when the process ends, even on kill -9.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Held by the serving process; dropping it releases the store.
#[derive(Debug)]
pub struct StoreOwner {
    _file: File,
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn open(db: &Path) -> std::io::Result<File> {
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path(db))
}

/// Tries the lock without waiting; false when another process holds it.
fn try_lock(file: &File, exclusive: bool) -> bool {
    let mode = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) == 0 }
}

/// The pid the owner wrote into the lock file, for messages.
fn owner_pid(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    match text.trim() {
        "" => "unknown".to_string(),
        pid => pid.to_string(),
    }
}

impl StoreOwner {
    /// Takes the store for this server; refused while another process serves it.
    pub fn acquire(db: &Path) -> Result<StoreOwner, String> {
        let mut file =
            open(db).map_err(|e| format!("cannot open {}: {e}", lock_path(db).display()))?;
        if !try_lock(&file, true) {
            return Err(format!(
                "{} is in use by another claude-route (pid {}); stop it first, or give this one its own [store] url",
                db.display(),
                owner_pid(&mut file)
            ));
        }
        // Best effort: the pid only makes the messages above more helpful.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()));
        Ok(StoreOwner { _file: file })
    }

    /// The pid of the server holding the store, if one does (a store never served has no
    /// lock file yet: nobody holds it).
    pub fn holder(db: &Path) -> Option<String> {
        let mut file = File::open(lock_path(db)).ok()?;
        if try_lock(&file, false) {
            return None;
        }
        Some(owner_pid(&mut file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_at_a_time_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("claude-route.db");
        assert_eq!(StoreOwner::holder(&db), None, "never served");
        let owner = StoreOwner::acquire(&db).unwrap();
        let pid = std::process::id().to_string();
        assert_eq!(StoreOwner::holder(&db), Some(pid.clone()));
        let refused = StoreOwner::acquire(&db).unwrap_err();
        assert!(refused.contains(&pid), "{refused}");
        drop(owner);
        assert_eq!(StoreOwner::holder(&db), None);
        StoreOwner::acquire(&db).unwrap();
    }
}
