//! QUIC between nodes: one quinn endpoint per node, node identity, pinned
//! mutual TLS (DESIGN.md, "Replication" step 1).
//!
//! An [`Endpoint`] listens and dials on one UDP socket (a node that does
//! not listen gets a dial-only one, [`Endpoint::dial_only`]). Both ends of every
//! connection prove their node key: each presents a self-signed certificate
//! of its Ed25519 node key, and each accepts only a peer whose [`NodeId`] is
//! in its [`Trust`] list (and, when dialling, is the node it meant to reach).
//! An unknown key never gets past the handshake; [`tls`] has the details.
//!
//! A listening endpoint takes on a bounded number of handshakes, each for
//! [`HANDSHAKE_TIMEOUT`] at most, and asks for address validation (a
//! Retry round trip) past a few handshakes in progress and past a few
//! unproven ones from one address ([`admit`] has the rules): a flood of
//! forged or never-finished Initials cannot keep a trusted peer out. A
//! dial-only endpoint has no server configuration: it begins no
//! handshake, and answers an Initial with a stateless reset at most.
//!
//! A [`Connection`] knows its peer's id and carries bidirectional streams
//! ([`Stream`]: tokio `AsyncRead + AsyncWrite`), which is all
//! [`session::run`](crate::session::run) needs.
//!
//! Left to the caller ([`crate::peers`] does it): when two nodes dial each
//! other at once, both keep the same connection (the one dialled by the
//! lower id), and the other is closed.
//!
//! ```no_run
//! # async fn demo(key: backer_fs::identity::NodeKey, peer: backer_fs::NodeId)
//! # -> backer_replication::quic::Result<()> {
//! use backer_replication::quic::{Endpoint, Trust};
//! use tokio::io::AsyncWriteExt;
//!
//! let trust: Trust = [peer].into_iter().collect();
//! let ep = Endpoint::bind("127.0.0.1:0".parse().unwrap(), &key, trust.clone())?;
//! let conn = ep.connect("127.0.0.1:7000".parse().unwrap(), peer).await?;
//! let mut stream = conn.open_stream().await?;
//! stream.write_all(b"hello").await?;
//! # Ok(()) }
//! ```

mod admit;
pub mod tls;
mod trust;

#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use backer_fs::identity::{NodeId, NodeKey};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, Mutex};

pub use admit::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES, RETRY_ABOVE, UNVALIDATED_PER_ADDRESS};
pub use tls::{Identity, ALPN};
pub use trust::Trust;

/// How often an idle connection sends a keep-alive: well below
/// [`IDLE_TIMEOUT`], so a quiet but healthy connection never times out.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// How long a connection may hear nothing before it is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Finished handshakes waiting for [`Endpoint::accept`].
const ACCEPT_QUEUE: usize = 16;

/// Incoming attempts quinn queues before [`accept_loop`] sees them (it
/// judges each at once), and the bytes they may buffer meanwhile: bounds
/// what a flood costs in memory.
const MAX_INCOMING: usize = 1024;
const INCOMING_BYTES: u64 = 16 << 20;

/// The QUIC error code of a normal close.
const CLOSE_NORMAL: u32 = 0;

