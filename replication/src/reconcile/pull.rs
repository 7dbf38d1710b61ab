//! One pull: fetch what the peer's tree has that ours lacks.
//!
//! The descent compares the peer's directory tree with ours at the same
//! path, node by node: a node whose hash is one of ours at the same height
//! over the same names is skipped whole. Entries that differ lead to the
//! subdirectories and file contents the merge's result may reference (as
//! `merge::class::need` decides, from the merge's own classification),
//! and those to the chunks this node does not hold. Nodes already in the
//! store (from an earlier, cut-off pull, or a rename) are read locally,
//! not fetched, but still descended: only subtrees equal to our committed
//! tree are known to be complete.
//!
//! Work runs locally until it needs a node the store lacks; those are
//! asked for in batches, many at once, within a window of items and bytes.
//! Answers arrive in the order asked ([`crate::proto`]).

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use backer_fs::tree::content::{self, ContentNode, Extent};
use backer_fs::tree::dir::{self, DirNode};
use backer_fs::tree::{Entry, VersionVector};
use backer_fs::vfs::{MAX_DEPTH, RESERVED_NAME};
use backer_fs::Hash;

use crate::error::{Error, Result};
use crate::local::Local;
use crate::merge::{self, class::Mode, class::Need};
use crate::proto::{Message, MAX_BATCH};

/// What an answer carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Item {
    /// A directory tree node.
    Dir,
    /// A content-list node.
    Content,
    /// A chunk.
    Chunk,
}

/// Where a pull stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Files whose content is being fetched.
    pub files_total: u64,
    /// Of those, how many are complete.
    pub files_done: u64,
    /// Chunk bytes to fetch, as known so far.
    pub bytes_total: u64,
    /// Chunk bytes received.
    pub bytes_done: u64,
}

impl Progress {
    /// Files still to fetch.
    pub fn files_to_go(&self) -> u64 {
        self.files_total.saturating_sub(self.files_done)
    }

    /// Chunk bytes still to fetch (as known so far).
    pub fn bytes_to_go(&self) -> u64 {
        self.bytes_total.saturating_sub(self.bytes_done)
    }
}

/// A piece of the descent, with the number of round trips it took to
/// discover it.
#[derive(Clone, Debug)]
struct Work {
    what: What,
    round: u32,
    /// The file (index into `Pull::files`) this work is for, if any.
    file: Option<u32>,
}

#[derive(Clone, Debug)]
enum What {
    /// A node of the peer's tree of one directory.
    Dir {
        node: Hash,
        /// Our tree of the same directory, if we have one.
        local: Option<Hash>,
        /// The node covers names above this one (exclusive).
        lo: Option<Arc<[u8]>>,
        /// Nesting of the directory (0: the root directory).
        depth: u32,
        /// The height the parent node says this node has.
        height: Option<u8>,
        /// How the merge treats this directory ([`merge::class::Mode`]).
        mode: Walk,
        /// The directory's path from the root (for the ignore patterns).
        path: Arc<[u8]>,
    },
    /// A node of a file's content list.
    Content {
        node: Hash,
        height: Option<u8>,
        /// The byte length the parent (or the entry) says it holds.
        len: u64,
        /// Whether its chunks are fetched: not for a file this node
        /// ignores, whose content stays absent on purpose (only its
        /// small content nodes are fetched, so the tree stays whole).
        chunks: bool,
    },
}

/// An owned [`Mode`], kept in the pull's work items.
#[derive(Clone, Debug)]
enum Walk {
    Merge,
    Adopt,
    Prune(Arc<VersionVector>),
}

impl Walk {
    fn mode(&self) -> Mode<'_> {
        match self {
            Walk::Merge => Mode::Merge,
            Walk::Adopt => Mode::Adopt,
            Walk::Prune(t) => Mode::Prune(t),
        }
    }

    /// `mode` owned; `parent` is the walk it came from (whose tombstone
    /// is shared rather than copied).
    fn of(mode: Mode<'_>, parent: &Walk) -> Walk {
        match (mode, parent) {
            (Mode::Merge, _) => Walk::Merge,
            (Mode::Adopt, _) => Walk::Adopt,
            (Mode::Prune(t), Walk::Prune(p)) if std::ptr::eq(t, &**p) => Walk::Prune(p.clone()),
            (Mode::Prune(t), _) => Walk::Prune(Arc::new(t.clone())),
        }
    }
}

