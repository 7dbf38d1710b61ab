//! The node's network: a QUIC endpoint, one live sync session per
//! connected peer, dialling with backoff, and what `status` shows of it.
//!
//! - Trust and addresses come from `config.toml` ([`crate::config`]);
//!   `reload` (from `peer add`/`peer remove` over the control socket)
//!   applies a changed file at once: new peers are trusted and dialled,
//!   removed ones disconnected and refused.
//! - Every new local root (committer, fsync, installed merge) reaches each
//!   session through one `watch` channel, and each session announces it.
//! - Two peers dialling each other keep one connection: the one dialled
//!   by the lower node id (DESIGN.md, "Traps").

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use backer_fs::vfs::Vfs;
use backer_fs::{chunk, Hash, NodeId};
use backer_replication::local::InstallHook;
use backer_replication::quic::{self, Connection, Endpoint, Trust};
use backer_replication::{Channels, Config as SyncConfig, Event, Hello, VfsLocal};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::config::Config;

/// The longest wait between two dials of an unreachable peer.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The first wait after a failed dial or a dropped connection.
const MIN_BACKOFF: Duration = Duration::from_millis(250);

/// What the node knows of one peer, for `status`.
#[derive(Clone, Debug, Default)]
struct PeerState {
    addr: Option<String>,
    connected: bool,
    /// When both sides last held the same root (Unix seconds).
    last_sync: Option<u64>,
    files_to_go: u64,
    bytes_to_go: u64,
    /// Where the last pull got to (files and chunk bytes fetched).
    pulled: backer_replication::Progress,
    /// The live session: who dialled, and how to stop it.
    session: Option<Active>,
    /// Wakes the dialler (a new address, a dropped session).
    wake: Arc<Notify>,
    /// Bumped when the peer is removed: its dialler stops.
    generation: u64,
}

#[derive(Debug)]
struct Active {
    id: u64,
    dialled_by: NodeId,
    stop: Option<oneshot::Sender<()>>,
}

impl Clone for Active {
    fn clone(&self) -> Self {
        Active {
            id: self.id,
            dialled_by: self.dialled_by,
            stop: None,
        }
    }
}

struct Shared {
    me: NodeId,
    store_dir: PathBuf,
    vfs: Arc<Vfs>,
    hook: Option<InstallHook>,
    trust: Trust,
    roots: watch::Sender<Hash>,
    peers: Mutex<HashMap<NodeId, PeerState>>,
    next_session: Mutex<u64>,
}

/// The running network side of a node.
pub(crate) struct Net {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    endpoint: Arc<Endpoint>,
}

impl Net {
    /// Starts the endpoint (at `listen`, else the config's address, else a
    /// port of the system's choice used only to dial out), the dialers of
    /// every peer with an address, and the acceptor.
    pub(crate) fn start(
        store_dir: &Path,
        vfs: Arc<Vfs>,
        listen: Option<SocketAddr>,
        hook: Option<InstallHook>,
    ) -> Result<Net> {
        let cfg = Config::load(store_dir)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("backer-net")
            .enable_all()
            .build()
            .context("cannot start the network runtime")?;
        let store = vfs.store();
        let me = store.node_id();
        let trust = Trust::new();
        for id in cfg.peer_ids()? {
            trust.add(id);
        }
        let bind = match listen.or(cfg.listen) {
            Some(a) => a,
            None => dial_only_addr(&cfg),
        };
        let endpoint = {
            let _guard = rt.enter();
            Arc::new(
                Endpoint::bind(bind, store.node_key(), trust.clone())
                    .map_err(|e| anyhow!("cannot listen on {bind}: {e}"))?,
            )
        };
        if listen.or(cfg.listen).is_some() {
            tracing::info!(addr = %endpoint.local_addr().map_err(|e| anyhow!("{e}"))?, "listening for peers");
        }
        let (roots, _) = watch::channel(vfs.root_hash()?);
        {
            let roots = roots.clone();
            vfs.observe_roots(move |c| {
                roots.send_replace(c.root);
            });
        }
        let shared = Arc::new(Shared {
            me,
            store_dir: store_dir.to_path_buf(),
            vfs,
            hook,
            trust,
            roots,
            peers: Mutex::new(HashMap::new()),
            next_session: Mutex::new(0),
        });
        let net = Net {
            rt,
            shared,
            endpoint,
        };
        net.apply_config(cfg);
        {
            let (shared, endpoint) = (net.shared.clone(), net.endpoint.clone());
            net.rt.spawn(accept_loop(shared, endpoint));
        }
        Ok(net)
    }

