//! Talking to Claude: the HTTP/1.1 client, the request header rules applied to it, and the
//! usage reader that watches answers go by.

pub mod h1;
pub(crate) mod json_scan;
mod json_scan_back;
pub mod oauth;
pub mod request;
pub mod usage;
