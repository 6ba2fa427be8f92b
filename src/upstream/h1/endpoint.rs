//! Where a base URL points: scheme, host and port to connect to, the `Host` header, and the
//! path every request's own path is joined to.

use actix_web::http::Uri;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// The host to resolve and, for TLS, the name to verify (no brackets around IPv6).
    pub host: String,
    pub port: u16,
    /// The `Host` header: host and port as the URL wrote them.
    pub authority: String,
    /// The URL's own path as written ("/" for a bare origin): where a request to the URL
    /// itself goes.
    pub path: String,
    /// `scheme://authority`: which pooled connections can carry this endpoint's requests.
    pub origin: Arc<str>,
}

impl Endpoint {
    /// The URL's path without its trailing `/` ("" for a bare origin): what a caller's path
    /// is joined to.
    pub fn path_prefix(&self) -> &str {
        self.path.trim_end_matches('/')
    }

    /// Reads an `http://` or `https://` URL without user info or query. Errors never quote
    /// the URL: it may carry a password.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let uri: Uri = url.parse().map_err(|e| format!("unreadable ({e})"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            _ => return Err("it must start with http:// or https://".into()),
        };
        let authority = uri
            .authority()
            .ok_or_else(|| "it has no host".to_string())?;
        if authority.as_str().contains('@') {
            return Err("it must not carry user info".into());
        }
        if uri.query().is_some() {
            return Err("it must not carry a query".into());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err("it has no host".into());
        }
        let port = authority.port_u16().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        let scheme_text = match scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        Ok(Endpoint {
            scheme,
            host: host.to_string(),
            port,
            authority: authority.as_str().to_string(),
            path: uri.path().to_string(),
            origin: format!("{scheme_text}://{}", authority.as_str()).into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_origins_ports_and_paths() {
        let claude = Endpoint::parse("https://api.anthropic.com").unwrap();
        assert_eq!(claude.scheme, Scheme::Https);
        assert_eq!(
            (claude.host.as_str(), claude.port),
            ("api.anthropic.com", 443)
        );
        assert_eq!(claude.authority, "api.anthropic.com");
        assert_eq!(claude.path_prefix(), "");
        assert_eq!(claude.path, "/");
        assert_eq!(&*claude.origin, "https://api.anthropic.com");

        let local = Endpoint::parse("http://127.0.0.1:9/").unwrap();
        assert_eq!((local.host.as_str(), local.port), ("127.0.0.1", 9));
        assert_eq!(local.authority, "127.0.0.1:9");
        assert_eq!(local.path_prefix(), "");

        let gateway = Endpoint::parse("http://gw.example/anthropic/").unwrap();
        assert_eq!(gateway.port, 80);
        assert_eq!(gateway.path_prefix(), "/anthropic");
        assert_eq!(gateway.path, "/anthropic/");

        let v6 = Endpoint::parse("http://[::1]:8080/v1").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 8080));
        assert_eq!(v6.authority, "[::1]:8080");
        assert_eq!(v6.path_prefix(), "/v1");
    }

    #[test]
    fn refuses_what_it_cannot_connect_to() {
        for bad in [
            "not a url",
            "ftp://example.com",
            "example.com",
            "http://user:pw@example.com",
            "http://example.com/?q=1",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
