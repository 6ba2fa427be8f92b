//! One awc client per worker thread (awc's `Client` is not `Send`), with TCP_NODELAY on
//! every upstream socket so small SSE events are never held back by Nagle.

use crate::config::UpstreamConfig;
use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection, ConnectorService};
use actix_web::http::Uri;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// The default resolver + TCP connector, with TCP_NODELAY set once connected.
#[derive(Clone, Default)]
pub struct NodelayConnector {
    inner: ConnectorService,
}

type TcpConnection = Connection<Uri, actix_rt::net::TcpStream>;

impl Service<ConnectInfo<Uri>> for NodelayConnector {
    type Response = TcpConnection;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<TcpConnection, ConnectError>>>>;

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Service::<ConnectInfo<Uri>>::poll_ready(&self.inner, cx)
    }

    fn call(&self, req: ConnectInfo<Uri>) -> Self::Future {
        let connecting = self.inner.call(req);
        Box::pin(async move {
            let conn = connecting.await?;
            if let Err(e) = conn.io_ref().set_nodelay(true) {
                log::debug!("could not set TCP_NODELAY upstream: {e}");
            }
            Ok(conn)
        })
    }
}

/// Makes ring the process's TLS crypto provider; called once at start-up.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is just as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// `reuse`: keep answered connections for later requests (the pooled client), or never
/// hand out a connection twice (the client that sends a request again after a hang-up).
fn build(cfg: &UpstreamConfig, reuse: bool) -> awc::Client {
    let mut connector = awc::Connector::new()
        .connector(NodelayConnector::default())
        .rustls_0_23(tls_config())
        .timeout(cfg.connect_timeout.get())
        // Streams are long-lived: never cap concurrent upstream connections here.
        .limit(0);
    if !reuse {
        connector = connector.conn_keep_alive(Duration::ZERO);
    }
    awc::Client::builder()
        .connector(connector)
        .timeout(cfg.response_timeout.get())
        .disable_redirects()
        .no_default_headers()
        .finish()
}

thread_local! {
    /// This worker's client and when it was last handed out.
    static CLIENT: RefCell<Option<(awc::Client, Instant)>> = const { RefCell::new(None) };
    /// This worker's client for requests that must go out on a new connection.
    static FRESH: RefCell<Option<awc::Client>> = const { RefCell::new(None) };
    static REAPER: Cell<bool> = const { Cell::new(false) };
}

/// This worker's client, built on first use.
pub fn client(cfg: &UpstreamConfig) -> awc::Client {
    CLIENT.with(|cell| {
        let mut slot = cell.borrow_mut();
        let (client, used) = slot.get_or_insert_with(|| (build(cfg, true), Instant::now()));
        *used = Instant::now();
        client.clone()
    })
}

/// A client whose every request opens a new connection, for sending a request again after
/// Claude hung up a pooled one (`upstream::unanswered`); send with `force_close` so the
/// connection is not kept either.
pub fn fresh_connection_client(cfg: &UpstreamConfig) -> awc::Client {
    FRESH.with(|cell| {
        cell.borrow_mut()
            .get_or_insert_with(|| build(cfg, false))
            .clone()
    })
}

/// awc keeps idle pooled connections until the next request asks for one, so after a peak
/// of streams their sockets and buffers would stay forever. Once per worker, a timer drops
/// the client after `idle` without requests; requests still in flight keep their own
/// connection, and the next request builds a fresh client.
pub fn start_idle_reaper(idle: Duration) {
    if REAPER.with(|r| r.replace(true)) {
        return;
    }
    actix_rt::spawn(async move {
        // Checked four times per `idle`: the client goes at most a quarter of `idle` late.
        let mut tick = actix_rt::time::interval(idle / 4);
        loop {
            tick.tick().await;
            let dropped = CLIENT.with(|cell| {
                let mut slot = cell.borrow_mut();
                let stale = slot
                    .as_ref()
                    .is_some_and(|(_, used)| used.elapsed() >= idle);
                if stale {
                    *slot = None;
                    FRESH.with(|fresh| fresh.borrow_mut().take());
                }
                stale
            });
            if dropped {
                crate::allocator::give_back_freed_memory();
            }
        }
    });
}
