//! Which headers cross the proxy, in each direction.

pub const OAUTH_BETA: &str = "oauth-2025-04-20";
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// True when a client request header is forwarded upstream as it is. A `match`, not a list
/// search: it runs for every header of every request.
pub fn forward_request_header(lowercase_name: &str) -> bool {
    match lowercase_name {
        // credentials: the client's key stays here
        "authorization" | "x-api-key" | "cookie"
        // hop-by-hop
        | "connection" | "keep-alive" | "proxy-authenticate" | "proxy-authorization"
        | "proxy-connection" | "te" | "trailer" | "transfer-encoding" | "upgrade"
        // set by the proxy
        | "host" | "content-length" | "accept-encoding" | "anthropic-beta"
        // the body is forwarded as read: compressed bodies are refused before this
        | "content-encoding"
        // client network identity
        | "x-real-ip" | "forwarded" | "via" => false,
        other => !other.starts_with("x-forwarded-"),
    }
}

/// The headers a client's `Connection` values name: hop-by-hop for this hop only (RFC 9110
/// §7.6.1), so never forwarded.
pub fn connection_named<'a>(connection_values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    connection_values
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect()
}

/// True when an upstream response header is passed back to the client (names in any case).
pub fn return_response_header(name: &[u8]) -> bool {
    const RATELIMIT: &[u8] = b"anthropic-ratelimit-";
    [&b"content-type"[..], b"request-id", b"retry-after"]
        .iter()
        .any(|kept| name.eq_ignore_ascii_case(kept))
        || name
            .get(..RATELIMIT.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(RATELIMIT))
}

/// The client's `anthropic-beta` values (any number of headers, comma lists) plus the OAuth
/// beta, each once, in the order first seen.
pub fn merged_beta<'a>(client_values: impl IntoIterator<Item = &'a str>) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for value in client_values {
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if !seen.contains(&item) {
                seen.push(item);
            }
        }
    }
    if !seen.contains(&OAUTH_BETA) {
        seen.push(OAUTH_BETA);
    }
    seen.join(",")
}

/// Claude Code identifies itself by its user agent.
pub fn is_claude_code(user_agent: Option<&str>) -> bool {
    user_agent.is_some_and(|ua| ua.starts_with("claude-cli/") || ua.starts_with("claude-code/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_merge_dedupes_and_appends_oauth() {
        assert_eq!(merged_beta([]), OAUTH_BETA);
        assert_eq!(
            merged_beta(["prompt-caching-2024-07-31, oauth-2025-04-20", "foo,foo"]),
            "prompt-caching-2024-07-31,oauth-2025-04-20,foo"
        );
        assert_eq!(merged_beta(["a"]), "a,oauth-2025-04-20");
    }

    #[test]
    fn request_header_rules() {
        for dropped in [
            "authorization",
            "x-api-key",
            "cookie",
            "connection",
            "keep-alive",
            "proxy-authenticate",
            "proxy-authorization",
            "proxy-connection",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "host",
            "content-length",
            "accept-encoding",
            "anthropic-beta",
            "content-encoding",
            "x-real-ip",
            "forwarded",
            "via",
            "x-forwarded-for",
            "x-forwarded-proto",
        ] {
            assert!(!forward_request_header(dropped), "{dropped}");
        }
        for kept in [
            "user-agent",
            "x-app",
            "x-stainless-os",
            "anthropic-version",
            "content-type",
            "accept",
            "x-forwarded",
            "tee",
        ] {
            assert!(forward_request_header(kept), "{kept}");
        }
    }

    #[test]
    fn connection_names_its_own_hop_by_hop_headers() {
        assert_eq!(
            connection_named(["keep-alive, X-Trace", "", " x-debug ,"].into_iter()),
            ["keep-alive", "X-Trace", "x-debug"]
        );
        assert!(connection_named(std::iter::empty()).is_empty());
        assert!(!forward_request_header("content-encoding"));
    }

    #[test]
    fn response_header_rules() {
        assert!(return_response_header(b"anthropic-ratelimit-unified-reset"));
        assert!(return_response_header(b"request-id"));
        assert!(!return_response_header(b"anthropic-organization-id"));
        assert!(!return_response_header(b"set-cookie"));
        assert!(return_response_header(
            b"Anthropic-RateLimit-Requests-Limit"
        ));
        assert!(return_response_header(b"Content-Type"));
        assert!(!return_response_header(b"anthropic-ratelimit"));
    }

    #[test]
    fn claude_code_user_agents() {
        assert!(is_claude_code(Some("claude-cli/1.0.83 (external, cli)")));
        assert!(!is_claude_code(Some("curl/8.0")));
        assert!(!is_claude_code(None));
    }
}
