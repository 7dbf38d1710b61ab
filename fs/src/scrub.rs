//! The background scrub of a running node: every `every` (the config's
//! `[check] scrub_every`, 30 days by default) it reads every chunk the
//! index names from the disk and checks it against its hash
//! ([`Store::verify_chunk`]); a bad one is quarantined, which makes it
//! wanted, and the peer manager heals it from a connected peer like any
//! other ([`crate::heal`]).
//!
//! It must never starve the mount: its thread asks the kernel for the
//! idle I/O class (Linux `ioprio_set`, `IOPRIO_CLASS_IDLE`: its reads are
//! served only when no one else waits on the disk) and reads at most
//! [`RATE`] bytes a second.
//!
//! When it last ran is kept in the store (a restart neither resets nor
//! triggers it). A store that never scrubbed counts from the node's first
//! start after init; and a scrub never starts at start-up: at least
//! `min(every, 10 min)` passes first, even when one is overdue.
//!
//! Progress is shown in `status` ([`Scrub::status`]) and on the event
//! bus (`CheckProgress` about once a second, `CheckDone` at the end).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::events::{Bus, EventKind};
use crate::hash::Hash;
use crate::store::kv::for_each;
use crate::store::{Batch, Location, Space, Store};

/// The most bytes a second a scrub reads.
pub const RATE: u64 = 64 << 20;

/// The longest a scrub waits after start-up even when it is overdue.
const START_DELAY_MAX: Duration = Duration::from_secs(600);

/// Where the time of the last scrub is kept (Unix seconds, big-endian).
const META_LAST: &[u8] = b"scrub_last";

/// What `status` shows of the scrub.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// When the last scrub ended (Unix seconds).
    pub last: Option<u64>,
    /// When the next one starts (Unix seconds).
    pub next: Option<u64>,
    /// The scrub under way, if any.
    pub running: Option<Running>,
}

/// A scrub under way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    /// Chunk bytes read and checked so far.
    pub done_bytes: u64,
    /// Chunk bytes the index names.
    pub total_bytes: u64,
}

/// What one scrub found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// Chunks read and checked.
    pub chunks: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Chunks whose copy failed its check (now quarantined and wanted).
    pub bad: Vec<Hash>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// When the store last scrubbed, if it ever did (or counted from).
pub fn last(store: &Store) -> Result<Option<u64>> {
    match store.kv().get(Space::Meta, META_LAST)? {
        Some(v) => Ok(Some(u64::from_be_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| Error::corrupt("the last scrub's time"))?,
        ))),
        None => Ok(None),
    }
}

fn set_last(store: &Store, secs: u64) -> Result<()> {
    let mut b = Batch::default();
    b.put(Space::Meta, META_LAST, secs.to_be_bytes());
    store.kv().apply(b)
}

/// Asks the kernel to serve this thread's disk reads only when nothing
/// else waits on the disk (Linux; a no-op elsewhere).
fn idle_io_priority() {
    #[cfg(target_os = "linux")]
    {
        const IOPRIO_WHO_PROCESS: libc::c_long = 1;
        const IOPRIO_CLASS_IDLE: libc::c_long = 3;
        const IOPRIO_CLASS_SHIFT: libc::c_long = 13;
        // SAFETY: ioprio_set takes three integers; 0 names this thread.
        let r = unsafe {
            libc::syscall(
                libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                0 as libc::c_long,
                IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
            )
        };
        if r != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "ioprio_set failed");
        }
    }
}

/// Reads and checks every chunk the index names, at most [`RATE`] bytes
/// a second; `progress` is told where it stands now and then.
pub fn run_once(store: &Store, mut progress: impl FnMut(Running)) -> Result<Found> {
    let mut entries: Vec<(Hash, u64)> = Vec::new();
    for_each(store.kv(), Space::Chunks, &[], None, |k, v| {
        let h: [u8; 32] = k
            .try_into()
            .map_err(|_| Error::corrupt("a chunk index key of the wrong length"))?;
        entries.push((Hash(h), u64::from(Location::decode(v)?.len)));
        Ok(())
    })?;
    let total_bytes = entries.iter().map(|(_, l)| l).sum();
    let mut found = Found::default();
    let start = Instant::now();
    let mut told = Instant::now();
    progress(Running {
        done_bytes: 0,
        total_bytes,
    });
    for (hash, len) in entries {
        if !store.verify_chunk(&hash)? && store.is_missing(&hash)? {
            // Quarantined now (not collected meanwhile): wanted back.
            found.bad.push(hash);
        }
        found.chunks += 1;
        found.bytes += len;
        let due = Duration::from_secs_f64(found.bytes as f64 / RATE as f64);
        if let Some(ahead) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(ahead);
        }
        if told.elapsed() >= Duration::from_secs(1) {
            told = Instant::now();
            progress(Running {
                done_bytes: found.bytes,
                total_bytes,
            });
        }
    }
    Ok(found)
}

