//! claude-route: shares a pool of Claude subscription accounts with many clients.

pub mod account_files;
pub mod actors;
pub mod admin_token;
pub mod allocator;
pub mod background;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod failpoint;
pub mod http;
pub mod logger;
pub mod metrics;
pub mod store;
pub mod upstream;
pub mod worker_memory;