    /// Re-reads `config.toml` and applies it (the control socket's
    /// `reload`).
    pub(crate) fn reload(&self) -> Result<()> {
        let cfg = Config::load(&self.shared.store_dir)?;
        self.apply_config(cfg);
        Ok(())
    }

    fn apply_config(&self, cfg: Config) {
        let mut wanted = HashMap::new();
        for p in &cfg.peers {
            if let Ok(id) = p.node_id() {
                wanted.insert(id, p.addr.clone());
            }
        }
        let mut peers = self.shared.peers.lock().unwrap_or_else(|p| p.into_inner());
        // Removed peers: refuse, disconnect, stop dialling.
        let gone: Vec<NodeId> = peers
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.shared.trust.remove(&id);
            if let Some(mut st) = peers.remove(&id) {
                st.generation += 1;
                st.wake.notify_one();
                if let Some(stop) = st.session.as_mut().and_then(|s| s.stop.take()) {
                    let _ = stop.send(());
                }
                tracing::info!(peer = %id.short(), "peer removed");
            }
        }
        for (id, addr) in wanted {
            self.shared.trust.add(id);
            let st = peers.entry(id).or_default();
            let new_addr = st.addr != addr;
            st.addr = addr;
            if new_addr && st.addr.is_some() {
                if st.generation == 0 && !st.connected {
                    // First address: start a dialler.
                    st.generation = 1;
                    let (shared, endpoint) = (self.shared.clone(), self.endpoint.clone());
                    self.rt.spawn(dial_loop(shared, endpoint, id, 1));
                } else {
                    st.wake.notify_one();
                }
            }
        }
    }

    /// The peers as `status --json` shows them.
    pub(crate) fn status(&self) -> serde_json::Value {
        let peers = self.shared.peers.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<serde_json::Value> = peers
            .iter()
            .map(|(id, st)| {
                serde_json::json!({
                    "id": id.to_string(),
                    "addr": st.addr,
                    "connected": st.connected,
                    "last_sync": st.last_sync,
                    "files_to_go": st.files_to_go,
                    "bytes_to_go": st.bytes_to_go,
                })
            })
            .collect();
        list.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        serde_json::Value::Array(list)
    }

    /// What tells the kernel about a tree installed outside a sync (a
    /// restore), if a mount runs.
    pub(crate) fn install_hook(&self) -> Option<InstallHook> {
        self.shared.hook.clone()
    }

    /// The address the endpoint is bound to.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// Stops every session (telling peers we shut down) and the endpoint.
    pub(crate) fn stop(self) {
        {
            let mut peers = self.shared.peers.lock().unwrap_or_else(|p| p.into_inner());
            for st in peers.values_mut() {
                st.generation += 1;
                if let Some(stop) = st.session.as_mut().and_then(|s| s.stop.take()) {
                    let _ = stop.send(());
                }
            }
        }
        let (endpoint, shared) = (self.endpoint.clone(), self.shared.clone());
        self.rt.block_on(async move {
            // Let sessions say goodbye and log their figures (2 s at most).
            for _ in 0..100 {
                let live = {
                    let peers = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
                    peers.values().any(|st| st.session.is_some())
                };
                if !live {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            endpoint.close().await;
        });
        self.rt.shutdown_timeout(Duration::from_secs(2));
    }
}

/// Where to bind when the node does not listen: loopback if every peer
/// address is loopback (tests), else every interface.
fn dial_only_addr(cfg: &Config) -> SocketAddr {
    let all_loopback = cfg
        .peers
        .iter()
        .filter_map(|p| p.addr.as_deref())
        .filter_map(|a| a.to_socket_addrs().ok()?.next())
        .all(|a| a.ip().is_loopback());
    if all_loopback {
        SocketAddr::from(([127, 0, 0, 1], 0))
    } else {
        SocketAddr::from(([0, 0, 0, 0], 0))
    }
}

async fn accept_loop(shared: Arc<Shared>, endpoint: Arc<Endpoint>) {
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

async fn dial_loop(shared: Arc<Shared>, endpoint: Arc<Endpoint>, peer: NodeId, generation: u64) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let (addr, wake, connected) = {
            let peers = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
            match peers.get(&peer) {
                Some(st) if st.generation == generation => {
                    (st.addr.clone(), st.wake.clone(), st.session.is_some())
                }
                _ => return, // removed
            }
        };
        if connected || addr.is_none() {
            wake.notified().await;
            backoff = MIN_BACKOFF;
            continue;
        }
        let target = addr
            .as_deref()
            .and_then(|a| a.to_socket_addrs().ok()?.next());
        let result = match target {
            Some(target) => {
                tokio::time::timeout(Duration::from_secs(10), endpoint.connect(target, peer))
                    .await
                    .map_err(|_| anyhow!("timed out"))
                    .and_then(|r| r.map_err(|e| anyhow!("{e}")))
            }
            None => Err(anyhow!("cannot resolve {addr:?}")),
        };
        match result {
            Ok(conn) => match conn.open_stream().await {
                Ok(stream) => {
                    if run_session(shared.clone(), conn, stream, peer, shared.me).await {
                        // It worked and then ended: try again soon.
                        backoff = MIN_BACKOFF;
                    }
                }
                Err(e) => tracing::debug!(peer = %peer.short(), error = %e, "no stream"),
            },
            Err(e) => {
                tracing::debug!(peer = %peer.short(), addr = ?addr, error = %e, "dial failed")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = wake.notified() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Runs one live session with `peer` over `stream` (on a connection
/// `dialled_by` one of us), unless a session with it already runs on the
/// connection we prefer.
async fn run_session(
    shared: Arc<Shared>,
    conn: Connection,
    stream: quic::Stream,
    peer: NodeId,
    dialled_by: NodeId,
) -> bool {
    let preferred = shared.me.min(peer);
    let (stop_tx, stop_rx) = oneshot::channel();
    let id = {
        let mut n = shared
            .next_session
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *n += 1;
        *n
    };
    {
        let mut peers = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
        let Some(st) = peers.get_mut(&peer) else {
            conn.close("not trusted");
            return false;
        };
        if let Some(active) = &mut st.session {
            // Both dialled: keep the connection dialled by the lower id.
            // The same side dialling again: it gave up the old one (it
            // restarted, or its network changed), so the new one wins.
            let same_dialler = active.dialled_by == dialled_by;
            if !same_dialler && (active.dialled_by == preferred || dialled_by != preferred) {
                conn.close("duplicate");
                return false;
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
    }
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
    let session = tokio::spawn(backer_replication::run(
        stream,
        local,
        hello,
        SyncConfig::default(),
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
    let outcome = session.await;
    {
        let mut peers = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(st) = peers.get_mut(&peer) {
            if st.session.as_ref().is_some_and(|s| s.id == id) {
                st.session = None;
                st.connected = false;
                st.files_to_go = 0;
                st.bytes_to_go = 0;
                // A session the peer dialled ended: our dialler may try now.
                // One we dialled returns to its dialler, which backs off
                // (a wake here made a refused dial loop at once).
                if dialled_by != shared.me {
                    st.wake.notify_one();
                }
            }
        }
    }
    match outcome {
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

fn on_event(shared: &Shared, peer: NodeId, ev: Event) {
    let mut peers = shared.peers.lock().unwrap_or_else(|p| p.into_inner());
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
