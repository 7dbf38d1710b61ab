//! A writer that gives up on a peer that stopped reading: a write, flush
//! or shutdown that makes no progress for its limit fails with
//! [`io::ErrorKind::TimedOut`]. Any progress (a byte accepted, a flush
//! done) starts the wait over, so a slow but reading peer is never cut
//! off.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::time::Sleep;

/// `W`, failing any write that waits for longer than `limit`.
pub(super) struct Stall<W> {
    inner: W,
    limit: Duration,
    /// Armed when a call first waits; cleared by progress.
    deadline: Option<Pin<Box<Sleep>>>,
}

/// The message of the error a stall fails with.
const STALLED: &str = "the peer stopped reading";

/// Whether `e` is the error [`Stall`] fails with.
pub(super) fn is_stall(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::TimedOut && e.to_string() == STALLED
}

impl<W> Stall<W> {
    pub(super) fn new(inner: W, limit: Duration) -> Stall<W> {
        Stall {
            inner,
            limit,
            deadline: None,
        }
    }

    /// How long a write may wait.
    pub(super) fn limit(&self) -> Duration {
        self.limit
    }

    /// Passes on what the inner call returned: progress disarms the
    /// deadline; a wait arms it (once), and fails once it has passed.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.deadline = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let limit = self.limit;
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, STALLED)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Stall<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}
