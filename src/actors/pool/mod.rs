//! One pool per tier: its slots, bindings and windows. Embedded, the state sits behind one
//! lock per tier, which is what makes binding and admission exact under concurrency: request
//! handlers take it directly for admission and settling (`PoolHandle`), everything else goes
//! through the tier's PoolActor. On Redis, every operation is one atomic script.

mod actor;
mod error;
mod handle;
mod messages;
mod state;
mod sync;
#[cfg(test)]
mod take_back_tests;
mod view;

pub use actor::{PoolActor, PoolBackend};

/// A tier's actor, restarted by a watchdog if it dies; its state lives in the backend.
pub type PoolAddr = crate::actors::restartable::Restartable<PoolActor>;
/// Every tier's actor, by tier name.
pub type PoolAddrs = std::sync::Arc<std::collections::HashMap<String, PoolAddr>>;
pub use error::PoolError;
pub use handle::{PoolHandle, SharedPool};
pub use messages::*;
pub use state::{AccountSlot, Admission, Changes, Outcome, PoolState};
pub use sync::SyncDelta;
pub use view::{AccountView, PoolView};
