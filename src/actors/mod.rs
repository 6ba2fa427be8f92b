//! The actors and the supervisor that starts them.

pub mod keys;
pub mod pool;
pub mod refresh;
pub mod restartable;
pub mod supervisor;
pub mod sync;
