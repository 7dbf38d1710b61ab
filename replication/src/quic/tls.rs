//! Pinned mutual TLS for QUIC: the node's certificate and the verifiers that
//! let only trusted node keys through the handshake.
//!
//! Each node presents one self-signed X.509 certificate made from its own
//! Ed25519 node key ([`certificate`]). Nobody checks issuers, names or
//! dates: a peer is who its key says it is. Both sides run the same
//! [`PeerVerifier`], as a rustls server verifier on the client and a client
//! verifier on the server. It
//!
//! 1. refuses any chain of more than one certificate;
//! 2. takes the Ed25519 public key out of the certificate and derives the
//!    peer's [`NodeId`] from it ([`peer_id`]);
//! 3. accepts the id only if it is in the [`Trust`] list (read at each
//!    handshake, so `peer add` takes effect without a restart) and, on the
//!    dialling side, equals the id the caller meant to reach;
//! 4. still verifies the TLS 1.3 handshake signature with rustls'
//!    [`verify_tls13_signature`](rustls::crypto::verify_tls13_signature):
//!    a certificate is public, so only that signature proves the peer holds
//!    the private key.
//!
//! Only TLS 1.3, only Ed25519, one ALPN ([`ALPN`]). A refused key is logged
//! with `tracing::warn!` and its node id.

use std::fmt;
use std::sync::Arc;

use backer_fs::identity::{NodeId, NodeKey};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, PeerIncompatible,
    SignatureScheme,
};

use super::{Error, Result, Trust};

/// The one application protocol both sides must offer.
pub const ALPN: &[u8] = b"backer/1";

/// The DNS name in our certificates and the server name a client sends.
/// Nobody checks it: peers are identified by key alone.
pub const SERVER_NAME: &str = "backer";

/// DER of an Ed25519 SubjectPublicKeyInfo up to the key: SEQUENCE {
/// SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) } (RFC 8410).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The crypto provider of every backer TLS config: rustls on ring.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// This node's self-signed certificate for `key`, and the private key for
/// rustls (the same Ed25519 key pair as the node id).
pub fn certificate(key: &NodeKey) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>)> {
    let pkcs8 = PrivatePkcs8KeyDer::from(key.pkcs8().to_vec());
    let pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519)
        .map_err(Error::Certificate)?;
    let mut params =
        rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).map_err(Error::Certificate)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, key.node_id().to_string());
    let cert = params.self_signed(&pair).map_err(Error::Certificate)?;
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(pkcs8)))
}

/// What a node shows in every handshake: its certificate and key, made
/// once from its [`NodeKey`].
pub struct Identity {
    /// The node these belong to.
    id: NodeId,
    /// The self-signed certificate ([`certificate`]).
    cert: CertificateDer<'static>,
    /// The node key, PKCS#8.
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// The identity of the node whose key is `key`.
    pub fn new(key: &NodeKey) -> Result<Identity> {
        let (cert, private) = certificate(key)?;
        Ok(Identity {
            id: key.node_id(),
            cert,
            key: private,
        })
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The node's certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id.to_string())
            .finish_non_exhaustive()
    }
}

/// Why a certificate names no node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// More than one certificate was presented; we accept exactly one.
    #[error("expected one self-signed certificate, got a chain of {0}")]
    Chain(usize),
    /// The certificate is not well-formed X.509.
    #[error("the certificate is not valid X.509: {0}")]
    Malformed(String),
    /// The certificate's key is not an Ed25519 key.
    #[error("the certificate's key is not an Ed25519 node key")]
    NotEd25519,
    /// The certificate is well-formed, but its node is not in the trust list.
    #[error("node {0} is not trusted")]
    Untrusted(NodeId),
    /// The peer is trusted but is not the node the caller dialled.
    #[error("expected node {expected}, the peer is {actual}")]
    Unexpected {
        /// The node the caller meant to reach.
        expected: NodeId,
        /// The node that answered.
        actual: NodeId,
    },
}

