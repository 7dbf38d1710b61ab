//! `check --repair`'s last step: the chunks still missing after what the
//! store's own files allow are asked of the connected peers, through the
//! running node's registry ([`super::Wanted`]), and waited for a bounded
//! time ([`REPAIR_WAIT`]). A stopped store has no peer manager: the
//! report then says that healing from peers needs the running node (this
//! build does not dial peers itself for a check).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Outcome;
use crate::check::Report;
use crate::error::Result;
use crate::hash::Hash;
use crate::store::Store;

/// How long `check --repair` waits for its heals, in all.
pub const REPAIR_WAIT: Duration = Duration::from_secs(30);

/// What a report says when no peer manager serves the registry.
pub const NEEDS_NODE: &str =
    "healing from peers needs the running node: start it (backer mount or backer replica) and run check --repair again";

/// Asks the connected peers for every chunk `r` lists missing and waits
/// up to `wait` for them; those stored again move to `r.repaired.healed`.
pub fn from_peers(store: &Store, r: &mut Report, wait: Duration) -> Result<()> {
    // Quarantined by this repair and already fetched again by the node.
    let mut healed: Vec<String> = Vec::new();
    for hex in &r.repaired.quarantined {
        if let Some(hash) = Hash::from_hex(hex) {
            if store.chunk_location(&hash)?.is_some() {
                healed.push(hex.clone());
            }
        }
    }
    let wanted = store.wanted();
    if !wanted.is_served() {
        if !r.missing_chunks.is_empty() {
            r.heal_note = Some(NEEDS_NODE.into());
        }
        return Ok(());
    }
    if r.missing_chunks.is_empty() {
        healed.sort();
        r.repaired.healed = healed;
        return Ok(());
    }
    let deadline = Instant::now() + wait;
    let (tx, rx) = mpsc::channel();
    let mut waiting = 0usize;
    for hex in &r.missing_chunks {
        let Some(hash) = Hash::from_hex(hex) else {
            continue;
        };
        if store.chunk_location(&hash)?.is_some() {
            healed.push(hex.clone()); // healed meanwhile
            continue;
        }
        let tx = tx.clone();
        let then = Box::new(move |o: Outcome| {
            let _ = tx.send((hash, o));
        });
        if wanted.wait(hash, deadline, then).is_ok() {
            waiting += 1;
        }
    }
    drop(tx);
    for _ in 0..waiting {
        let Ok((hash, _)) = rx.recv() else { break };
        if store.chunk_location(&hash)?.is_some() {
            healed.push(hash.to_hex());
        }
    }
    r.missing_chunks.retain(|h| !healed.contains(h));
    if !r.missing_chunks.is_empty() {
        r.heal_note = Some(format!(
            "no connected peer supplied {} missing chunk{}",
            r.missing_chunks.len(),
            if r.missing_chunks.len() == 1 { "" } else { "s" }
        ));
    }
    healed.sort();
    healed.dedup();
    r.repaired.healed = healed;
    Ok(())
}
