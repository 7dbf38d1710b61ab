//! Faults (DESIGN.md, "What bad input gets"): cut connections, flipped
//! bytes, truncated and oversized frames, bogus hashes, bad names. Each
//! ends the session cleanly (an error, never a hang or a panic), stores
//! nothing unverified, and the next clean session converges.
//!
//! Two tools: [`Faulty`], a stream wrapper that cuts a connection or flips
//! a byte of what one side reads, and [`Fake`], a hand-driven peer that
//! writes whatever frames a test wants.

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
// A stream that breaks.

/// What a [`Faulty`] stream does.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Once `after` bytes were read, the connection is cut: reads end
    /// (`eof`) or fail, writes fail, and the peer reads the end of stream.
    CutRead { after: u64, eof: bool },
    /// Once `after` bytes were written, the connection is cut (a write
    /// beyond them fails, possibly in the middle of a frame).
    CutWrite { after: u64 },
    /// Xors `mask` into one payload byte past the message tag of the
    /// `index`-th frame read whose tag is `tag`, at `at` (modulo its length).
    Flip {
        tag: u8,
        index: u64,
        at: u64,
        mask: u8,
    },
}

/// A duplex stream with one [`Fault`]; `fired` says whether it happened.
struct Faulty {
    inner: DuplexStream,
    fault: Fault,
    fired: Arc<AtomicBool>,
    read: u64,
    written: u64,
    cut: bool,
    /// Frame tracking for [`Fault::Flip`]: the length prefix so far, the
    /// payload bytes left and seen in the current frame, frames with the
    /// tag seen, and where to flip in this frame.
    prefix: Vec<u8>,
    left: usize,
    pos: usize,
    seen: u64,
    flip_at: Option<usize>,
}

impl Faulty {
    fn new(inner: DuplexStream, fault: Fault) -> (Faulty, Arc<AtomicBool>) {
        let fired = Arc::new(AtomicBool::new(false));
        let f = Faulty {
            inner,
            fault,
            fired: fired.clone(),
            read: 0,
            written: 0,
            cut: false,
            prefix: Vec::new(),
            left: 0,
            pos: 0,
            seen: 0,
            flip_at: None,
        };
        (f, fired)
    }

    /// Cuts the connection: the peer reads the end of the stream.
    fn trip(&mut self, cx: &mut Context<'_>) {
        self.cut = true;
        self.fired.store(true, Ordering::SeqCst);
        let _ = Pin::new(&mut self.inner).poll_shutdown(cx);
    }

    fn read_after_cut(&self) -> Poll<io::Result<()>> {
        match self.fault {
            Fault::CutRead { eof: true, .. } => Poll::Ready(Ok(())),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "cut by the test",
            ))),
        }
    }

    /// Follows the frames in `bytes` (just read) and flips the chosen byte.
    fn track(&mut self, bytes: &mut [u8]) {
        let Fault::Flip {
            tag,
            index,
            at,
            mask,
        } = self.fault
        else {
            return;
        };
        for b in bytes {
            if self.left == 0 {
                self.prefix.push(*b);
                if self.prefix.len() == 4 {
                    let p = [
                        self.prefix[0],
                        self.prefix[1],
                        self.prefix[2],
                        self.prefix[3],
                    ];
                    self.left = u32::from_be_bytes(p) as usize;
                    self.prefix.clear();
                    self.pos = 0;
                    self.flip_at = None;
                }
                continue;
            }
            if self.pos == 0 && *b == tag {
                if self.seen == index && self.left >= 2 {
                    self.flip_at = Some(1 + (at % (self.left as u64 - 1)) as usize);
                }
                self.seen += 1;
            } else if Some(self.pos) == self.flip_at {
                *b ^= mask;
                self.fired.store(true, Ordering::SeqCst);
            }
            self.pos += 1;
            self.left -= 1;
        }
    }
}

