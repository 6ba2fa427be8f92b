//! The client over TLS against a local TLS server: it answers when its certificate chains to
//! a trusted root, and is refused when it does not.

use super::conn::{tls_config, TEST_TLS};
use super::{send, Connection, Endpoint, SendError, Timeouts};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CA: &[u8] = include_bytes!("../../../tests/fixtures/tls/ca.der");
const LOCALHOST: &[u8] = include_bytes!("../../../tests/fixtures/tls/localhost.der");
const LOCALHOST_KEY: &[u8] = include_bytes!("../../../tests/fixtures/tls/localhost.key.der");

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    answer: Duration::from_secs(5),
};

const HEAD: &[u8] = b"POST /v1/messages HTTP/1.1\r\nhost: localhost\r\ncontent-length: 2\r\n\r\n";

/// A TLS server on a free port that answers each request on a connection with a chunked body.
async fn tls_server() -> u16 {
    super::install_crypto_provider();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(LOCALHOST.to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(LOCALHOST_KEY.to_vec())),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    actix_rt::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            actix_rt::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = [0u8; 4096];
                while tls.read(&mut request).await.unwrap_or(0) > 0 {
                    let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
                    if tls.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[actix_rt::test]
async fn a_trusted_server_answers_over_tls() {
    let port = tls_server().await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(CA.to_vec())).unwrap();
    TEST_TLS.with(|t| *t.borrow_mut() = Some(tls_config(roots)));
    let endpoint = Endpoint::parse(&format!("https://localhost:{port}")).unwrap();
    for _ in 0..2 {
        let mut answer = send(&endpoint, HEAD, b"{}", TIMEOUTS, Connection::Pooled)
            .await
            .unwrap();
        assert_eq!(answer.status.as_u16(), 200);
        assert_eq!(&answer.read_body(1024).await.unwrap()[..], b"hello");
    }
    TEST_TLS.with(|t| *t.borrow_mut() = None);
}

#[actix_rt::test]
async fn a_server_without_a_trusted_certificate_is_refused() {
    let port = tls_server().await;
    // The public roots, as in production: the test CA is not among them.
    let endpoint = Endpoint::parse(&format!("https://localhost:{port}")).unwrap();
    let e = send(&endpoint, HEAD, b"{}", TIMEOUTS, Connection::Pooled)
        .await
        .err()
        .unwrap();
    assert!(matches!(e, SendError::Connect(..)), "{e}");
    assert!(e.to_string().contains("TLS handshake failed"), "{e}");
    assert!(!e.closed_before_answer());
}
