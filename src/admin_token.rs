//! The admin token: configured, or generated once into a 0600 file the CLI also reads.

use crate::config::AdminConfig;
use rand::distributions::Alphanumeric;
use rand::Rng;
use std::io::Write;

/// The configured token, else the token file's, else a new one written to the token file.
pub fn resolve(cfg: &AdminConfig) -> std::io::Result<String> {
    if !cfg.token.is_empty() {
        return Ok(cfg.token.clone());
    }
    if let Some(token) = read(cfg) {
        return Ok(token);
    }
    let token: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    if let Some(dir) = cfg
        .token_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&cfg.token_file)?;
    file.write_all(token.as_bytes())?;
    file.sync_all()?;
    log::info!("generated an admin token into {}", cfg.token_file.display());
    Ok(token)
}

/// The token the CLI presents: configured, or read from the token file.
pub fn read(cfg: &AdminConfig) -> Option<String> {
    if !cfg.token.is_empty() {
        return Some(cfg.token.clone());
    }
    let text = std::fs::read_to_string(&cfg.token_file).ok()?;
    let token = text.trim().to_string();
    (!token.is_empty()).then_some(token)
}
