//! Starting and stopping the server: the actix system, the actors, the listener, and our
//! own signal handling (registered before "listening" is logged), then a graceful end that
//! lets in-flight streams and a refresh in flight finish and flushes the store.

use crate::actors::supervisor;
use crate::admin_token;
use crate::config::Config;
use actix_web::{web, App, HttpServer};

pub fn serve(config: Config) -> Result<(), String> {
    crate::upstream::h1::install_crypto_provider();
    let token = admin_token::resolve(&config.admin).map_err(|e| e.to_string())?;
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let services = supervisor::start(config, token).map_err(|e| e.to_string())?;
        let backend = services.backend.clone();
        let refresher = services.refresher.clone();
        let data = web::Data::new(services);
        let cfg = data.config.clone();
        let workers = match cfg.server.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let server = HttpServer::new(move || {
            // Runs on each worker thread: its idle upstream connections get closed.
            crate::upstream::h1::start_reaper();
            // And hands its freed memory back once it goes quiet.
            crate::worker_memory::start_watch();
            App::new()
                .app_data(data.clone())
                .configure(super::configure)
        })
        .workers(workers)
        .tcp_nodelay(true)
        .keep_alive(cfg.server.keep_alive.get()) // zero: one answer per connection
        .backlog(4096)
        .max_connection_rate(4096)
        .disable_signals()
        // actix counts whole seconds: rounded up, so a stream is never cut before the grace.
        .shutdown_timeout(grace_secs(cfg.server.shutdown_grace.get()))
        .bind(&cfg.server.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.server.listen))?;
        let addrs = server.addrs();
        let running = server.run();
        let handle = running.handle();
        let signal = super::shutdown::watch_signals(handle, refresher.clone())?;
        for addr in addrs {
            log::info!(
                "claude-route {} listening on http://{addr}",
                env!("CARGO_PKG_VERSION")
            );
        }
        let result = running.await.map_err(|e| format!("server stopped: {e}"));
        super::shutdown::finish_refresh(&refresher, signal, cfg.server.shutdown_grace.get()).await;
        match backend.flush().await {
            Ok(()) => log::info!("store flushed; bye"),
            Err(e) => log::error!("store flush at shutdown failed: {e}"),
        }
        result
    })
}

/// The shutdown grace in the whole seconds actix takes, never shorter than configured.
fn grace_secs(grace: std::time::Duration) -> u64 {
    u64::try_from(grace.as_millis().div_ceil(1000).max(1)).unwrap_or(u64::MAX)
}