impl AsyncRead for Faulty {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.cut {
            return me.read_after_cut();
        }
        let mut limit = buf.remaining();
        if let Fault::CutRead { after, .. } = me.fault {
            if me.read >= after {
                me.trip(cx);
                return me.read_after_cut();
            }
            limit = limit.min((after - me.read) as usize);
        }
        let mut tmp = vec![0u8; limit];
        let mut rb = ReadBuf::new(&mut tmp);
        ready!(Pin::new(&mut me.inner).poll_read(cx, &mut rb))?;
        let n = rb.filled().len();
        me.track(&mut tmp[..n]);
        me.read += n as u64;
        buf.put_slice(&tmp[..n]);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Faulty {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let broken = || io::Error::new(io::ErrorKind::BrokenPipe, "cut by the test");
        if me.cut {
            return Poll::Ready(Err(broken()));
        }
        let mut len = buf.len();
        if let Fault::CutWrite { after } = me.fault {
            if me.written >= after && !buf.is_empty() {
                me.trip(cx);
                return Poll::Ready(Err(broken()));
            }
            len = len.min((after - me.written) as usize);
        }
        let n = ready!(Pin::new(&mut me.inner).poll_write(cx, &buf[..len]))?;
        me.written += n as u64;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.cut {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.cut {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}

/// A one-shot sync whose `b` side reads and writes through `fault`;
/// also says whether the fault happened.
async fn sync_faulty(
    a: &Node,
    b: &Node,
    fault: Fault,
) -> (Outcome<VfsLocal>, Outcome<VfsLocal>, bool) {
    a.vfs.commit().unwrap();
    b.vfs.commit().unwrap();
    let (x, y) = tokio::io::duplex(1 << 20);
    let (y, fired) = Faulty::new(y, fault);
    let fa = run(x, a.local(), a.hello(), once(), Channels::default());
    let fb = run(y, b.local(), b.hello(), once(), Channels::default());
    let (oa, ob) = guard(&format!("a sync with {fault:?}"), async {
        tokio::join!(fa, fb)
    })
    .await;
    (oa, ob, fired.load(Ordering::SeqCst))
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

// ---------------------------------------------------------------------------
// Cuts.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_ends_both_sessions_and_a_resume_sends_only_missing_chunks() {
    let a = Node::new();
    let files = [
        ("a/one.bin", 3 * MIB),
        ("a/two.bin", 2 * MIB),
        ("b/c/three.bin", 2 * MIB),
        ("four.bin", MIB),
    ];
    for (i, (path, len)) in files.iter().enumerate() {
        a.write(path, &bytes(100 + i as u64, *len));
    }
    a.write("a/small.txt", b"small");
    let mut rng = StdRng::seed_from_u64(0xC07);
    for round in 0..6u64 {
        a.root();
        let all = chunk_set(&a);
        assert!(all.len() > 100, "{}", all.len());
        let b = Node::new();
        b.write(&format!("from-b/{round}.txt"), b"b's own");
        let cuts = if round % 3 == 2 { 1 } else { 2 };
        for cut in 0..cuts {
            // Cut b's incoming stream before the chunk bytes it still
            // lacks went through, so the cut surely happens.
            let missing = missing_bytes(&a, &b, &all);
            if missing == 0 {
                break;
            }
            let fault = match round % 3 {
                0 => Fault::CutRead {
                    after: rng.gen_range(0..missing),
                    eof: true,
                },
                1 => Fault::CutRead {
                    after: rng.gen_range(0..missing),
                    eof: false,
                },
                _ => Fault::CutWrite {
                    after: rng.gen_range(0..1500),
                },
            };
            let what = format!("round {round}, cut {cut}: {fault:?}");
            let before = present(&b, &all);
            let (oa, ob, fired) = sync_faulty(&a, &b, fault).await;
            assert!(fired, "{what}: the cut never happened");
            assert!(oa.result.is_err(), "{what}: a ended with {:?}", oa.result);
            assert!(ob.result.is_err(), "{what}: b ended with {:?}", ob.result);
            let after = present(&b, &all);
            assert_eq!(
                after - before,
                ob.report.stats.chunks_received,
                "{what}: every chunk received is stored, and none was sent twice"
            );
            assert_all_verified(&b, &what);
            println!(
                "{what}: b got {} of {} chunks, {} before",
                ob.report.stats.chunks_received,
                all.len(),
                before
            );
        }
        let had = present(&b, &all);
        let (_, ob) = sync_ok(&a, &b).await;
        assert_eq!(
            ob.report.stats.chunks_received,
            all.len() as u64 - had,
            "round {round}: the resume sends exactly the missing chunks"
        );
        assert_eq!(b.snapshot(""), a.snapshot(""), "round {round}");
        assert_all_verified(&b, "after the resume");
    }
}

// ---------------------------------------------------------------------------
// Flipped bytes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_in_any_answer_ends_the_session_and_nothing_unverified_is_stored() {
    let a = Node::new();
    a.write("x/one.bin", &bytes(200, MIB));
    a.write("x/y/two.bin", &bytes(201, MIB));
    a.write("x/y/notes.txt", b"notes");
    a.write("z/three.bin", &bytes(202, 512 << 10));
    a.write("top.txt", b"top");
    a.root();
    // How many answers of each kind an empty node gets (the tree of `a`
    // never changes here: the other side is always empty).
    let reference = Node::new();
    let (_, o) = sync_ok(&a, &reference).await;
    let s = o.report.stats;
    let kinds = [
        (TAG_DIR_NODE, s.dir_nodes_received),
        (TAG_CONTENT_NODE, s.content_nodes_received),
        (TAG_CHUNK, s.chunks_received),
    ];
    assert!(kinds.iter().all(|(_, n)| *n > 0), "{s:?}");
    let mut rng = StdRng::seed_from_u64(0xF11);
    for round in 0..12usize {
        let (tag, count) = kinds[round % 3];
        let fault = Fault::Flip {
            tag,
            index: rng.gen_range(0..count),
            // Every fourth round hits the payload's length field.
            at: if round % 4 == 3 {
                rng.gen_range(0..4)
            } else {
                rng.gen()
            },
            mask: 1 << rng.gen_range(0..8),
        };
        let what = format!("round {round}: {fault:?}");
        let b = Node::new();
        let root = b.root();
        let (oa, ob, fired) = sync_faulty(&a, &b, fault).await;
        assert!(fired, "{what}: no byte was flipped");
        match &ob.result {
            Err(
                Error::BadData(_) | Error::Protocol(_) | Error::Frame(FrameError::Malformed(_)),
            ) => {}
            other => panic!("{what}: b ended with {other:?}"),
        }
        assert!(oa.result.is_err(), "{what}: a ended with {:?}", oa.result);
        println!("{what}: b: {:?}", ob.result);
        assert_recovers_from(&a, &b, root, &what).await;
    }
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
// Bogus hashes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_or_chunk_that_does_not_hash_to_what_was_asked_is_refused_and_not_stored() {
    let src = Node::new();
    src.write("d/f.bin", &bytes(300, 400_000));
    src.write("d/e/g.txt", b"deep");
    src.write("top.txt", b"top");
    let src_root = src.root();
    // (kind, which one of that kind, how): flip a byte, or send another
    // valid node (of `src`'s root) in its place.
    let cases: [(Ask, usize, bool); 5] = [
        (Ask::Dir, 0, true),
        (Ask::Dir, 1, true),
        (Ask::Dir, 1, false),
        (Ask::Content, 0, true),
        (Ask::Chunk, 2, true),
    ];
    for (ask, nth, flip) in cases {
        let what = format!("{ask:?} #{nth}, flip {flip}");
        let (v, root) = victim();
        let mut seen = 0;
        let tampered = std::sync::Mutex::new(None::<(Hash, Vec<u8>)>);
        let (out, got) = attack(&v, &what, |mut f| {
            let tampered = &tampered;
            let src = &src;
            async move {
                f.hello().await;
                f.send(&Message::Root(src_root)).await;
                f.serve(|k, h| {
                    let msg = answer_from(src, k, h);
                    if k != ask {
                        return msg;
                    }
                    seen += 1;
                    if seen != nth + 1 {
                        return msg;
                    }
                    let bogus = if flip {
                        let (Message::DirNode(mut b)
                        | Message::ContentNode(mut b)
                        | Message::Chunk(mut b)) = msg
                        else {
                            panic!("src lacks {h}")
                        };
                        let i = b.len() / 2;
                        b[i] ^= 0x20;
                        b
                    } else {
                        src.local().node(&src_root).unwrap().unwrap()
                    };
                    *tampered.lock().unwrap() = Some((h, bogus.clone()));
                    match k {
                        Ask::Dir => Message::DirNode(bogus),
                        Ask::Content => Message::ContentNode(bogus),
                        Ask::Chunk => Message::Chunk(bogus),
                    }
                })
                .await;
                f
            }
        })
        .await;
        assert!(
            matches!(out.result, Err(Error::BadData(_))),
            "{what}: {:?}",
            out.result
        );
        assert_aborted(&got, AbortReason::BadData, &what);
        let (h, bogus) = tampered
            .into_inner()
            .unwrap()
            .expect("nothing was tampered with");
        assert!(
            !holds(&v, &h),
            "{what}: the victim stored something under {h}"
        );
        for h in [
            Hash::of(&bogus),
            Hash::of_domain(DIR_NODE_DOMAIN, &bogus),
            Hash::of_domain("backer-content-node", &bogus),
        ] {
            if flip {
                assert!(!holds(&v, &h), "{what}: the bogus bytes were stored as {h}");
            }
        }
        assert_recovers(&v, root, &what).await;
    }
}

/// A pull that fails (the peer answered `Missing`) can never finish a
/// one-shot session: nobody will announce another root. It must end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_announces_a_root_it_cannot_serve_ends_a_one_shot_session() {
    let (v, root) = victim();
    let bogus = Hash([0x42; 32]);
    let what = "a bogus root";
    let (out, got) = attack(&v, what, |mut f| async move {
        f.hello().await;
        f.send(&Message::Root(bogus)).await;
        let (ask, hashes) = f.request().await;
        assert_eq!((ask, hashes), (Ask::Dir, vec![bogus]));
        f.send(&Message::Missing).await;
        // An honest but broken peer stays, waiting for our Done.
        f.drain().await;
        f
    })
    .await;
    assert!(out.result.is_err(), "{what}: {:?}", out.result);
    assert!(
        matches!(got.last(), Some(Message::Abort(_))),
        "{what}: the victim should say why it closes; it sent {got:?}"
    );
    assert!(!holds(&v, &bogus));
    assert_recovers(&v, root, what).await;
}

/// The same with two real nodes: `a` announces a tree whose chunk it no
/// longer holds, so `b`'s pull fails; both must end rather than wait for
/// each other's `Done` forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_store_lost_a_chunk_ends_a_one_shot_session_with_an_error() {
    let (a, b) = (Node::new(), Node::new());
    a.write("f.bin", &bytes(400, 300_000));
    a.root();
    let b_root = b.root();
    // Damage a's store: one chunk of its tree is no longer indexed.
    let lost = *chunk_set(&a).iter().next().unwrap();
    let kv = |n: &Node, batch| n.vfs.store().kv().apply(batch).unwrap();
    let location = a.vfs.store().kv().get(Space::Chunks, lost.as_bytes());
    let location = location.unwrap().unwrap();
    let mut batch = Batch::default();
    batch.remove(Space::Chunks, lost.as_bytes().to_vec());
    kv(&a, batch);
    let (oa, ob) = guard("a sync with a peer that lost a chunk", sync(&a, &b)).await;
    assert!(ob.result.is_err(), "b: {:?}", ob.result);
    assert!(oa.result.is_err(), "a: {:?}", oa.result);
    assert_eq!(b.root(), b_root);
    assert_all_verified(&b, "after a failed pull");
    // Repaired, a syncs.
    let mut batch = Batch::default();
    batch.put(Space::Chunks, lost.as_bytes().to_vec(), location);
    kv(&a, batch);
    sync_ok(&a, &b).await;
    assert_eq!(b.read("f.bin").unwrap(), bytes(400, 300_000));
}