/// A pull of one remote root.
pub(crate) struct Pull {
    /// The peer's root being pulled.
    pub(crate) target: Hash,
    work: Vec<Work>,
    /// Items to ask for.
    want: VecDeque<Want>,
    /// Items asked for, in order.
    expected: VecDeque<Want>,
    /// Work waiting for a node that was asked for.
    waiting: HashMap<Hash, Vec<Work>>,
    /// Content nodes met, with the length they were checked to hold.
    content_len: HashMap<Hash, u64>,
    /// Of those, the ones scheduled with their chunks.
    content_chunks: HashSet<Hash>,
    /// Chunks already scheduled or checked.
    chunks: HashSet<Hash>,
    /// Our directory nodes, decoded once.
    ours: HashMap<Hash, Arc<DirNode>>,
    in_flight_bytes: u64,
    /// Per file: pieces of work and chunks still pending.
    files: Vec<u32>,
    pub(crate) progress: Progress,
    /// The most round trips any request needed.
    pub(crate) rounds: u32,
    /// Set when the peer lacked something: the pull drains its answers
    /// and then gives up.
    pub(crate) failed: Option<String>,
}

/// One item to ask for, then asked for.
#[derive(Clone, Copy, Debug)]
struct Want {
    item: Item,
    hash: Hash,
    /// What it costs the byte window: a chunk's length, or [`NODE_BYTES`].
    bytes: u64,
    /// The round trips it took to discover.
    round: u32,
    /// The file (index into `Pull::files`) it is for, if any.
    file: Option<u32>,
}

/// Window limits for one pull.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Window {
    pub(crate) items: usize,
    pub(crate) bytes: u64,
}

/// What a node costs the byte window (its size is not known in advance).
const NODE_BYTES: u64 = 4096;

impl Pull {
    /// A pull of the peer's root `target` against our committed `base`.
    pub(crate) fn new(target: Hash, base: Hash) -> Pull {
        let mut p = Pull {
            target,
            work: Vec::new(),
            want: VecDeque::new(),
            expected: VecDeque::new(),
            waiting: HashMap::new(),
            content_len: HashMap::new(),
            content_chunks: HashSet::new(),
            chunks: HashSet::new(),
            ours: HashMap::new(),
            in_flight_bytes: 0,
            files: Vec::new(),
            progress: Progress::default(),
            rounds: 0,
            failed: None,
        };
        if target != base {
            p.work.push(Work {
                what: What::Dir {
                    node: target,
                    local: Some(base),
                    lo: None,
                    depth: 0,
                    height: None,
                    mode: Walk::Merge,
                    path: Arc::from(&b""[..]),
                },
                round: 0,
                file: None,
            });
        }
        p
    }

    /// Whether nothing is left to do or to wait for.
    pub(crate) fn is_complete(&self) -> bool {
        self.work.is_empty()
            && self.want.is_empty()
            && self.expected.is_empty()
            && self.waiting.is_empty()
    }

    /// Runs every piece of work that needs no answer from the peer.
    pub(crate) fn run(&mut self, local: &dyn Local) -> Result<()> {
        while let Some(w) = self.work.pop() {
            if self.failed.is_some() {
                break;
            }
            let node = match &w.what {
                What::Dir { node, .. } | What::Content { node, .. } => *node,
            };
            match local.pulled_node(&node)? {
                Some(bytes) => self.process(local, w, &bytes)?,
                None => {
                    let kind = match w.what {
                        What::Dir { .. } => Item::Dir,
                        What::Content { .. } => Item::Content,
                    };
                    let waiters = self.waiting.entry(node).or_default();
                    if waiters.is_empty() {
                        self.want.push_back(Want {
                            item: kind,
                            hash: node,
                            bytes: NODE_BYTES,
                            round: w.round + 1,
                            file: w.file,
                        });
                        if let Some(f) = w.file {
                            self.files[f as usize] += 1;
                        }
                    }
                    waiters.push(w);
                }
            }
        }
        if self.failed.is_some() {
            self.work.clear();
            self.want.clear();
            self.waiting.clear();
        }
        Ok(())
    }

