//! Drives a [`Reconcile`] over any duplex byte stream (QUIC stream, TCP,
//! `tokio::io::duplex` in tests).
//!
//! One async loop drives the state machine: it takes one input (a frame
//! from the peer, a new local root, a stop), hands it to the machine, and
//! performs the machine's outputs: frames to write, events to send, and
//! merges to run. Every step that touches the store (the machine reads
//! and writes it as it answers and pulls; the merge walks and commits
//! whole trees) runs on tokio's blocking pool, so the runtime never waits
//! on the disk. Around that loop, two small tasks move bytes:
//!
//! - a reader task decodes frames into a small queue, bounded in frames
//!   and in bytes ([`INPUT_BYTES`]: a frame waits for room before it is
//!   read), so a session's memory is bounded whatever the peer sends. The
//!   loop takes inputs even while its frames wait for the writer, so two
//!   peers writing to each other cannot deadlock (the protocol's windows
//!   bound what can be in flight), and a peer that asks without reading
//!   meets the machine's limit on outstanding requests;
//! - a writer task writes frames, flushing when it runs out of them. A
//!   write that makes no progress for [`WRITE_STALL`] ends the session: a
//!   peer that stopped reading is cut off ([`Error::Stalled`]).
//!
//! A stop ([`Channels::stop`]) is taken after any local root published
//! before it, and the frames already made go out before the goodbye
//! (`Abort(Shutdown)`): a node's last commit is announced before it
//! leaves.
//!
//! In live mode ([`Config::once`] false) the session runs until the stream
//! closes or fails; new local roots come in through a `watch` channel.

use std::collections::VecDeque;
use std::io;

use backer_fs::{Hash, NodeId};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};

use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};

mod stall;
#[cfg(test)]
mod tests;

use stall::Stall;

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

/// Where a session's events and local roots come from and go to, and how
/// long it waits on a peer that does not read.
#[derive(Default)]
pub struct Channels {
    /// Our committed root, whenever it changes.
    pub roots: Option<watch::Receiver<Hash>>,
    /// Every [`Event`], as it happens.
    pub events: Option<mpsc::UnboundedSender<Event>>,
    /// Ends the session (telling the peer we shut down) when it fires or
    /// its sender is dropped.
    pub stop: Option<oneshot::Receiver<()>>,
    /// How long a write may make no progress before the peer is cut off;
    /// `None`: [`WRITE_STALL`].
    pub write_stall: Option<Duration>,
    /// The chunks this node wants back, asked of the peer once it is
    /// ready and again whenever the feed ticks.
    pub heal: Option<HealFeed>,
}

/// Where a session learns which chunks to heal: the node's registry of
/// wanted chunks, and a counter bumped whenever it changes (or its
/// owner wants every peer asked again).
#[derive(Clone)]
pub struct HealFeed {
    /// The registry.
    pub wanted: backer_fs::heal::Wanted,
    /// Ticks when there is something new to ask.
    pub ticks: watch::Receiver<u64>,
}

enum Input {
    /// A frame, its length, and the room it takes in the input queue
    /// (given back when the driver takes it).
    Peer(Message, usize, OwnedSemaphorePermit),
    LocalRoot(Hash),
    /// The wanted chunks changed.
    Heal,
    Failed(FrameError),
    Eof,
    Stop,
    /// The writer made no progress for this long.
    Stalled(Duration),
}

/// Inputs waiting for the driver: a slow driver slows the reader.
const INPUTS: usize = 64;

/// Bytes of the peer's frames waiting for the driver, at most (frames
/// may be up to [`proto::MAX_FRAME`]; [`INPUTS`] of those would be 1 GiB).
/// A frame that does not fit waits, unread, until the driver takes
/// others (DESIGN.md: bounded memory per session).
pub const INPUT_BYTES: usize = 32 << 20;

