//! The web server's accept loop. `axum::serve` takes every connection and
//! never times one out, so a local user holding ~1,000 idle connections
//! would use up the node's file descriptors. Here at most `MAX_CONNECTIONS`
//! are served at once: the next is accepted only when one has ended, so
//! the rest wait in the kernel's listen backlog (bounded, and holding none
//! of our descriptors) instead of being refused. Each is an HTTP/1
//! connection with a timer: one that does not send a whole request head
//! within `HEADER_READ` (a half-sent header, or an idle keep-alive
//! connection waiting for its next request) is closed. An event stream or
//! long poll already answering is not cut: the cap bounds those.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::accept_errors::{AcceptErrors, BACKOFF};

/// Connections served at once (page, API calls, event streams).
pub(super) const MAX_CONNECTIONS: usize = 64;

/// How long a connection may take to send a request's head, counted from
/// when it is ready to read one (so also how long it may idle).
const HEADER_READ: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until the process ends.
pub(super) async fn serve(listener: TcpListener, router: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut errors = AcceptErrors::default();
    loop {
        // A slot first, then the connection (see the module doc).
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return; // never closed
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                errors.note("web", &e);
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "web connection ended");
            }
        });
    }
}
