//! Helpers for the operator-surface tests (SPEC §12–§15): raw admin calls with any token and a
//! small Prometheus text-format parser. (A `serve` process with extra flags and environment is
//! `server::ServeProc`; the CLI with extra environment is `cli::run_cli_env`.)

use super::client::{request, Resp};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// One admin-style call against `base` (`http://host:port`): `token` goes in
/// `Authorization: Bearer`, `body` (when given) as JSON.
pub async fn call_with_token(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = auth.as_deref() {
        headers.push(("authorization", a));
    }
    if body.is_some() {
        headers.push(("content-type", "application/json"));
    }
    let url = format!("{base}{path}");
    request(
        method,
        &url,
        &headers,
        body.map(<[u8]>::to_vec).unwrap_or_default(),
    )
    .await
}

/// `http://127.0.0.1:<port>` of a port nothing listens on (bound, then released).
pub fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

// ---------------------------------------------------------------------------------------------
// Prometheus text format
// ---------------------------------------------------------------------------------------------

/// A label set without `le`, as a sortable key.
type LabelKey = Vec<(String, String)>;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape: `# TYPE` per family, `# HELP` per family, and every sample in order.
#[derive(Debug, Default)]
pub struct Exposition {
    pub types: HashMap<String, String>,
    pub helps: HashMap<String, String>,
    pub samples: Vec<Sample>,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("bad value `{s}`")),
    }
}

/// Parses `{a="x",b="y"}` starting at `text` (which begins with `{`); returns the labels and
/// the rest after `}`.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = &text[1..];
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        let eq = rest.find('=').ok_or("label without `=`")?;
        let name = rest[..eq].trim();
        if !is_label_name(name) {
            return Err(format!("bad label name `{name}`"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    other => return Err(format!("bad escape in label value: {other:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if labels.insert(name.to_string(), value).is_some() {
            return Err(format!("label `{name}` twice"));
        }
        rest = &rest[end + 1..];
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r;
        } else if !rest.starts_with('}') {
            return Err("expected `,` or `}` after a label".into());
        }
    }
}

/// The family a sample name belongs to, given the declared types.
fn family_of<'a>(types: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    let candidates: [(&str, &[&str]); 3] = [
        ("counter", &["_total", "_created", ""]),
        ("histogram", &["_bucket", "_sum", "_count", "_created"]),
        ("summary", &["_sum", "_count", "_created", ""]),
    ];
    for (family, ty) in types {
        if family == name && matches!(ty.as_str(), "gauge" | "untyped" | "unknown" | "info") {
            return Some(family);
        }
        for (kind, suffixes) in candidates {
            if ty == kind
                && suffixes
                    .iter()
                    .any(|s| name.strip_suffix(s) == Some(family.as_str()))
            {
                return Some(family);
            }
        }
    }
    None
}

