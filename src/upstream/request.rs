//! Turns a client's request into Claude's: the account's bearer token, the merged beta
//! list, the client's end-to-end headers and nothing of the client's credentials.

use crate::config::UpstreamConfig;
use crate::domain::headers::{forward_request_header, merged_beta, DEFAULT_ANTHROPIC_VERSION};
use crate::http::header_names as names;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;

pub fn build(
    client: &awc::Client,
    cfg: &UpstreamConfig,
    method: Method,
    path_and_query: &str,
    client_headers: &HeaderMap,
    access_token: &str,
) -> awc::ClientRequest {
    let url = format!("{}{}", cfg.base_url.trim_end_matches('/'), path_and_query);
    let mut req = client.request(method, url).no_decompress();
    for (name, value) in client_headers.iter() {
        if forward_request_header(name.as_str()) {
            req = req.append_header((name.clone(), value.clone()));
        }
    }
    let betas = client_headers
        .get_all("anthropic-beta")
        .filter_map(|v| v.to_str().ok());
    req = req.insert_header((names::ANTHROPIC_BETA, merged_beta(betas)));
    if !client_headers.contains_key(names::ANTHROPIC_VERSION) {
        req = req.insert_header((
            names::ANTHROPIC_VERSION,
            HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
        ));
    }
    if !client_headers.contains_key(header::USER_AGENT) {
        req = req.insert_header((header::USER_AGENT, cfg.user_agent.as_str()));
    }
    req = req.insert_header((
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    ));
    match HeaderValue::from_str(&format!("Bearer {access_token}")) {
        Ok(v) => req.insert_header((header::AUTHORIZATION, v)),
        // A token with bytes a header cannot carry: upstream will refuse it as unauthenticated.
        Err(_) => req,
    }
}