    /// The next request to send, within the window.
    pub(crate) fn next_request(&mut self, window: Window) -> Option<Message> {
        let kind = self.want.front()?.item;
        let mut hashes = Vec::new();
        while let Some(&w) = self.want.front() {
            let full = self.expected.len() >= window.items
                || (self.in_flight_bytes > 0 && self.in_flight_bytes + w.bytes > window.bytes);
            if w.item != kind || hashes.len() >= MAX_BATCH || full {
                break;
            }
            self.want.pop_front();
            self.in_flight_bytes += w.bytes;
            self.rounds = self.rounds.max(w.round);
            self.expected.push_back(w);
            hashes.push(w.hash);
        }
        if hashes.is_empty() {
            return None;
        }
        Some(match kind {
            Item::Dir => Message::GetDirNodes(hashes),
            Item::Content => Message::GetContentNodes(hashes),
            Item::Chunk => Message::GetChunks(hashes),
        })
    }

    /// Takes one answer (`None`: the peer lacks the item: a chunk is
    /// recorded missing, a node fails the pull), verifies it and stores
    /// it. Wrong kind or no question pending: a protocol error;
    /// bytes that do not match the hash asked for: bad data.
    pub(crate) fn receive(
        &mut self,
        local: &mut dyn Local,
        kind: Item,
        bytes: Option<Vec<u8>>,
    ) -> Result<()> {
        let Want {
            item: want_kind,
            hash,
            bytes: cost,
            file,
            ..
        } = self
            .expected
            .pop_front()
            .ok_or_else(|| Error::Protocol("an answer nobody asked for".into()))?;
        if want_kind != kind && bytes.is_some() {
            return Err(Error::Protocol(format!(
                "asked for a {want_kind:?}, got a {kind:?}"
            )));
        }
        self.in_flight_bytes -= cost;
        let Some(bytes) = bytes else {
            if want_kind == Item::Chunk {
                // A chunk the peer cannot produce (damaged or missing
                // there): recorded as missing here, and the pull goes on,
                // so everything else converges.
                local.chunk_unavailable(&hash)?;
                self.progress.bytes_total -= cost;
                self.file_step_done(file);
                return Ok(());
            }
            self.failed
                .get_or_insert_with(|| format!("the peer lacks {want_kind:?} {hash}"));
            return Ok(());
        };
        // After a `Missing`, answers still in flight are verified and kept
        // (the next pull will not fetch them again), but lead nowhere.
        match kind {
            Item::Dir if !dir::verify_node(&hash, &bytes) => {
                return Err(Error::BadData(format!(
                    "directory node {hash} fails verification"
                )))
            }
            Item::Content if !content::verify_node(&hash, &bytes) => {
                return Err(Error::BadData(format!(
                    "content node {hash} fails verification"
                )))
            }
            Item::Chunk if Hash::of(&bytes) != hash || bytes.len() as u64 != cost => {
                return Err(Error::BadData(format!("chunk {hash} fails verification")))
            }
            Item::Chunk => {
                local.put_chunk(hash, &bytes)?;
                self.progress.bytes_done += cost;
                self.file_step_done(file);
            }
            Item::Dir | Item::Content => {
                local.put_node(hash, bytes)?;
                self.file_step_done(file);
                if self.failed.is_some() {
                    return Ok(());
                }
                for w in self.waiting.remove(&hash).unwrap_or_default() {
                    self.work.push(Work {
                        round: w.round + 1,
                        ..w
                    });
                }
            }
        }
        Ok(())
    }

    fn file_step_done(&mut self, file: Option<u32>) {
        if let Some(f) = file {
            let n = &mut self.files[f as usize];
            *n -= 1;
            if *n == 0 {
                self.progress.files_done += 1;
            }
        }
    }

