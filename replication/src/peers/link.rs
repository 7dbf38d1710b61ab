//! The peer manager's tasks: accepting (a few connections per peer, each
//! with its stream in time), dialling with backoff, and one sync session
//! per peer, with the dial dedupe rule and the hello checked against the
//! TLS-proven id.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backer_fs::{chunk, NodeId};
use tokio::sync::{mpsc, oneshot};

use super::first_hello::CheckedHello;
use super::{Active, Shared, FIRST_STREAM_TIMEOUT, GOODBYE, MAX_CONNECTIONS_PER_PEER};
use crate::notify::SessionNotes;
use crate::proto::AbortReason;
use crate::quic::{self, Connection, Endpoint};
use crate::{Channels, Config, Error, Event, HealFeed, Hello, VfsLocal};

/// The longest wait between two dials of an unreachable peer.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The first wait after a failed dial or a dropped connection.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// How long one dial may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a session on every incoming connection until the endpoint closes.
pub(super) async fn accept_loop(shared: Arc<Shared>, endpoint: Arc<Endpoint>) {
    while let Some(incoming) = endpoint.accept().await {
        match incoming {
            Ok(conn) => {
                let peer = conn.peer();
                let Some(held) = Held::take(&shared, peer) else {
                    tracing::debug!(
                        peer = %peer.short(),
                        "closing a connection: {MAX_CONNECTIONS_PER_PEER} from this peer already"
                    );
                    conn.close("too many connections from this node");
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    match first_stream(&conn, conn.accept_stream()).await {
                        Some(stream) => {
                            run_session(shared, conn, stream, peer, peer).await;
                        }
                        None => conn.close("no stream"),
                    }
                    drop(held);
                });
            }
            // Why matters at the source (the TLS verifier warns about
            // untrusted keys); timeouts of floods are noise.
            Err(e) => tracing::debug!(error = %e, "incoming connection failed"),
        }
    }
}

/// The session's stream on `conn` (`open` or accept it), or `None`
/// (logged) if it failed or took over [`FIRST_STREAM_TIMEOUT`].
async fn first_stream(
    conn: &Connection,
    open: impl std::future::Future<Output = quic::Result<quic::Stream>>,
) -> Option<quic::Stream> {
    let peer = conn.peer().short();
    match tokio::time::timeout(FIRST_STREAM_TIMEOUT, open).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "no stream");
            None
        }
        Err(_) => {
            tracing::info!(
                %peer,
                addr = %conn.remote_addr(),
                "closing a connection: no stream within {FIRST_STREAM_TIMEOUT:?}"
            );
            None
        }
    }
}

/// One of a peer's live incoming connections, counted against
/// [`MAX_CONNECTIONS_PER_PEER`] until dropped.
struct Held {
    shared: Arc<Shared>,
    peer: NodeId,
}