impl From<CertError> for rustls::Error {
    fn from(e: CertError) -> rustls::Error {
        let kind = match e {
            CertError::Malformed(_) => CertificateError::BadEncoding,
            // Sent to the peer as an access_denied alert.
            CertError::Untrusted(_) | CertError::Unexpected { .. } => {
                CertificateError::ApplicationVerificationFailure
            }
            e => CertificateError::Other(OtherError(Arc::new(e))),
        };
        rustls::Error::InvalidCertificate(kind)
    }
}

/// The node id of the Ed25519 key in `cert` (blake3 of the public key, as
/// [`NodeKey::node_id`]). Checks the certificate's structure only: whether
/// its owner holds the key is the handshake signature's job.
pub fn peer_id(cert: &CertificateDer<'_>) -> std::result::Result<NodeId, CertError> {
    let parsed =
        webpki::EndEntityCert::try_from(cert).map_err(|e| CertError::Malformed(e.to_string()))?;
    let spki = parsed.subject_public_key_info();
    let key = spki
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .and_then(|k| <&[u8; 32]>::try_from(k).ok())
        .ok_or(CertError::NotEd25519)?;
    Ok(NodeId::from_public_key(key))
}

/// Which end of the handshake a verifier checks: the words for its logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Runs on the server, checks the dialling client.
    Client,
    /// Runs on the client, checks the server it dialled.
    Server,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Client => "incoming",
            Role::Server => "dialled",
        })
    }
}

/// The rustls verifier of both sides: one certificate, an Ed25519 key whose
/// node id is trusted (and expected, when dialling), and a valid TLS 1.3
/// handshake signature. See the module documentation.
pub struct PeerVerifier {
    /// The shared, live trust list.
    trust: Trust,
    /// On the dialling side: the node the caller meant to reach.
    expected: Option<NodeId>,
    /// Which peer this verifier checks (for logs).
    role: Role,
    /// The signature algorithms of the ring provider.
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("trust", &self.trust)
            .field("expected", &self.expected)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

impl PeerVerifier {
    /// The server's verifier of dialling clients: any trusted node.
    pub fn for_clients(trust: Trust) -> PeerVerifier {
        PeerVerifier::new(trust, None, Role::Client)
    }

    /// A client's verifier of the server it dials: a trusted node that is
    /// `expected`.
    pub fn for_server(trust: Trust, expected: NodeId) -> PeerVerifier {
        PeerVerifier::new(trust, Some(expected), Role::Server)
    }

    fn new(trust: Trust, expected: Option<NodeId>, role: Role) -> PeerVerifier {
        PeerVerifier {
            trust,
            expected,
            role,
            algorithms: provider().signature_verification_algorithms,
        }
    }

    /// Checks the presented chain and returns the peer's id, logging why a
    /// peer is refused.
    pub fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> std::result::Result<NodeId, CertError> {
        let role = self.role;
        if !intermediates.is_empty() {
            let e = CertError::Chain(intermediates.len() + 1);
            tracing::warn!("refusing a {role} peer: {e}");
            return Err(e);
        }
        let id = peer_id(end_entity).inspect_err(|e| {
            tracing::warn!("refusing a {role} peer: {e}");
        })?;
        if !self.trust.contains(&id) {
            tracing::warn!(node = %id, "refusing {role} node {id}: its key is not trusted");
            return Err(CertError::Untrusted(id));
        }
        if let Some(expected) = self.expected {
            if expected != id {
                tracing::warn!(
                    node = %id,
                    "refusing {role} node {id}: expected node {expected}"
                );
                return Err(CertError::Unexpected {
                    expected,
                    actual: id,
                });
            }
        }
        Ok(id)
    }

    /// The handshake signature check of both traits: rustls' own TLS 1.3
    /// verification with the ring provider's algorithms.
    fn signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms).inspect_err(
            |e| {
                let role = self.role;
                let who = peer_id(cert).map_or_else(|_| "?".to_string(), |id| id.to_string());
                tracing::warn!(node = %who, "refusing {role} node {who}: bad handshake signature: {e}");
            },
        )
    }
}

/// The handshake signature methods that [`ServerCertVerifier`] and
/// [`ClientCertVerifier`] both require, with the same meaning: TLS 1.2 is
/// never offered, TLS 1.3 signatures go to [`PeerVerifier::signature`],
/// and node keys are Ed25519 only.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            Err(PeerIncompatible::Tls12NotOffered.into())
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
            self.signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    };
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