/// What can go wrong in the QUIC layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The node's certificate could not be made from its key.
    #[error("cannot make the node certificate: {0}")]
    Certificate(#[source] rcgen::Error),
    /// rustls refused our TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[source] rustls::Error),
    /// quinn refused our TLS configuration (a missing cipher suite).
    #[error("QUIC configuration: {0}")]
    Config(#[source] quinn::crypto::rustls::NoInitialCipherSuite),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: io::Error,
    },
    /// A socket operation failed.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// A connection attempt could not even start.
    #[error("cannot dial {addr}: {source}")]
    Dial {
        /// The address dialled.
        addr: SocketAddr,
        /// Why quinn refused.
        source: quinn::ConnectError,
    },
    /// The handshake failed: unreachable, timed out, or a key that is not
    /// trusted (ours by the peer, or the peer's by us).
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The peer's address.
        addr: SocketAddr,
        /// Why it failed.
        source: quinn::ConnectionError,
    },
    /// After the handshake, the peer's certificate named no node. The
    /// verifiers make this unreachable; it is checked anyway.
    #[error("{addr} has no usable node certificate: {reason}")]
    Identity {
        /// The peer's address.
        addr: SocketAddr,
        /// What was wrong.
        reason: String,
    },
    /// The peer is not the node that was dialled. The client verifier makes
    /// this unreachable; it is checked anyway.
    #[error("expected node {expected} at {addr}, found {actual}")]
    UnexpectedPeer {
        /// The peer's address.
        addr: SocketAddr,
        /// The node dialled.
        expected: NodeId,
        /// The node that answered.
        actual: NodeId,
    },
    /// An established connection failed or was closed.
    #[error("connection: {0}")]
    Connection(#[from] quinn::ConnectionError),
}

/// The result of QUIC operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The transport settings of every connection.
fn transport_config() -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // 30 000 ms fits in a VarInt.
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        IDLE_TIMEOUT.as_millis() as u32,
    ))));
    // Sessions use bidirectional streams only.
    t.max_concurrent_uni_streams(0u32.into());
    t
}

