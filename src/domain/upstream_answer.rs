//! What Claude's error answers mean for the account that got them (SPEC §8).

/// The effect of an upstream answer on its account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountEffect {
    None,
    /// The access token expired: refresh now, then retry once.
    TokenExpired,
    /// The account can't serve anymore; the reason is kept for the pool view.
    Blacklist(String),
    /// Claude refused OAuth itself: the proxy sent something wrong (a missing beta).
    ProxyFault,
}

/// Statuses whose body must be read before the answer's effect is known.
pub fn needs_body(status: u16) -> bool {
    matches!(status, 400 | 401 | 403)
}

/// The `error.message` of an Anthropic error body, or the raw text.
pub fn error_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    text.chars().take(300).collect()
}

pub fn classify(status: u16, body: &[u8]) -> AccountEffect {
    if !needs_body(status) {
        return AccountEffect::None;
    }
    let message = error_message(body);
    let lower = message.to_ascii_lowercase();
    let blacklist = || AccountEffect::Blacklist(format!("{status} {message}"));
    match status {
        401 if lower.contains("oauth authentication is currently not supported") => {
            AccountEffect::ProxyFault
        }
        401 if lower.contains("expired") => AccountEffect::TokenExpired,
        401 if lower.contains("invalid bearer token")
            || lower.contains("revoked")
            || lower.contains("invalid authentication credentials") =>
        {
            blacklist()
        }
        403 if lower.contains("revoked") || lower.contains("not allowed for this organization") => {
            blacklist()
        }
        400 if lower.contains("organization has been disabled") => blacklist(),
        _ => AccountEffect::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kind: &str, message: &str) -> Vec<u8> {
        serde_json::json!({"type":"error","error":{"type":kind,"message":message}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn the_spec_table() {
        let revoked = body(
            "permission_error",
            "OAuth token has been revoked. Please obtain a new token.",
        );
        assert!(
            matches!(classify(403, &revoked), AccountEffect::Blacklist(r) if r.contains("revoked"))
        );
        assert!(matches!(
            classify(401, &revoked),
            AccountEffect::Blacklist(_)
        ));
        let expired = body(
            "authentication_error",
            "OAuth token has expired. Please obtain a new token or refresh your existing token.",
        );
        assert_eq!(classify(401, &expired), AccountEffect::TokenExpired);
        let invalid = body("authentication_error", "Invalid bearer token");
        assert!(matches!(
            classify(401, &invalid),
            AccountEffect::Blacklist(_)
        ));
        let creds = body("authentication_error", "Invalid authentication credentials");
        assert!(matches!(classify(401, &creds), AccountEffect::Blacklist(_)));
        let org = body(
            "permission_error",
            "OAuth authentication is not allowed for this organization.",
        );
        assert!(matches!(classify(403, &org), AccountEffect::Blacklist(_)));
        let disabled = body(
            "invalid_request_error",
            "This organization has been disabled.",
        );
        assert!(matches!(
            classify(400, &disabled),
            AccountEffect::Blacklist(_)
        ));
        let unsupported = body(
            "authentication_error",
            "OAuth authentication is currently not supported.",
        );
        assert_eq!(classify(401, &unsupported), AccountEffect::ProxyFault);
    }

    #[test]
    fn client_errors_leave_the_account_alone() {
        let bad = body("invalid_request_error", "max_tokens: field required");
        assert_eq!(classify(400, &bad), AccountEffect::None);
        assert_eq!(classify(500, b"oops"), AccountEffect::None);
        assert_eq!(classify(401, b"not json at all"), AccountEffect::None);
    }
}
