//! Drives a [`Reconcile`] over any duplex byte stream (QUIC stream, TCP,
//! `tokio::io::duplex` in tests).
//!
//! Three loops, joined by channels:
//!
//! - a reader task decodes frames and forwards them; it never waits on
//!   the state machine, so two peers writing to each other cannot
//!   deadlock (the protocol's windows bound what can be in flight);
//! - a writer task writes frames, flushing when it runs out of them;
//! - the state machine runs on its own thread, because everything it does
//!   is local disk I/O (store reads, writes, the merge) that must not
//!   block the async runtime.
//!
//! In live mode ([`Config::once`] false) the session runs until the stream
//! closes or fails; new local roots come in through a `watch` channel.

use std::io;

use backer_fs::{Hash, NodeId};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::error::{Error, Result};
use crate::hello::Hello;
use crate::local::Local;
use crate::proto::{self, AbortReason, FrameError, Message};
use crate::reconcile::{Config, Event, Reconcile, Stats};

/// Bytes and messages one way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages.
    pub messages: u64,
    /// Frame bytes, length prefixes included.
    pub bytes: u64,
    /// Bytes of chunk data (the payload of `Chunk` messages).
    pub chunk_bytes: u64,
    /// `Chunk` messages.
    pub chunks: u64,
}

impl Traffic {
    fn count(&mut self, msg: &Message, frame_len: usize) {
        self.messages += 1;
        self.bytes += frame_len as u64;
        if let Message::Chunk(b) = msg {
            self.chunks += 1;
            self.chunk_bytes += b.len() as u64;
        }
    }
}

/// What a session did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The peer, if its hello was accepted.
    pub peer: Option<NodeId>,
    /// The state machine's counters.
    pub stats: Stats,
    /// What we sent.
    pub sent: Traffic,
    /// What we received.
    pub received: Traffic,
}

/// How a session ended, with the local store handed back.
pub struct Outcome<L> {
    /// `Ok` for a one-shot session that finished, or a live one whose
    /// peer closed cleanly; the error otherwise.
    pub result: Result<()>,
    /// What the session did.
    pub report: Report,
    /// The local store.
    pub local: L,
}

/// Where a session's events and local roots come from and go to.
#[derive(Default)]
pub struct Channels {
    /// Our committed root, whenever it changes.
    pub roots: Option<watch::Receiver<Hash>>,
    /// Every [`Event`], as it happens.
    pub events: Option<mpsc::UnboundedSender<Event>>,
    /// Ends the session (telling the peer we shut down) when it fires or
    /// its sender is dropped.
    pub stop: Option<oneshot::Receiver<()>>,
}

enum Input {
    Peer(Message, usize),
    LocalRoot(Hash),
    Failed(FrameError),
    Eof,
    Stop,
    TooMany,
}

/// What the reader and the writer share to enforce
/// [`proto::MAX_OUTSTANDING`] even while the state machine is blocked on a
/// peer that does not read our answers.
#[derive(Default)]
struct Flow {
    /// Answers handed to the writer.
    answered: AtomicU64,
    /// The peer asked for too much: the writer gives up the stream.
    violated: AtomicBool,
    stop_writer: Notify,
}

