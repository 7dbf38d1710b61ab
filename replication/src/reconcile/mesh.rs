//! A deterministic test harness for [`Reconcile`], after quinn-proto's
//! test `Pair`: state machines over in-memory stores, each pair joined by
//! two in-memory byte streams, stepped by hand. No threads, no runtime, no
//! clock: a seed picks which side acts next, so every interleaving a test
//! meets is reproduced by its seed.
//!
//! Each step is something the session driver may do next for one side,
//! and the seed picks what: an input (a new local root, or one frame from
//! its own stream) or outputs (some or all of the messages the machine
//! has, as frames into the peer's stream; once it has none, a merge it
//! hands out). The driver takes inputs before every transmit is polled
//! whenever its writer is backed up, so both orders are explored; as in
//! the driver, a merge is run only once transmits return `None`. A side
//! whose machine fails sends the abort reason (if any) and closes its
//! stream, as the session does. Faults damage one frame on the wire.

use std::collections::VecDeque;

use backer_fs::tree::{content, dir};
use backer_fs::{chunk, Hash, NodeId, Result as FsResult};

use crate::error::{Error, Result};
use crate::hello::Hello;
use crate::local::{Local, MemLocal};
use crate::merge::Merged;
use crate::proto::{self, AbortReason, FrameError, Message};
use crate::reconcile::{Config, Reconcile};

/// splitmix64: a tiny seeded generator, so the harness needs no crate.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A [`MemLocal`] that fails the test if anything unverified is stored.
#[derive(Clone, Debug)]
pub(crate) struct Checked(pub(crate) MemLocal);

impl Local for Checked {
    fn root(&self) -> FsResult<Hash> {
        self.0.root()
    }
    fn node(&self, hash: &Hash) -> FsResult<Option<Vec<u8>>> {
        self.0.node(hash)
    }
    fn put_node(&mut self, hash: Hash, bytes: Vec<u8>) -> FsResult<()> {
        assert!(
            dir::verify_node(&hash, &bytes) || content::verify_node(&hash, &bytes),
            "an unverified node {hash} was stored"
        );
        self.0.put_node(hash, bytes)
    }
    fn has_chunk(&self, hash: &Hash) -> FsResult<bool> {
        self.0.has_chunk(hash)
    }
    fn chunk(&self, hash: &Hash) -> FsResult<Option<Vec<u8>>> {
        self.0.chunk(hash)
    }
    fn put_chunk(&mut self, hash: Hash, bytes: &[u8]) -> FsResult<()> {
        assert_eq!(Hash::of(bytes), hash, "an unverified chunk was stored");
        self.0.put_chunk(hash, bytes)
    }
    fn chunk_unavailable(&mut self, hash: &Hash) -> FsResult<()> {
        self.0.chunk_unavailable(hash)
    }
    fn ignores(&self, path: &[u8], is_dir: bool) -> bool {
        self.0.ignores(path, is_dir)
    }
    fn merge(&mut self, remote: Hash) -> FsResult<Merged> {
        self.0.merge(remote)
    }
}

/// What goes wrong on the wire of one link, once (`from`: which end's
/// frames, 0 or 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The connection is cut before frame `n` of side `from`.
    Cut { from: usize, n: u64 },
    /// Frame `n` of side `from` is cut in half, then the connection.
    Truncate { from: usize, n: u64 },
    /// Frame `n` of side `from` is replaced by as many seeded bytes.
    Garbage { from: usize, n: u64 },
    /// Side `from` aborts (shutting down) instead of sending frame `n`.
    Abort { from: usize, n: u64 },
}

impl Fault {
    fn at(self) -> (usize, u64) {
        match self {
            Fault::Cut { from, n }
            | Fault::Truncate { from, n }
            | Fault::Garbage { from, n }
            | Fault::Abort { from, n } => (from, n),
        }
    }
}

/// One end of a link: a state machine of one node, and the stream it reads.
pub(crate) struct Side {
    /// The node (index into [`Mesh::nodes`]) this machine syncs.
    pub(crate) node: usize,
    pub(crate) m: Reconcile,
    /// The node's root this machine was last told of.
    told: Hash,
    /// Bytes the peer wrote and this side has not read.
    inbox: VecDeque<u8>,
    /// The peer closed its writing half: after `inbox`, the end.
    eof: bool,
    /// Frames this side wrote.
    frames: u64,
    /// This side closed its writing half.
    closed: bool,
    /// Its last outputs stopped with messages left to poll.
    undrained: bool,
    /// How this side's session ended; `None` while it runs.
    pub(crate) end: Option<Result<()>>,
}

