//! The peer manager: a node's QUIC endpoint, one live sync session per
//! connected peer, dialling with backoff, and what `status` shows of it.
//!
//! - Trust and addresses come from the caller as a typed list
//!   ([`PeerSpec`]); [`Peers::reload`] applies a changed list at once: new
//!   peers are trusted and dialled, removed ones disconnected and refused.
//!   Reading the node's config file is the caller's business.
//! - Every new local root reaches each session through one `watch`
//!   channel ([`RootFeed`]), and each session announces it.
//! - Two peers dialling each other keep one connection: the one dialled
//!   by the lower node id (DESIGN.md, "Traps"); [`link`] has the rule.
//! - [`Peers::shutdown`] tells every connected peer (`Abort(Shutdown)`,
//!   and waits, briefly, until the peers have read it and closed), so
//!   they show this node disconnected at once instead of after the idle
//!   timeout, and know why.
//! - A session that ended in an error does not reset its dialler's
//!   backoff: a peer whose sessions keep failing is not redialled in a
//!   loop.
//! - A node told no listen address dials out from a wildcard socket and
//!   accepts nothing ([`Endpoint::dial_only`]).
//! - A peer is held to what it needs: a stream within
//!   [`FIRST_STREAM_TIMEOUT`], at most [`MAX_CONNECTIONS_PER_PEER`]
//!   incoming connections, and a hello that names the node its TLS key
//!   proved (else the connection is closed, with a logged reason).
//!
//! The manager owns a small tokio runtime, so that its callers (the
//! `backer` binary's threads, tests) stay synchronous.

mod first_hello;
mod heal;
mod link;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use backer_fs::vfs::Vfs;
use backer_fs::{Hash, NodeId};
use serde::{Serialize, Serializer};
use tokio::sync::{oneshot, watch, Notify};

use crate::local::InstallHook;
use crate::quic::{self, Endpoint, Trust};
use crate::Progress;

/// How long [`Peers::shutdown`] waits, in all, for every session to send
/// its `Abort(Shutdown)` and for the peers to close their connections
/// once they read it (a peer that does not read cannot hold us longer).
const GOODBYE: Duration = Duration::from_secs(2);

/// How long [`Peers::shutdown`] then waits for the endpoint to tell every
/// connection left that it closed.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// How long a new connection may go without its session's stream: the
/// dialler opens it and writes its hello right after the handshake, so a
/// connection still without one is stuck or hostile, and is closed.
pub const FIRST_STREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// Incoming connections one peer may hold at once. A peer needs one; a
/// reconnect replaces the old session as soon as its own starts, so only
/// connections without a session yet (at most [`FIRST_STREAM_TIMEOUT`]
/// old) add up. Past this, new ones are closed at once.
pub const MAX_CONNECTIONS_PER_PEER: usize = 4;

/// A peer this node trusts, and where to dial it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// Its node id.
    pub id: NodeId,
    /// `host:port` to dial (resolved at each dial); none: it dials us.
    pub addr: Option<String>,
}

/// What the peer manager starts with.
#[derive(Clone, Default)]
pub struct Options {
    /// Where to accept peers; none: the node only dials out.
    pub listen: Option<SocketAddr>,
    /// The trusted peers.
    pub peers: Vec<PeerSpec>,
    /// Called after every merge a session installs (a mount tells the
    /// kernel what changed).
    pub install_hook: Option<InstallHook>,
    /// Where new local roots come in. Made (and fed: the vfs's root
    /// observer registered) before [`Peers::start`], so that no root
    /// committed while the manager starts goes unannounced.
    pub roots: RootFeed,
    /// The node's event bus: told of peers connecting and leaving, syncs
    /// and merges (see `notify.rs`).
    pub events: Option<backer_fs::events::Feed>,
}

/// One peer as `status` shows it (`status --json` prints these fields as
/// they are named here).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// Its node id (in the displayed form).
    #[serde(serialize_with = "display")]
    pub id: NodeId,
    /// Where we dial it, if anywhere.
    pub addr: Option<String>,
    /// Whether a session runs and both sides accepted each other.
    pub connected: bool,
    /// When both sides last held the same root (Unix seconds).
    pub last_sync: Option<u64>,
    /// Files the current pull still has to fetch.
    pub files_to_go: u64,
    /// Chunk bytes the current pull still has to fetch.
    pub bytes_to_go: u64,
    /// The peer refused our key when we last dialled it (it does not
    /// trust this node); cleared once a session is accepted.
    pub refused_us: bool,
}

