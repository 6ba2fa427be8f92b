//! PoolActor: one per tier. It owns the tier's slots, bindings and windows and handles one
//! message at a time, which is what makes binding and admission exact under concurrency.

mod actor;
mod error;
mod messages;
mod state;
mod sync;
mod view;

pub use actor::{PoolActor, PoolBackend};
pub use error::PoolError;
pub use messages::*;
pub use state::{AccountSlot, Admission, Changes, Outcome, PoolState};
pub use sync::SyncDelta;
pub use view::{AccountView, PoolView};