// ---------------------------------------------------------------------------
// Frames.

/// One malformed stream: what the fake sends, and what the victim must do.
struct FrameCase {
    what: &'static str,
    /// Send a valid hello first.
    hello: bool,
    raw: Vec<u8>,
    /// Then end the stream.
    close: bool,
    error: fn(&Error) -> bool,
    /// What the victim tells us (`None`: a broken stream gets no answer).
    abort: Option<AbortReason>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_truncated_and_unknown_frames_end_the_session() {
    let with_tail = |prefix: [u8; 4]| {
        let mut v = prefix.to_vec();
        v.extend_from_slice(&[0; 64]);
        v
    };
    let root_frame = proto::encode(&Message::Root(Hash([9; 32]))).unwrap();
    let mut trailing = proto::encode(&Message::Missing).unwrap();
    trailing[3] += 1;
    trailing.push(0);
    let too_large: fn(&Error) -> bool = |e| matches!(e, Error::Frame(FrameError::TooLarge(_)));
    let truncated: fn(&Error) -> bool = |e| matches!(e, Error::Frame(FrameError::Truncated));
    let malformed: fn(&Error) -> bool = |e| matches!(e, Error::Frame(FrameError::Malformed(_)));
    let protocol = Some(AbortReason::Protocol);
    let case = |what, hello, raw, close, error, abort| FrameCase {
        what,
        hello,
        raw,
        close,
        error,
        abort,
    };
    let cases = [
        case(
            "a 4 GiB frame",
            true,
            with_tail([0xff; 4]),
            false,
            too_large,
            protocol,
        ),
        case(
            "a 4 GiB frame first",
            false,
            with_tail([0xff; 4]),
            false,
            too_large,
            protocol,
        ),
        case(
            "MAX_FRAME + 1",
            true,
            with_tail(((MAX_FRAME + 1) as u32).to_be_bytes()),
            false,
            too_large,
            protocol,
        ),
        case(
            "half a frame, then the end",
            true,
            root_frame[..20].to_vec(),
            true,
            truncated,
            None,
        ),
        case(
            "half a prefix, then the end",
            true,
            root_frame[..2].to_vec(),
            true,
            truncated,
            None,
        ),
        case(
            "an unknown message",
            true,
            vec![0, 0, 0, 1, 200],
            false,
            malformed,
            protocol,
        ),
        case("trailing bytes", true, trailing, false, malformed, protocol),
    ];
    for c in cases {
        let what = c.what;
        let (v, root) = victim();
        let nodes = all_of(&v, Space::Nodes).len();
        let (hello, raw, close) = (c.hello, c.raw, c.close);
        let (out, got) = attack(&v, what, |mut f| async move {
            if hello {
                f.hello().await;
            }
            f.send_raw(&raw).await;
            if close {
                f.close().await;
            }
            f
        })
        .await;
        match &out.result {
            Err(e) if (c.error)(e) => {}
            other => panic!("{what}: {other:?}"),
        }
        match c.abort {
            Some(r) => assert_aborted(&got, r, what),
            None => assert!(
                !got.iter().any(|m| matches!(m, Message::Abort(_))),
                "{what}: {got:?}"
            ),
        }
        assert_eq!(all_of(&v, Space::Nodes).len(), nodes, "{what}");
        assert_recovers(&v, root, what).await;
    }
}

// ---------------------------------------------------------------------------
// Protocol violations.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_out_of_place_are_protocol_violations() {
    let (sub_hash, sub) = leaf(&[symlink(b"s")]);
    let (top_hash, top) = leaf(&[subdir(b"sub", sub_hash)]);
    assert!(dir::verify_node(&sub_hash, &sub) && dir::verify_node(&top_hash, &top));

