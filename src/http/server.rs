//! Starting and stopping the server: the actix system, the actors, the listener, and a
//! graceful end that flushes the store.

use crate::actors::supervisor;
use crate::admin_token;
use crate::config::Config;
use actix_web::{web, App, HttpServer};

pub fn serve(config: Config) -> Result<(), String> {
    crate::upstream::client::install_crypto_provider();
    let token = admin_token::resolve(&config.admin).map_err(|e| e.to_string())?;
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let services = supervisor::start(config, token).map_err(|e| e.to_string())?;
        let backend = services.backend.clone();
        let data = web::Data::new(services);
        let cfg = data.config.clone();
        let workers = match cfg.server.workers {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .configure(super::configure)
        })
        .workers(workers)
        .tcp_nodelay(true)
        .backlog(4096)
        .max_connection_rate(4096)
        .shutdown_timeout(cfg.server.shutdown_grace.get().as_secs().max(1))
        .bind(&cfg.server.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", cfg.server.listen))?;
        for addr in server.addrs() {
            log::info!(
                "claude-route {} listening on http://{addr}",
                env!("CARGO_PKG_VERSION")
            );
        }
        let result = server
            .run()
            .await
            .map_err(|e| format!("server stopped: {e}"));
        match backend.flush().await {
            Ok(()) => log::info!("store flushed; bye"),
            Err(e) => log::error!("store flush at shutdown failed: {e}"),
        }
        result
    })
}
