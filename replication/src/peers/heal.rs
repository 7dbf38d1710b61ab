//! The peer manager serves the node's registry of wanted chunks
//! ([`backer_fs::heal::Wanted`]): every live session asks its peer for
//! what is wanted (when it becomes ready and whenever the registry
//! changes), stores what checks out, and reports refusals back. A peer
//! that lacked a chunk is asked again after a while (it may have healed
//! its own copy from a third node meanwhile): first after [`RETRY_MIN`],
//! then ever later up to [`RETRY_MAX`] while nothing heals.

use std::sync::Arc;
use std::time::Duration;

use backer_fs::heal::Wanted;
use tokio::sync::watch;

/// The first wait before peers are asked again for what they lacked.
const RETRY_MIN: Duration = Duration::from_secs(2);
/// The longest such wait.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// Makes the ticks every session's heal feed follows, bumped whenever
/// `wanted` changes.
pub(super) fn ticks(wanted: &Wanted) -> watch::Sender<u64> {
    let tx = watch::channel(0u64).0;
    let bump = tx.clone();
    wanted.on_change(Arc::new(move || {
        bump.send_modify(|n| *n = n.wrapping_add(1))
    }));
    tx
}

/// Asks every peer again, now and then, while anything is wanted.
pub(super) async fn retry_loop(wanted: Wanted) {
    let mut wait = RETRY_MIN;
    let mut seen = (wanted.healed_total(), wanted.len());
    loop {
        tokio::time::sleep(wait).await;
        if wanted.is_empty() {
            wait = RETRY_MIN;
            continue;
        }
        let now = (wanted.healed_total(), wanted.len());
        // Something healed, or more is wanted: keep asking often.
        wait = if now.0 != seen.0 || now.1 > seen.1 {
            RETRY_MIN
        } else {
            (wait * 2).min(RETRY_MAX)
        };
        seen = now;
        wanted.retry();
    }
}