    fn process(&mut self, local: &dyn Local, w: Work, bytes: &[u8]) -> Result<()> {
        match w.what {
            What::Dir {
                local: ours,
                lo,
                depth,
                height,
                mode,
                path,
                ..
            } => {
                let node = dir::decode_node(bytes).map_err(|e| Error::BadData(e.to_string()))?;
                if height.is_some_and(|h| h != node.height()) {
                    return Err(Error::BadData(
                        "a directory node of the wrong height".into(),
                    ));
                }
                let ctx = DirCtx {
                    ours,
                    depth,
                    mode,
                    round: w.round,
                    path,
                };
                match node {
                    DirNode::Internal { height, children } => {
                        self.dir_internal(local, &ctx, lo, height, children)
                    }
                    DirNode::Leaf(entries) => self.dir_leaf(local, &ctx, lo, entries),
                }
            }
            What::Content {
                height,
                len,
                chunks,
                ..
            } => {
                let node =
                    content::decode_node(bytes).map_err(|e| Error::BadData(e.to_string()))?;
                if height.is_some_and(|h| h != node.height()) {
                    return Err(Error::BadData("a content node of the wrong height".into()));
                }
                let total = node.byte_len().map_err(|e| Error::BadData(e.to_string()))?;
                if total != len {
                    return Err(Error::BadData(format!(
                        "a content node holds {total} bytes, its parent says {len}"
                    )));
                }
                match node {
                    ContentNode::Internal { height, children } => {
                        for (child, len) in children {
                            self.content(child, Some(height - 1), len, w.round, w.file, chunks)?;
                        }
                    }
                    ContentNode::Leaf(_) if !chunks => {}
                    ContentNode::Leaf(extents) => {
                        for e in extents {
                            if let Extent::Data { hash, len } = e {
                                if self.chunks.insert(hash) && !local.has_chunk(&hash)? {
                                    let len = u64::from(len);
                                    self.progress.bytes_total += len;
                                    if let Some(f) = w.file {
                                        self.files[f as usize] += 1;
                                    }
                                    self.want.push_back(Want {
                                        item: Item::Chunk,
                                        hash,
                                        bytes: len,
                                        round: w.round + 1,
                                        file: w.file,
                                    });
                                }
                            }
                        }
                    }
                }
                // This piece of the file is processed.
                self.file_piece_done(w.file);
                Ok(())
            }
        }
    }

    /// Schedules a content node (once per hash, or once more if it now
    /// needs its chunks; a second sighting must claim the same length).
    fn content(
        &mut self,
        node: Hash,
        height: Option<u8>,
        len: u64,
        round: u32,
        file: Option<u32>,
        chunks: bool,
    ) -> Result<()> {
        if let Some(&known) = self.content_len.get(&node) {
            if known != len {
                return Err(Error::BadData(format!(
                    "content node {node} claimed to hold {len} and {known} bytes"
                )));
            }
            if !chunks || self.content_chunks.contains(&node) {
                return Ok(());
            }
        }
        self.content_len.insert(node, len);
        if chunks {
            self.content_chunks.insert(node);
        }
        if let Some(f) = file {
            self.files[f as usize] += 1;
        }
        self.work.push(Work {
            what: What::Content {
                node,
                height,
                len,
                chunks,
            },
            round,
            file,
        });
        Ok(())
    }

    fn file_piece_done(&mut self, file: Option<u32>) {
        self.file_step_done(file);
    }

    fn dir_internal(
        &mut self,
        local: &dyn Local,
        ctx: &DirCtx,
        lo: Option<Arc<[u8]>>,
        height: u8,
        children: Vec<(Vec<u8>, Hash)>,
    ) -> Result<()> {
        let mut prev = lo;
        for (last, child) in children {
            let skip = match ctx.ours {
                Some(ours) => {
                    let mut found = Vec::new();
                    self.ours_at(
                        local,
                        ours,
                        None,
                        prev.as_deref(),
                        &last,
                        height - 1,
                        &mut found,
                    )?;
                    found.contains(&child)
                }
                None => false,
            };
            let last: Arc<[u8]> = last.into();
            if !skip {
                self.work.push(Work {
                    what: What::Dir {
                        node: child,
                        local: ctx.ours,
                        lo: prev.clone(),
                        depth: ctx.depth,
                        height: Some(height - 1),
                        mode: ctx.mode.clone(),
                        path: ctx.path.clone(),
                    },
                    round: ctx.round,
                    file: None,
                });
            }
            prev = Some(last);
        }
        Ok(())
    }

