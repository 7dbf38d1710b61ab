//! Faults (DESIGN.md, "What bad input gets"): cut connections, flipped
//! bytes, truncated and oversized frames, bogus hashes, bad names. Each
//! ends the session cleanly (an error, never a hang or a panic), stores
//! nothing unverified, and the next clean session converges.
//!
//! Two tools: [`stream::Faulty`], a stream wrapper that cuts a connection
//! or flips a byte of what one side reads (with the tests of damaged
//! connections), and [`Fake`], a hand-driven peer that writes whatever
//! frames a test wants: [`data`] sends bad hashes, trees and names,
//! [`protocol`] bad frames and messages out of place.

mod data;
mod protocol;
mod stream;

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use backer_fs::store::{Batch, Space};
use backer_fs::tree::encode::Writer;
use backer_fs::tree::{content, dir, Entry, Kind, Timestamp, VersionVector};
use backer_fs::{chunk, Hash, NodeId};
use backer_replication::local::LocalNodes;
use backer_replication::proto::{
    self, AbortReason, FrameError, Message, MAX_BATCH, MAX_FRAME, MAX_OUTSTANDING,
};
use backer_replication::session::read_frame;
use backer_replication::{
    run, Channels, Error, Hello, Incompatible, Local, Outcome, VfsLocal, PROTOCOL_VERSION,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf, ReadHalf, WriteHalf};
use tokio::task::JoinHandle;

use crate::util::*;

const MIB: usize = 1 << 20;

/// Only a guard against hangs: every session here ends in milliseconds.
const GUARD: Duration = Duration::from_secs(60);

/// Message tags on the wire (bincode's variant index, one byte).
const TAG_DIR_NODE: u8 = 3;
const TAG_CONTENT_NODE: u8 = 5;
const TAG_CHUNK: u8 = 7;

/// The node id fake peers claim.
const FAKE: NodeId = NodeId([0xEE; 32]);

/// The domain directory node hashes are taken under (fs/src/tree/dir.rs).
const DIR_NODE_DOMAIN: &str = "backer-dir-node";

async fn guard<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(GUARD, f).await {
        Ok(t) => t,
        Err(_) => panic!("{what}: still running after {GUARD:?} (a hang)"),
    }
}

// ---------------------------------------------------------------------------
// What a store holds.

/// Every key and value of `space` in `node`'s store.
fn all_of(node: &Node, space: Space) -> Vec<(Vec<u8>, Vec<u8>)> {
    let store = node.vfs.store();
    let kv = store.kv();
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    loop {
        let after = out.last().map(|(k, _)| k.clone());
        let batch = kv.scan(space, &[], after.as_deref(), 1024).unwrap();
        if batch.is_empty() {
            return out;
        }
        out.extend(batch);
    }
}

fn as_hash(key: &[u8]) -> Hash {
    Hash(key.try_into().expect("a 32-byte key"))
}

/// The chunks `node` holds.
fn chunk_set(node: &Node) -> HashSet<Hash> {
    all_of(node, Space::Chunks)
        .iter()
        .map(|(k, _)| as_hash(k))
        .collect()
}

/// How many of `chunks` `node` holds.
fn present(node: &Node, chunks: &HashSet<Hash>) -> u64 {
    let store = node.vfs.store();
    chunks
        .iter()
        .filter(|h| store.chunk_location(h).unwrap().is_some())
        .count() as u64
}

/// The bytes of the chunks of `chunks` (all held by `a`) that `b` lacks.
fn missing_bytes(a: &Node, b: &Node, chunks: &HashSet<Hash>) -> u64 {
    let (sa, sb) = (a.vfs.store(), b.vfs.store());
    chunks
        .iter()
        .filter(|h| sb.chunk_location(h).unwrap().is_none())
        .map(|h| u64::from(sa.chunk_location(h).unwrap().unwrap().len))
        .sum()
}

