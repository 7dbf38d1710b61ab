//! The peer manager's tasks: accepting, dialling with backoff, and one
//! sync session per peer, with the dial dedupe rule.

use std::net::ToSocketAddrs;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backer_fs::{chunk, NodeId};
use tokio::sync::{mpsc, oneshot};

use super::{Active, Shared};
use crate::quic::{self, Connection, Endpoint};
use crate::{Channels, Config, Event, Hello, VfsLocal};

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
                let shared = shared.clone();
                tokio::spawn(async move {
                    let peer = conn.peer();
                    match conn.accept_stream().await {
                        Ok(stream) => {
                            run_session(shared, conn, stream, peer, peer).await;
                        }
                        Err(e) => tracing::debug!(peer = %peer.short(), error = %e, "no stream"),
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "incoming connection refused"),
        }
    }
}

/// Dials `peer` whenever it has an address and no session, backing off
/// while it fails, until the peer is removed (its generation changes).
pub(super) async fn dial_loop(
    shared: Arc<Shared>,
    endpoint: Arc<Endpoint>,
    peer: NodeId,
    generation: u64,
) {
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
            backoff = MIN_BACKOFF;
            continue;
        }
        match dial(&endpoint, addr.as_deref(), peer).await {
            Ok(conn) => match conn.open_stream().await {
                Ok(stream) => {
                    if run_session(shared.clone(), conn, stream, peer, shared.me).await {
                        // It worked and then ended: try again soon.
                        backoff = MIN_BACKOFF;
                    }
                }
                Err(e) => tracing::debug!(peer = %peer.short(), error = %e, "no stream"),
            },
            Err(e) => tracing::debug!(peer = %peer.short(), ?addr, error = %e, "dial failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = wake.notified() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One dial of `peer` at `addr` (`host:port`).
async fn dial(endpoint: &Endpoint, addr: Option<&str>, peer: NodeId) -> Result<Connection, String> {
    let target = addr
        .and_then(|a| a.to_socket_addrs().ok()?.next())
        .ok_or_else(|| format!("cannot resolve {addr:?}"))?;
    match tokio::time::timeout(DIAL_TIMEOUT, endpoint.connect(target, peer)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

/// Runs one live session with `peer` over `stream` (on a connection
/// `dialled_by` one of us), unless a session with it already runs on the
/// connection we prefer. Returns whether both sides accepted each other.
async fn run_session(
    shared: Arc<Shared>,
    conn: Connection,
    stream: quic::Stream,
    peer: NodeId,
    dialled_by: NodeId,
) -> bool {
    let Some((id, stop_rx)) = register(&shared, &conn, peer, dialled_by) else {
        return false;
    };
    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel();
    let local = match &shared.hook {
        Some(h) => VfsLocal::with_install_hook(shared.vfs.clone(), h.clone()),
        None => VfsLocal::new(shared.vfs.clone()),
    };
    let hello = Hello::new(shared.me, chunk::params_fingerprint());
    let channels = Channels {
        roots: Some(shared.roots.subscribe()),
        events: Some(ev_tx),
        stop: Some(stop_rx),
    };
    let session = tokio::spawn(crate::run(
        stream,
        local,
        hello,
        Config::default(),
        channels,
    ));
    let mut worked = false;
    while let Some(ev) = ev_rx.recv().await {
        if matches!(ev, Event::Ready { .. }) {
            // Both sides accepted each other: only now is the peer connected
            // (a dialler's TLS handshake ends before the peer checks its key).
            worked = true;
            tracing::info!(peer = %peer.short(), addr = %conn.remote_addr(), "peer connected");
        }
        on_event(&shared, peer, ev);
    }
    // The state machine has ended (its events are closed): the peer is
    // gone now, even if our last frames are still being flushed.
    unregister(&shared, peer, id, dialled_by);
    match session.await {
        Ok(o) => {
            let r = o.report;
            let why = match &o.result {
                Ok(()) => "closed".to_string(),
                Err(e) => e.to_string(),
            };
            tracing::info!(
                peer = %peer.short(),
                reason = %why,
                received = r.received.bytes,
                sent = r.sent.bytes,
                merges = r.stats.merges,
                "peer disconnected"
            );
        }
        Err(e) => tracing::warn!(peer = %peer.short(), error = %e, "sync session failed"),
    }
    conn.close("session ended");
    worked
}

/// Makes the session on `conn` the peer's session, unless the peer is not
/// trusted, we are shutting down, or the dedupe rule keeps the one that
/// runs: both dialled, so the connection dialled by the lower id stays.
/// The same side dialling again gave up its old connection (it restarted,
/// or its network changed), so the new one wins.
fn register(
    shared: &Shared,
    conn: &Connection,
    peer: NodeId,
    dialled_by: NodeId,
) -> Option<(u64, oneshot::Receiver<()>)> {
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
    Some((id, stop_rx))
}

/// Marks session `id` with `peer` ended, if it is still the peer's.
fn unregister(shared: &Shared, peer: NodeId, id: u64, dialled_by: NodeId) {
    let mut peers = shared.peers();
    let Some(st) = peers.get_mut(&peer) else {
        return;
    };
    if st.session.as_ref().is_some_and(|s| s.id == id) {
        st.session = None;
        st.connected = false;
        st.files_to_go = 0;
        st.bytes_to_go = 0;
        // A session the peer dialled ended: our dialler may try now. One
        // we dialled returns to its dialler, which backs off (a wake here
        // made a refused dial loop at once).
        if dialled_by != shared.me {
            st.wake.notify_one();
        }
    }
}

/// Updates the peer's state from one session event (and logs it).
fn on_event(shared: &Shared, peer: NodeId, ev: Event) {
    let mut peers = shared.peers();
    let Some(st) = peers.get_mut(&peer) else {
        return;
    };
    match ev {
        Event::Ready { .. } => st.connected = true,
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
        Event::PullStarted { .. } => {}
    }
}
