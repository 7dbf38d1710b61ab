//! The node's own log, through tracing, one line per event, to stderr
//! (for a daemon, `STORE/backer.log`: `mount` starts it with its stderr
//! there). `RUST_LOG` overrides the default level (info). What it holds
//! comes partly from peers and from file names, and it lives on the
//! store's own disk, so:
//!
//! - control characters in a line are escaped (`\x1b`, as
//!   [`backer_fs::history::printable`] prints names): a peer's or a local
//!   user's name cannot drive the terminal of whoever reads the log;
//! - the same event (one place in the code) about the same peer or
//!   address is written at most [`limit::PER_MINUTE`] times a minute; the
//!   first line after a held-back stretch says how many were held back;
//! - `backer.log` is rotated to `backer.log.1` when it passes
//!   [`sink::CAP`] bytes, so the two never hold much more than twice that.

mod limit;
mod sink;

use std::path::Path;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Installs the subscriber once; later calls do nothing. `store`: the
/// store whose `backer.log` stderr may be (then it is rotated).
pub(crate) fn init(store: Option<&Path>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fuser=error"));
    let log = store.map(|s| s.join("backer.log"));
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(sink::Sink::stderr(log.as_deref(), sink::CAP))
        .with_ansi(false)
        .with_filter(limit::RateLimit::default());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(lines)
        .try_init();
}
