//! The sync protocol as a state machine that does no I/O and reads no
//! clock, in the manner of quinn-proto's `Connection`.
//!
//! Methods come in four groups:
//!
//! - **inputs**: [`Reconcile::handle_message`] (a message from the peer)
//!   and [`Reconcile::handle_local_root`] (our committed root changed);
//! - **outputs**: [`Reconcile::poll_transmit`] (the next message to send:
//!   call until `None` after every input), [`Reconcile::poll_event`]
//!   (progress, merges, convergence) and [`Reconcile::poll_merge`] (a
//!   pulled root to merge: the driver runs [`Local::merge`] where it may
//!   block, and hands the result back to [`Reconcile::handle_merged`]);
//! - **getters**: [`Reconcile::is_finished`], [`Reconcile::stats`],
//!   [`Reconcile::peer`];
//! - the local store is passed in to every input and output call, as a
//!   [`Local`]: reads answer the peer and walk our tree, writes store
//!   verified items. The merge, the one step that walks whole trees and
//!   commits, is an output instead.
//!
//! After an input, poll transmits, then events, then the merge (whose
//! result is an input again). A driver may take further inputs before it
//! has polled every transmit (the session driver does while its writer
//! is backed up); it polls the merge only once transmits return `None`.
//! The deterministic test harness (`mesh`) lets its seed pick among
//! these orders, so the properties hold for all of them.
//!
//! Both directions run at once: each side serves the other's requests and
//! pulls what it lacks ([`pull`]). An error from any input ends the
//! session: send [`Error::abort_reason`] if any, then close.

mod heal;
#[cfg(test)]
mod mesh;
pub mod pull;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use backer_fs::{Hash, NodeId};

use crate::error::{Error, Result};
use crate::hello::Hello;
use crate::local::Local;
use crate::merge::Merged;
use crate::proto::{Message, MAX_BATCH, MAX_OUTSTANDING};
use heal::{For, Healed, Heals, Order};
pub use pull::Progress;
use pull::{Item, Pull, Window};

/// How a session behaves.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// End once both sides hold the same root (`Done` both ways), rather
    /// than keep running and pull every root the peer announces.
    pub once: bool,
    /// The most items asked for and not yet answered.
    pub window_items: usize,
    /// The most chunk bytes asked for and not yet received.
    pub window_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            once: false,
            window_items: 4096,
            window_bytes: 32 << 20,
        }
    }
}

/// Something a user interface or a log may want to know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The peer's hello was accepted.
    Ready {
        /// Who the peer is.
        peer: NodeId,
    },
    /// We started pulling the peer's root.
    PullStarted {
        /// The peer's root.
        remote: Hash,
    },
    /// Where the current pull stands.
    Progress(Progress),
    /// A pull ended in a merge, committed as our new root.
    Merged {
        /// The peer's root that was merged.
        remote: Hash,
        /// What the merge made.
        merged: Merged,
    },
    /// A pull gave up (the peer lacked something it had announced); it is
    /// tried again when the peer announces a new root.
    PullFailed {
        /// The peer's root.
        remote: Hash,
        /// Why.
        reason: String,
    },
    /// Both sides hold this root.
    InSync {
        /// The common root.
        root: Hash,
    },
    /// A chunk asked for by [`Reconcile::handle_wanted`] came, checked
    /// out and is stored.
    Healed {
        /// The chunk.
        chunk: Hash,
    },
    /// The peer lacks a chunk asked for by [`Reconcile::handle_wanted`].
    HealRefused {
        /// The chunk.
        chunk: Hash,
    },
}

/// Counters of one session, for tests, logs and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Pulls started.
    pub pulls: u64,
    /// Merges committed.
    pub merges: u64,
    /// The most round trips of requests any one pull needed.
    pub max_pull_rounds: u32,
    /// Directory nodes, content nodes and chunks received.
    pub dir_nodes_received: u64,
    /// Content-list nodes received.
    pub content_nodes_received: u64,
    /// Chunks received.
    pub chunks_received: u64,
    /// Chunk bytes received.
    pub chunk_bytes_received: u64,
    /// Items the peer asked us for.
    pub items_served: u64,
}

/// The sync state machine of one session with one peer.
pub struct Reconcile {
    hello: Hello,
    cfg: Config,
    peer: Option<NodeId>,
    /// Hello, Root, Done: sent before anything else.
    control: VecDeque<Message>,
    /// The peer's requests still to answer, in order.
    serve: VecDeque<(Item, Hash)>,
    local_root: Hash,
    announced: Option<Hash>,
    remote_root: Option<Hash>,
    /// The last remote root merged (or given up on): not pulled again.
    merged_remote: Option<Hash>,
    pull: Option<Pull>,
    /// A finished pull waiting for its merge: `(remote, handed out)`.
    merge: Option<(Hash, bool)>,
    sent_done: Option<Hash>,
    recv_done: Option<Hash>,
    in_sync_reported: Option<Hash>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Who each outstanding answer is for (the pull or a heal).
    order: Order,
    heals: Heals,
}

