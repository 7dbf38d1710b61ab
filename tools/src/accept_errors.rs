//! What a server does when `accept` fails: out of file descriptors
//! (EMFILE/ENFILE) the listener stays readable, so retrying at once spins a
//! core and floods the log. Both servers of the node wait a little and log
//! at most now and then.

use std::time::{Duration, Instant};

/// How long to wait after a failed accept before the next one.
pub(crate) const BACKOFF: Duration = Duration::from_millis(100);

/// At most one warning per this long.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Rate-limits the warnings of failed accepts.
#[derive(Debug, Default)]
pub(crate) struct AcceptErrors {
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    /// Notes a failed accept of the server `what`; logs it unless one was
    /// logged within `LOG_EVERY` (then counts it for the next warning).
    pub(crate) fn note(&mut self, what: &str, e: &std::io::Error) {
        let now = Instant::now();
        if self
            .last_logged
            .is_some_and(|t| now.duration_since(t) < LOG_EVERY)
        {
            self.unlogged += 1;
            return;
        }
        tracing::warn!(
            server = what,
            error = %e,
            also = self.unlogged,
            "cannot accept a connection; waiting before the next"
        );
        self.last_logged = Some(now);
        self.unlogged = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_errors_is_logged_once_and_counted() {
        let mut errs = AcceptErrors::default();
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        errs.note("test", &e);
        let first = errs.last_logged;
        assert!(first.is_some());
        errs.note("test", &e);
        errs.note("test", &e);
        assert_eq!(errs.last_logged, first);
        assert_eq!(errs.unlogged, 2);
    }
}