/// Nodes in memory joined by links, each a session: two state machines
/// and a reliable byte stream each way. A node with several links runs a
/// machine per link over its one store; a root one machine merges is
/// announced to the node's other machines, as the node's root watch does.
pub(crate) struct Mesh {
    pub(crate) nodes: Vec<Checked>,
    ids: Vec<NodeId>,
    pub(crate) links: Vec<[Side; 2]>,
    rng: Rng,
    /// A fault on the wire of one link.
    fault: Option<(usize, Fault)>,
    /// The fault's frame was written (the fault happened).
    pub(crate) fired: bool,
    /// Inputs handed to a machine that still had messages to send.
    pub(crate) early_inputs: u64,
    /// Steps taken.
    pub(crate) steps: u64,
}

/// The hello of node `id`.
pub(crate) fn hello(id: NodeId) -> Hello {
    Hello::new(id, chunk::params_fingerprint())
}

impl Mesh {
    /// Nodes holding `nodes` (each with its id), not linked yet.
    pub(crate) fn new(nodes: Vec<(MemLocal, NodeId)>, seed: u64) -> Mesh {
        let (nodes, ids) = nodes.into_iter().map(|(l, id)| (Checked(l), id)).unzip();
        Mesh {
            nodes,
            ids,
            links: Vec::new(),
            rng: Rng::new(seed),
            fault: None,
            fired: false,
            early_inputs: 0,
            steps: 0,
        }
    }

    /// A session between nodes `a` and `b`; returns the link's index.
    pub(crate) fn link(&mut self, a: usize, b: usize, cfg: Config) -> usize {
        let side = |node: usize, mesh: &Mesh| {
            let root = mesh.nodes[node].0.root;
            Side {
                node,
                m: Reconcile::new(hello(mesh.ids[node]), root, cfg),
                told: root,
                inbox: VecDeque::new(),
                eof: false,
                frames: 0,
                closed: false,
                undrained: false,
                end: None,
            }
        };
        let link = [side(a, self), side(b, self)];
        self.links.push(link);
        self.links.len() - 1
    }

    /// Puts `fault` on the wire of `link`.
    pub(crate) fn with_fault(mut self, link: usize, fault: Fault) -> Mesh {
        self.fault = Some((link, fault));
        self
    }

    /// Steps every side, in an order the seed picks, until none can do
    /// anything more; panics after `max_steps` (a session that never
    /// settles is a bug).
    pub(crate) fn run(&mut self, max_steps: u64) {
        let sides = 2 * self.links.len();
        let mut idle = 0;
        while idle < 2 {
            assert!(self.steps < max_steps, "no end after {max_steps} steps");
            let start = self.rng.below(sides as u64) as usize;
            let mut busy = false;
            for k in 0..sides {
                let i = (start + k) % sides;
                busy |= self.step(i / 2, i % 2);
            }
            idle = if busy { 0 } else { idle + 1 };
        }
    }

    /// The results of `link`'s two sides, once [`Mesh::run`] returned. A
    /// live session (or one cut short) that is still waiting counts as
    /// closed.
    pub(crate) fn results(&mut self, link: usize) -> [Result<()>; 2] {
        let end = |s: &mut Side| s.end.take().unwrap_or(Err(Error::Closed));
        let [a, b] = &mut self.links[link];
        [end(a), end(b)]
    }

    /// One step of side `s` of `link`; whether it did anything.
    fn step(&mut self, link: usize, s: usize) -> bool {
        self.steps += 1;
        if self.links[link][s].end.is_some() {
            return false;
        }
        match self.drive(link, s) {
            Ok(busy) => busy,
            Err(e) => {
                if let Some(reason) = e.abort_reason() {
                    self.write(link, s, &Message::Abort(reason));
                }
                self.close(link, s);
                self.links[link][s].end = Some(Err(e));
                true
            }
        }
    }