/// How long a write to the peer may make no progress before the session
/// ends: a peer that stops reading our frames is cut off. Generous: a
/// healthy peer stops reading only while its own queue is full, which
/// lasts as long as one step of its driver (a merge of a large tree).
pub const WRITE_STALL: Duration = Duration::from_secs(60);

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
    let (in_tx, in_rx) = mpsc::channel(INPUTS);
    let (out_tx, out_rx) = mpsc::channel::<Outgoing>(64);
    let room = Arc::new(Semaphore::new(INPUT_BYTES));
    let reader = tokio::spawn(read_loop(rd, in_tx.clone(), room));
    let wanted = ch.heal.as_ref().map(|h| h.wanted.clone());
    let ticks = ch.heal.map(|h| h.ticks);
    let local_inputs = tokio::spawn(local_inputs(ch.roots, ticks, ch.stop, in_tx.clone()));
    let stall = ch.write_stall.unwrap_or(WRITE_STALL);
    let writer = tokio::spawn(write_loop(Stall::new(wr, stall), out_rx, in_tx));
    let state = Arc::new(Mutex::new(Some(State {
        local,
        m: None,
        wanted,
        asked_on_ready: false,
    })));
    let mut report = Report::default();
    let result = drive(&state, hello, cfg, in_rx, &out_tx, ch.events, &mut report).await;
    // Every step has returned: nothing else takes the state.
    let taken = state.lock().unwrap_or_else(PoisonError::into_inner).take();
    let State { local, m, .. } = taken.expect("the state is taken once");
    if let Some(m) = &m {
        report.peer = m.peer();
        report.stats = m.stats();
    }
    if let Some(reason) = result.as_ref().err().and_then(Error::abort_reason) {
        // Best effort: a full queue means the peer is not reading.
        if let Ok(frame) = Outgoing::new(&Message::Abort(reason)) {
            let _ = out_tx.try_send(frame);
        }
    }
    drop(out_tx);
    // A peer that does not read cannot hold us: after an error, the abort
    // gets a moment to go out; a clean end gets longer to flush.
    let grace = if result.is_ok() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(2)
    };
    let abort = writer.abort_handle();
    let mut result = result;
    match tokio::time::timeout(grace, writer).await {
        Ok(Ok(w)) => {
            report.sent = w.sent;
            if w.stalled && matches!(result, Err(Error::Closed)) {
                // The writer gave up first and the loop saw it as a close.
                result = Err(Error::Stalled(stall));
            }
        }
        Ok(Err(_)) => {}
        Err(_) => abort.abort(),
    }
    reader.abort();
    local_inputs.abort();
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

/// The state machine and the store it runs against, shared with the
/// blocking step that is using them (one at a time).
struct State<L> {
    local: L,
    /// Made by the first step (reading our root touches the store).
    m: Option<Reconcile>,
    /// The chunks this node wants back, if it heals through this session.
    wanted: Option<backer_fs::heal::Wanted>,
    /// Whether the wanted chunks were asked once the peer was ready.
    asked_on_ready: bool,
}

/// The state, shared with the blocking step using it; taken at the end.
type Shared<L> = Arc<Mutex<Option<State<L>>>>;

/// Frames one blocking step produces at most: a peer's many requests must
/// not make us build every answer in memory before any is written (the
/// writer's channel holds 64 more).
const FRAMES_PER_STEP: usize = 64;

/// What one blocking step hands back to the loop.
#[derive(Default)]
struct Outputs {
    frames: Vec<Outgoing>,
    events: Vec<Event>,
    /// More frames are waiting: step again before taking an input.
    more: bool,
    finished: bool,
}

/// An input the loop hands to the machine.
enum Todo {
    Start(Hello, Config),
    Peer(Message),
    LocalRoot(Hash),
    Heal,
    Nothing,
}

