//! Account credential files: Claude Code's own `{"claudeAiOauth":{…}}` and the flat form.
//! Unknown fields survive a write-back; secrets never show in `Debug`.

use super::Millis;
use serde_json::{Map, Value};

const WRAPPER: &str = "claudeAiOauth";

#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub access_token: String,
    /// None for setup tokens: such an account is never refreshed.
    pub refresh_token: Option<String>,
    /// None when the file gives no expiry.
    pub expires_at: Option<Millis>,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Credential {
    pub fn is_expired(&self, now: Millis) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// True when `self` should replace `other`: a strictly later expiry wins.
    pub fn is_newer_than(&self, other: &Credential) -> bool {
        self.expires_at.unwrap_or(Millis::MIN) > other.expires_at.unwrap_or(Millis::MIN)
    }

    /// True when `self`, read from an account file, should replace `held` (the pool's or
    /// the store's): a strictly later expiry; or, for a file without `expiresAt` (a setup
    /// token), a different access token — having no expiry to compare, it can only have
    /// got there by the operator putting a new credential in place.
    pub fn supersedes(&self, held: &Credential) -> bool {
        match self.expires_at {
            None => self.access_token != held.access_token,
            Some(_) => self.is_newer_than(held),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    ClaudeCode,
    Flat,
}

/// A parsed account file, kept whole so it can be written back with only the credential changed.
#[derive(Debug, Clone)]
pub struct AccountFile {
    pub format: FileFormat,
    pub credential: Credential,
    document: Map<String, Value>,
}

impl AccountFile {
    /// Reads either format; the error says what is wrong, for the warning that names the file.
    pub fn parse(bytes: &[u8]) -> Result<AccountFile, String> {
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not valid JSON ({e})"))?;
        let Value::Object(document) = value else {
            return Err("not a JSON object".into());
        };
        let (format, fields) = match document.get(WRAPPER) {
            Some(Value::Object(inner)) => (FileFormat::ClaudeCode, inner),
            Some(_) => return Err(format!("`{WRAPPER}` is not an object")),
            None => (FileFormat::Flat, &document),
        };
        let credential = read_credential(fields)?;
        Ok(AccountFile {
            format,
            credential,
            document,
        })
    }

    /// The file's bytes with `credential` in place of the old one; everything else kept.
    pub fn render(&self, credential: &Credential) -> Vec<u8> {
        let mut document = self.document.clone();
        let fields = match self.format {
            FileFormat::ClaudeCode => match document.get_mut(WRAPPER) {
                Some(Value::Object(inner)) => inner,
                _ => &mut document,
            },
            FileFormat::Flat => &mut document,
        };
        write_credential(fields, credential);
        let mut bytes = serde_json::to_vec_pretty(&Value::Object(document)).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

fn read_credential(fields: &Map<String, Value>) -> Result<Credential, String> {
    let access_token = match fields.get("accessToken") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(_) => return Err("`accessToken` is not a non-empty string".into()),
        None => return Err("no `accessToken`".into()),
    };
    let refresh_token = match fields.get("refreshToken") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        None | Some(Value::Null) => None,
        Some(Value::String(_)) => None,
        Some(_) => return Err("`refreshToken` is not a string".into()),
    };
    let expires_at = match fields.get("expiresAt") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(
            n.as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .ok_or("`expiresAt` is not a whole number of milliseconds")?,
        ),
        Some(Value::String(s)) => Some(
            s.trim()
                .parse::<i64>()
                .map_err(|_| "`expiresAt` is not a number of milliseconds")?,
        ),
        Some(_) => return Err("`expiresAt` is not a number of milliseconds".into()),
    };
    Ok(Credential {
        access_token,
        refresh_token,
        expires_at,
    })
}

fn write_credential(fields: &mut Map<String, Value>, c: &Credential) {
    fields.insert("accessToken".into(), Value::String(c.access_token.clone()));
    if let Some(refresh) = &c.refresh_token {
        fields.insert("refreshToken".into(), Value::String(refresh.clone()));
    }
    if let Some(at) = c.expires_at {
        fields.insert("expiresAt".into(), Value::from(at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRAPPED: &str = r#"{"claudeAiOauth":{"accessToken":"sk-ant-oat01-a","refreshToken":"sk-ant-ort01-r","expiresAt":1776752345678,"scopes":["user:inference"],"subscriptionType":"max"},"other":1}"#;

    #[test]
    fn reads_both_formats() {
        let f = AccountFile::parse(WRAPPED.as_bytes()).unwrap();
        assert_eq!(f.format, FileFormat::ClaudeCode);
        assert_eq!(f.credential.access_token, "sk-ant-oat01-a");
        assert_eq!(f.credential.expires_at, Some(1776752345678));
        let flat = AccountFile::parse(br#"{"accessToken":"t","expiresAt":5}"#).unwrap();
        assert_eq!(flat.format, FileFormat::Flat);
        assert_eq!(flat.credential.refresh_token, None);
    }

    #[test]
    fn write_back_keeps_format_and_unknown_fields() {
        let f = AccountFile::parse(WRAPPED.as_bytes()).unwrap();
        let newer = Credential {
            access_token: "sk-ant-oat01-b".into(),
            refresh_token: Some("sk-ant-ort01-s".into()),
            expires_at: Some(1776752999999),
        };
        let again = AccountFile::parse(&f.render(&newer)).unwrap();
        assert_eq!(again.format, FileFormat::ClaudeCode);
        assert_eq!(again.credential, newer);
        let text = String::from_utf8(f.render(&newer)).unwrap();
        assert!(text.contains("subscriptionType") && text.contains("\"other\""));
    }

    #[test]
    fn rejects_broken_files() {
        assert!(AccountFile::parse(b"{not json").is_err());
        assert!(AccountFile::parse(b"[]").is_err());
        assert!(AccountFile::parse(br#"{"refreshToken":"x"}"#).is_err());
        assert!(AccountFile::parse(br#"{"claudeAiOauth":3}"#).is_err());
        assert!(AccountFile::parse(br#"{"accessToken":"a","expiresAt":"soon"}"#).is_err());
    }

    #[test]
    fn newer_means_later_expiry() {
        let at = |ms| Credential {
            access_token: "a".into(),
            refresh_token: None,
            expires_at: ms,
        };
        assert!(at(Some(2)).is_newer_than(&at(Some(1))));
        assert!(!at(Some(1)).is_newer_than(&at(Some(1))));
        assert!(at(Some(1)).is_newer_than(&at(None)));
        assert!(!format!("{:?}", at(Some(1))).contains("\"a\""));
    }

    #[test]
    fn a_file_without_expiry_supersedes_a_different_token() {
        let cred = |token: &str, ms| Credential {
            access_token: token.into(),
            refresh_token: None,
            expires_at: ms,
        };
        let held = cred("old", Some(5));
        assert!(cred("setup", None).supersedes(&held));
        assert!(cred("setup", None).supersedes(&cred("old", None)));
        assert!(
            !cred("old", None).supersedes(&held),
            "same token: nothing new"
        );
        assert!(!cred("setup", None).supersedes(&cred("setup", None)));
        assert!(cred("new", Some(6)).supersedes(&held));
        assert!(
            !cred("new", Some(4)).supersedes(&held),
            "never older over newer"
        );
        assert!(!cred("new", Some(5)).supersedes(&held));
    }
}