/// Runs one session over `stream` until it ends: for a one-shot session
/// ([`Config::once`]) when both sides hold the same root; for a live one
/// when the stream closes or [`Channels::stop`] fires. Errors are logged with their reason; the peer is
/// told the [`crate::proto::AbortReason`] where there is one.
pub async fn run<S, L>(stream: S, local: L, hello: Hello, cfg: Config, ch: Channels) -> Outcome<L>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
    L: Local + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (out_tx, out_rx) = mpsc::channel::<(Vec<u8>, u64)>(64);
    let flow = Arc::new(Flow::default());
    let reader = tokio::spawn(read_loop(rd, in_tx.clone(), flow.clone()));
    let watcher = ch.roots.map(|mut roots| {
        let tx = in_tx.clone();
        tokio::spawn(async move {
            while roots.changed().await.is_ok() {
                let root = *roots.borrow_and_update();
                if tx.send(Input::LocalRoot(root)).is_err() {
                    break;
                }
            }
        })
    });
    let stopper = ch.stop.map(|stop| {
        let tx = in_tx.clone();
        tokio::spawn(async move {
            let _ = stop.await;
            let _ = tx.send(Input::Stop);
        })
    });
    drop(in_tx);
    let writer = tokio::spawn(write_loop(wr, out_rx, flow.clone()));
    let (done_tx, done_rx) = oneshot::channel();
    let flow_m = flow.clone();
    let events = ch.events;
    let spawned = std::thread::Builder::new()
        .name("backer-sync".into())
        .stack_size(64 << 20)
        .spawn(move || {
            let out = machine(local, hello, cfg, in_rx, out_tx, events, &flow_m);
            let _ = done_tx.send(out);
        });
    let (result, report, local) = match spawned {
        Ok(_) => match done_rx.await {
            Ok(out) => out,
            Err(_) => panic!("the sync thread ended without a result"),
        },
        Err(e) => panic!("cannot start the sync thread: {e}"),
    };
    let (mut result, mut report, local) = (result, report, local);
    if flow.violated.load(Ordering::SeqCst) {
        result = Err(Error::Protocol(format!(
            "the peer asked for more than {} items without reading the answers",
            proto::MAX_OUTSTANDING
        )));
    }
    // A peer that does not read cannot hold us: after an error, the abort
    // gets a moment to go out; a clean end gets longer to flush.
    let grace = if result.is_ok() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(2)
    };
    let abort = writer.abort_handle();
    match tokio::time::timeout(grace, writer).await {
        Ok(sent) => report.sent = sent.unwrap_or_default(),
        Err(_) => abort.abort(),
    }
    reader.abort();
    for task in [watcher, stopper].into_iter().flatten() {
        task.abort();
    }
    match &result {
        // A peer or connection going away is ordinary for a live session.
        Err(e @ (Error::PeerAborted(AbortReason::Shutdown) | Error::Closed)) => {
            tracing::debug!(peer = ?report.peer.map(|p| p.short()), error = %e, "sync session ended");
        }
        Err(e) => {
            tracing::warn!(peer = ?report.peer.map(|p| p.short()), error = %e, "sync session ended");
        }
        Ok(()) => {}
    }
    Outcome {
        result,
        report,
        local,
    }
}

/// The state machine's thread: inputs in, frames out.
fn machine<L: Local>(
    mut local: L,
    hello: Hello,
    cfg: Config,
    mut input: mpsc::UnboundedReceiver<Input>,
    out: mpsc::Sender<(Vec<u8>, u64)>,
    events: Option<mpsc::UnboundedSender<Event>>,
    flow: &Flow,
) -> (Result<()>, Report, L) {
    let mut report = Report::default();
    let mut m = None;
    let result = (|| -> Result<()> {
        let m = m.insert(Reconcile::new(hello, local.root()?, cfg));
        loop {
            while let Some(msg) = m.poll_transmit(&local)? {
                let frame = proto::encode(&msg)?;
                let chunk_bytes = match &msg {
                    Message::Chunk(b) => b.len() as u64 + 1,
                    _ => 0,
                };
                let answer = matches!(
                    msg,
                    Message::DirNode(_)
                        | Message::ContentNode(_)
                        | Message::Chunk(_)
                        | Message::Missing
                );
                if out.blocking_send((frame, chunk_bytes)).is_err() {
                    return Err(Error::Closed);
                }
                if answer {
                    flow.answered.fetch_add(1, Ordering::SeqCst);
                }
            }
            while let Some(ev) = m.poll_event() {
                if let Some(tx) = &events {
                    let _ = tx.send(ev);
                }
            }
            if let Some(remote) = m.poll_merge() {
                let merged = local.merge(remote)?;
                m.handle_merged(merged, &mut local)?;
                continue;
            }
            if m.is_finished() {
                return Ok(());
            }
            match input.blocking_recv() {
                Some(Input::Peer(msg, len)) => {
                    report.received.count(&msg, len);
                    m.handle_message(msg, &mut local)?;
                }
                Some(Input::LocalRoot(root)) => m.handle_local_root(root, &mut local)?,
                Some(Input::Failed(e)) => return Err(e.into()),
                Some(Input::Eof) | None => return Err(Error::Closed),
                Some(Input::TooMany) => return Err(Error::Closed), // replaced by run()
                Some(Input::Stop) => {
                    let frame = proto::encode(&Message::Abort(AbortReason::Shutdown))?;
                    let _ = out.blocking_send((frame, 0));
                    return Ok(());
                }
            }
        }
    })();
    if let Some(m) = &m {
        report.peer = m.peer();
        report.stats = m.stats();
    }
    if let Err(e) = &result {
        if let Some(reason) = e.abort_reason() {
            if let Ok(frame) = proto::encode(&Message::Abort(reason)) {
                let _ = out.blocking_send((frame, 0));
            }
        }
    }
    (result, report, local)
}