impl Reconcile {
    /// A session that starts by sending `hello` and our committed `root`.
    pub fn new(hello: Hello, root: Hash, cfg: Config) -> Reconcile {
        let mut control = VecDeque::new();
        control.push_back(Message::Hello(hello.clone()));
        control.push_back(Message::Root(root));
        Reconcile {
            hello,
            cfg,
            peer: None,
            control,
            serve: VecDeque::new(),
            local_root: root,
            announced: Some(root),
            remote_root: None,
            merged_remote: None,
            pull: None,
            merge: None,
            sent_done: None,
            recv_done: None,
            in_sync_reported: None,
            events: VecDeque::new(),
            stats: Stats::default(),
            order: Order::default(),
            heals: Heals::default(),
        }
    }

    /// The peer, once its hello was accepted.
    pub fn peer(&self) -> Option<NodeId> {
        self.peer
    }

    /// This session's counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// One-shot sessions: both sides said `Done` for our root and nothing
    /// is left to send.
    pub fn is_finished(&self) -> bool {
        self.cfg.once
            && self.sent_done == Some(self.local_root)
            && self.recv_done == Some(self.local_root)
            && self.control.is_empty()
            && self.serve.is_empty()
            && self.pull.is_none()
            && self.merge.is_none()
    }

    /// The remote root of a finished pull, to merge into the committed
    /// tree with [`Local::merge`] (everything it needs is held), once per
    /// pull. Hand the result to [`Reconcile::handle_merged`]; until then
    /// no new pull starts.
    pub fn poll_merge(&mut self) -> Option<Hash> {
        match &mut self.merge {
            Some((remote, handed @ false)) => {
                *handed = true;
                Some(*remote)
            }
            _ => None,
        }
    }