    fn dir_leaf(
        &mut self,
        local: &dyn Local,
        ctx: &DirCtx,
        lo: Option<Arc<[u8]>>,
        entries: Vec<Entry>,
    ) -> Result<()> {
        let Some(last) = entries.last().map(|e| e.name.clone()) else {
            return Ok(());
        };
        if lo
            .as_deref()
            .is_some_and(|lo| entries[0].name.as_slice() <= lo)
        {
            return Err(Error::BadData("directory node names out of order".into()));
        }
        let mut theirs_here: HashMap<Vec<u8>, Entry> = HashMap::new();
        if let Some(ours) = ctx.ours {
            let mut leaves = Vec::new();
            self.ours_at(local, ours, None, lo.as_deref(), &last, 0, &mut leaves)?;
            for leaf in leaves {
                if let DirNode::Leaf(es) = &*self.our_node(local, leaf)? {
                    for e in es {
                        theirs_here.insert(e.name.clone(), e.clone());
                    }
                }
            }
        }
        for e in entries {
            if ctx.depth == 0 && e.name == RESERVED_NAME {
                return Err(Error::BadData(
                    "the peer sent the reserved name .backer".into(),
                ));
            }
            match merge::class::need(ctx.mode.mode(), theirs_here.get(&e.name), &e) {
                Need::Nothing => {}
                Need::Dir { mode, ours } => {
                    let path = child_path(&ctx.path, &e.name);
                    if ctx.depth + 1 > MAX_DEPTH {
                        return Err(Error::BadData("directories nested too deep".into()));
                    }
                    self.work.push(Work {
                        what: What::Dir {
                            node: e.hash,
                            local: ours,
                            lo: None,
                            depth: ctx.depth + 1,
                            height: None,
                            mode: Walk::of(mode, &ctx.mode),
                            path: path.into(),
                        },
                        round: ctx.round,
                        file: None,
                    });
                }
                Need::Content if local.ignores(&child_path(&ctx.path, &e.name), false) => {
                    // Ignored here: its nodes, not its chunks (the seed of
                    // fetching such content on open).
                    self.content(e.hash, None, e.size, ctx.round, None, false)?;
                }
                Need::Content => {
                    let file = self.files.len() as u32;
                    self.files.push(0);
                    self.progress.files_total += 1;
                    self.content(e.hash, None, e.size, ctx.round, Some(file), true)?;
                    if self.files[file as usize] == 0 {
                        self.progress.files_done += 1; // already complete
                    }
                }
            }
        }
        Ok(())
    }

    /// Our node `hash`, decoded once per pull.
    fn our_node(&mut self, local: &dyn Local, hash: Hash) -> Result<Arc<DirNode>> {
        if let Some(n) = self.ours.get(&hash) {
            return Ok(n.clone());
        }
        let bytes = local.node(&hash)?.ok_or_else(|| {
            backer_fs::Error::corrupt(format!("our directory node {hash} is missing"))
        })?;
        let n = Arc::new(dir::decode_node(&bytes)?);
        self.ours.insert(hash, n.clone());
        Ok(n)
    }

    /// Collects our nodes of height `target` under `node` (which covers the
    /// names above `node_lo`) that overlap the names in (`lo`, `hi`].
    #[allow(clippy::too_many_arguments)]
    fn ours_at(
        &mut self,
        local: &dyn Local,
        node: Hash,
        node_lo: Option<&[u8]>,
        lo: Option<&[u8]>,
        hi: &[u8],
        target: u8,
        out: &mut Vec<Hash>,
    ) -> Result<()> {
        let n = self.our_node(local, node)?;
        if n.height() < target {
            return Ok(());
        }
        if n.height() == target {
            out.push(node);
            return Ok(());
        }
        if let DirNode::Internal { children, .. } = &*n {
            let mut prev = node_lo;
            for (last, child) in children {
                let above_lo = lo.is_none_or(|lo| last.as_slice() > lo);
                let below_hi = prev.is_none_or(|p| p < hi);
                if above_lo && below_hi {
                    self.ours_at(local, *child, prev, lo, hi, target, out)?;
                }
                if !below_hi {
                    break;
                }
                prev = Some(last.as_slice());
            }
        }
        Ok(())
    }
}

/// What a directory node's processing needs to know of its place.
struct DirCtx {
    ours: Option<Hash>,
    depth: u32,
    mode: Walk,
    round: u32,
    path: Arc<[u8]>,
}

/// `dir`/`name` as a path from the root.
fn child_path(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        p.extend_from_slice(dir);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}