/// Every node in the store hashes to its key (as a directory or content
/// node) and decodes; every indexed chunk reads back verified.
fn assert_all_verified(node: &Node, what: &str) {
    for (k, v) in all_of(node, Space::Nodes) {
        let h = as_hash(&k);
        assert!(
            dir::verify_node(&h, &v) || content::verify_node(&h, &v),
            "{what}: the store holds node {h}, which fails verification"
        );
    }
    for (k, _) in all_of(node, Space::Chunks) {
        let h = as_hash(&k);
        if let Err(e) = node.vfs.store().read_chunk(&h) {
            panic!("{what}: chunk {h} does not read back verified: {e}");
        }
    }
}

/// Whether `node` holds anything (node or chunk) under `h`.
fn holds(node: &Node, h: &Hash) -> bool {
    let l = node.local();
    l.node(h).unwrap().is_some() || l.has_chunk(h).unwrap()
}

/// After a fault: `victim` kept its root and holds only verified data,
/// and a clean sync with an honest node converges.
async fn assert_recovers(victim: &Node, root_before: Hash, what: &str) {
    assert_eq!(
        victim.root(),
        root_before,
        "{what}: the victim's root moved"
    );
    assert_all_verified(victim, what);
    let honest = Node::new();
    honest.write("honest/file.txt", b"from an honest peer");
    honest.write("honest/big.bin", &bytes(77, 200_000));
    sync_ok(victim, &honest).await;
    assert_eq!(victim.snapshot(""), honest.snapshot(""), "{what}");
    assert_all_verified(victim, what);
}

/// Like [`assert_recovers`], with `a` as the honest node.
async fn assert_recovers_from(a: &Node, b: &Node, root_before: Hash, what: &str) {
    assert_eq!(b.root(), root_before, "{what}: b merged something");
    assert_all_verified(b, what);
    sync_ok(a, b).await;
    assert_eq!(b.snapshot(""), a.snapshot(""), "{what}");
    assert_all_verified(b, what);
}

// ---------------------------------------------------------------------------
// A fake peer.

/// The other end of a victim's stream, driven by hand.
struct Fake {
    rd: ReadHalf<DuplexStream>,
    wr: WriteHalf<DuplexStream>,
    /// Every message the victim sent, in order.
    got: Vec<Message>,
}

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ask {
    Dir,
    Content,
    Chunk,
}

impl Fake {
    async fn send(&mut self, msg: &Message) {
        self.send_raw(&proto::encode(msg).unwrap()).await;
    }

    /// Writes raw bytes; a victim that closed is not an error here.
    async fn send_raw(&mut self, bytes: &[u8]) {
        let _ = self.wr.write_all(bytes).await;
        let _ = self.wr.flush().await;
    }

    async fn hello(&mut self) {
        self.send(&Message::Hello(fake_hello())).await;
    }

    /// Ends our side of the stream.
    async fn close(&mut self) {
        let _ = self.wr.shutdown().await;
    }

    /// The victim's next message; `None` once it closed.
    async fn recv(&mut self) -> Option<Message> {
        match read_frame(&mut self.rd).await {
            Ok(Some((m, _))) => {
                self.got.push(m.clone());
                Some(m)
            }
            _ => None,
        }
    }

    /// The victim's next request.
    async fn request(&mut self) -> (Ask, Vec<Hash>) {
        loop {
            match self.recv().await {
                Some(Message::GetDirNodes(h)) => return (Ask::Dir, h),
                Some(Message::GetContentNodes(h)) => return (Ask::Content, h),
                Some(Message::GetChunks(h)) => return (Ask::Chunk, h),
                Some(_) => {}
                None => panic!("the victim closed; it sent {:?}", self.got),
            }
        }
    }

    /// Answers every request with `answer` until the victim closes.
    async fn serve(&mut self, mut answer: impl FnMut(Ask, Hash) -> Message) {
        loop {
            let (ask, hashes) = match self.recv().await {
                Some(Message::GetDirNodes(h)) => (Ask::Dir, h),
                Some(Message::GetContentNodes(h)) => (Ask::Content, h),
                Some(Message::GetChunks(h)) => (Ask::Chunk, h),
                Some(_) => continue,
                None => return,
            };
            for h in hashes {
                let msg = answer(ask, h);
                self.send(&msg).await;
            }
        }
    }

    /// Reads until the victim closes.
    async fn drain(&mut self) {
        while self.recv().await.is_some() {}
    }
}

