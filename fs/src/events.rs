//! The node's event bus: what happened, in order, for a frontend
//! (`backer events`, the web page's `/api/events`).
//!
//! It lives in backer-fs because both of its producers can reach it here:
//! the vfs's one "root published" event (local changes, diffed by
//! [`Feed`]) and the peer manager of backer-replication, which depends on
//! this crate (peers connecting and leaving, merges, sync progress). The
//! events are typed ([`EventKind`]); adapters only serialise them.
//!
//! The shape is Syncthing's buffered logger (`lib/events/events.go`):
//! every event gets the next id (1, 2, 3...), the last [`RING`] are kept,
//! and a subscriber asks for what came after the last id it saw. A
//! producer only appends under a short lock and wakes the waiters; it never
//! waits for a subscriber, so a slow one just falls behind, and once the
//! ring dropped what it had not read, it sees a gap in the ids.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::history::{self, ChangeKind};
use crate::store::Store;
use crate::tree::Timestamp;
use crate::vfs::{read_log, snapshot_name, CommitInfo};
use crate::Hash;

/// How many events the bus keeps.
pub const RING: usize = 1000;

/// At most this many changes of one commit become events: the diff stops
/// there (`backer log` lists them all).
pub const MAX_CHANGES: usize = 256;

/// At most this many paths ride in one [`EventKind::RemoteChange`].
pub const MAX_REMOTE_PATHS: usize = 100;

/// One event: its id (one more than the one before), when (UTC, as
/// snapshot folders name times) and what.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Rising by 1 from 1; a gap means events were missed.
    pub id: u64,
    /// When it was published.
    pub time: String,
    /// What happened: serialised as `"type"` and `"data"`.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What a sync merged, by kind of change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// New names.
    pub added: u64,
    /// Changed content or metadata.
    pub modified: u64,
    /// Names gone.
    pub deleted: u64,
    /// Files moved.
    pub renamed: u64,
    /// Conflict copies made.
    pub conflicts: u64,
}

/// The types of event, each with its data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EventKind {
    /// A name changed on this node (a commit of local writes, a restore).
    LocalChange {
        /// The path from the root.
        path: String,
        /// Added, modified, deleted or renamed.
        kind: ChangeKind,
        /// For a rename, the path it had.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
    },
    /// A merge from a peer changed names here.
    RemoteChange {
        /// The peer, as `backer id` prints it.
        peer: String,
        /// The first [`MAX_REMOTE_PATHS`] paths it changed.
        paths: Vec<String>,
        /// How many of each kind (of the first [`MAX_CHANGES`]).
        counts: Counts,
        /// Whether there were more changes than counted.
        truncated: bool,
    },
    /// Both sides of a session accepted each other.
    PeerConnected {
        /// The peer.
        peer: String,
        /// Its address.
        address: String,
    },
    /// A session that was connected ended.
    PeerDisconnected {
        /// The peer.
        peer: String,
        /// Its address.
        address: String,
        /// Why, in a few words.
        reason: String,
    },
    /// Where a pull from a peer stands.
    SyncProgress {
        /// The peer.
        peer: String,
        /// Files still to fetch.
        files_to_go: u64,
        /// Chunk bytes still to fetch.
        bytes_to_go: u64,
    },
    /// This node and the peer hold the same root.
    SyncDone {
        /// The peer.
        peer: String,
        /// The common root, in hex.
        root: String,
    },
    /// A merge kept both versions of a name: the losing one as a copy.
    Conflict {
        /// The name both versions had.
        path: String,
        /// The conflict copy's path.
        copy: String,
        /// The short id of the copy's author (from its name).
        author: String,
        /// The peer whose merge made it.
        peer: String,
    },
    /// History was collected (`gc`, by hand or by the node's schedule).
    HistoryCollected {
        /// Roots in the log before.
        roots_before: u64,
        /// Roots kept.
        roots_kept: u64,
        /// Bytes of chunks freed.
        bytes_freed: u64,
    },
    /// Where a running scrub (the background check) stands.
    CheckProgress {
        /// Chunk bytes read and checked so far.
        done_bytes: u64,
        /// Chunk bytes the index names.
        total_bytes: u64,
    },
    /// A scrub ended: bad chunks are quarantined and wanted from peers.
    CheckDone {
        /// Chunks read and checked.
        chunks: u64,
        /// Their bytes.
        bytes: u64,
        /// Chunks whose copy failed its check, in hex.
        bad_chunks: Vec<String>,
    },
    /// Something failed.
    Error {
        /// What went wrong.
        what: String,
        /// Where (which part of the node).
        place: String,
    },
}

impl EventKind {
    /// What a history collection reports.
    pub fn collected(r: &crate::gc::Report) -> EventKind {
        EventKind::HistoryCollected {
            roots_before: r.roots_before,
            roots_kept: r.roots_kept,
            bytes_freed: r.chunk_bytes_freed,
        }
    }
}

