//! A raw QUIC client for the attack tests: well-formed QUIC v1 Initials
//! (quinn-proto's client side makes them, and is never driven further, so
//! no handshake ever completes), sent from plain UDP sockets, and a look at
//! the first byte of what comes back.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backer_fs::identity::NodeKey;
use backer_replication::quic::{tls, Identity, Trust};
use quinn::crypto::rustls::QuicClientConfig;

/// Makes Initials of new connection attempts, each with its own
/// connection ids.
pub(crate) struct Initials {
    endpoint: quinn_proto::Endpoint,
    config: quinn::ClientConfig,
}

impl Initials {
    pub(crate) fn new() -> Initials {
        let key = NodeKey::generate().unwrap();
        let identity = Identity::new(&key).unwrap();
        let tls = tls::client_config(&identity, Trust::new(), key.node_id()).unwrap();
        let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
        let endpoint = quinn_proto::Endpoint::new(
            Arc::new(quinn_proto::EndpointConfig::default()),
            None,
            false,
            None,
        );
        Initials { endpoint, config }
    }

    /// The first datagram (a padded Initial with a TLS ClientHello) of a
    /// new attempt to reach `server`.
    pub(crate) fn next(&mut self, server: SocketAddr) -> Vec<u8> {
        let now = Instant::now();
        let (_, mut conn) = self
            .endpoint
            .connect(now, self.config.clone(), server, tls::SERVER_NAME)
            .unwrap();
        let mut buf = Vec::new();
        let sent = conn.poll_transmit(now, 1, &mut buf).expect("an Initial");
        buf.truncate(sent.size);
        assert_eq!(kind(&buf), Packet::Initial);
        buf
    }
}

/// What a datagram starts with, from its first byte (and the version
/// field of a long header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Packet {
    Initial,
    ZeroRtt,
    Handshake,
    Retry,
    VersionNegotiation,
    /// A short header: a 1-RTT packet or a stateless reset.
    Short,
}

impl Packet {
    /// Whether it has a long header: the start of a handshake (or a
    /// refusal of one), which a node that does not listen must never send.
    pub(crate) fn is_long(self) -> bool {
        self != Packet::Short
    }
}

/// The kind of QUIC v1 packet `datagram` starts with.
pub(crate) fn kind(datagram: &[u8]) -> Packet {
    let first = datagram.first().copied().unwrap_or(0);
    if first & 0x80 == 0 {
        return Packet::Short;
    }
    if datagram.get(1..5) == Some(&[0, 0, 0, 0][..]) {
        return Packet::VersionNegotiation;
    }
    match (first >> 4) & 0x3 {
        0 => Packet::Initial,
        1 => Packet::ZeroRtt,
        2 => Packet::Handshake,
        _ => Packet::Retry,
    }
}

/// A UDP socket on `ip` (any address of 127/8 works on Linux loopback)
/// with a port of the system's choice.
pub(crate) fn socket(ip: Ipv4Addr) -> UdpSocket {
    UdpSocket::bind((ip, 0)).unwrap()
}

/// Every datagram `socket` receives within `wait`.
pub(crate) fn replies(socket: &UdpSocket, wait: Duration) -> Vec<Vec<u8>> {
    let end = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return got;
        }
        socket.set_read_timeout(Some(left)).unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => got.push(buf[..n].to_vec()),
            Err(_) => return got,
        }
    }
}

/// The kind of the first datagram `socket` receives within `wait`.
pub(crate) fn first_reply(socket: &UdpSocket, wait: Duration) -> Option<Packet> {
    socket.set_read_timeout(Some(wait)).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = socket.recv(&mut buf).ok()?;
    Some(kind(&buf[..n]))
}