/// A UDP socket bound to `[::]:0` with `IPV6_V6ONLY` off, so that it
/// reaches IPv4 peers too (as `::ffff:a.b.c.d`, which quinn maps to and
/// from). Fails where the system has no IPv6.
fn dual_stack_socket() -> io::Result<std::net::UdpSocket> {
    use std::os::fd::{FromRawFd, OwnedFd};
    #[cfg(target_os = "linux")]
    let kind = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC;
    #[cfg(not(target_os = "linux"))]
    let kind = libc::SOCK_DGRAM;
    // SAFETY: socket(2) with constant arguments; the fd is checked below.
    let fd = unsafe { libc::socket(libc::AF_INET6, kind, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new socket that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // Without SOCK_CLOEXEC, set it at once: a child we spawn (fusermount)
    // must not inherit the socket.
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: fcntl on a valid fd with an int flag argument.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let off: libc::c_int = 0;
    // SAFETY: a valid socket fd and a c_int option value of the right size.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&off as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: all-zero is a valid sockaddr_in6 (`::`, port 0).
    let mut any: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    any.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    // SAFETY: `any` is a sockaddr_in6 and the length says so.
    let bound = unsafe {
        libc::bind(
            fd,
            (&any as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(std::net::UdpSocket::from(owned))
}

/// The socket buffer size asked for: a 32 MiB pull window arrives in
/// bursts, and the kernel's default (about 200 KiB) dropped datagrams at
/// the receiver, which QUIC then sent again (bench/sync.sh: up to 2x the
/// bytes of a 1 MiB change).
const SOCKET_BUFFER: libc::c_int = 8 << 20;

/// Raises the socket's receive and send buffers: past the system's cap
/// where the process may (root, Linux), else up to it. Best effort.
fn grow_buffers(socket: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let set = |opt: libc::c_int| -> bool {
        let v = SOCKET_BUFFER;
        // SAFETY: a valid socket fd and a c_int option value of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
        }
    };
    #[cfg(target_os = "linux")]
    let (rcv_force, snd_force) = (set(libc::SO_RCVBUFFORCE), set(libc::SO_SNDBUFFORCE));
    #[cfg(not(target_os = "linux"))]
    let (rcv_force, snd_force) = (false, false);
    if !rcv_force {
        set(libc::SO_RCVBUF);
    }
    if !snd_force {
        set(libc::SO_SNDBUF);
    }
}

/// A node's QUIC endpoint: one UDP socket that both accepts connections
/// from trusted peers and dials them (or, made by
/// [`dial_only`](Endpoint::dial_only), only dials).
///
/// Incoming handshakes run concurrently in the background; [`accept`]
/// hands out their results in the order they finish. Dropping the endpoint
/// stops accepting; [`close`](Endpoint::close) also closes every connection.
///
/// [`accept`]: Endpoint::accept
#[derive(Debug)]
pub struct Endpoint {
    /// The quinn endpoint.
    inner: quinn::Endpoint,
    /// Our certificate and key, for each dial's TLS config.
    identity: Identity,
    /// The trust list shared with the server-side verifier.
    trust: Trust,
    /// The transport settings of every connection.
    transport: Arc<quinn::TransportConfig>,
    /// Results of incoming handshakes.
    incoming: Mutex<mpsc::Receiver<Result<Connection>>>,
    /// The background task that accepts and handshakes (none when the
    /// endpoint only dials).
    acceptor: Option<tokio::task::AbortHandle>,
}

impl Endpoint {
    /// Binds a UDP socket at `addr` (port 0 picks a free one) and listens
    /// for peers in `trust`, as the node whose key is `key`. `trust` is
    /// shared: later changes to it apply to later handshakes, incoming and
    /// outgoing.
    ///
    /// Must be called within a Tokio runtime.
    pub fn bind(addr: SocketAddr, key: &NodeKey, trust: Trust) -> Result<Endpoint> {
        let identity = Identity::new(key)?;
        let transport = Arc::new(transport_config());
        let crypto = QuicServerConfig::try_from(tls::server_config(&identity, trust.clone())?)
            .map_err(Error::Config)?;
        let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server
            .transport_config(transport.clone())
            .max_incoming(MAX_INCOMING)
            .incoming_buffer_size_total(INCOMING_BYTES);
        let socket =
            std::net::UdpSocket::bind(addr).map_err(|source| Error::Bind { addr, source })?;
        Endpoint::over(socket, Some(server), identity, trust, transport)
    }

    /// An endpoint that only dials out, for a node that was not told to
    /// listen: one wildcard socket on a port of the system's choice,
    /// dual-stack where IPv6 is available (IPv4 peers reached through
    /// mapped addresses), else IPv4 only. A peer on any interface is then
    /// reachable without a restart (a socket bound to 127.0.0.1 can only
    /// reach loopback: every other send fails with EINVAL). It has no
    /// server configuration, so quinn begins no incoming handshake: an
    /// Initial gets at most a stateless reset, a short-header packet that
    /// begins nothing and is rate-limited (tests/it/quic_flood.rs checks).
    ///
    /// Must be called within a Tokio runtime.
    pub fn dial_only(key: &NodeKey, trust: Trust) -> Result<Endpoint> {
        let identity = Identity::new(key)?;
        let transport = Arc::new(transport_config());
        let socket = match dual_stack_socket() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "no dual-stack socket; dialling over IPv4 only");
                let addr = SocketAddr::from(([0, 0, 0, 0], 0));
                std::net::UdpSocket::bind(addr).map_err(|source| Error::Bind { addr, source })?
            }
        };
        Endpoint::over(socket, None, identity, trust, transport)
    }

    /// The endpoint over a bound `socket`; accepting peers only with a
    /// `server` configuration.
    fn over(
        socket: std::net::UdpSocket,
        server: Option<quinn::ServerConfig>,
        identity: Identity,
        trust: Trust,
        transport: Arc<quinn::TransportConfig>,
    ) -> Result<Endpoint> {
        let addr = socket.local_addr()?;
        grow_buffers(&socket);
        socket
            .set_nonblocking(true)
            .map_err(|source| Error::Bind { addr, source })?;
        let listens = server.is_some();
        let inner = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            server,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| Error::Bind { addr, source })?;
        // A dial-only endpoint's sender is dropped at once: `accept` ends.
        let (tx, rx) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = listens.then(|| tokio::spawn(accept_loop(inner.clone(), tx)).abort_handle());
        tracing::debug!(
            node = %identity.id(),
            addr = ?inner.local_addr().ok(),
            listens,
            "QUIC endpoint bound"
        );
        Ok(Endpoint {
            inner,
            identity,
            trust,
            transport,
            incoming: Mutex::new(rx),
            acceptor,
        })
    }

    /// Whether this endpoint accepts incoming connections (it was made by
    /// [`bind`](Endpoint::bind), not [`dial_only`](Endpoint::dial_only)).
    pub fn listens(&self) -> bool {
        self.acceptor.is_some()
    }

    /// The address the socket is bound to (with the real port when bound
    /// to port 0).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.inner.local_addr()?)
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.identity.id()
    }

    /// The trust list this endpoint checks (shared: changes apply to the
    /// next handshake).
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    /// Dials the node `expected` at `addr`. Fails unless the peer proves it
    /// holds the key of `expected` and `expected` is trusted.
    ///
    /// If the peer does not trust *our* key, this may still return a
    /// connection (a TLS 1.3 client finishes its side of the handshake
    /// before the server has checked its certificate), which the peer
    /// closes at once: its first stream operation fails, and no data ever
    /// reaches the peer.
    pub async fn connect(&self, addr: SocketAddr, expected: NodeId) -> Result<Connection> {
        let crypto = QuicClientConfig::try_from(tls::client_config(
            &self.identity,
            self.trust.clone(),
            expected,
        )?)
        .map_err(Error::Config)?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(self.transport.clone());
        let connecting = self
            .inner
            .connect_with(config, addr, tls::SERVER_NAME)
            .map_err(|source| Error::Dial { addr, source })?;
        let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
            .await
            .unwrap_or(Err(quinn::ConnectionError::TimedOut))
            .map_err(|source| Error::Handshake { addr, source })?;
        let conn = Connection::new(conn)?;
        if conn.peer != expected {
            conn.close("unexpected peer");
            return Err(Error::UnexpectedPeer {
                addr,
                expected,
                actual: conn.peer,
            });
        }
        tracing::debug!(node = %conn.peer, %addr, "connected");
        Ok(conn)
    }

    /// The next incoming connection whose handshake finished: `Ok` with a
    /// trusted peer, or `Err` for an attempt that failed (an untrusted key,
    /// a timeout...; already logged). Keep calling after an `Err`. `None`
    /// once the endpoint is closed.
    pub async fn accept(&self) -> Option<Result<Connection>> {
        self.incoming.lock().await.recv().await
    }

    /// Closes every connection and the socket, and waits (briefly) until
    /// the peers have been told.
    pub async fn close(&self) {
        if let Some(a) = &self.acceptor {
            a.abort();
        }
        self.inner.close(CLOSE_NORMAL.into(), b"endpoint closed");
        self.inner.wait_idle().await;
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        // The accept task holds a handle to the quinn endpoint: without
        // this, the socket would outlive us.
        if let Some(a) = &self.acceptor {
            a.abort();
        }
    }
}

