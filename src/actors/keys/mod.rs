//! KeyRegistry: owns every change to client keys. Handlers read the shared `KeyCache`
//! without a round trip; the registry writes it, the store and the pools.

mod actor;
mod cache;
mod messages;

pub use actor::KeyRegistry;
pub use cache::{AuthError, KeyCache};
pub use messages::*;
