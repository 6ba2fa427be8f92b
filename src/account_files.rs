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
                    log::warn!("skipping account file {}: {why}", path.display());
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

/// True when `<dir>/<tier>/<name>.json` exists; `name` must already be valid.
pub fn account_exists(dir: &Path, tier: &str, name: &str) -> bool {
    valid_account_name(name) && dir.join(tier).join(format!("{name}.json")).is_file()
}