/// Accepts incoming connections, runs each handshake it takes on in its
/// own task ([`admit`] decides which: a Retry, a refusal or a slot) and
/// sends the results to `tx`, until the endpoint closes or nobody listens.
async fn accept_loop(ep: quinn::Endpoint, tx: mpsc::Sender<Result<Connection>>) {
    let admission = admit::Admission::default();
    while let Some(incoming) = ep.accept().await {
        if tx.is_closed() {
            break;
        }
        let addr = incoming.remote_address();
        let slot = match admission.judge(addr.ip(), incoming.remote_address_validated()) {
            admit::Verdict::Accept(slot) => slot,
            admit::Verdict::Retry => {
                tracing::trace!(%addr, "asking a client to prove its address (Retry)");
                // Only an attempt that already bears a Retry token cannot
                // be retried, and those are validated: never here.
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
                continue;
            }
            admit::Verdict::Refuse => {
                if let Some(n) = admission.refused() {
                    tracing::warn!(
                        %addr,
                        refused = n,
                        "refusing connections: {MAX_HANDSHAKES} handshakes in progress"
                    );
                }
                incoming.refuse();
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let result = handshake(incoming).await;
            // The slot is free once the handshake has ended, however.
            drop(slot);
            if let Err(e) = &result {
                tracing::debug!(%addr, "incoming handshake failed: {e}");
            }
            // A connection nobody takes is dropped, which closes it.
            let _ = tx.send(result).await;
        });
    }
}