struct Ring {
    /// The id the next event gets.
    next: u64,
    events: VecDeque<Event>,
    cap: usize,
}

type Waker = Arc<dyn Fn() + Send + Sync>;

struct Inner {
    ring: Mutex<Ring>,
    cv: Condvar,
    wakers: Mutex<Vec<Waker>>,
}

/// The bus: cheap to clone, one per node.
#[derive(Clone)]
pub struct Bus(Arc<Inner>);

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bus(last {})", self.last_id())
    }
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Now, as event times are written.
fn now_name() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    snapshot_name(Timestamp {
        secs: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: d.subsec_nanos(),
    })
}

impl Bus {
    /// A bus keeping the last [`RING`] events.
    pub fn new() -> Bus {
        Bus::with_capacity(RING)
    }

    /// A bus keeping the last `cap` events (at least 1).
    pub fn with_capacity(cap: usize) -> Bus {
        Bus(Arc::new(Inner {
            ring: Mutex::new(Ring {
                next: 1,
                events: VecDeque::new(),
                cap: cap.max(1),
            }),
            cv: Condvar::new(),
            wakers: Mutex::new(Vec::new()),
        }))
    }

    /// Appends an event and wakes every waiter; returns its id. Never
    /// waits for a subscriber.
    pub fn publish(&self, kind: EventKind) -> u64 {
        let id = {
            let mut r = lock(&self.0.ring);
            let id = r.next;
            r.next += 1;
            if r.events.len() == r.cap {
                r.events.pop_front();
            }
            r.events.push_back(Event {
                id,
                time: now_name(),
                kind,
            });
            id
        };
        self.0.cv.notify_all();
        let wakers = lock(&self.0.wakers).clone();
        for w in wakers {
            w();
        }
        id
    }

    /// The id of the newest event (0: none yet).
    pub fn last_id(&self) -> u64 {
        lock(&self.0.ring).next - 1
    }

    /// The kept events after id `since`, oldest first (from 0: all kept).
    /// The first one's id is above `since + 1` when the ring dropped some.
    /// A `since` above the newest id was seen on an earlier run of the
    /// node (ids start at 1 again): everything kept is new to that reader.
    pub fn since(&self, since: u64) -> Vec<Event> {
        Bus::after(&lock(&self.0.ring), since)
    }

    fn after(r: &Ring, since: u64) -> Vec<Event> {
        let since = if since >= r.next { 0 } else { since };
        let skip = r.events.partition_point(|e| e.id <= since);
        r.events.iter().skip(skip).cloned().collect()
    }