    // Before the hello.
    let (v, root) = victim();
    let (out, got) = attack(&v, "a root before the hello", |mut f| async move {
        f.send(&Message::Root(Hash([1; 32]))).await;
        f
    })
    .await;
    assert!(
        matches!(out.result, Err(Error::Protocol(_))),
        "{:?}",
        out.result
    );
    assert_aborted(&got, AbortReason::Protocol, "a root before the hello");
    assert_recovers(&v, root, "a root before the hello").await;

    // A second hello.
    let (v, root) = victim();
    let (out, got) = attack(&v, "a second hello", |mut f| async move {
        f.hello().await;
        f.hello().await;
        f
    })
    .await;
    assert!(
        matches!(out.result, Err(Error::Protocol(_))),
        "{:?}",
        out.result
    );
    assert_aborted(&got, AbortReason::Protocol, "a second hello");
    assert_recovers(&v, root, "a second hello").await;

    // Answers nobody asked for: no pull under way.
    for answer in [
        Message::DirNode(top.clone()),
        Message::Chunk(b"unasked".to_vec()),
        Message::Missing,
    ] {
        let what = format!("an unasked {}", answer.kind());
        let (v, root) = victim();
        let (out, got) = attack(&v, &what, |mut f| async move {
            f.hello().await;
            f.send(&Message::Root(root)).await;
            f.send(&answer).await;
            f
        })
        .await;
        assert!(
            matches!(out.result, Err(Error::Protocol(_))),
            "{what}: {:?}",
            out.result
        );
        assert_aborted(&got, AbortReason::Protocol, &what);
        assert!(!holds(&v, &top_hash), "{what}");
        assert_recovers(&v, root, &what).await;
    }