impl ClientCertVerifier for PeerVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        self.check(end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    handshake_signatures!();
}

/// The rustls server config of node `me`: TLS 1.3, [`ALPN`], its certificate,
/// and client certificates required and checked against `trust`.
pub fn server_config(me: &Identity, trust: Trust) -> Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::Tls)?
        .with_client_cert_verifier(Arc::new(PeerVerifier::for_clients(trust)))
        .with_single_cert(vec![me.cert.clone()], me.key.clone_key())
        .map_err(Error::Tls)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The rustls client config for dialling `expected`: TLS 1.3, [`ALPN`],
/// `me`'s certificate as client certificate, and the server checked
/// against `trust` and `expected`.
pub fn client_config(
    me: &Identity,
    trust: Trust,
    expected: NodeId,
) -> Result<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(Error::Tls)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PeerVerifier::for_server(trust, expected)))
        .with_client_auth_cert(vec![me.cert.clone()], me.key.clone_key())
        .map_err(Error::Tls)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn the_certificate_names_the_node_key() {
        let key = NodeKey::generate().unwrap();
        let (cert, private) = certificate(&key).unwrap();
        assert_eq!(peer_id(&cert).unwrap(), key.node_id());
        assert_eq!(private.secret_der(), key.pkcs8());
        // A fresh certificate from the same key names the same node.
        let (again, _) = certificate(&key).unwrap();
        assert_eq!(peer_id(&again).unwrap(), key.node_id());
    }

    #[test]
    fn garbage_and_other_key_types_name_no_node() {
        assert!(matches!(
            peer_id(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])),
            Err(CertError::Malformed(_))
        ));
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()])
            .unwrap()
            .self_signed(&p256)
            .unwrap();
        assert_eq!(peer_id(cert.der()), Err(CertError::NotEd25519));
    }

    #[test]
    fn only_one_trusted_expected_certificate_passes() {
        let (a, b) = (NodeKey::generate().unwrap(), NodeKey::generate().unwrap());
        let (ca, _) = certificate(&a).unwrap();
        let (cb, _) = certificate(&b).unwrap();
        let trust = Trust::new();
        let server_side = PeerVerifier::for_clients(trust.clone());
        let client_side = PeerVerifier::for_server(trust.clone(), a.node_id());
        let now = UnixTime::now();
        let name = ServerName::try_from(SERVER_NAME).unwrap();

        assert_eq!(
            server_side.check(&ca, &[]),
            Err(CertError::Untrusted(a.node_id()))
        );
        assert!(server_side.verify_client_cert(&ca, &[], now).is_err());
        trust.add(a.node_id());
        assert!(server_side.verify_client_cert(&ca, &[], now).is_ok());
        assert!(client_side
            .verify_server_cert(&ca, &[], &name, &[], now)
            .is_ok());
        // A chain is refused even when every certificate in it is trusted.
        trust.add(b.node_id());
        assert_eq!(
            server_side.check(&ca, std::slice::from_ref(&cb)),
            Err(CertError::Chain(2))
        );
        assert!(client_side
            .verify_server_cert(&ca, std::slice::from_ref(&cb), &name, &[], now)
            .is_err());
        // Trusted, but not the node the client dialled.
        assert_eq!(
            client_side.check(&cb, &[]),
            Err(CertError::Unexpected {
                expected: a.node_id(),
                actual: b.node_id()
            })
        );
        trust.remove(&a.node_id());
        assert!(server_side.verify_client_cert(&ca, &[], now).is_err());
        assert_eq!(
            ServerCertVerifier::supported_verify_schemes(&client_side),
            vec![SignatureScheme::ED25519]
        );
    }

    /// A `tracing` writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_untrusted_key_is_logged_with_its_id() {
        let key = NodeKey::generate().unwrap();
        let (cert, _) = certificate(&key).unwrap();
        let buf = Buf::default();
        let writer = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let _ = PeerVerifier::for_clients(Trust::new()).check(&cert, &[]);
        });
        let log = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("WARN"), "{log}");
        assert!(log.contains(&key.node_id().to_string()), "{log}");
    }
}
