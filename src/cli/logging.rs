//! env_logger to stderr, and with `--log-file` to that file too, for `tail -f`.

use std::fs::File;
use std::io::Write;
use std::path::Path;

struct Tee {
    file: File,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        self.file.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        self.file.flush()
    }
}

/// `serve` logs at info by default; the operator's commands only warn.
pub fn init(serving: bool, log_file: Option<&Path>) -> Result<(), String> {
    let default = if serving { "info" } else { "warn" };
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default));
    // Colour only for a person at a terminal; files and pipes get plain text, unfiltered.
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) || log_file.is_some() {
        builder.write_style(env_logger::WriteStyle::Never);
    }
    if let Some(path) = log_file {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
        builder.target(env_logger::Target::Pipe(Box::new(Tee { file })));
    }
    let _ = builder.try_init();
    Ok(())
}
