//! Supervision for the long-lived background actors. Each runs on an arbiter of its own; a
//! watchdog notices when one died (a panic ends its arbiter thread) and starts a new one,
//! built by the same factory, which reloads its state from the store. Everyone holding the
//! `Restartable` reaches the new incarnation from then on.

use actix::{Actor, Addr};
use parking_lot::RwLock;
use std::sync::Arc;
use std::time::Duration;

const WATCH_EVERY: Duration = Duration::from_millis(200);

pub struct Restartable<A: Actor> {
    current: Arc<RwLock<Addr<A>>>,
}

impl<A: Actor> Clone for Restartable<A> {
    fn clone(&self) -> Self {
        Restartable {
            current: self.current.clone(),
        }
    }
}

impl<A: Actor> Restartable<A> {
    /// The live incarnation's address.
    pub fn addr(&self) -> Addr<A> {
        self.current.read().clone()
    }
}

/// Starts the actor with `start` and keeps it running; must run inside the actix system.
pub fn supervise<A, F>(name: impl Into<String>, start: F) -> Restartable<A>
where
    A: Actor,
    F: Fn() -> Addr<A> + 'static,
{
    let handle = Restartable {
        current: Arc::new(RwLock::new(start())),
    };
    let watched = handle.clone();
    let name = name.into();
    actix::spawn(async move {
        loop {
            actix_rt::time::sleep(WATCH_EVERY).await;
            if !watched.addr().connected() {
                log::error!("{name} stopped unexpectedly; restarting it with its state reloaded from the store");
                *watched.current.write() = start();
            }
        }
    });
    handle
}
