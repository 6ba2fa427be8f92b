//! Keeping OAuth tokens fresh: the coordinator decides when, the gate performs one refresh
//! of one account at a time and saves the rotated pair everywhere before anyone uses it.

mod attempt_time;
mod coordinator;
mod gate;
pub(crate) mod plan;

pub use coordinator::{
    next_attempt, AccountRefreshView, NextAttempt, Recovered, RefreshCoordinator, RefreshNow,
    RefreshView, StopRefreshing, Track, Tracked, ViewRefresh,
};
pub use gate::{RefreshGate, RefreshOutcome};
