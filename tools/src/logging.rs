//! Logs through tracing to stderr (the log file, for a daemon), one line
//! per event; `RUST_LOG` overrides the default level (info). A running
//! node also publishes every warning and error on its event bus as an
//! `Error` event ([`publish_to`]), so `backer events` and the web page
//! show what went wrong without reading the log.

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

/// Installs the subscriber once; later calls do nothing.
pub(crate) fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fuser=error"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        // Filtered too: an unfiltered layer would enable every debug!
        // and trace! call site in the process.
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
