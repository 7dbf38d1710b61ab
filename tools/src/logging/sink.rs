//! Where log lines go: one whole line per write, its control characters
//! escaped, and the log file rotated at [`CAP`] bytes.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use backer_fs::history::printable;
use tracing_subscriber::fmt::MakeWriter;

use super::limit::NOTE;

/// The size at which `backer.log` is moved to `backer.log.1` (replacing
/// the one before) and a new one begun.
pub(super) const CAP: u64 = 8 << 20;

/// The log's writer.
pub(super) struct Sink {
    state: Mutex<State>,
}

struct State {
    /// Where lines go (`None`: stderr is closed).
    out: Option<File>,
    /// The log file `out` is, if it is one (then it is rotated).
    log: Option<PathBuf>,
    /// Whether a new log file also becomes fd 2, so what else the
    /// process writes to stderr (a panic) follows it.
    onto_stderr: bool,
    written: u64,
    cap: u64,
}

impl Sink {
    /// Lines to stderr; rotated if stderr is the file `log`.
    pub(super) fn stderr(log: Option<&Path>, cap: u64) -> Sink {
        // SAFETY: dup of fd 2; the copy is owned by the File made of it.
        let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
        // SAFETY: `fd` was just made and nothing else owns it.
        let out = (fd >= 0).then(|| unsafe { File::from_raw_fd(fd) });
        let is_log = match (&out, log) {
            (Some(f), Some(p)) => same_file(f, p),
            _ => false,
        };
        let written = match (&out, is_log) {
            (Some(f), true) => f.metadata().map_or(0, |m| m.len()),
            _ => 0,
        };
        Sink {
            state: Mutex::new(State {
                out,
                log: log.filter(|_| is_log).map(Path::to_path_buf),
                onto_stderr: true,
                written,
                cap,
            }),
        }
    }

    /// Lines appended to the file `log`, rotated at `cap` bytes.
    #[cfg(test)]
    pub(super) fn file(log: &Path, cap: u64) -> Sink {
        Sink {
            state: Mutex::new(State {
                out: open_log(log).ok(),
                log: Some(log.to_path_buf()),
                onto_stderr: false,
                written: 0,
                cap,
            }),
        }
    }

    /// Writes one formatted line.
    fn commit(&self, buf: &[u8]) {
        let text = String::from_utf8_lossy(buf);
        let body = text.strip_suffix('\n').unwrap_or(&text);
        let mut line = printable(body).into_owned();
        if let Some(note) = NOTE.with(|n| n.borrow_mut().take()) {
            line.push_str(&note);
        }
        line.push('\n');
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(out) = &mut st.out {
            let _ = out.write_all(line.as_bytes());
        }
        st.written += line.len() as u64;
        if st.written >= st.cap {
            st.rotate();
        }
    }
}

impl State {
    /// Moves the log to `NAME.1` and begins a new one; on any failure
    /// goes on writing where it was.
    fn rotate(&mut self) {
        let Some(path) = &self.log else {
            return;
        };
        let mut old = path.clone().into_os_string();
        old.push(".1");
        if std::fs::rename(path, &old).is_err() {
            return;
        }
        if let Ok(f) = open_log(path) {
            if self.onto_stderr {
                // SAFETY: two open descriptors; fd 2 now names the new log.
                unsafe { libc::dup2(f.as_raw_fd(), 2) };
            }
            self.out = Some(f);
            self.written = 0;
        }
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Whether the open file `f` is the file at `p`.
fn same_file(f: &File, p: &Path) -> bool {
    match (f.metadata(), std::fs::metadata(p)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// One event's line, written whole when dropped.
pub(super) struct Line<'a> {
    sink: &'a Sink,
    buf: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.sink.commit(&self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            sink: self,
            buf: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;

    use super::super::limit::{RateLimit, PER_MINUTE};
    use super::*;

    /// Runs `f` with a subscriber that logs through the node's layers
    /// into `log`, rotated at `cap`.
    fn logging_to(log: &Path, cap: u64, f: impl FnOnce()) {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(Sink::file(log, cap))
            .with_ansi(false)
            .with_filter(RateLimit::default());
        let sub = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(sub, f);
    }

    #[test]
    fn control_characters_are_escaped() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("backer.log");
        logging_to(&log, CAP, || {
            let name = "evil\x1b[2J\x1b]0;pwned\x07\nfake line";
            tracing::warn!(peer = "p", %name, "refused a name");
        });
        let text = std::fs::read(&log).unwrap();
        assert!(!text.contains(&0x1b) && !text.contains(&0x07), "{text:?}");
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(r"evil\x1b[2J\x1b]0;pwned\x07\x0afake line"),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1, "one line per event: {text}");
    }

    #[test]
    fn a_flood_from_one_address_is_held_back() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("backer.log");
        logging_to(&log, CAP, || {
            for port in 0..1000 {
                let addr = format!("192.0.2.7:{}", 1000 + port);
                tracing::warn!(%addr, "refusing a handshake");
            }
            tracing::warn!(addr = "192.0.2.8:1", "refusing a handshake");
        });
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), PER_MINUTE as usize + 1, "{text}");
        assert!(
            lines[PER_MINUTE as usize - 1].contains("held back"),
            "{text}"
        );
        assert!(lines[PER_MINUTE as usize].contains("192.0.2.8"), "{text}");
    }

    #[test]
    fn the_log_rotates_at_its_cap() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("backer.log");
        let cap = 4096;
        logging_to(&log, cap, || {
            for i in 0..1000 {
                tracing::warn!(peer = %format!("peer-{i}"), "pull failed");
            }
        });
        let now = std::fs::read_to_string(&log).unwrap();
        let old = std::fs::read_to_string(t.path().join("backer.log.1")).unwrap();
        // Each stays under the cap plus one line; the newest line is kept.
        assert!(now.len() as u64 <= cap + 200, "{}", now.len());
        assert!(old.len() as u64 <= cap + 200, "{}", old.len());
        assert!(now.lines().last().unwrap().contains("peer-999"), "{now}");
    }
}
