//! Talking to Claude: the per-worker awc client, the request header rules applied to it,
//! and the usage reader that watches answers go by.

pub mod client;
pub(crate) mod json_scan;
mod json_scan_back;
pub mod oauth;
pub mod request;
pub mod unanswered;
pub mod usage;