impl<L: Local> State<L> {
    /// Hands `todo` to the machine, then collects its outputs: its events
    /// and, if `transmit`, up to [`FRAMES_PER_STEP`] frames and any merge
    /// it hands out (run here, once it has nothing left to send).
    fn step(&mut self, todo: Todo, transmit: bool) -> Result<Outputs> {
        let State {
            local,
            m,
            wanted,
            asked_on_ready,
        } = self;
        let m = match (todo, m) {
            (Todo::Start(hello, cfg), m) => m.insert(Reconcile::new(hello, local.root()?, cfg)),
            (_, None) => return Err(Error::Stopped("the state machine was never made".into())),
            (Todo::Peer(msg), Some(m)) => {
                m.handle_message(msg, local)?;
                m
            }
            (Todo::LocalRoot(root), Some(m)) => {
                m.handle_local_root(root, local)?;
                m
            }
            (Todo::Heal, Some(m)) => {
                if let (Some(w), Some(peer)) = (wanted.as_ref(), m.peer()) {
                    m.handle_wanted(w.pending_for(peer));
                }
                m
            }
            (Todo::Nothing, Some(m)) => m,
        };
        if let (Some(w), Some(peer), false) = (wanted.as_ref(), m.peer(), *asked_on_ready) {
            // The peer is ready: ask it for what was wanted before.
            *asked_on_ready = true;
            m.handle_wanted(w.pending_for(peer));
        }
        let mut out = Outputs::default();
        if !transmit {
            out.events.extend(std::iter::from_fn(|| m.poll_event()));
            out.more = true; // what it has to send is asked for later
            return Ok(out);
        }
        loop {
            while let Some(msg) = m.poll_transmit(local)? {
                out.frames.push(Outgoing::new(&msg)?);
                if out.frames.len() >= FRAMES_PER_STEP {
                    out.more = true;
                    break;
                }
            }
            out.events.extend(std::iter::from_fn(|| m.poll_event()));
            if out.more {
                return Ok(out);
            }
            let Some(remote) = m.poll_merge() else {
                break;
            };
            let merged = local.merge(remote)?;
            m.handle_merged(merged, local)?;
        }
        out.finished = m.is_finished();
        Ok(out)
    }
}

/// Runs one [`State::step`] on tokio's blocking pool.
async fn step<L: Local + Send + 'static>(
    state: &Shared<L>,
    todo: Todo,
    transmit: bool,
) -> Result<Outputs> {
    let state = state.clone();
    let job = tokio::task::spawn_blocking(move || {
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        match s.as_mut() {
            Some(s) => s.step(todo, transmit),
            None => Err(Error::Stopped("the session has ended".into())),
        }
    });
    match job.await {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::Stopped(e.to_string())),
    }
}

/// The driver loop: inputs in, the machine's outputs performed. While
/// frames wait for the writer, inputs are still taken (without asking for
/// more frames), so a peer that asks and does not read meets the
/// machine's limit on outstanding requests instead of stalling us.
async fn drive<L: Local + Send + 'static>(
    state: &Shared<L>,
    hello: Hello,
    cfg: Config,
    mut input: mpsc::Receiver<Input>,
    out: &mpsc::Sender<Outgoing>,
    events: Option<mpsc::UnboundedSender<Event>>,
    report: &mut Report,
) -> Result<()> {
    let mut pending: VecDeque<Outgoing> = VecDeque::new();
    let mut todo = Todo::Start(hello, cfg);
    loop {
        let step = step(state, todo, pending.is_empty()).await?;
        for ev in step.events {
            if let Some(tx) = &events {
                let _ = tx.send(ev);
            }
        }
        pending.extend(step.frames);
        todo = loop {
            let next = if !pending.is_empty() {
                tokio::select! {
                    permit = out.reserve() => {
                        let permit = permit.map_err(|_| Error::Closed)?;
                        if let Some(frame) = pending.pop_front() {
                            permit.send(frame);
                        }
                        continue;
                    }
                    next = input.recv() => next,
                }
            } else if step.more {
                break Todo::Nothing;
            } else if step.finished {
                return Ok(());
            } else {
                input.recv().await
            };
            break match next {
                // The frame's room in the queue is given back here.
                Some(Input::Peer(msg, len, _room)) => {
                    report.received.count(&msg, len);
                    Todo::Peer(msg)
                }
                Some(Input::LocalRoot(root)) => Todo::LocalRoot(root),
                Some(Input::Heal) => Todo::Heal,
                Some(Input::Failed(e)) => return Err(e.into()),
                Some(Input::Eof) | None => return Err(Error::Closed),
                Some(Input::Stalled(after)) => return Err(Error::Stalled(after)),
                Some(Input::Stop) => {
                    goodbye(out, &mut pending).await;
                    return Ok(());
                }
            };
        };
    }
}