    /// The merge handed out by [`Reconcile::poll_merge`] committed `merged`.
    pub fn handle_merged(&mut self, merged: Merged, local: &mut dyn Local) -> Result<()> {
        let Some((remote, true)) = self.merge.take() else {
            return Err(Error::Protocol("a merge result nobody asked for".into()));
        };
        self.stats.merges += 1;
        self.set_local_root(merged.root);
        self.events.push_back(Event::Merged { remote, merged });
        self.advance(local)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Takes one message from the peer.
    pub fn handle_message(&mut self, msg: Message, local: &mut dyn Local) -> Result<()> {
        if self.peer.is_none() {
            let Message::Hello(theirs) = msg else {
                return Err(Error::Protocol(format!("{} before hello", msg.kind())));
            };
            self.hello.check(&theirs)?;
            self.peer = Some(theirs.node);
            self.events.push_back(Event::Ready { peer: theirs.node });
            return Ok(());
        }
        match msg {
            Message::Hello(_) => return Err(Error::Protocol("a second hello".into())),
            Message::Root(root) => {
                self.remote_root = Some(root);
            }
            Message::GetDirNodes(h) => self.queue_serve(Item::Dir, h)?,
            Message::GetContentNodes(h) => self.queue_serve(Item::Content, h)?,
            Message::GetChunks(h) => self.queue_serve(Item::Chunk, h)?,
            Message::DirNode(b) => self.answer(local, Item::Dir, Some(b))?,
            Message::ContentNode(b) => self.answer(local, Item::Content, Some(b))?,
            Message::Chunk(b) => self.answer(local, Item::Chunk, Some(b))?,
            Message::Missing => self.answer(local, Item::Chunk, None)?,
            Message::Done(root) => self.recv_done = Some(root),
            Message::Abort(reason) => return Err(Error::PeerAborted(reason)),
        }
        self.advance(local)
    }

    /// Our committed root is now `root` (a local commit, or another
    /// session's merge): announce it.
    pub fn handle_local_root(&mut self, root: Hash, local: &mut dyn Local) -> Result<()> {
        self.set_local_root(root);
        if self.peer.is_some() {
            self.advance(local)?;
        }
        Ok(())
    }

    /// This node wants these chunks back (see
    /// [`backer_fs::heal::Wanted`]): asked of the peer once it is ready,
    /// unless already asked; each answer becomes an [`Event::Healed`] or
    /// [`Event::HealRefused`].
    pub fn handle_wanted(&mut self, chunks: Vec<Hash>) {
        self.heals.want(chunks);
    }

    /// The next message to send, if any. Control messages first, then our
    /// requests (small, and they keep the peer busy), then answers.
    pub fn poll_transmit(&mut self, local: &dyn Local) -> Result<Option<Message>> {
        if let Some(m) = self.control.pop_front() {
            return Ok(Some(m));
        }
        let window = Window {
            items: self.cfg.window_items,
            bytes: self.cfg.window_bytes,
        };
        if let Some(m) = self.pull.as_mut().and_then(|p| p.next_request(window)) {
            self.order.pulled(&m);
            return Ok(Some(m));
        }
        if self.peer.is_some() {
            if let Some(m) = self.heals.next_request(&mut self.order) {
                return Ok(Some(m));
            }
        }
        let Some((item, hash)) = self.serve.pop_front() else {
            return Ok(None);
        };
        self.stats.items_served += 1;
        let msg = match item {
            Item::Dir => local.node(&hash)?.map(Message::DirNode),
            Item::Content => local.node(&hash)?.map(Message::ContentNode),
            Item::Chunk => local.chunk(&hash)?.map(Message::Chunk),
        };
        Ok(Some(msg.unwrap_or(Message::Missing)))
    }

    fn set_local_root(&mut self, root: Hash) {
        self.local_root = root;
        if self.announced != Some(root) {
            self.announced = Some(root);
            self.control.push_back(Message::Root(root));
        }
    }

    fn queue_serve(&mut self, item: Item, hashes: Vec<Hash>) -> Result<()> {
        if hashes.len() > MAX_BATCH {
            return Err(Error::Protocol(format!(
                "a request for {} items (the most is {MAX_BATCH})",
                hashes.len()
            )));
        }
        if self.serve.len() + hashes.len() > MAX_OUTSTANDING {
            return Err(Error::Protocol("too many requests outstanding".into()));
        }
        self.serve.extend(hashes.into_iter().map(|h| (item, h)));
        Ok(())
    }

    fn answer(&mut self, local: &mut dyn Local, item: Item, bytes: Option<Vec<u8>>) -> Result<()> {
        if let For::Heal(hash) = self.order.next()? {
            if item != Item::Chunk && bytes.is_some() {
                return Err(Error::Protocol(format!(
                    "asked for a chunk, got a {item:?}"
                )));
            }
            if let Some(b) = &bytes {
                self.stats.chunks_received += 1;
                self.stats.chunk_bytes_received += b.len() as u64;
            }
            self.events
                .push_back(match self.heals.answer(local, hash, bytes)? {
                    Healed::Stored(chunk) => Event::Healed { chunk },
                    Healed::Refused(chunk) => Event::HealRefused { chunk },
                });
            return Ok(());
        }
        let Some(pull) = self.pull.as_mut() else {
            return Err(Error::Protocol("an answer while not pulling".into()));
        };
        if let Some(b) = &bytes {
            match item {
                Item::Dir => self.stats.dir_nodes_received += 1,
                Item::Content => self.stats.content_nodes_received += 1,
                Item::Chunk => {
                    self.stats.chunks_received += 1;
                    self.stats.chunk_bytes_received += b.len() as u64;
                }
            }
        }
        pull.receive(local, item, bytes)
    }

    /// Runs the pull as far as it goes without the peer, merges a finished
    /// pull, starts the next one, and says when both sides agree.
    fn advance(&mut self, local: &mut dyn Local) -> Result<()> {
        loop {
            if let Some(pull) = self.pull.as_mut() {
                pull.run(local)?;
                self.events.push_back(Event::Progress(pull.progress));
                if !pull.is_complete() {
                    return Ok(());
                }
                let pull = self.pull.take().expect("checked above");
                self.stats.max_pull_rounds = self.stats.max_pull_rounds.max(pull.rounds);
                self.merged_remote = Some(pull.target);
                match pull.failed {
                    // A one-shot session cannot end in agreement now.
                    Some(reason) if self.cfg.once => {
                        return Err(Error::Protocol(format!(
                            "the peer cannot serve its root {}: {reason}",
                            pull.target
                        )));
                    }
                    Some(reason) => {
                        tracing::warn!(remote = %pull.target, %reason, "pull failed");
                        self.events.push_back(Event::PullFailed {
                            remote: pull.target,
                            reason,
                        });
                    }
                    None => {
                        self.merge = Some((pull.target, false));
                        return Ok(());
                    }
                }
                continue;
            }
            if self.merge.is_some() {
                return Ok(()); // the driver is merging
            }
            let Some(remote) = self.remote_root else {
                return Ok(());
            };
            if remote != self.local_root && Some(remote) != self.merged_remote {
                // Another session may have moved our root since we heard.
                let base = local.root()?;
                self.set_local_root(base);
                if remote != base {
                    self.stats.pulls += 1;
                    self.events.push_back(Event::PullStarted { remote });
                    self.pull = Some(Pull::new(remote, base));
                    continue;
                }
            }
            if remote == self.local_root {
                // We hold it: when our root moves on, there is nothing to pull.
                self.merged_remote = Some(remote);
                if self.in_sync_reported != Some(remote) {
                    self.in_sync_reported = Some(remote);
                    self.events.push_back(Event::InSync { root: remote });
                }
                if self.cfg.once && self.sent_done != Some(remote) {
                    self.sent_done = Some(remote);
                    self.control.push_back(Message::Done(remote));
                }
            }
            return Ok(());
        }
    }
}