    // One answer too many, right after a pull completed.
    let (v, root) = victim();
    let what = "one answer too many";
    let (top2, sub2) = (top.clone(), sub.clone());
    let (out, got) = attack(&v, what, |mut f| async move {
        f.hello().await;
        f.send(&Message::Root(top_hash)).await;
        assert_eq!(f.request().await, (Ask::Dir, vec![top_hash]));
        f.send(&Message::DirNode(top2)).await;
        assert_eq!(f.request().await, (Ask::Dir, vec![sub_hash]));
        f.send(&Message::DirNode(sub2.clone())).await;
        f.send(&Message::DirNode(sub2)).await;
        f
    })
    .await;
    assert!(
        matches!(out.result, Err(Error::Protocol(_))),
        "{what}: {:?}",
        out.result
    );
    assert_aborted(&got, AbortReason::Protocol, what);
    // The pull was complete and verified, so it was merged before the
    // extra answer came.
    assert_ne!(v.root(), root, "{what}");
    assert_eq!(v.list("sub"), vec!["s"], "{what}");
    assert_recovers(&v, v.root(), what).await;

    // The wrong kind of answer.
    let (v, root) = victim();
    let what = "a chunk for a directory node";
    let as_chunk = top.clone();
    let (out, got) = attack(&v, what, |mut f| async move {
        f.hello().await;
        f.send(&Message::Root(top_hash)).await;
        assert_eq!(f.request().await, (Ask::Dir, vec![top_hash]));
        f.send(&Message::Chunk(as_chunk)).await;
        f
    })
    .await;
    assert!(
        matches!(out.result, Err(Error::Protocol(_))),
        "{what}: {:?}",
        out.result
    );
    assert_aborted(&got, AbortReason::Protocol, what);
    assert!(
        !holds(&v, &top_hash) && !holds(&v, &Hash::of(&top)),
        "{what}"
    );
    assert_recovers(&v, root, what).await;