impl Held {
    /// Counts a new connection from `peer`, unless it has the most already.
    fn take(shared: &Arc<Shared>, peer: NodeId) -> Option<Held> {
        let mut counts = shared
            .incoming
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(peer).or_default();
        if *n >= MAX_CONNECTIONS_PER_PEER {
            return None;
        }
        *n += 1;
        Some(Held {
            shared: shared.clone(),
            peer,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self
            .shared
            .incoming
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

/// Dials `peer` whenever it has an address and no session, backing off
/// while it fails, until the peer is removed (the loop is aborted) or the
/// node shuts down (its generation changes).
pub(super) async fn dial_loop(
    shared: Arc<Shared>,
    endpoint: Arc<Endpoint>,
    peer: NodeId,
    generation: u64,
) {
    let _live = DialLoop::count(&shared);
    let mut backoff = MIN_BACKOFF;
    loop {
        let (addr, wake, connected) = {
            let peers = shared.peers();
            match peers.get(&peer) {
                Some(st) if st.generation == generation => {
                    (st.addr.clone(), st.wake.clone(), st.session.is_some())
                }
                _ => return, // removed, or shutting down
            }
        };
        if connected || addr.is_none() {
            wake.notified().await;
            if take_fresh_start(&shared, peer) {
                backoff = MIN_BACKOFF;
            }
            continue;
        }
        let refused = match dial(&endpoint, addr.as_deref(), peer).await {
            Ok(conn) => {
                match first_stream(&conn, conn.open_stream()).await {
                    Some(stream) => {
                        let c = conn.clone();
                        if run_session(shared.clone(), c, stream, peer, shared.me).await {
                            // It ended cleanly: try again soon. One that ended
                            // in an error backs off like a failed dial, or a
                            // peer whose sessions fail is redialled in a loop.
                            backoff = MIN_BACKOFF;
                        }
                    }
                    None => conn.close("no stream"),
                }
                conn.refused_our_key()
            }
            Err((e, refused)) => {
                tracing::debug!(peer = %peer.short(), ?addr, error = %e, "dial failed");
                refused
            }
        };
        note_refusal(&shared, peer, refused);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = wake.notified() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One running dial loop, counted in [`Shared::dial_loops`] until it
/// ends or is aborted.
struct DialLoop(Arc<Shared>);

impl DialLoop {
    fn count(shared: &Arc<Shared>) -> DialLoop {
        shared.dial_loops.fetch_add(1, Ordering::SeqCst);
        DialLoop(shared.clone())
    }
}

impl Drop for DialLoop {
    fn drop(&mut self) {
        self.0.dial_loops.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Records whether `peer` refused our key on the last dial, telling the
/// log once when it starts: the refusing side's log is not ours to read.
fn note_refusal(shared: &Shared, peer: NodeId, refused: bool) {
    let mut peers = shared.peers();
    let Some(st) = peers.get_mut(&peer) else {
        return;
    };
    if refused && !st.refused_us {
        tracing::warn!(
            peer = %peer.short(),
            "refused by {peer}: this node is not in its trusted list; run 'backer peer add {}' there",
            shared.me
        );
    }
    st.refused_us = refused;
}

/// One dial of `peer` at `addr` (`host:port`): resolved without blocking
/// the runtime (a hostname while offline must not stall every session),
/// then each address it resolves to tried in turn, each with its share of
/// [`DIAL_TIMEOUT`] (an unreachable first address must not use it all).
/// An error says why, and whether the peer refused our key.
async fn dial(
    endpoint: &Endpoint,
    addr: Option<&str>,
    peer: NodeId,
) -> Result<Connection, (String, bool)> {
    let addr = addr.ok_or(("no address".to_string(), false))?;
    let targets: Vec<SocketAddr> =
        match tokio::time::timeout(DIAL_TIMEOUT, tokio::net::lookup_host(addr)).await {
            Ok(Ok(targets)) => targets.collect(),
            Ok(Err(e)) => return Err((format!("cannot resolve {addr}: {e}"), false)),
            Err(_) => return Err((format!("resolving {addr} timed out"), false)),
        };
    let share = DIAL_TIMEOUT / u32::try_from(targets.len()).unwrap_or(u32::MAX).max(1);
    let mut failed = (format!("{addr} resolves to no address"), false);
    for target in targets {
        match tokio::time::timeout(share, endpoint.connect(target, peer)).await {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => failed = (format!("{target}: {e}"), e.refused_our_key()),
            Err(_) => failed = (format!("{target}: timed out"), false),
        }
    }
    Err(failed)
}

/// Runs one live session with `peer` over `stream` (on a connection
/// `dialled_by` one of us), unless a session with it already runs on the
/// connection we prefer. Returns whether it ran and ended cleanly (we or
/// the peer stopped it, not an error).
async fn run_session(
    shared: Arc<Shared>,
    conn: Connection,
    stream: quic::Stream,
    peer: NodeId,
    dialled_by: NodeId,
) -> bool {
    let Some((id, stop_rx, _live)) = register(&shared, &conn, peer, dialled_by) else {
        return false;
    };
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let local = match &shared.hook {
        Some(h) => VfsLocal::with_install_hook(shared.vfs.clone(), h.clone()),
        None => VfsLocal::new(shared.vfs.clone()),
    };
    let hello = Hello::new(shared.me, chunk::params_fingerprint());
    let wanted = shared.vfs.store().wanted().clone();
    let channels = Channels {
        roots: Some(shared.roots.subscribe()),
        events: Some(ev_tx),
        stop: Some(stop_rx),
        heal: Some(HealFeed {
            wanted: wanted.clone(),
            ticks: shared.heal_ticks.subscribe(),
        }),
        ..Channels::default()
    };
    // The peer's hello must name the node its key proved.
    let stream = CheckedHello::new(stream, conn.clone(), peer);
    let session = tokio::spawn(crate::run(
        stream,
        local,
        hello,
        Config::default(),
        channels,
    ));
    let mut notes = SessionNotes::new(shared.events.as_ref(), peer, conn.remote_addr().to_string());
    let mut joined = false;
    while let Some(ev) = ev_rx.recv().await {
        notes.on(&ev);
        match &ev {
            Event::Ready { .. } if !joined => {
                joined = true;
                wanted.peer_joined(peer);
            }
            Event::HealRefused { chunk } => wanted.refused(chunk, peer),
            _ => {}
        }
        if matches!(ev, Event::Ready { .. }) {
            // Both sides accepted each other: only now is the peer connected
            // (a dialler's TLS handshake ends before the peer checks its key).
            tracing::info!(peer = %peer.short(), addr = %conn.remote_addr(), "peer connected");
        }
        on_event(&shared, peer, id, ev);
    }
    // The state machine has ended (its events are closed): the peer is
    // gone now, even if our last frames are still being flushed.
    if joined {
        wanted.peer_left(peer);
    }
    unregister(&shared, peer, id);
    // Whether it ended cleanly, and what the peer is told as we close.
    let (clean, close) = match session.await {
        Ok(o) => {
            let r = o.report;
            let why = match &o.result {
                Ok(()) => "closed".to_string(),
                Err(e) => e.to_string(),
            };
            notes.ended(&why);
            tracing::info!(
                peer = %peer.short(),
                reason = %why,
                received = r.received.bytes,
                sent = r.sent.bytes,
                merges = r.stats.merges,
                "peer disconnected"
            );
            match &o.result {
                Ok(()) => {
                    // We stopped it, and our abort is written: the peer
                    // closes the connection once it has read it. Closing
                    // first would drop the abort on its way.
                    let _ = tokio::time::timeout(GOODBYE, conn.closed()).await;
                    (true, "session ended")
                }
                // It would not read an abort: the close says why.
                Err(Error::Stalled(_)) => (false, "not reading"),
                Err(e) => (
                    matches!(e, Error::PeerAborted(AbortReason::Shutdown)),
                    "session ended",
                ),
            }
        }
        Err(e) => {
            notes.ended(&e.to_string());
            tracing::warn!(peer = %peer.short(), error = %e, "sync session failed");
            (false, "session ended")
        }
    };
    conn.close(close);
    ended(&shared, peer, dialled_by, clean);
    clean
}

/// One session between its start and its goodbye, counted in
/// [`Shared::sessions`] (which [`Peers::shutdown`](super::Peers::shutdown)
/// waits on).
struct LiveSession(Arc<Shared>);

impl LiveSession {
    fn count(shared: &Arc<Shared>) -> LiveSession {
        shared.sessions.send_modify(|n| *n += 1);
        LiveSession(shared.clone())
    }
}

impl Drop for LiveSession {
    fn drop(&mut self) {
        self.0.sessions.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Makes the session on `conn` the peer's session, unless the peer is not
/// trusted, we are shutting down, or the dedupe rule keeps the one that
/// runs: both dialled, so the connection dialled by the lower id stays.
/// The same side dialling again gave up its old connection (it restarted,
/// or its network changed), so the new one wins.
/// The session is counted live (see [`LiveSession`]) from here, under the
/// same lock [`Peers::shutdown`](super::Peers::shutdown) stops sessions
/// under: it either stops this one and waits for it, or this one sees it
/// closing and never starts.
fn register(
    shared: &Arc<Shared>,
    conn: &Connection,
    peer: NodeId,
    dialled_by: NodeId,
) -> Option<(u64, oneshot::Receiver<()>, LiveSession)> {
    let preferred = shared.me.min(peer);
    let (stop_tx, stop_rx) = oneshot::channel();
    let id = {
        let mut n = shared
            .next_session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *n += 1;
        *n
    };
    let mut peers = shared.peers();
    if shared.closing.load(Ordering::SeqCst) {
        conn.close("shutting down");
        return None;
    }
    let Some(st) = peers.get_mut(&peer) else {
        conn.close("not trusted");
        return None;
    };
    if let Some(active) = &mut st.session {
        let same_dialler = active.dialled_by == dialled_by;
        if !same_dialler && (active.dialled_by == preferred || dialled_by != preferred) {
            conn.close("duplicate");
            return None;
        }
        if let Some(stop) = active.stop.take() {
            let _ = stop.send(());
        }
    }
    st.session = Some(Active {
        id,
        dialled_by,
        stop: Some(stop_tx),
    });
    Some((id, stop_rx, LiveSession::count(shared)))
}

/// Marks session `id` with `peer` ended, if it is still the peer's.
fn unregister(shared: &Shared, peer: NodeId, id: u64) {
    let mut peers = shared.peers();
    let Some(st) = peers.get_mut(&peer) else {
        return;
    };
    if st.session.as_ref().is_some_and(|s| s.id == id) {
        st.session = None;
        st.connected = false;
        st.files_to_go = 0;
        st.bytes_to_go = 0;
    }
}

/// A session the peer dialled has said goodbye: our dialler may try now,
/// soon if it ended cleanly. One we dialled returns to its dialler, which
/// backs off (a wake here made a refused dial loop at once).
fn ended(shared: &Shared, peer: NodeId, dialled_by: NodeId, clean: bool) {
    if dialled_by == shared.me {
        return;
    }
    if let Some(st) = shared.peers().get_mut(&peer) {
        st.fresh_start |= clean;
        st.wake.notify_one();
    }
}

/// Whether the dialler of `peer` may start over at the shortest backoff
/// (its address changed, or the peer's own session ended cleanly); the
/// flag is consumed.
fn take_fresh_start(shared: &Shared, peer: NodeId) -> bool {
    shared
        .peers()
        .get_mut(&peer)
        .is_some_and(|st| std::mem::take(&mut st.fresh_start))
}

/// Updates the peer's state from one event of its session `id` (and
/// logs it). An event of a session that is no longer the peer's (one a
/// reconnect replaced, still winding down) changes nothing.
pub(super) fn on_event(shared: &Shared, peer: NodeId, id: u64, ev: Event) {
    let mut peers = shared.peers();
    let Some(st) = peers.get_mut(&peer) else {
        return;
    };
    if st.session.as_ref().is_none_or(|s| s.id != id) {
        return;
    }
    match ev {
        Event::Ready { .. } => {
            st.connected = true;
            st.refused_us = false;
        }
        Event::Progress(p) => {
            st.files_to_go = p.files_to_go();
            st.bytes_to_go = p.bytes_to_go();
            st.pulled = p;
        }
        Event::InSync { root } => {
            st.last_sync = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs());
            st.files_to_go = 0;
            st.bytes_to_go = 0;
            tracing::debug!(peer = %peer.short(), %root, "in sync");
        }
        Event::Merged { remote, merged } => {
            tracing::info!(
                peer = %peer.short(),
                %remote,
                root = %merged.root,
                changed = merged.changed,
                conflicts = merged.conflicts,
                files = st.pulled.files_done,
                bytes = st.pulled.bytes_done,
                "sync done"
            );
            if merged.conflicts > 0 {
                tracing::warn!(peer = %peer.short(), conflicts = merged.conflicts, "conflict: copies kept beside the names");
            }
        }
        Event::PullFailed { remote, reason } => {
            tracing::warn!(peer = %peer.short(), %remote, %reason, "pull failed")
        }
        Event::Healed { chunk } => {
            tracing::info!(peer = %peer.short(), %chunk, "a chunk was healed from the peer")
        }
        Event::PullStarted { .. } | Event::HealRefused { .. } => {}
    }
}