/// Runs the server side of one handshake, for [`HANDSHAKE_TIMEOUT`] at
/// most (dropping a handshake that times out abandons it).
async fn handshake(incoming: quinn::Incoming) -> Result<Connection> {
    let addr = incoming.remote_address();
    let connecting = incoming
        .accept()
        .map_err(|source| Error::Handshake { addr, source })?;
    let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting)
        .await
        .unwrap_or(Err(quinn::ConnectionError::TimedOut))
        .map_err(|source| Error::Handshake { addr, source })?;
    let conn = Connection::new(conn)?;
    tracing::debug!(node = %conn.peer, %addr, "accepted");
    Ok(conn)
}

/// A connection to a trusted peer whose key was proven in the handshake.
///
/// Clones share the connection; when the last one is dropped, it closes.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The quinn connection.
    inner: quinn::Connection,
    /// The peer's id, from its certificate.
    peer: NodeId,
}

impl Connection {
    /// Wraps a connection whose handshake finished, reading the peer's id
    /// from its certificate.
    fn new(inner: quinn::Connection) -> Result<Connection> {
        let addr = inner.remote_address();
        let fail = |reason: String| {
            inner.close(CLOSE_NORMAL.into(), b"no node certificate");
            Err(Error::Identity { addr, reason })
        };
        let Some(identity) = inner.peer_identity() else {
            return fail("no certificate".into());
        };
        let Ok(certs) = identity.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        else {
            return fail("not an X.509 certificate chain".into());
        };
        let peer = match certs.as_slice() {
            [cert] => match tls::peer_id(cert) {
                Ok(id) => id,
                Err(e) => return fail(e.to_string()),
            },
            chain => return fail(format!("{} certificates", chain.len())),
        };
        Ok(Connection { inner, peer })
    }

    /// The peer's node id, proven by the handshake.
    pub fn peer(&self) -> NodeId {
        self.peer
    }

    /// The peer's current address.
    pub fn remote_addr(&self) -> SocketAddr {
        self.inner.remote_address()
    }

    /// Opens a bidirectional stream. The peer's
    /// [`accept_stream`](Connection::accept_stream) sees it only once
    /// something is written on it.
    pub async fn open_stream(&self) -> Result<Stream> {
        let (send, recv) = self.inner.open_bi().await?;
        Ok(Stream { recv, send })
    }

    /// Waits for the peer to open a bidirectional stream.
    pub async fn accept_stream(&self) -> Result<Stream> {
        let (send, recv) = self.inner.accept_bi().await?;
        Ok(Stream { recv, send })
    }

    /// Closes the connection at once, telling the peer `reason` (kept
    /// short: it is sent in one packet). Data not yet delivered is lost:
    /// close after the peer has what it needs.
    pub fn close(&self, reason: &str) {
        self.inner.close(CLOSE_NORMAL.into(), reason.as_bytes());
    }

    /// Waits until the connection is closed, by either side or a timeout,
    /// and says why.
    pub async fn closed(&self) -> Error {
        Error::Connection(self.inner.closed().await)
    }
}

/// One bidirectional QUIC stream as a tokio byte stream.
///
/// Shutting down the write half (`AsyncWriteExt::shutdown`), or dropping
/// the stream, finishes the sending side: the peer reads end-of-file.
#[derive(Debug)]
pub struct Stream {
    /// Bytes from the peer.
    recv: quinn::RecvStream,
    /// Bytes to the peer.
    send: quinn::SendStream,
}

impl AsyncRead for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}