    // A request for too many items at once.
    let (v, root) = victim();
    let what = "a request over MAX_BATCH";
    let (out, got) = attack(&v, what, |mut f| async move {
        f.hello().await;
        f.send(&Message::Root(root)).await;
        f.send(&Message::GetChunks(vec![Hash([3; 32]); MAX_BATCH + 1]))
            .await;
        f
    })
    .await;
    assert!(
        matches!(out.result, Err(Error::Protocol(_))),
        "{what}: {:?}",
        out.result
    );
    assert_aborted(&got, AbortReason::Protocol, what);
    assert_recovers(&v, root, what).await;
}

/// proto.rs: "The most items a peer may have asked for and not yet been
/// answered. A peer that asks for more is cut off (it would make us queue
/// without bound)." Here the peer asks for twice that and reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_asks_for_more_than_max_outstanding_without_reading_is_cut_off() {
    let v = Node::new();
    let data = bytes(600, 1024);
    v.write("small.bin", &data);
    let root = v.root();
    let c = Hash::of(&data);
    assert!(v.local().has_chunk(&c).unwrap());
    // A small pipe, so the victim's answers back up at once.
    let (x, y) = tokio::io::duplex(64 << 10);
    let session = tokio::spawn(run(x, v.local(), v.hello(), once(), Channels::default()));
    let (mut rd, mut wr) = tokio::io::split(y);
    let requests = 2 * MAX_OUTSTANDING / MAX_BATCH;
    let writer = tokio::spawn(async move {
        let mut frames = proto::encode(&Message::Hello(fake_hello())).unwrap();
        frames.extend(proto::encode(&Message::Root(root)).unwrap());
        let get = proto::encode(&Message::GetChunks(vec![c; MAX_BATCH])).unwrap();
        for _ in 0..requests {
            frames.extend_from_slice(&get);
        }
        // Every request goes out before we read a single answer.
        let sent = wr.write_all(&frames).await.is_ok();
        let _ = wr.shutdown().await;
        sent
    });
    let (sent, got, out) = guard("a flood of requests", async {
        let sent = writer.await.unwrap();
        let mut got = Vec::new();
        while let Ok(Some((m, _))) = read_frame(&mut rd).await {
            got.push(m);
        }
        (sent, got, session.await.unwrap())
    })
    .await;
    let served = out.report.stats.items_served;
    println!(
        "{requests} requests of {MAX_BATCH} written in full: {sent}; the victim served {served} items and ended with {:?}",
        out.result
    );
    assert!(
        matches!(out.result, Err(Error::Protocol(_))),
        "the victim should cut off the peer, not queue its requests: {:?} after serving {served} items",
        out.result
    );
    assert!(served <= MAX_OUTSTANDING as u64, "{served} items served");
    // The answers may have filled the pipe: a victim that drops the
    // connection need not get its Abort through, but may say no other.
    assert!(
        got.iter()
            .all(|m| !matches!(m, Message::Abort(r) if *r != AbortReason::Protocol)),
        "{:?}",
        got.last()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incompatible_hello_is_refused() {
    let cases = [
        ("another chunker", Incompatible::Chunker),
        (
            "another protocol version",
            Incompatible::ProtocolVersion {
                ours: PROTOCOL_VERSION,
                theirs: PROTOCOL_VERSION + 1,
            },
        ),
        ("ourselves", Incompatible::SameNode),
    ];
    for (what, expected) in cases {
        let (v, root) = victim();
        let mut hello = fake_hello();
        match expected {
            Incompatible::Chunker => hello.chunker_fingerprint = b"fastcdc 8k/32k/128k".to_vec(),
            Incompatible::ProtocolVersion { theirs, .. } => hello.protocol_version = theirs,
            Incompatible::SameNode => hello.node = v.vfs.store().node_id(),
        }
        let (out, got) = attack(&v, what, |mut f| async move {
            f.send(&Message::Hello(hello)).await;
            f.send(&Message::Root(Hash([5; 32]))).await;
            f
        })
        .await;
        match &out.result {
            Err(Error::Incompatible(i)) if *i == expected => {}
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(out.report.peer, None, "{what}");
        assert_aborted(&got, AbortReason::Incompatible, what);
        assert_recovers(&v, root, what).await;
    }
}

// ---------------------------------------------------------------------------
// Bad names.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_with_a_slash_nul_dot_dotdot_or_over_255_bytes_are_refused_and_not_stored() {
    let ok = leaf(&[symlink(&[b'n'; 255])]);
    assert!(dir::verify_node(&ok.0, &ok.1), "the node encoding is ours");
    let long = vec![b'n'; 256];
    let bad: [&[u8]; 7] = [b"a/b", b"/", b"..", b".", b"x\0y", &long, b""];
    for name in bad {
        // At the root, and one directory down.
        for depth in 0..2 {
            let what = format!("{:?} at depth {depth}", String::from_utf8_lossy(name));
            let (bad_hash, bad_node) = leaf(&[symlink(b"fine"), symlink(name)]);
            assert!(!dir::verify_node(&bad_hash, &bad_node), "{what}");
            let (top_hash, top_node) = leaf(&[subdir(b"sub", bad_hash)]);
            let nodes = if depth == 0 {
                vec![(bad_hash, bad_node)]
            } else {
                vec![(top_hash, top_node), (bad_hash, bad_node)]
            };
            let (v, root) = victim();
            let (out, got) = serve_tree(&v, &what, nodes).await;
            assert!(
                matches!(out.result, Err(Error::BadData(_))),
                "{what}: {:?}",
                out.result
            );
            assert_aborted(&got, AbortReason::BadData, &what);
            assert!(!holds(&v, &bad_hash), "{what}: the bad node was stored");
            assert_recovers(&v, root, &what).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reserved_name_at_the_root_is_refused_and_never_merged() {
    let (hash, node) = leaf(&[symlink(b".backer")]);
    assert!(
        dir::verify_node(&hash, &node),
        "well-formed: only its place is wrong"
    );
    let (v, root) = victim();
    let names = v.list("");
    let what = "a .backer entry at the root";
    let (out, got) = serve_tree(&v, what, vec![(hash, node)]).await;
    assert!(
        matches!(out.result, Err(Error::BadData(_))),
        "{what}: {:?}",
        out.result
    );
    assert_aborted(&got, AbortReason::BadData, what);
    assert_eq!(v.root(), root);
    assert_eq!(v.list(""), names);
    let tree = dir::entries(&LocalNodes(&v.local()), v.root()).unwrap();
    assert!(tree.iter().all(|e| e.name != b".backer"), "{tree:?}");
    assert_recovers(&v, root, what).await;
}
