//! The chunks this node wants back: a typed registry between whoever
//! finds a chunk bad or missing (the store's checked reads, a pull, a
//! check, the scrub) and whoever can fetch it (the peer manager in
//! backer-replication, which asks every connected peer for it). No
//! network type appears here: the peer manager registers a waker
//! ([`Wanted::on_change`]), reads what is wanted ([`Wanted::pending_for`]),
//! and reports back what its peers said ([`Wanted::healed`],
//! [`Wanted::refused`]).
//!
//! A reader that met a bad chunk may wait for its heal, but never on the
//! thread that met it: [`Wanted::wait`] takes a callback, run later on
//! this registry's own thread (`backer-heal`) with the [`Outcome`]. The
//! FUSE adapter hands it the kernel's reply, so one damaged chunk holds
//! no FUSE worker thread and no vfs lock while its heal is under way.
//! A wait ends when the chunk is stored again, when every connected peer
//! said it lacks it, when the last peer leaves, or at its deadline.
//!
//! A peer that said it lacks a chunk is not asked again until
//! [`Wanted::retry`] (the peer manager calls it now and then: a peer may
//! heal its own copy from a third node meanwhile).

pub mod repair;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::hash::Hash;
use crate::identity::NodeId;

/// How long a read of a chunk being healed waits for it, at most.
pub const READ_WAIT: Duration = Duration::from_secs(10);

/// The most hashes [`Wanted::pending_for`] hands out at once.
const PENDING_BATCH: usize = 4096;

/// How a wait for a heal ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A good copy is stored again.
    Healed,
    /// No connected peer has it (or none is connected).
    Unavailable,
    /// The deadline passed first.
    TimedOut,
}

/// What a waiter runs when its wait ends (on the registry's thread).
pub type Then = Box<dyn FnOnce(Outcome) + Send>;

struct Waiter {
    deadline: Instant,
    then: Then,
}

#[derive(Default)]
struct Entry {
    /// Peers that said they lack it since the last retry.
    refused: HashSet<NodeId>,
    waiters: Vec<Waiter>,
}

#[derive(Default)]
struct Inner {
    wanted: BTreeMap<Hash, Entry>,
    /// Connected peers (a count per peer: a reconnect may overlap).
    peers: HashMap<NodeId, usize>,
    /// Waits that ended, to run on the registry's thread.
    ready: Vec<(Then, Outcome)>,
    thread: bool,
    healed_total: u64,
}

impl Inner {
    /// Whether some connected peer may still have `hash`.
    fn may_have(&self, hash: &Hash) -> bool {
        let refused = self.wanted.get(hash).map(|e| &e.refused);
        self.peers
            .keys()
            .any(|p| refused.is_none_or(|r| !r.contains(p)))
    }

    /// Ends the waits on every wanted chunk no connected peer may have.
    fn fail_hopeless(&mut self) {
        let hopeless: Vec<Hash> = self
            .wanted
            .iter()
            .filter(|(_, e)| !e.waiters.is_empty())
            .map(|(h, _)| *h)
            .filter(|h| !self.may_have(h))
            .collect();
        for h in hopeless {
            if let Some(e) = self.wanted.get_mut(&h) {
                let waiters = std::mem::take(&mut e.waiters);
                self.ready
                    .extend(waiters.into_iter().map(|w| (w.then, Outcome::Unavailable)));
            }
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
    /// Wakes the registry's thread.
    cond: Condvar,
    /// Told whenever something new is wanted (or to be asked again).
    wakers: Mutex<Vec<Arc<dyn Fn() + Send + Sync>>>,
    /// Whether a peer manager serves the registry (a running node).
    served: AtomicBool,
}

/// The registry of wanted chunks. Cheap to clone (one shared registry).
#[derive(Clone)]
pub struct Wanted(Arc<Shared>);

impl std::fmt::Debug for Wanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wanted")
            .field("chunks", &self.lock().wanted.len())
            .finish()
    }
}

impl Default for Wanted {
    fn default() -> Self {
        Wanted(Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            cond: Condvar::new(),
            wakers: Mutex::new(Vec::new()),
            served: AtomicBool::new(false),
        }))
    }
}

impl Wanted {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.0.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wake_servers(&self) {
        let wakers = self
            .0
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for w in wakers {
            w();
        }
    }

