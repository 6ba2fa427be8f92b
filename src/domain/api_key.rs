//! Proxy-issued keys: `sk-cli-v1-` + 32 alphanumerics. Stored only as a SHA-256 digest.

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "sk-cli-v1-";
const KEY_BODY_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyParseError {
    #[error("no API key")]
    Missing,
    #[error("malformed API key")]
    Malformed,
}

/// A syntactically valid client key. Its `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}…)", self.display_prefix())
    }
}

impl ApiKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> ApiKey {
        let body: String = rand::rngs::OsRng
            .sample_iter(&Alphanumeric)
            .take(KEY_BODY_LEN)
            .map(char::from)
            .collect();
        ApiKey(format!("{KEY_PREFIX}{body}"))
    }

    pub fn parse(text: &str) -> Result<ApiKey, KeyParseError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyParseError::Missing);
        }
        let body = text
            .strip_prefix(KEY_PREFIX)
            .ok_or(KeyParseError::Malformed)?;
        if body.len() != KEY_BODY_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyParseError::Malformed);
        }
        Ok(ApiKey(text.to_string()))
    }

    /// Takes the key from `x-api-key`, else from `Authorization: Bearer`. A client may send
    /// both (an SDK with a stale `ANTHROPIC_API_KEY` beside the proxy key as auth token): the
    /// one that is a proxy key wins.
    pub fn from_headers(
        x_api_key: Option<&[u8]>,
        authorization: Option<&[u8]>,
    ) -> Result<ApiKey, KeyParseError> {
        let from_x_api_key = x_api_key.map(|raw| {
            std::str::from_utf8(raw)
                .map_err(|_| KeyParseError::Malformed)
                .and_then(ApiKey::parse)
        });
        let from_bearer = authorization.map(|raw| {
            std::str::from_utf8(raw)
                .map_err(|_| KeyParseError::Malformed)
                .and_then(bearer_token)
                .and_then(ApiKey::parse)
        });
        match (from_x_api_key, from_bearer) {
            (Some(Ok(key)), _) | (_, Some(Ok(key))) => Ok(key),
            (Some(Err(KeyParseError::Malformed)), _) | (_, Some(Err(KeyParseError::Malformed))) => {
                Err(KeyParseError::Malformed)
            }
            _ => Err(KeyParseError::Missing),
        }
    }

    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256 of the whole key: the only form that is stored.
    pub fn digest(&self) -> String {
        digest_hex(self.0.as_bytes())
    }

    /// `sk-cli-v1-` and the first four characters: safe to show and log.
    pub fn display_prefix(&self) -> String {
        self.0.chars().take(KEY_PREFIX.len() + 4).collect()
    }
}

/// The credentials of `Authorization: Bearer <token>`; the scheme is case-insensitive
/// (RFC 9110). An empty header is a missing key.
pub fn bearer_token(value: &str) -> Result<&str, KeyParseError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(KeyParseError::Missing);
    }
    let (scheme, token) = value
        .split_once([' ', '\t'])
        .ok_or(KeyParseError::Malformed)?;
    if scheme.eq_ignore_ascii_case("bearer") {
        Ok(token)
    } else {
        Err(KeyParseError::Malformed)
    }
}

pub fn digest_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_parse_and_differ() {
        let a = ApiKey::generate();
        let b = ApiKey::generate();
        assert_ne!(a, b);
        assert_eq!(ApiKey::parse(a.secret()).unwrap(), a);
        assert_eq!(a.secret().len(), 42);
        assert_eq!(a.digest().len(), 64);
        assert!(!format!("{a:?}").contains(a.secret()));
    }

    #[test]
    fn rejects_anthropic_tokens_and_near_misses() {
        assert_eq!(
            ApiKey::parse("sk-ant-oat01-abcdefghijklmnopqrstuvwxyz012345"),
            Err(KeyParseError::Malformed)
        );
        assert_eq!(
            ApiKey::parse("sk-cli-v1-short"),
            Err(KeyParseError::Malformed)
        );
        let bad_char = format!("{KEY_PREFIX}{}!", "a".repeat(31));
        assert_eq!(ApiKey::parse(&bad_char), Err(KeyParseError::Malformed));
        assert_eq!(ApiKey::parse(""), Err(KeyParseError::Missing));
    }

    #[test]
    fn header_sources() {
        let key = ApiKey::generate();
        let bearer = format!("Bearer {}", key.secret());
        assert_eq!(
            ApiKey::from_headers(None, Some(bearer.as_bytes())).unwrap(),
            key
        );
        assert_eq!(
            ApiKey::from_headers(Some(key.secret().as_bytes()), None).unwrap(),
            key
        );
        assert_eq!(
            ApiKey::from_headers(None, None),
            Err(KeyParseError::Missing)
        );
        assert_eq!(
            ApiKey::from_headers(None, Some(b"Basic abc")),
            Err(KeyParseError::Malformed)
        );
        assert_eq!(
            ApiKey::from_headers(Some(b"  "), Some(b"")),
            Err(KeyParseError::Missing)
        );
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let key = ApiKey::generate();
        for scheme in ["BEARER", "bearer", "Bearer", "bEaReR"] {
            for gap in [" ", "\t", "   "] {
                let header = format!("{scheme}{gap}{}", key.secret());
                assert_eq!(
                    ApiKey::from_headers(None, Some(header.as_bytes())),
                    Ok(key.clone()),
                    "{header:?}"
                );
            }
        }
        assert_eq!(
            ApiKey::from_headers(None, Some(format!("Bearer{}", key.secret()).as_bytes())),
            Err(KeyParseError::Malformed)
        );
    }

    #[test]
    fn the_header_holding_a_proxy_key_wins() {
        let key = ApiKey::generate();
        let bearer = format!("Bearer {}", key.secret());
        let stale = b"sk-ant-api03-stale-anthropic-key";
        assert_eq!(
            ApiKey::from_headers(Some(stale), Some(bearer.as_bytes())),
            Ok(key.clone())
        );
        assert_eq!(
            ApiKey::from_headers(
                Some(key.secret().as_bytes()),
                Some(b"Bearer sk-ant-oat01-x")
            ),
            Ok(key.clone())
        );
        // Neither is a proxy key: the client is told its key has the wrong shape.
        assert_eq!(
            ApiKey::from_headers(Some(stale), Some(b"Bearer sk-ant-oat01-x")),
            Err(KeyParseError::Malformed)
        );
        assert_eq!(
            ApiKey::from_headers(Some(stale), None),
            Err(KeyParseError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = ApiKey::parse(&s);
        }

        #[test]
        fn valid_bodies_parse(body in "[A-Za-z0-9]{32}") {
            let key = format!("{KEY_PREFIX}{body}");
            prop_assert!(ApiKey::parse(&key).is_ok());
        }
    }
}
