//! Impostors: a peer that shows a trusted node's certificate (public
//! knowledge) without holding its key must fail the handshake signature.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use super::*;

/// Always presents one certificate with one key, matching or not.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesClientCert for Fixed {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// `victim`'s certificate with `thief`'s private key.
fn stolen_cert(victim: &NodeKey, thief: &NodeKey) -> Fixed {
    let (cert, _) = tls::certificate(victim).unwrap();
    let (_, private) = tls::certificate(thief).unwrap();
    let signer = tls::provider()
        .key_provider
        .load_private_key(private)
        .unwrap();
    let certified = CertifiedKey::new(vec![cert], signer);
    assert!(certified.keys_match().is_err(), "the keys must differ");
    Fixed(Arc::new(certified))
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn soon<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_with_a_stolen_certificate_is_refused() {
    let (victim, thief, server_key) = (
        NodeKey::generate().unwrap(),
        NodeKey::generate().unwrap(),
        NodeKey::generate().unwrap(),
    );
    let server = Endpoint::bind(
        localhost(),
        &server_key,
        [victim.node_id()].into_iter().collect(),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();

    let mut crypto = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(tls::PeerVerifier::for_server(
            [server_key.node_id()].into_iter().collect(),
            server_key.node_id(),
        )))
        .with_client_cert_resolver(Arc::new(stolen_cert(&victim, &thief)));
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(crypto).unwrap()));
    let client = quinn::Endpoint::client(localhost()).unwrap();

    let (dialled, accepted) = soon(async {
        tokio::join!(
            async {
                let conn = client
                    .connect_with(config, addr, tls::SERVER_NAME)
                    .unwrap()
                    .await?;
                // Finished on our side; the server refuses and closes.
                Err::<(), _>(conn.closed().await)
            },
            server.accept()
        )
    })
    .await;
    let accepted = accepted.unwrap();
    assert!(accepted.is_err(), "the impostor was accepted");
    let err: quinn::ConnectionError = dialled.unwrap_err();
    assert!(
        matches!(err, quinn::ConnectionError::ConnectionClosed(_)),
        "{err}"
    );
    server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_stolen_certificate_is_refused() {
    let (victim, thief, client_key) = (
        NodeKey::generate().unwrap(),
        NodeKey::generate().unwrap(),
        NodeKey::generate().unwrap(),
    );
    let mut crypto = rustls::ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(Arc::new(tls::PeerVerifier::for_clients(
            [client_key.node_id()].into_iter().collect(),
        )))
        .with_cert_resolver(Arc::new(stolen_cert(&victim, &thief)));
    crypto.alpn_protocols = vec![ALPN.to_vec()];
    let config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(crypto).unwrap()));
    let impostor = quinn::Endpoint::server(config, localhost()).unwrap();
    let addr = impostor.local_addr().unwrap();

    let client = Endpoint::bind(
        localhost(),
        &client_key,
        [victim.node_id()].into_iter().collect(),
    )
    .unwrap();
    let (dialled, _) = soon(async {
        tokio::join!(client.connect(addr, victim.node_id()), async {
            let incoming = impostor.accept().await.unwrap();
            incoming.accept().unwrap().await
        })
    })
    .await;
    let err = dialled.unwrap_err();
    assert!(matches!(err, Error::Handshake { .. }), "{err}");
    client.close().await;
}

#[test]
fn keep_alive_is_below_the_idle_timeout() {
    assert!(KEEP_ALIVE * 2 <= IDLE_TIMEOUT);
}

#[test]
fn the_dial_only_socket_is_not_inherited_by_children() {
    use std::os::fd::AsRawFd;
    let Ok(socket) = dual_stack_socket() else {
        return; // no IPv6 here: the IPv4 socket std makes is CLOEXEC
    };
    // SAFETY: F_GETFD on a valid fd.
    let flags = unsafe { libc::fcntl(socket.as_raw_fd(), libc::F_GETFD) };
    assert!(flags >= 0 && flags & libc::FD_CLOEXEC != 0, "{flags:#x}");
}