    /// Calls `waker` whenever a chunk becomes wanted, a peer may be asked
    /// again, or a peer joins (cheap and non-blocking: it only wakes).
    /// Whoever registers serves the registry ([`Wanted::is_served`]).
    pub fn on_change(&self, waker: Arc<dyn Fn() + Send + Sync>) {
        self.0.served.store(true, Ordering::SeqCst);
        self.0
            .wakers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(waker);
    }

    /// Whether a peer manager serves this registry (the node runs with
    /// its network side): else nothing asks peers for what is wanted.
    pub fn is_served(&self) -> bool {
        self.0.served.load(Ordering::SeqCst)
    }

    /// Marks `hash` wanted (a bad copy was quarantined, or no peer had it).
    pub fn want(&self, hash: Hash) {
        let new = {
            let mut g = self.lock();
            let new = !g.wanted.contains_key(&hash);
            g.wanted.entry(hash).or_default();
            new
        };
        if new {
            self.wake_servers();
        }
    }

    /// Marks every hash in `hashes` wanted.
    pub fn want_all(&self, hashes: impl IntoIterator<Item = Hash>) {
        {
            let mut g = self.lock();
            for h in hashes {
                g.wanted.entry(h).or_default();
            }
        }
        self.wake_servers();
    }

    /// Whether anything is wanted.
    pub fn is_empty(&self) -> bool {
        self.lock().wanted.is_empty()
    }

    /// How many chunks are wanted.
    pub fn len(&self) -> usize {
        self.lock().wanted.len()
    }

    /// Chunks stored again through [`Wanted::healed`] since start.
    pub fn healed_total(&self) -> u64 {
        self.lock().healed_total
    }

    /// Whether `hash` is wanted.
    pub fn contains(&self, hash: &Hash) -> bool {
        self.lock().wanted.contains_key(hash)
    }

    /// Wanted chunks `peer` has not said it lacks (a bounded batch).
    pub fn pending_for(&self, peer: NodeId) -> Vec<Hash> {
        self.lock()
            .wanted
            .iter()
            .filter(|(_, e)| !e.refused.contains(&peer))
            .map(|(h, _)| *h)
            .take(PENDING_BATCH)
            .collect()
    }

    /// A good copy of `hash` is stored again: it is no longer wanted, and
    /// its waiters go on.
    pub fn healed(&self, hash: &Hash) {
        let mut g = self.lock();
        if let Some(e) = g.wanted.remove(hash) {
            g.healed_total += 1;
            g.ready
                .extend(e.waiters.into_iter().map(|w| (w.then, Outcome::Healed)));
            self.0.cond.notify_all();
        }
    }

    /// `peer` said it lacks `hash`; waits end once no connected peer may
    /// have it.
    pub fn refused(&self, hash: &Hash, peer: NodeId) {
        let mut g = self.lock();
        if let Some(e) = g.wanted.get_mut(hash) {
            e.refused.insert(peer);
            g.fail_hopeless();
            self.0.cond.notify_all();
        }
    }

    /// Every peer may be asked again for everything (one may have healed
    /// its own copy since).
    pub fn retry(&self) {
        {
            let mut g = self.lock();
            for e in g.wanted.values_mut() {
                e.refused.clear();
            }
        }
        self.wake_servers();
    }

    /// `peer` is connected and may be asked.
    pub fn peer_joined(&self, peer: NodeId) {
        *self.lock().peers.entry(peer).or_default() += 1;
        self.wake_servers();
    }

    /// `peer` is gone: waits that only it could still serve end.
    pub fn peer_left(&self, peer: NodeId) {
        let mut g = self.lock();
        if let Some(n) = g.peers.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                g.peers.remove(&peer);
            }
        }
        g.fail_hopeless();
        self.0.cond.notify_all();
    }

    /// Whether a connected peer may have `hash` (a wait may be worth it).
    pub fn may_heal(&self, hash: &Hash) -> bool {
        self.lock().may_have(hash)
    }

    /// Marks `hash` wanted and runs `then` on the registry's thread when
    /// it is healed, found unavailable, or at `deadline`. Returns `then`
    /// back, unrun, if no connected peer may have it (the caller fails at
    /// once).
    pub fn wait(&self, hash: Hash, deadline: Instant, then: Then) -> Result<(), Then> {
        let new = {
            let mut g = self.lock();
            let new = !g.wanted.contains_key(&hash);
            if !g.may_have(&hash) {
                g.wanted.entry(hash).or_default();
                drop(g);
                if new {
                    self.wake_servers();
                }
                return Err(then);
            }
            g.wanted
                .entry(hash)
                .or_default()
                .waiters
                .push(Waiter { deadline, then });
            if !g.thread {
                g.thread = true;
                let weak = Arc::downgrade(&self.0);
                let spawned = std::thread::Builder::new()
                    .name("backer-heal".into())
                    .spawn(move || run_waiters(weak));
                if spawned.is_err() {
                    g.thread = false;
                    tracing::error!("cannot start the heal thread");
                }
            }
            self.0.cond.notify_all();
            new
        };
        if new {
            self.wake_servers();
        }
        Ok(())
    }
}

