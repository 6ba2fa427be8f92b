//! The terminal table, the target checklist and the JSON files.

use std::path::Path;

/// One stated target and whether this run met it (`None`: could not be measured).
pub struct Check {
    pub name: &'static str,
    pub target: &'static str,
    pub value: String,
    pub met: Option<bool>,
}

impl Check {
    pub fn new(
        name: &'static str,
        target: &'static str,
        value: String,
        met: Option<bool>,
    ) -> Check {
        Check {
            name,
            target,
            value,
            met,
        }
    }

    pub fn status(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "n/a",
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "target": self.target,
            "value": self.value,
            "status": self.status(),
        })
    }
}

/// A left-aligned first column, right-aligned others.
pub fn table(title: &str, header: &[&str], rows: &[Vec<String>]) {
    let cols = header.len();
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    println!();
    println!("== {title}");
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = width[i].saturating_sub(cell.chars().count());
            if i == 0 {
                s.push_str(cell);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            }
        }
        println!("  {}", s.trim_end());
    };
    line(header.to_vec());
    line(
        width
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub fn checklist(checks: &[Check]) {
    let rows: Vec<Vec<String>> = checks
        .iter()
        .map(|c| {
            vec![
                c.name.to_string(),
                c.value.clone(),
                c.target.to_string(),
                c.status().to_string(),
            ]
        })
        .collect();
    table("targets", &["target", "this run", "goal", "status"], &rows);
}

pub fn fmt_us(v: f64) -> String {
    format!("{v:.1}")
}

pub fn fmt_signed_us(v: f64) -> String {
    format!("{v:+.1}")
}

pub fn fmt_mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Writes `<dir>/<stamp>.json` and `<dir>/latest.json`; returns the first path.
pub fn write_json(
    dir: &Path,
    stamp: &str,
    value: &serde_json::Value,
) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)? + "\n";
    let path = dir.join(format!("{stamp}.json"));
    std::fs::write(&path, &text)?;
    std::fs::write(dir.join("latest.json"), &text)?;
    Ok(path)
}
