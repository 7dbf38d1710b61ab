//! Which incoming handshakes a listening endpoint takes on (issue 16,
//! "QUIC under attack").
//!
//! A handshake costs the server a TLS state and a slot until it finishes
//! or times out, and the first packet's source address can be forged. So:
//!
//! - every handshake ends within [`HANDSHAKE_TIMEOUT`];
//! - past [`RETRY_ABOVE`] handshakes in progress, and past
//!   [`UNVALIDATED_PER_ADDRESS`] from one address whose owner has not
//!   proven it receives our packets, a new attempt gets a Retry packet
//!   (stateless: it costs us nothing) and is taken on only when it comes
//!   back with the token, which proves its address;
//! - a handshake with a valid token is never held to the per-address cap
//!   (a household behind one NAT address, or a trusted peer sharing an
//!   address with a flood, still gets in); only [`MAX_HANDSHAKES`] bounds
//!   those.
//!
//! Forged sources never return a token, so a flood of them only ever
//! holds [`RETRY_ABOVE`] slots, each for [`HANDSHAKE_TIMEOUT`] at most.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The longest an incoming or outgoing handshake may take. Far above any
/// real round trip; a stalled one must not hold its slot for the 30 s
/// idle timeout.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Handshakes in progress past which every new one must first prove its
/// address (a Retry round trip). Below it, nobody pays the extra round
/// trip.
pub const RETRY_ABOVE: usize = 8;

/// Handshakes in progress from one address (an IPv4 address, an IPv6 /64)
/// that has not proven it receives our packets; past it, a new one from
/// that address must prove it (a Retry round trip).
pub const UNVALIDATED_PER_ADDRESS: usize = 4;

/// Handshakes in progress at once; past this, new attempts are refused
/// (only attempts with a proven address get this far).
pub const MAX_HANDSHAKES: usize = 64;

/// How often a refusal is logged at most: a flood must not fill the log.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What to do with one incoming attempt.
#[derive(Debug)]
pub(super) enum Verdict {
    /// Run the handshake, holding the slot until it ends.
    Accept(Slot),
    /// Ask the client to prove its address first.
    Retry,
    /// Too many handshakes in progress, even with a proven address.
    Refuse,
}

/// The handshakes in progress of one endpoint. Clones share the counts.
#[derive(Clone, Debug, Default)]
pub(super) struct Admission(Arc<Mutex<Counts>>);

#[derive(Debug, Default)]
struct Counts {
    /// Every handshake in progress.
    total: usize,
    /// Handshakes in progress whose address is not proven, by source.
    unvalidated: HashMap<IpAddr, usize>,
    /// Refusals since the last one logged, and when that was.
    refused: u64,
    logged: Option<Instant>,
}

impl Admission {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides about an attempt from `ip`, whose address is proven when
    /// `validated` (it came back with our Retry token).
    pub(super) fn judge(&self, ip: IpAddr, validated: bool) -> Verdict {
        let source = source(ip);
        let mut c = self.counts();
        if !validated {
            let from_source = c.unvalidated.get(&source).copied().unwrap_or(0);
            if c.total >= RETRY_ABOVE || from_source >= UNVALIDATED_PER_ADDRESS {
                return Verdict::Retry;
            }
        }
        if c.total >= MAX_HANDSHAKES {
            return Verdict::Refuse;
        }
        c.total += 1;
        if !validated {
            *c.unvalidated.entry(source).or_default() += 1;
        }
        Verdict::Accept(Slot {
            admission: self.clone(),
            unvalidated: (!validated).then_some(source),
        })
    }

    /// Counts one refusal; returns how many to log now (this one and those
    /// not logged before), or `None` while within [`LOG_EVERY`] of the
    /// last line.
    pub(super) fn refused(&self) -> Option<u64> {
        let mut c = self.counts();
        c.refused += 1;
        let now = Instant::now();
        if c.logged.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return None;
        }
        c.logged = Some(now);
        Some(std::mem::take(&mut c.refused))
    }

    /// Handshakes in progress: all, and those from `ip` whose address is
    /// not proven.
    #[cfg(test)]
    fn in_progress(&self, ip: IpAddr) -> (usize, usize) {
        let c = self.counts();
        let from = c.unvalidated.get(&source(ip)).copied().unwrap_or(0);
        (c.total, from)
    }
}

/// The source a per-address count is kept for: the IPv4 address (also
/// when it arrives mapped into IPv6 on a dual-stack socket), or the
/// IPv6 /64, which one host usually has whole.
fn source(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
    }
}

/// One handshake in progress; dropping it frees the slot.
#[derive(Debug)]
pub(super) struct Slot {
    admission: Admission,
    /// The source it counts against, if its address was not proven.
    unvalidated: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.admission.counts();
        c.total = c.total.saturating_sub(1);
        if let Some(source) = self.unvalidated {
            if let Some(n) = c.unvalidated.get_mut(&source) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    c.unvalidated.remove(&source);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The slot of an attempt from `from` that must be taken on.
    #[track_caller]
    fn slot(a: &Admission, from: &str, validated: bool) -> Slot {
        match a.judge(ip(from), validated) {
            Verdict::Accept(s) => s,
            v => panic!("{from}: {v:?}"),
        }
    }

    fn retried(a: &Admission, from: &str) -> bool {
        matches!(a.judge(ip(from), false), Verdict::Retry)
    }

    #[test]
    fn one_address_gets_a_few_unproven_handshakes_then_retries() {
        let a = Admission::default();
        let home = "192.0.2.1";
        let held: Vec<Slot> = (0..UNVALIDATED_PER_ADDRESS)
            .map(|_| slot(&a, home, false))
            .collect();
        assert!(retried(&a, home));
        // The same address mapped into IPv6 is the same source.
        assert!(retried(&a, "::ffff:192.0.2.1"));
        // A proven address is never held to the per-address cap...
        let _proven = slot(&a, home, true);
        // ...and another address is not held up.
        drop(slot(&a, "192.0.2.2", false));
        drop(held);
        assert_eq!(a.in_progress(ip(home)), (1, 0), "slots are freed on drop");
        slot(&a, home, false);
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64() {
        let a = Admission::default();
        let _held: Vec<Slot> = (0..UNVALIDATED_PER_ADDRESS)
            .map(|i| slot(&a, &format!("2001:db8:1:2::{:x}", i + 1), false))
            .collect();
        assert!(retried(&a, "2001:db8:1:2:ffff::9"));
        slot(&a, "2001:db8:1:3::1", false);
    }

    #[test]
    fn past_the_threshold_only_proven_addresses_start_and_the_cap_holds() {
        let a = Admission::default();
        let mut held: Vec<Slot> = (0..RETRY_ABOVE)
            .map(|i| slot(&a, &format!("198.51.100.{}", i + 1), false))
            .collect();
        assert!(retried(&a, "203.0.113.1"));
        while held.len() < MAX_HANDSHAKES {
            held.push(slot(&a, "203.0.113.1", true));
        }
        assert!(matches!(a.judge(ip("203.0.113.2"), true), Verdict::Refuse));
        held.pop();
        slot(&a, "203.0.113.2", true);
    }

    #[test]
    fn refusals_are_logged_once_a_minute_with_a_count() {
        let a = Admission::default();
        assert_eq!(a.refused(), Some(1));
        assert_eq!(a.refused(), None);
        assert_eq!(a.refused(), None);
        a.counts().logged = Instant::now().checked_sub(LOG_EVERY);
        assert_eq!(a.refused(), Some(3));
    }
}