/// The running node's scrubber: its thread, and what it shows.
#[derive(Clone)]
pub struct Scrub {
    state: Arc<Mutex<Status>>,
}

impl Scrub {
    /// Starts the scrubber of `store`; `every` is asked before each wait
    /// (so a changed config applies without a restart).
    pub fn start(
        store: Arc<Store>,
        every: impl Fn() -> Duration + Send + 'static,
        bus: Option<Bus>,
    ) -> Result<Scrub> {
        let mut last_at = last(&store)?;
        if last_at.is_none() {
            // Never scrubbed: the first comes `every` after this start.
            let now = unix_now();
            set_last(&store, now)?;
            last_at = Some(now);
        }
        let state = Arc::new(Mutex::new(Status {
            last: last_at,
            next: None,
            running: None,
        }));
        let scrub = Scrub {
            state: state.clone(),
        };
        let started = Instant::now();
        std::thread::Builder::new()
            .name("backer-scrub".into())
            .spawn(move || {
                idle_io_priority();
                scrub_loop(&store, &state, every, bus.as_ref(), started)
            })
            .map_err(|e| Error::io("starting the scrub thread", e))?;
        Ok(scrub)
    }

    /// Where the scrub stands.
    pub fn status(&self) -> Status {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn scrub_loop(
    store: &Store,
    state: &Mutex<Status>,
    every: impl Fn() -> Duration,
    bus: Option<&Bus>,
    started: Instant,
) {
    let set =
        |f: &dyn Fn(&mut Status)| f(&mut state.lock().unwrap_or_else(PoisonError::into_inner));
    loop {
        let every = every().max(Duration::from_secs(1));
        let last = state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last
            .unwrap_or_else(unix_now);
        let earliest = started + every.min(START_DELAY_MAX);
        let due = last.saturating_add(every.as_secs());
        let wait_due = Duration::from_secs(due.saturating_sub(unix_now()));
        let wait = wait_due.max(earliest.saturating_duration_since(Instant::now()));
        set(&|s| s.next = Some(unix_now() + wait.as_secs()));
        if !wait.is_zero() {
            // Wake at least once a minute: a changed `every` applies.
            std::thread::sleep(wait.min(Duration::from_secs(60)));
            if wait > Duration::from_secs(60) {
                continue;
            }
        }
        tracing::info!("scrub: checking every chunk against its hash");
        let result = run_once(store, |r| {
            set(&|s| s.running = Some(r));
            if let Some(bus) = bus {
                bus.publish(EventKind::CheckProgress {
                    done_bytes: r.done_bytes,
                    total_bytes: r.total_bytes,
                });
            }
        });
        let now = unix_now();
        set(&|s| {
            s.running = None;
            s.last = Some(now);
        });
        if let Err(e) = set_last(store, now) {
            tracing::warn!(error = %e, "scrub: cannot record its time");
        }
        match result {
            Ok(found) => {
                tracing::info!(
                    chunks = found.chunks,
                    bytes = found.bytes,
                    bad = found.bad.len(),
                    "scrub done"
                );
                if let Some(bus) = bus {
                    bus.publish(EventKind::CheckDone {
                        chunks: found.chunks,
                        bytes: found.bytes,
                        bad_chunks: found.bad.iter().map(Hash::to_hex).collect(),
                    });
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "scrub failed");
                if let Some(bus) = bus {
                    bus.publish(EventKind::Error {
                        what: e.to_string(),
                        place: "scrub".into(),
                    });
                }
            }
        }
    }
}