fn display<S: Serializer>(id: &NodeId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// Where new local roots enter the peer manager: whoever learns of a new
/// committed root (today the vfs's root observer) calls
/// [`publish`](RootFeed::publish), and every live session announces it.
/// Make it first ([`RootFeed::default`]), register its publisher, then
/// hand it to [`Peers::start`] in [`Options::roots`].
#[derive(Clone, Debug)]
pub struct RootFeed(watch::Sender<Hash>);

impl Default for RootFeed {
    fn default() -> Self {
        RootFeed(watch::channel(Hash::ZERO).0)
    }
}

impl RootFeed {
    /// Tells every session that `root` is our root now.
    pub fn publish(&self, root: Hash) {
        self.0.send_replace(root);
    }
}

/// What the node knows of one peer.
#[derive(Debug, Default)]
struct PeerState {
    addr: Option<String>,
    connected: bool,
    last_sync: Option<u64>,
    files_to_go: u64,
    bytes_to_go: u64,
    /// Where the last pull got to (files and chunk bytes fetched).
    pulled: Progress,
    /// The peer refused our key on the last dial.
    refused_us: bool,
    /// The live session: who dialled, and how to stop it.
    session: Option<Active>,
    /// Wakes the dialler (a new address, a dropped session).
    wake: Arc<Notify>,
    /// Set with a wake that lets the dialler start over at its shortest
    /// backoff: a new address, or a session the peer dialled that ended
    /// cleanly (not one that ended in an error).
    fresh_start: bool,
    /// Which dialler is the peer's: drawn from [`Shared::generations`]
    /// (never reused, so a dialler of a removed peer can never mistake a
    /// re-added one for its own); 0 at shutdown, which stops it.
    generation: u64,
    /// Its dialler, aborted when the peer is removed (a dial in flight to
    /// an unreachable address would otherwise run on for seconds).
    dialler: Option<tokio::task::AbortHandle>,
}

/// A running session.
#[derive(Debug)]
struct Active {
    id: u64,
    dialled_by: NodeId,
    stop: Option<oneshot::Sender<()>>,
}

/// What the manager's tasks share.
struct Shared {
    me: NodeId,
    vfs: Arc<Vfs>,
    hook: Option<InstallHook>,
    events: Option<backer_fs::events::Feed>,
    trust: Trust,
    roots: watch::Sender<Hash>,
    peers: Mutex<HashMap<NodeId, PeerState>>,
    next_session: Mutex<u64>,
    /// The last dialler generation handed out (see [`PeerState::generation`]).
    generations: AtomicU64,
    /// Dial loops running (a test checks that a peer has one at most).
    dial_loops: AtomicUsize,
    /// Sessions between their start and their goodbye (see
    /// [`Peers::shutdown`]).
    sessions: watch::Sender<usize>,
    /// Live incoming connections per peer (see [`MAX_CONNECTIONS_PER_PEER`]).
    incoming: Mutex<HashMap<NodeId, usize>>,
    /// Set by [`Peers::shutdown`]: no new session starts.
    closing: AtomicBool,
    /// Ticks when the chunks the node wants back change ([`heal`]).
    heal_ticks: watch::Sender<u64>,
}

impl Shared {
    fn peers(&self) -> MutexGuard<'_, HashMap<NodeId, PeerState>> {
        self.peers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running network side of a node. Dropping it stops its tasks at
/// once (waiting a second at most, outside any tokio runtime); call
/// [`shutdown`](Peers::shutdown) first to tell the peers.
pub struct Peers {
    /// Taken by `Drop`, which stops it.
    rt: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    endpoint: Arc<Endpoint>,
    /// Where we accept peers (none: dial-only).
    listen: Option<SocketAddr>,
}

impl Peers {
    /// Starts the endpoint (listening at `opts.listen`, else dial-only),
    /// a dialler for every peer with an address, and the acceptor. Must
    /// not be called from inside a tokio runtime.
    pub fn start(vfs: Arc<Vfs>, opts: Options) -> quic::Result<Peers> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("backer-net")
            .enable_all()
            .build()?;
        let store = vfs.store();
        let me = store.node_id();
        let trust = Trust::new();
        for p in &opts.peers {
            trust.add(p.id);
        }
        let endpoint = {
            let _guard = rt.enter();
            Arc::new(match opts.listen {
                Some(addr) => Endpoint::bind(addr, store.node_key(), trust.clone())?,
                None => Endpoint::dial_only(store.node_key(), trust.clone())?,
            })
        };
        let listen = match opts.listen {
            Some(_) => {
                let addr = endpoint.local_addr()?;
                tracing::info!(%addr, "listening for peers");
                Some(addr)
            }
            None => None,
        };
        let wanted = store.wanted().clone();
        let shared = Arc::new(Shared {
            heal_ticks: heal::ticks(&wanted),
            me,
            vfs,
            hook: opts.install_hook,
            events: opts.events,
            trust,
            roots: opts.roots.0,
            peers: Mutex::new(HashMap::new()),
            next_session: Mutex::new(0),
            generations: AtomicU64::new(0),
            dial_loops: AtomicUsize::new(0),
            sessions: watch::channel(0).0,
            incoming: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
        });
        let peers = Peers {
            rt: Some(rt),
            shared,
            endpoint,
            listen,
        };
        peers.reload(opts.peers);
        peers.spawn(heal::retry_loop(wanted));
        if peers.endpoint.listens() {
            let (shared, endpoint) = (peers.shared.clone(), peers.endpoint.clone());
            peers.spawn(link::accept_loop(shared, endpoint));
        }
        Ok(peers)
    }

    fn spawn<F: std::future::Future<Output = ()> + Send + 'static>(
        &self,
        f: F,
    ) -> Option<tokio::task::AbortHandle> {
        self.rt.as_ref().map(|rt| rt.spawn(f).abort_handle())
    }

    /// Where new local roots enter (see [`RootFeed`]).
    pub fn root_feed(&self) -> RootFeed {
        RootFeed(self.shared.roots.clone())
    }

    /// Makes `list` the trusted peers: new ones are trusted (and dialled if
    /// they have an address), changed addresses dialled, removed peers
    /// refused and disconnected.
    pub fn reload(&self, list: Vec<PeerSpec>) {
        let wanted: HashMap<NodeId, Option<String>> =
            list.into_iter().map(|p| (p.id, p.addr)).collect();
        let mut peers = self.shared.peers();
        let gone: Vec<NodeId> = peers
            .keys()
            .filter(|id| !wanted.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            self.shared.trust.remove(&id);
            if let Some(mut st) = peers.remove(&id) {
                if let Some(dialler) = st.dialler.take() {
                    dialler.abort();
                }
                if let Some(stop) = st.session.as_mut().and_then(|s| s.stop.take()) {
                    let _ = stop.send(());
                }
                tracing::info!(peer = %id.short(), "peer removed");
            }
        }
        if self.shared.closing.load(Ordering::SeqCst) {
            return;
        }
        for (id, addr) in wanted {
            self.shared.trust.add(id);
            let st = peers.entry(id).or_default();
            let new_addr = st.addr != addr;
            st.addr = addr;
            if new_addr && st.addr.is_some() {
                if st.dialler.is_none() {
                    // First address: start a dialler.
                    let generation = self.shared.generations.fetch_add(1, Ordering::SeqCst) + 1;
                    st.generation = generation;
                    let (shared, endpoint) = (self.shared.clone(), self.endpoint.clone());
                    st.dialler = self.spawn(link::dial_loop(shared, endpoint, id, generation));
                } else {
                    st.fresh_start = true;
                    st.wake.notify_one();
                }
            }
        }
    }

    /// Every trusted peer, sorted by id.
    pub fn status(&self) -> Vec<PeerStatus> {
        let peers = self.shared.peers();
        let mut list: Vec<PeerStatus> = peers
            .iter()
            .map(|(id, st)| PeerStatus {
                id: *id,
                addr: st.addr.clone(),
                connected: st.connected,
                last_sync: st.last_sync,
                files_to_go: st.files_to_go,
                bytes_to_go: st.bytes_to_go,
                refused_us: st.refused_us,
            })
            .collect();
        list.sort_by_key(|p| p.id.to_string());
        list
    }

    /// Where this node accepts peers; `None` when it only dials out.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.listen
    }

    /// The address of the endpoint's socket, listening or not (a
    /// dial-only node's is a wildcard with an ephemeral port).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.endpoint.local_addr().ok()
    }

    /// What a session calls after installing a merge, if anything.
    pub fn install_hook(&self) -> Option<InstallHook> {
        self.shared.hook.clone()
    }

    /// Stops every session, telling each peer we shut down
    /// (`Abort(Shutdown)`), waits until every session has written it and
    /// its peer has closed the connection (so the peer learns why, not
    /// just that the connection went), then closes the endpoint, which
    /// tells any connection left. Waits [`GOODBYE`] for the sessions and
    /// [`CLOSE_WAIT`] for the endpoint at most. Takes `&self`, so a clone
    /// of an `Arc<Peers>` held elsewhere (a control thread) cannot
    /// prevent it. Later calls do nothing; afterwards no session starts.
    /// Must not be called from inside a tokio runtime.
    pub fn shutdown(&self) {
        if self.shared.closing.swap(true, Ordering::SeqCst) {
            return;
        }
        {
            let mut peers = self.shared.peers();
            for st in peers.values_mut() {
                st.generation = 0;
                st.wake.notify_one();
                if let Some(stop) = st.session.as_mut().and_then(|s| s.stop.take()) {
                    let _ = stop.send(());
                }
            }
        }
        let Some(rt) = &self.rt else { return };
        let (endpoint, mut sessions) = (self.endpoint.clone(), self.shared.sessions.subscribe());
        let live = *sessions.borrow();
        let start = Instant::now();
        rt.block_on(async move {
            let all_gone = sessions.wait_for(|n| *n == 0);
            if tokio::time::timeout(GOODBYE, all_gone).await.is_err() {
                tracing::info!("closing: a peer did not acknowledge our goodbye in time");
            }
            // Whatever is left hears the close; a peer that does not
            // acknowledge it must not hold us.
            let _ = tokio::time::timeout(CLOSE_WAIT, endpoint.close()).await;
        });
        tracing::info!(sessions = live, took = ?start.elapsed(), "network stopped");
    }
}

impl Drop for Peers {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
