//! A peer's first frame is its hello, which names the node it speaks for.
//! The TLS handshake already proved which node's key the peer holds; a
//! hello that names another node is a lie (or a bug), and the session must
//! never act on it. [`CheckedHello`] reads the first frame before the
//! session does and closes the connection, with a logged reason, when its
//! node id is not the proven one; then it hands the bytes on unchanged.
//!
//! It only holds back reads, never writes, so both sides can still send
//! their hellos at once.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use backer_fs::NodeId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::proto::{self, Message};
use crate::quic::Connection;

/// The most bytes read while waiting for the first frame to end: a real
/// hello is under 100 bytes.
const MAX_HELLO: usize = 64 << 10;

/// A stream whose first frame, if it is a hello, must name `proven`.
pub(super) struct CheckedHello<S> {
    inner: S,
    /// Closed when the hello lies.
    conn: Connection,
    /// The node the handshake proved.
    proven: NodeId,
    state: State,
}

enum State {
    /// Reading the first frame: its bytes so far.
    Reading(Vec<u8>),
    /// The first frame passed: handing on its bytes, from the index.
    Replaying(Vec<u8>, usize),
    /// Past the first frame: reads go straight through.
    Passing,
    /// The first frame was refused (why): every read fails.
    Refused(String),
}

/// What the bytes of the first frame read so far say.
enum Verdict {
    /// Not a whole frame yet.
    Incomplete,
    /// Let the session have them: a hello that names the proven node, or
    /// anything else, which the session refuses itself.
    Pass,
    /// Close the connection: the reason for the log, and the short one for
    /// the peer.
    Refuse(String, &'static str),
}

impl<S> CheckedHello<S> {
    pub(super) fn new(inner: S, conn: Connection, proven: NodeId) -> CheckedHello<S> {
        CheckedHello {
            inner,
            conn,
            proven,
            state: State::Reading(Vec::new()),
        }
    }

    fn judge(&self, head: &[u8]) -> Verdict {
        match proto::decode_frame(head) {
            Ok(None) if head.len() <= MAX_HELLO => Verdict::Incomplete,
            Ok(None) => Verdict::Refuse(
                format!("a first frame of over {MAX_HELLO} bytes is no hello"),
                "hello too large",
            ),
            Ok(Some((Message::Hello(hello), _))) => match hello.check_sender(self.proven) {
                Ok(()) => Verdict::Pass,
                Err(e) => Verdict::Refuse(e.to_string(), "hello names another node"),
            },
            Ok(Some(_)) | Err(_) => Verdict::Pass,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CheckedHello<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Passing => return Pin::new(&mut this.inner).poll_read(cx, buf),
                State::Refused(why) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        why.clone(),
                    )))
                }
                State::Replaying(bytes, at) => {
                    let n = (bytes.len() - *at).min(buf.remaining());
                    buf.put_slice(&bytes[*at..*at + n]);
                    *at += n;
                    if *at == bytes.len() {
                        this.state = State::Passing;
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Reading(head) => {
                    let mut chunk = [0u8; 4096];
                    let mut read = ReadBuf::new(&mut chunk);
                    ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                    if read.filled().is_empty() {
                        // The stream ended inside the first frame: the
                        // session sees what there was, and the end.
                        let head = std::mem::take(head);
                        this.state = match head.is_empty() {
                            true => State::Passing,
                            false => State::Replaying(head, 0),
                        };
                        continue;
                    }
                    head.extend_from_slice(read.filled());
                    let head = std::mem::take(head);
                    this.state = match this.judge(&head) {
                        Verdict::Incomplete => State::Reading(head),
                        Verdict::Pass => State::Replaying(head, 0),
                        Verdict::Refuse(why, tell) => {
                            tracing::warn!(
                                peer = %this.proven.short(),
                                addr = %this.conn.remote_addr(),
                                "closing the connection: {why}"
                            );
                            this.conn.close(tell);
                            State::Refused(why)
                        }
                    };
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CheckedHello<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
