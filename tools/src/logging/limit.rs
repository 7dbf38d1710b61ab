//! At most [`PER_MINUTE`] lines a minute for one event (one place in the
//! code) about one peer or address: a flood of refused handshakes, or a
//! peer failing the same way in a loop, costs a few lines, not the disk.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::{Event, Metadata};
use tracing_subscriber::layer::{Context, Filter};

/// Lines shown per event and peer in a minute.
pub(super) const PER_MINUTE: u32 = 10;

const WINDOW: Duration = Duration::from_secs(60);

/// Keys remembered at most: a flood from many addresses falls back to one
/// key per event rather than growing the table.
const MAX_KEYS: usize = 4096;

/// The fields that say whom an event is about; an address counts by its
/// IP (a flood comes from many ports).
const WHO: [&str; 4] = ["peer", "node", "remote", "addr"];

thread_local! {
    /// What the line about to be written adds (the count held back): set
    /// by the filter, taken by the sink, on the thread that logs.
    pub(super) static NOTE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// The tracing filter that holds back repeats.
#[derive(Default)]
pub(super) struct RateLimit {
    counts: Mutex<Counts>,
}

impl<S> Filter<S> for RateLimit {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        let mut who = Who(None);
        event.record(&mut who);
        let key = (event.metadata().callsite(), who.0.unwrap_or_default());
        let verdict = self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(key, Instant::now());
        match verdict {
            Verdict::Show(note) => {
                NOTE.with(|n| *n.borrow_mut() = note);
                true
            }
            Verdict::Hold => false,
        }
    }
}

/// Finds the first of the [`WHO`] fields.
struct Who(Option<String>);

impl Visit for Who {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.0.is_none() && WHO.contains(&field.name()) {
            let text = format!("{value:?}");
            let text = match text.trim_matches('"').parse::<std::net::SocketAddr>() {
                Ok(a) => a.ip().to_string(),
                Err(_) => text,
            };
            self.0 = Some(text);
        }
    }
}

/// What to do with one line.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Write it, with this added.
    Show(Option<String>),
    /// Hold it back (counted).
    Hold,
}

/// The lines shown and held back per key in its current minute.
#[derive(Default)]
pub(super) struct Counts {
    map: HashMap<(Identifier, String), Window>,
}

struct Window {
    start: Instant,
    shown: u32,
    held: u64,
}

impl Counts {
    /// The verdict on a line for `key` at `now`.
    pub(super) fn check(&mut self, key: (Identifier, String), now: Instant) -> Verdict {
        let key = if self.map.len() >= MAX_KEYS && !self.map.contains_key(&key) {
            self.map
                .retain(|_, w| now.duration_since(w.start) < WINDOW || w.held > 0);
            if self.map.len() >= MAX_KEYS {
                (key.0, "*".to_string())
            } else {
                key
            }
        } else {
            key
        };
        let w = self.map.entry(key).or_insert(Window {
            start: now,
            shown: 0,
            held: 0,
        });
        let mut note = None;
        if now.duration_since(w.start) >= WINDOW {
            if w.held > 0 {
                note = Some(format!(
                    " ({} more like this were held back in the last minute)",
                    w.held
                ));
            }
            *w = Window {
                start: now,
                shown: 0,
                held: 0,
            };
        }
        if w.shown >= PER_MINUTE {
            w.held += 1;
            return Verdict::Hold;
        }
        w.shown += 1;
        if w.shown == PER_MINUTE {
            let more = " (more like this are held back for a minute)";
            note = Some(note.unwrap_or_default() + more);
        }
        Verdict::Show(note)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Here;
    static HERE: Here = Here;
    impl tracing::callsite::Callsite for Here {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unreachable!("not asked in these tests")
        }
    }

    fn key(who: &str) -> (Identifier, String) {
        (Identifier(&HERE), who.to_string())
    }

    #[test]
    fn repeats_are_held_back_for_a_minute_then_counted() {
        let mut c = Counts::default();
        let t0 = Instant::now();
        let shown: Vec<_> = (0..100)
            .map(|_| c.check(key("peer-a"), t0))
            .filter(|v| *v != Verdict::Hold)
            .collect();
        assert_eq!(shown.len(), PER_MINUTE as usize);
        let last = shown.last().unwrap();
        assert!(
            matches!(last, Verdict::Show(Some(n)) if n.contains("held back for a minute")),
            "{last:?}"
        );
        // Another peer is not held back by the first one's flood.
        assert_eq!(c.check(key("peer-b"), t0), Verdict::Show(None));
        // A minute on: shown again, with the count.
        let later = t0 + WINDOW;
        match c.check(key("peer-a"), later) {
            Verdict::Show(Some(n)) => assert!(n.contains("90 more"), "{n}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.check(key("peer-a"), later), Verdict::Show(None));
    }

    #[test]
    fn a_flood_of_keys_stays_bounded() {
        let mut c = Counts::default();
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS * 3) {
            let _ = c.check(key(&format!("10.0.{}.{}", i / 256, i % 256)), t0);
        }
        assert!(c.map.len() <= MAX_KEYS + 1, "{}", c.map.len());
    }
}