fn fake_hello() -> Hello {
    Hello::new(FAKE, chunk::params_fingerprint())
}

/// Runs a one-shot session of `victim` against a fake peer driven by
/// `script`; returns how it ended and everything the victim sent.
async fn attack<F, Fut>(victim: &Node, what: &str, script: F) -> (Outcome<VfsLocal>, Vec<Message>)
where
    F: FnOnce(Fake) -> Fut,
    Fut: Future<Output = Fake>,
{
    victim.vfs.commit().unwrap();
    let (x, y) = tokio::io::duplex(1 << 20);
    let session: JoinHandle<Outcome<VfsLocal>> = tokio::spawn(run(
        x,
        victim.local(),
        victim.hello(),
        once(),
        Channels::default(),
    ));
    let (rd, wr) = tokio::io::split(y);
    let fake = Fake {
        rd,
        wr,
        got: Vec::new(),
    };
    guard(what, async {
        let mut fake = script(fake).await;
        fake.drain().await;
        let out = session.await.expect("the session task panicked");
        (out, fake.got)
    })
    .await
}

/// The honest answer to a request for `h`, from `src`'s store.
fn answer_from(src: &Node, ask: Ask, h: Hash) -> Message {
    let l = src.local();
    let msg = match ask {
        Ask::Dir => l.node(&h).unwrap().map(Message::DirNode),
        Ask::Content => l.node(&h).unwrap().map(Message::ContentNode),
        Ask::Chunk => l.chunk(&h).unwrap().map(Message::Chunk),
    };
    msg.unwrap_or(Message::Missing)
}

// ---------------------------------------------------------------------------
// Hand-made tree nodes (the encoder does not validate, so these may break
// any rule).

fn symlink(name: &[u8]) -> Entry {
    Entry {
        name: name.to_vec(),
        kind: Kind::Symlink,
        mode: 0o777,
        mtime: Timestamp {
            secs: 1_700_000_000,
            nanos: 0,
        },
        size: 6,
        hash: Hash::ZERO,
        target: b"target".to_vec(),
        rdev: 0,
        vv: VersionVector::from_pairs([(FAKE, 1)]),
        modified_by: FAKE,
        deleted: false,
    }
}

fn subdir(name: &[u8], hash: Hash) -> Entry {
    Entry {
        kind: Kind::Dir,
        mode: 0o755,
        size: 0,
        hash,
        target: Vec::new(),
        ..symlink(name)
    }
}

/// A directory leaf of `entries` (in the order given), and its hash.
fn leaf(entries: &[Entry]) -> (Hash, Vec<u8>) {
    let mut w = Writer::new();
    w.put_header(0, entries.len());
    for e in entries {
        w.put_entry(e);
    }
    let bytes = w.into_bytes();
    (Hash::of_domain(DIR_NODE_DOMAIN, &bytes), bytes)
}

/// A peer that announces the tree rooted at `nodes[0]` and serves `nodes`
/// (directory nodes), `Missing` for anything else.
async fn serve_tree(
    victim: &Node,
    what: &str,
    nodes: Vec<(Hash, Vec<u8>)>,
) -> (Outcome<VfsLocal>, Vec<Message>) {
    let root = nodes[0].0;
    attack(victim, what, |mut f| async move {
        f.hello().await;
        f.send(&Message::Root(root)).await;
        f.serve(|ask, h| match nodes.iter().find(|(n, _)| *n == h) {
            Some((_, b)) if ask == Ask::Dir => Message::DirNode(b.clone()),
            _ => Message::Missing,
        })
        .await;
        f
    })
    .await
}

fn victim() -> (Node, Hash) {
    let v = Node::new();
    v.write("mine/notes.txt", b"the victim's own file");
    v.write("mine/data.bin", &bytes(55, 150_000));
    let root = v.root();
    (v, root)
}

fn assert_aborted(got: &[Message], reason: AbortReason, what: &str) {
    assert_eq!(
        got.last(),
        Some(&Message::Abort(reason)),
        "{what}: the victim should say {reason:?} last; it sent {got:?}"
    );
}