    /// [`Bus::since`], waiting up to `timeout` for one to come when none
    /// is there yet (empty: none came).
    pub fn wait(&self, since: u64, timeout: Duration) -> Vec<Event> {
        let end = Instant::now() + timeout;
        let mut r = lock(&self.0.ring);
        loop {
            let got = Bus::after(&r, since);
            if !got.is_empty() {
                return got;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Vec::new();
            }
            r = self
                .0
                .cv
                .wait_timeout(r, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Calls `f` after every publish, from the publishing thread: for an
    /// async subscriber's wake-up (e.g. a `tokio::sync::Notify`). `f`
    /// must return at once.
    pub fn on_publish(&self, f: impl Fn() + Send + Sync + 'static) {
        lock(&self.0.wakers).push(Arc::new(f));
    }
}

/// What the differ thread is told.
enum Msg {
    Root(CommitInfo),
    Merged { peer: String, root: Hash },
}

/// Turns new roots into events: the vfs's root observer calls
/// [`Feed::root_published`], the peer manager [`Feed::merged`]. Both only
/// queue the work: a thread of its own reads the log and diffs the trees
/// (at most [`MAX_CHANGES`] changes a commit), so the publishing thread
/// never waits for it.
///
/// Commits with two parents are merges from a peer: only the peer
/// manager knows which peer, so those are told by [`Feed::merged`] as
/// [`EventKind::RemoteChange`] (and [`EventKind::Conflict`]s); every
/// other commit (local writes, a restore) gives one
/// [`EventKind::LocalChange`] per changed name.
#[derive(Clone, Debug)]
pub struct Feed {
    bus: Bus,
    tx: mpsc::Sender<Msg>,
}

impl Feed {
    /// Starts the differ thread over `store`, from its newest commit on.
    pub fn start(store: Arc<Store>, bus: Bus) -> crate::Result<Feed> {
        let (tx, rx) = mpsc::channel();
        let mut told = read_log(store.kv(), 1)?.first().map_or(0, |c| c.seq);
        let b = bus.clone();
        std::thread::Builder::new()
            .name("backer-events".into())
            .spawn(move || {
                for msg in rx {
                    let done = match msg {
                        Msg::Root(info) => local_changes(&store, &b, &mut told, &info),
                        Msg::Merged { peer, root } => remote_changes(&store, &b, &peer, root),
                    };
                    if let Err(e) = done {
                        tracing::warn!(error = %e, "cannot list the changes of a commit");
                    }
                }
            })
            .map_err(|e| crate::Error::io("cannot start the event thread", e))?;
        Ok(Feed { bus, tx })
    }

    /// The bus it publishes on.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// A root was published (from the vfs's root observer).
    pub fn root_published(&self, info: &CommitInfo) {
        let _ = self.tx.send(Msg::Root(info.clone()));
    }

    /// A session with `peer` merged its tree into ours, making `root`.
    pub fn merged(&self, peer: String, root: Hash) {
        let _ = self.tx.send(Msg::Merged { peer, root });
    }
}

/// At most this many commits are read from the log after one publish (a
/// flood of commits told at once: the older ones are skipped).
const MAX_COMMITS: usize = 64;

fn parent_of(c: &crate::vfs::Commit) -> Hash {
    c.parents
        .first()
        .map_or_else(history::empty_dir_hash, |p| Hash(*p))
}

fn local_changes(store: &Store, bus: &Bus, told: &mut u64, info: &CommitInfo) -> crate::Result<()> {
    if info.seq <= *told {
        return Ok(());
    }
    let mut commits = read_log(store.kv(), MAX_COMMITS)?;
    commits.retain(|c| c.seq > *told && c.seq <= info.seq);
    *told = info.seq;
    for c in commits.iter().rev().filter(|c| c.parents.len() < 2) {
        let (changes, _) = history::diff(store, parent_of(c), Hash(c.root), MAX_CHANGES)?;
        for ch in changes {
            bus.publish(EventKind::LocalChange {
                path: ch.path,
                kind: ch.change,
                from: ch.from,
            });
        }
    }
    Ok(())
}

fn remote_changes(store: &Store, bus: &Bus, peer: &str, root: Hash) -> crate::Result<()> {
    let commits = read_log(store.kv(), MAX_COMMITS)?;
    let Some(c) = commits.iter().find(|c| Hash(c.root) == root) else {
        return Ok(());
    };
    let (changes, truncated) = history::diff(store, parent_of(c), root, MAX_CHANGES)?;
    if changes.is_empty() {
        return Ok(());
    }
    let mut counts = Counts::default();
    let mut conflicts = Vec::new();
    for ch in &changes {
        match ch.change {
            ChangeKind::Added => counts.added += 1,
            ChangeKind::Modified => counts.modified += 1,
            ChangeKind::Deleted => counts.deleted += 1,
            ChangeKind::Renamed => counts.renamed += 1,
            ChangeKind::Conflict => {
                counts.conflicts += 1;
                if let Some((path, author)) = conflict_original(&ch.path) {
                    conflicts.push((path, ch.path.clone(), author));
                }
            }
        }
    }
    bus.publish(EventKind::RemoteChange {
        peer: peer.to_string(),
        paths: changes
            .iter()
            .take(MAX_REMOTE_PATHS)
            .map(|c| c.path.clone())
            .collect(),
        counts,
        truncated,
    });
    for (path, copy, author) in conflicts {
        bus.publish(EventKind::Conflict {
            path,
            copy,
            author,
            peer: peer.to_string(),
        });
    }
    Ok(())
}

/// The name a conflict copy belongs to and the short id of its author:
/// `a/report.sync-conflict-20261126-023045-ABCDEFG.txt` gives
/// (`a/report.txt`, `ABCDEFG`); `None` for a name not made by
/// [`crate::tree::conflict::conflict_name`].
pub fn conflict_original(copy: &str) -> Option<(String, String)> {
    const MARK: &str = ".sync-conflict-";
    let at = copy.rfind(MARK)?;
    let rest = &copy[at + MARK.len()..];
    // YYYYMMDD-HHMMSS-NODE7[-N][.ext]
    let stamp = rest.get(..16)?;
    let ok = stamp.bytes().enumerate().all(|(i, b)| match i {
        8 | 15 => b == b'-',
        _ => b.is_ascii_digit(),
    });
    if !ok {
        return None;
    }
    let author = rest.get(16..23)?.to_string();
    let mut tail = &rest[23..];
    if let Some(n) = tail.strip_prefix('-') {
        let digits = n.bytes().take_while(u8::is_ascii_digit).count();
        tail = &n[digits..];
    }
    if !(tail.is_empty() || tail.starts_with('.')) {
        return None;
    }
    Some((format!("{}{tail}", &copy[..at]), author))
}

#[cfg(test)]
mod tests;