/// The registry's thread: runs ended waits, and ends those past their
/// deadline. Exits once the registry is gone.
fn run_waiters(weak: Weak<Shared>) {
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        let ready = {
            let mut g = shared.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let mut next = now + Duration::from_secs(1);
            let mut due = Vec::new();
            for e in g.wanted.values_mut() {
                let (late, keep): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut e.waiters)
                    .into_iter()
                    .partition(|w| w.deadline <= now);
                due.extend(late.into_iter().map(|w| (w.then, Outcome::TimedOut)));
                if let Some(d) = keep.iter().map(|w| w.deadline).min() {
                    next = next.min(d);
                }
                e.waiters = keep;
            }
            due.append(&mut g.ready);
            if due.is_empty() {
                let wait = next.saturating_duration_since(now);
                let _ = shared
                    .cond
                    .wait_timeout(g, wait)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            due
        };
        drop(shared);
        for (then, outcome) in ready {
            then(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn waiter() -> (Then, mpsc::Receiver<Outcome>) {
        let (tx, rx) = mpsc::channel();
        (
            Box::new(move |o| {
                let _ = tx.send(o);
            }),
            rx,
        )
    }

    #[test]
    fn no_peer_means_no_wait() {
        let w = Wanted::default();
        let (then, _rx) = waiter();
        let h = Hash::of(b"x");
        assert!(w.wait(h, Instant::now() + READ_WAIT, then).is_err());
        assert!(w.contains(&h), "still wanted for a peer that comes later");
    }

    #[test]
    fn a_heal_ends_the_wait_on_another_thread() {
        let w = Wanted::default();
        let peer = NodeId([1; 32]);
        w.peer_joined(peer);
        let h = Hash::of(b"x");
        let (then, rx) = waiter();
        assert!(w.wait(h, Instant::now() + READ_WAIT, then).is_ok());
        assert_eq!(w.pending_for(peer), vec![h]);
        w.healed(&h);
        assert_eq!(rx.recv().unwrap(), Outcome::Healed);
        assert!(w.is_empty());
    }

    #[test]
    fn every_peer_refusing_ends_the_wait() {
        let w = Wanted::default();
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        w.peer_joined(a);
        w.peer_joined(b);
        let h = Hash::of(b"x");
        let (then, rx) = waiter();
        assert!(w.wait(h, Instant::now() + READ_WAIT, then).is_ok());
        w.refused(&h, a);
        assert!(w.pending_for(a).is_empty());
        assert!(w.may_heal(&h));
        w.refused(&h, b);
        assert_eq!(rx.recv().unwrap(), Outcome::Unavailable);
        w.retry();
        assert_eq!(w.pending_for(a), vec![h]);
    }

    #[test]
    fn the_deadline_ends_the_wait() {
        let w = Wanted::default();
        w.peer_joined(NodeId([1; 32]));
        let (then, rx) = waiter();
        let h = Hash::of(b"x");
        assert!(w.wait(h, Instant::now(), then).is_ok());
        assert_eq!(rx.recv().unwrap(), Outcome::TimedOut);
    }

    #[test]
    fn the_last_peer_leaving_ends_the_wait() {
        let w = Wanted::default();
        let p = NodeId([1; 32]);
        w.peer_joined(p);
        let (then, rx) = waiter();
        assert!(w
            .wait(Hash::of(b"x"), Instant::now() + READ_WAIT, then)
            .is_ok());
        w.peer_left(p);
        assert_eq!(rx.recv().unwrap(), Outcome::Unavailable);
    }
}