async fn read_loop<R: AsyncRead + Unpin + Send + 'static>(
    rd: R,
    tx: mpsc::UnboundedSender<Input>,
    flow: Arc<Flow>,
) {
    let mut rd = BufReader::with_capacity(256 << 10, rd);
    let mut requested = 0u64;
    loop {
        let input = match read_frame(&mut rd).await {
            Ok(Some((msg, len))) => {
                if let Message::GetDirNodes(h)
                | Message::GetContentNodes(h)
                | Message::GetChunks(h) = &msg
                {
                    requested += h.len() as u64;
                    let answered = flow.answered.load(Ordering::SeqCst);
                    if requested.saturating_sub(answered) > proto::MAX_OUTSTANDING as u64 {
                        flow.violated.store(true, Ordering::SeqCst);
                        flow.stop_writer.notify_one();
                        let _ = tx.send(Input::TooMany);
                        return;
                    }
                }
                Input::Peer(msg, len)
            }
            Ok(None) => Input::Eof,
            Err(e) => Input::Failed(e),
        };
        let last = !matches!(input, Input::Peer(..));
        if tx.send(input).is_err() || last {
            return;
        }
    }
}

/// Reads one frame: `None` at a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
) -> Result<Option<(Message, usize)>, FrameError> {
    let mut prefix = [0u8; 4];
    if rd.read(&mut prefix[..1]).await? == 0 {
        return Ok(None);
    }
    rd.read_exact(&mut prefix[1..]).await.map_err(truncated)?;
    let len = proto::frame_len(prefix)?;
    let mut payload = vec![0u8; len];
    rd.read_exact(&mut payload).await.map_err(truncated)?;
    Ok(Some((proto::decode(&payload)?, 4 + len)))
}

fn truncated(e: io::Error) -> FrameError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(e)
    }
}

async fn write_loop<W: AsyncWrite + Unpin + Send + 'static>(
    wr: W,
    mut rx: mpsc::Receiver<(Vec<u8>, u64)>,
    flow: Arc<Flow>,
) -> Traffic {
    let mut wr = BufWriter::with_capacity(256 << 10, wr);
    let mut sent = Traffic::default();
    let result: io::Result<()> = async {
        loop {
            tokio::select! {
                biased;
                _ = flow.stop_writer.notified() => return Ok(()),
                more = write_some(&mut wr, &mut rx, &mut sent) => {
                    if !more? {
                        return wr.shutdown().await;
                    }
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "sync stream write failed");
    }
    sent
}

/// Writes the next frame and every one already queued, then flushes;
/// `false` once the channel is closed.
async fn write_some<W: AsyncWrite + Unpin>(
    wr: &mut W,
    rx: &mut mpsc::Receiver<(Vec<u8>, u64)>,
    sent: &mut Traffic,
) -> io::Result<bool> {
    let Some((frame, chunk)) = rx.recv().await else {
        return Ok(false);
    };
    write_counted(wr, &frame, chunk, sent).await?;
    while let Ok((frame, chunk)) = rx.try_recv() {
        write_counted(wr, &frame, chunk, sent).await?;
    }
    wr.flush().await?;
    Ok(true)
}

/// Writes one frame; `chunk` is 1 + the chunk bytes it carries (0 for
/// any other message).
async fn write_counted<W: AsyncWrite + Unpin>(
    wr: &mut W,
    frame: &[u8],
    chunk: u64,
    sent: &mut Traffic,
) -> io::Result<()> {
    wr.write_all(frame).await?;
    sent.messages += 1;
    sent.bytes += frame.len() as u64;
    if chunk > 0 {
        sent.chunks += 1;
        sent.chunk_bytes += chunk - 1;
    }
    Ok(())
}
