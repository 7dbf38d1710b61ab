//! Damaged connections: cut while reading or writing, and a flipped byte
//! in any answer.

use super::*;

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
