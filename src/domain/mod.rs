//! Pure types and rules of the product: no I/O, no clocks, no actors.

pub mod api_key;
pub mod credential;
pub mod family;
pub mod headers;
pub mod identity;
pub mod identity_splice;
pub mod tier;
pub mod upstream_answer;
pub mod window;

pub use api_key::{ApiKey, KeyParseError};
pub use credential::{AccountFile, Credential};
pub use family::ModelFamily;
pub use tier::{valid_account_name, Tier};
pub use window::Window;

/// Milliseconds since the Unix epoch: the one time unit the store and the domain share.
pub type Millis = i64;
