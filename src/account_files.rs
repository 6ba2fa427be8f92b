//! The account directory: `account/<tier>/<name>.json`, one credential per file.
//! Reading never changes a file; a bad file is skipped with a warning that names it.

use crate::domain::{valid_account_name, AccountFile};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct AccountEntry {
    pub tier: String,
    pub name: String,
    pub path: PathBuf,
    pub file: AccountFile,
}

#[derive(Debug, Default)]
pub struct Scan {
    pub accounts: Vec<AccountEntry>,
    /// `(tier, name)` of accounts whose file is there but cannot be read or parsed: such an
    /// account is left as it is (the credential already held keeps serving), never removed.
    pub unreadable: Vec<(String, String)>,
    /// Every file skipped: the unreadable ones and those with invalid names.
    pub skipped: usize,
}

/// Reads every `<dir>/<tier>/*.json` for the configured tiers, in name order.
pub fn scan(dir: &Path, tiers: impl IntoIterator<Item = String>) -> Scan {
    let mut scan = Scan::default();
    for tier in tiers {
        let tier_dir = dir.join(&tier);
        let entries = match std::fs::read_dir(&tier_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                log::warn!("cannot read account directory {}: {e}", tier_dir.display());
                continue;
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        for path in paths {
            match read_account(&tier, &path) {
                Ok(entry) => scan.accounts.push(entry),
                Err(why) => {
                    scan.skipped += 1;
                    let shown = path.display();
                    match present_account(&path) {
                        Some(name) => {
                            log::warn!("skipping account file {shown}: {why}; account {name} is kept as it is until the file can be read");
                            scan.unreadable.push((tier.clone(), name));
                        }
                        None => log::warn!("skipping account file {shown}: {why}"),
                    }
                }
            }
        }
    }
    scan
}

fn read_account(tier: &str, path: &Path) -> Result<AccountEntry, String> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .ok_or("the file name is not valid UTF-8")?;
    if !valid_account_name(name) {
        return Err("account names may only use letters, digits, '.', '_' and '-' (1-64)".into());
    }
    if !path.is_file() {
        return Err("not a regular file".into());
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot be read: {e}"))?;
    let file = AccountFile::parse(&bytes)?;
    Ok(AccountEntry {
        tier: tier.to_string(),
        name: name.to_string(),
        path: path.to_path_buf(),
        file,
    })
}

/// The account a skipped file names when the file is still there: its account is not gone.
fn present_account(path: &Path) -> Option<String> {
    let name = path.file_stem()?.to_str()?;
    (valid_account_name(name) && path.is_file()).then(|| name.to_string())
}

/// True when `<dir>/<tier>/<name>.json` exists; `name` must already be valid.
pub fn account_exists(dir: &Path, tier: &str, name: &str) -> bool {
    valid_account_name(name) && dir.join(tier).join(format!("{name}.json")).is_file()
}

/// Writes `credential` into the account's file: temp file, fsync, rename, mode 0600, the
/// file's format and unknown fields kept. A file already holding a newer credential is
/// left alone (returns false): nothing writes an older token over a newer one.
pub fn write_credential(
    path: &Path,
    credential: &crate::domain::Credential,
) -> std::io::Result<bool> {
    use std::io::Write;
    let current = std::fs::read(path)?;
    let file = AccountFile::parse(&current).map_err(std::io::Error::other)?;
    if file.credential.is_newer_than(credential) || file.credential == *credential {
        return Ok(false);
    }
    let bytes = file.render(credential);
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("account"),
        std::process::id()
    ));
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut out = options.open(&tmp)?;
        out.write_all(&bytes)?;
        out.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(true)
}