    /// Something the session's driver may do next for one side: inputs
    /// or outputs, in the order the seed picks (the other if the first has
    /// nothing to do). Whether it did anything.
    fn drive(&mut self, link: usize, s: usize) -> Result<bool> {
        let inputs_first = self.rng.below(2) == 0;
        // Some of the messages, or all (the writer keeps up).
        let budget = match self.rng.below(3) {
            0 => u64::MAX,
            n => n,
        };
        // The first that does something; the other only if it did not.
        let busy = if inputs_first {
            let took = self.input(link, s)?;
            took || self.output(link, s, budget)?
        } else {
            let sent = self.output(link, s, budget)?;
            sent || self.input(link, s)?
        };
        let side = &self.links[link][s];
        match busy {
            true => Ok(true),
            // Nothing left to do and nothing more will come.
            false if side.eof && side.inbox.is_empty() => Err(Error::Closed),
            false if side.eof => Err(FrameError::Truncated.into()),
            false => Ok(false),
        }
    }

    /// One input, if there is one: the node's new root, else a frame.
    fn input(&mut self, link: usize, s: usize) -> Result<bool> {
        let side = &mut self.links[link][s];
        let local = &mut self.nodes[side.node];
        if side.told != local.0.root {
            // The node's root moved (another link's merge, or a commit).
            side.told = local.0.root;
            self.early_inputs += u64::from(side.undrained);
            side.m.handle_local_root(side.told, local)?;
            return Ok(true);
        }
        match proto::decode_frame(side.inbox.make_contiguous())? {
            Some((msg, len)) => {
                side.inbox.drain(..len);
                self.early_inputs += u64::from(side.undrained);
                side.m.handle_message(msg, local)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Up to `budget` messages, as frames to the peer; once the machine
    /// has none, the merge it hands out, if any, or the end of a session
    /// that is finished.
    fn output(&mut self, link: usize, s: usize, budget: u64) -> Result<bool> {
        let mut busy = false;
        for _ in 0..budget {
            let side = &mut self.links[link][s];
            let local = &mut self.nodes[side.node];
            side.undrained = true;
            if let Some(msg) = side.m.poll_transmit(local)? {
                busy = true;
                self.write(link, s, &msg);
                if self.links[link][s].end.is_some() {
                    return Ok(true); // a fault ended it
                }
                continue;
            }
            side.undrained = false;
            while side.m.poll_event().is_some() {}
            if let Some(remote) = side.m.poll_merge() {
                let merged = local.merge(remote)?;
                side.told = merged.root;
                side.m.handle_merged(merged, local)?;
                busy = true;
                continue;
            }
            if side.m.is_finished() {
                self.close(link, s);
                self.links[link][s].end = Some(Ok(()));
                return Ok(true);
            }
            break;
        }
        Ok(busy)
    }

    /// Side `s` of `link` writes `msg` to its peer, through the fault if
    /// it is due.
    fn write(&mut self, link: usize, s: usize, msg: &Message) {
        if self.links[link][s].closed {
            return;
        }
        let frame = proto::encode(msg).expect("our messages encode");
        let n = self.links[link][s].frames;
        self.links[link][s].frames += 1;
        let fault = self
            .fault
            .filter(|(l, f)| *l == link && f.at() == (s, n))
            .map(|(_, f)| f);
        self.fired |= fault.is_some();
        let peer = &mut self.links[link][1 - s];
        match fault {
            None => peer.inbox.extend(&frame),
            Some(Fault::Cut { .. }) => self.cut(link),
            Some(Fault::Truncate { .. }) => {
                peer.inbox.extend(&frame[..frame.len() / 2]);
                self.cut(link);
            }
            Some(Fault::Garbage { .. }) => {
                let junk: Vec<u8> = (0..frame.len()).map(|_| self.rng.next() as u8).collect();
                self.links[link][1 - s].inbox.extend(junk);
            }
            Some(Fault::Abort { .. }) => {
                let abort = proto::encode(&Message::Abort(AbortReason::Shutdown));
                peer.inbox.extend(abort.expect("our messages encode"));
                self.close(link, s);
                self.links[link][s].end = Some(Ok(()));
            }
        }
    }

    /// Side `s` of `link` closes its writing half.
    fn close(&mut self, link: usize, s: usize) {
        self.links[link][s].closed = true;
        self.links[link][1 - s].eof = true;
    }

    /// The connection of `link` is gone both ways: what was written
    /// arrives, nothing more.
    fn cut(&mut self, link: usize) {
        self.close(link, 0);
        self.close(link, 1);
    }
}