/// Parses a scrape; any line that is neither a comment, blank nor a well-formed sample of a
/// declared family is an error naming that line.
pub fn parse_prometheus(text: &str) -> Result<Exposition, String> {
    let mut exp = Exposition::default();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let fail = |why: String| format!("line {}: {why}: `{raw}`", n + 1);
        if line.trim().is_empty() || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kw = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            let tail = parts.next().unwrap_or("").to_string();
            match kw {
                "HELP" | "TYPE" | "UNIT" if !is_metric_name(name) => {
                    return Err(fail("bad metric name".into()))
                }
                "HELP" => {
                    exp.helps.insert(name.to_string(), tail);
                }
                "TYPE" => {
                    if !matches!(
                        tail.as_str(),
                        "counter"
                            | "gauge"
                            | "histogram"
                            | "summary"
                            | "untyped"
                            | "unknown"
                            | "info"
                    ) {
                        return Err(fail(format!("unknown type `{tail}`")));
                    }
                    if exp.types.insert(name.to_string(), tail).is_some() {
                        return Err(fail("family typed twice".into()));
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| fail("no value".into()))?;
        let name = &line[..name_end];
        if !is_metric_name(name) {
            return Err(fail("bad metric name".into()));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..]).map_err(&fail)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let value =
            parse_value(fields.next().ok_or_else(|| fail("no value".into()))?).map_err(&fail)?;
        if let Some(ts) = fields.next() {
            ts.parse::<f64>()
                .map_err(|_| fail(format!("bad timestamp `{ts}`")))?;
        }
        if fields.next().is_some() {
            return Err(fail("trailing fields".into()));
        }
        if family_of(&exp.types, name).is_none() {
            return Err(fail(format!("sample `{name}` of no declared family")));
        }
        exp.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(exp)
}

fn labels_match(sample: &Sample, want: &[(&str, &str)]) -> bool {
    sample.labels.len() == want.len()
        && want
            .iter()
            .all(|(k, v)| sample.labels.get(*k).map(String::as_str) == Some(*v))
}

impl Exposition {
    /// The value of the sample `name` with exactly the labels `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| s.name == name && labels_match(s, labels))
            .map(|s| s.value)
    }

    /// Every sample called `name`.
    pub fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    /// The declared type of family `family`.
    pub fn type_of(&self, family: &str) -> Option<&str> {
        self.types.get(family).map(String::as_str)
    }

    /// The family (from `# TYPE`) a sample name belongs to.
    pub fn family_of(&self, sample_name: &str) -> Option<&str> {
        family_of(&self.types, sample_name)
    }

    /// Checks every histogram: per label set, buckets are cumulative (non-decreasing with
    /// `le`), the last is `le="+Inf"` and equals `_count`, and `_sum` exists.
    pub fn check_histograms(&self) -> Result<(), String> {
        for (family, ty) in &self.types {
            if ty != "histogram" {
                continue;
            }
            let bucket = format!("{family}_bucket");
            let mut series: BTreeMap<LabelKey, Vec<(f64, f64)>> = BTreeMap::new();
            for s in self.all(&bucket) {
                let le = s
                    .labels
                    .get("le")
                    .ok_or_else(|| format!("{bucket} without le: {s:?}"))?;
                let le = parse_value(le).map_err(|e| format!("{bucket}: {e}"))?;
                let key: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != "le")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                series.entry(key).or_default().push((le, s.value));
            }
            for (key, mut buckets) in series {
                buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                for w in buckets.windows(2) {
                    if w[0].0 == w[1].0 {
                        return Err(format!("{bucket}{key:?}: le {} twice", w[0].0));
                    }
                    if w[1].1 < w[0].1 {
                        return Err(format!(
                            "{bucket}{key:?}: not cumulative: le {} has {} but le {} has {}",
                            w[0].0, w[0].1, w[1].0, w[1].1
                        ));
                    }
                }
                let last = buckets.last().copied().unwrap_or((0.0, 0.0));
                if last.0 != f64::INFINITY {
                    return Err(format!("{bucket}{key:?}: last bucket is not le=\"+Inf\""));
                }
                let labels: Vec<(&str, &str)> =
                    key.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let count = self
                    .value(&format!("{family}_count"), &labels)
                    .ok_or_else(|| format!("{family}_count{key:?} missing"))?;
                if count != last.1 {
                    return Err(format!(
                        "{family}{key:?}: +Inf bucket {} != _count {count}",
                        last.1
                    ));
                }
                self.value(&format!("{family}_sum"), &labels)
                    .ok_or_else(|| format!("{family}_sum{key:?} missing"))?;
            }
        }
        Ok(())
    }
}

impl super::server::TestServer {
    /// Waits (5 s) until the start-up sync has finished (`last_sync` in `GET /admin/status`),
    /// so a test that changes account files afterwards is not raced by it.
    pub async fn wait_startup_sync_done(&self) {
        let done = super::poll_async(Duration::from_secs(5), || {
            let fut = self.admin_get("/admin/status");
            async {
                let res = fut.await;
                (res.status == 200 && res.json()["last_sync"].is_object()).then_some(())
            }
        })
        .await;
        assert!(done.is_some(), "the start-up sync never finished");
    }
}
