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
//!
//! A running node also publishes every warning and error on its event bus
//! as an `Error` event ([`publish_to`]), so `backer events` and the web
//! page show what went wrong without reading the log.

mod limit;
mod sink;

use std::path::Path;
use std::sync::OnceLock;

use backer_fs::events::{Bus, EventKind};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The node's bus, once it has one.
static BUS: OnceLock<Bus> = OnceLock::new();

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
        .with(ToBus.with_filter(LevelFilter::WARN))
        .try_init();
}

/// From now on, warnings and errors are also `Error` events on `bus`.
pub(crate) fn publish_to(bus: Bus) {
    let _ = BUS.set(bus);
}

/// The layer that copies warnings and errors to the bus.
struct ToBus;

/// The message and the other fields of a log event, as one line.
#[derive(Default)]
struct Line(String, Vec<String>);

impl Visit for Line {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        } else {
            self.1.push(format!("{}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        } else {
            self.1.push(format!("{}={value}", field.name()));
        }
    }
}

impl<S: Subscriber> Layer<S> for ToBus {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() > Level::WARN {
            return;
        }
        let Some(bus) = BUS.get() else { return };
        let mut line = Line::default();
        event.record(&mut line);
        let mut what = line.0;
        if !line.1.is_empty() {
            what = format!("{what} ({})", line.1.join(", "));
        }
        bus.publish(EventKind::Error {
            what,
            place: event.metadata().target().to_string(),
        });
    }
}