/// Hands the writer the frames already made, then `Abort(Shutdown)`,
/// giving up after a moment if the writer is stuck on a peer that does
/// not read.
async fn goodbye(out: &mpsc::Sender<Outgoing>, pending: &mut VecDeque<Outgoing>) {
    let abort = Outgoing::new(&Message::Abort(AbortReason::Shutdown)).ok();
    let frames = pending.drain(..).chain(abort);
    let send = async {
        for frame in frames {
            if out.send(frame).await.is_err() {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), send).await;
}

/// Hands the driver every new local root and, last, the stop (when it
/// fires or its sender is dropped). A root published before the stop
/// fired is handed over before it, so a node's last commit is announced
/// before its goodbye.
async fn local_inputs(
    mut roots: Option<watch::Receiver<Hash>>,
    mut ticks: Option<watch::Receiver<u64>>,
    stop: Option<oneshot::Receiver<()>>,
    tx: mpsc::Sender<Input>,
) {
    if roots.is_none() && ticks.is_none() && stop.is_none() {
        return; // nothing will come: the queue must not wait on us
    }
    let stop = async move {
        match stop {
            Some(stop) => {
                let _ = stop.await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stop);
    loop {
        let changed = tokio::select! {
            biased;
            _ = &mut stop => break,
            changed = root_changed(&mut roots) => changed,
            ticked = ticked(&mut ticks) => {
                if !ticked {
                    ticks = None;
                } else if tx.send(Input::Heal).await.is_err() {
                    return;
                }
                continue;
            }
        };
        match roots.as_mut() {
            Some(r) if changed => {
                let root = *r.borrow_and_update();
                if tx.send(Input::LocalRoot(root)).await.is_err() {
                    return;
                }
            }
            _ => roots = None, // its sender is gone: no more roots
        }
    }
    if let Some(r) = roots.as_mut().filter(|r| r.has_changed().unwrap_or(false)) {
        let root = *r.borrow_and_update();
        let _ = tx.send(Input::LocalRoot(root)).await;
    }
    let _ = tx.send(Input::Stop).await;
}

/// Whether `ticks` ticked (`false`: its sender is gone); never ready
/// without one.
async fn ticked(ticks: &mut Option<watch::Receiver<u64>>) -> bool {
    match ticks {
        Some(t) => {
            let ok = t.changed().await.is_ok();
            t.borrow_and_update();
            ok
        }
        None => std::future::pending().await,
    }
}

/// Whether `roots` has a new value (`false`: its sender is gone); never
/// ready without one.
async fn root_changed(roots: &mut Option<watch::Receiver<Hash>>) -> bool {
    match roots {
        Some(r) => r.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// One frame for the writer.
struct Outgoing {
    frame: Vec<u8>,
    /// The chunk bytes it carries, if it is a `Chunk`.
    chunk: Option<u64>,
}

impl Outgoing {
    fn new(msg: &Message) -> Result<Outgoing> {
        Ok(Outgoing {
            frame: proto::encode(msg)?,
            chunk: match msg {
                Message::Chunk(b) => Some(b.len() as u64),
                _ => None,
            },
        })
    }
}

/// Reads frames into the driver's queue, each once `room` has space for
/// it (its length is known before its payload is read or allocated).
async fn read_loop<R: AsyncRead + Unpin + Send + 'static>(
    rd: R,
    tx: mpsc::Sender<Input>,
    room: Arc<Semaphore>,
) {
    let mut rd = BufReader::with_capacity(256 << 10, rd);
    loop {
        let input = match read_prefix(&mut rd).await {
            Ok(Some(len)) => {
                let want = u32::try_from((4 + len).min(INPUT_BYTES)).unwrap_or(u32::MAX);
                let Ok(permit) = room.clone().acquire_many_owned(want).await else {
                    return; // never closed
                };
                match read_payload(&mut rd, len).await {
                    Ok(msg) => Input::Peer(msg, 4 + len, permit),
                    Err(e) => Input::Failed(e),
                }
            }
            Ok(None) => Input::Eof,
            Err(e) => Input::Failed(e),
        };
        let last = !matches!(input, Input::Peer(..));
        if tx.send(input).await.is_err() || last {
            return;
        }
    }
}

/// Reads one frame: `None` at a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
) -> Result<Option<(Message, usize)>, FrameError> {
    let Some(len) = read_prefix(rd).await? else {
        return Ok(None);
    };
    Ok(Some((read_payload(rd, len).await?, 4 + len)))
}

/// Reads a frame's length prefix (checked against [`proto::MAX_FRAME`]):
/// `None` at a clean end of stream.
async fn read_prefix<R: AsyncRead + Unpin>(rd: &mut R) -> Result<Option<usize>, FrameError> {
    let mut prefix = [0u8; 4];
    if rd.read(&mut prefix[..1]).await? == 0 {
        return Ok(None);
    }
    rd.read_exact(&mut prefix[1..]).await.map_err(truncated)?;
    Ok(Some(proto::frame_len(prefix)?))
}

/// Reads and decodes a payload of `len` bytes.
async fn read_payload<R: AsyncRead + Unpin>(rd: &mut R, len: usize) -> Result<Message, FrameError> {
    let mut payload = vec![0u8; len];
    rd.read_exact(&mut payload).await.map_err(truncated)?;
    proto::decode(&payload)
}

fn truncated(e: io::Error) -> FrameError {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        FrameError::Truncated
    } else {
        FrameError::Io(e)
    }
}

/// What the writer did.
struct Written {
    sent: Traffic,
    /// It gave up on a peer that stopped reading.
    stalled: bool,
}

/// Writes the driver's frames until its channel closes or a write fails;
/// a write that makes no progress for the stall limit tells the driver
/// (through `inputs`) and ends the writer.
async fn write_loop<W: AsyncWrite + Unpin + Send + 'static>(
    wr: Stall<W>,
    mut rx: mpsc::Receiver<Outgoing>,
    inputs: mpsc::Sender<Input>,
) -> Written {
    let limit = wr.limit();
    let mut wr = BufWriter::with_capacity(256 << 10, wr);
    let mut sent = Traffic::default();
    let result: io::Result<()> = async {
        while write_some(&mut wr, &mut rx, &mut sent).await? {}
        wr.shutdown().await
    }
    .await;
    let stalled = result.as_ref().is_err_and(stall::is_stall);
    match result {
        Err(_) if stalled => {
            tracing::debug!(?limit, "the peer stopped reading");
            drop(rx); // the driver sees no one takes its frames
            let _ = inputs.send(Input::Stalled(limit)).await;
        }
        Err(e) => tracing::debug!(error = %e, "sync stream write failed"),
        Ok(()) => {}
    }
    Written { sent, stalled }
}

/// Writes the next frame and every one already queued, then flushes;
/// `false` once the channel is closed.
async fn write_some<W: AsyncWrite + Unpin>(
    wr: &mut W,
    rx: &mut mpsc::Receiver<Outgoing>,
    sent: &mut Traffic,
) -> io::Result<bool> {
    let Some(frame) = rx.recv().await else {
        return Ok(false);
    };
    write_counted(wr, &frame, sent).await?;
    while let Ok(frame) = rx.try_recv() {
        write_counted(wr, &frame, sent).await?;
    }
    wr.flush().await?;
    Ok(true)
}

/// Writes one frame and counts it.
async fn write_counted<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &Outgoing,
    sent: &mut Traffic,
) -> io::Result<()> {
    wr.write_all(&out.frame).await?;
    sent.messages += 1;
    sent.bytes += out.frame.len() as u64;
    if let Some(len) = out.chunk {
        sent.chunks += 1;
        sent.chunk_bytes += len;
    }
    Ok(())
}
