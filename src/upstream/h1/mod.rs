//! The HTTP/1.1 client every request to Claude and to the OAuth token endpoint goes through:
//! keep-alive connections pooled per worker thread, TLS by rustls, TCP_NODELAY, the request
//! written in one go, and the answer's body handed on as each read delivers it.
//!
//! Hand-written because a proxy needs only this much of a client, and the general one this
//! replaced (awc) cost more CPU per request than the reverse proxy we measure against
//! (BENCHMARKS.md, ninth pass).

mod answer;
mod conn;
mod decode;
mod endpoint;
mod fields;
mod head;
mod pool;
mod send;
#[cfg(test)]
mod tls_tests;

pub use answer::{Answer, AnswerBody, AnswerError};
pub use conn::install_crypto_provider;
pub use decode::BodyError;
pub use endpoint::{Endpoint, Scheme};
pub use fields::{Field, Fields};
pub use head::HeadError;
pub use pool::start_reaper;
pub use send::{send, Connection, SendError, Timeouts};
