//! The graceful end (SPEC §15): on SIGTERM/SIGINT the listener closes and no refresh starts;
//! in-flight requests and a refresh in flight finish within one grace period counted from the
//! signal, so a rotated refresh token is saved before the store's last flush.

use crate::actors::refresh::{RefreshCoordinator, StopRefreshing};
use crate::actors::restartable::Restartable;
use actix_web::dev::ServerHandle;
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;

/// Learns when the shutdown signal came, if one did.
pub struct SignalTime(oneshot::Receiver<Instant>);

/// Watches SIGTERM and SIGINT (registered at once); on either, stops new refreshes and
/// stops the HTTP server gracefully.
pub fn watch_signals(
    server: ServerHandle,
    refresher: Restartable<RefreshCoordinator>,
) -> Result<SignalTime, String> {
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|e| format!("cannot watch SIGINT: {e}"))?;
    let (seen, time) = oneshot::channel();
    actix::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        let _ = seen.send(Instant::now());
        log::info!("{name}: no new connections; letting in-flight requests finish");
        refresher.addr().do_send(StopRefreshing);
        server.stop(true).await;
    });
    Ok(SignalTime(time))
}

/// After the HTTP server stopped: waits until a refresh in flight has saved its outcome, at
/// most until the grace that began with the signal ends.
pub async fn finish_refresh(
    refresher: &Restartable<RefreshCoordinator>,
    signal: SignalTime,
    grace: Duration,
) {
    let mut signal = signal.0;
    let began = signal.try_recv().unwrap_or_else(|_| Instant::now());
    let deadline = tokio::time::Instant::from_std(began + grace);
    match tokio::time::timeout_at(deadline, refresher.addr().send(StopRefreshing)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => log::warn!("refresh coordinator unreachable at shutdown: {e}"),
        Err(_) => log::error!(
            "the shutdown grace ended during a refresh; if the token endpoint rotated that \
             account's tokens, the new pair is lost and the account needs a new credential file"
        ),
    }
}
