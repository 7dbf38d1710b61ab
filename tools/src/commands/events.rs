//! `backer events [--json]`: follows the running node's event bus until
//! interrupted. With no node running it waits for one, and when the node
//! stops it waits for the next (whose events are numbered from 1 again, so
//! it asks that one for everything it kept).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use backer_fs::events::{Event, EventKind};
use backer_fs::history::printable;

use crate::control::client::Session;
use crate::control::{Request, Response};

/// How long a follower waits for a line: the node sends an empty batch
/// every 15 s, so a longer silence means it hangs or went away.
const SILENCE: Duration = Duration::from_secs(60);

/// How often it looks for a node while none runs.
const RETRY: Duration = Duration::from_millis(200);

/// Follows the events of the node on the store at `store`.
pub(crate) fn run(store: &Path, json: bool) -> Result<()> {
    let store = super::require_store(store)?;
    let mut out = std::io::stdout().lock();
    let mut said_waiting = false;
    loop {
        let Some(mut s) = Session::connect(&store, SILENCE)? else {
            if !said_waiting {
                eprintln!("waiting for a node to run on {}", store.display());
                said_waiting = true;
            }
            std::thread::sleep(RETRY);
            continue;
        };
        said_waiting = false;
        // Everything the node kept: a new node's, or the first one's.
        s.send(&Request::Events { since: 0 })?;
        let mut last = 0;
        loop {
            let batch = match s.read() {
                Ok(Response::Events(b)) => b,
                Ok(Response::Error(e)) => bail!("{e}"),
                Ok(other) => bail!("the node answered {other:?} to an events request"),
                Err(_) => break, // the node stopped
            };
            for e in batch {
                let line = if json {
                    serde_json::to_string(&e)?
                } else {
                    let mut l = String::new();
                    if e.id > last + 1 && last > 0 {
                        l.push_str(&format!("({} events missed)\n", e.id - last - 1));
                    }
                    l.push_str(&readable(&e));
                    l
                };
                last = e.id;
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return Ok(()); // the reader went away (a closed pipe)
                }
            }
        }
    }
}

/// One line for a person: id, time, type and what, every name escaped.
pub(crate) fn readable(e: &Event) -> String {
    let p = |s: &str| printable(s).into_owned();
    let what = match &e.kind {
        EventKind::LocalChange { path, kind, from } => match from {
            Some(f) => format!("{} {} -> {}", kind.as_str(), p(f), p(path)),
            None => format!("{} {}", kind.as_str(), p(path)),
        },
        EventKind::RemoteChange {
            peer,
            paths,
            counts: c,
            truncated,
        } => {
            let list: Vec<String> = paths.iter().map(|x| p(x)).collect();
            format!(
                "from {}: {} added, {} modified, {} deleted, {} renamed, {} conflicts{}: {}",
                p(peer),
                c.added,
                c.modified,
                c.deleted,
                c.renamed,
                c.conflicts,
                if *truncated { " and more" } else { "" },
                list.join(", ")
            )
        }
        EventKind::PeerConnected { peer, address } => format!("{} at {}", p(peer), p(address)),
        EventKind::PeerDisconnected {
            peer,
            address,
            reason,
        } => format!("{} at {} ({})", p(peer), p(address), p(reason)),
        EventKind::SyncProgress {
            peer,
            files_to_go,
            bytes_to_go,
        } => format!(
            "{}: {files_to_go} files, {bytes_to_go} bytes to go",
            p(peer)
        ),
        EventKind::SyncDone { peer, root } => format!("{} at root {}", p(peer), p(root)),
        EventKind::Conflict {
            path,
            copy,
            author,
            peer,
        } => format!(
            "{}: the other version kept as {} (by {}, from {})",
            p(path),
            p(copy),
            p(author),
            p(peer)
        ),
        EventKind::HistoryCollected {
            roots_before,
            roots_kept,
            bytes_freed,
        } => format!("kept {roots_kept} of {roots_before} roots, freed {bytes_freed} bytes"),
        EventKind::CheckProgress {
            done_bytes,
            total_bytes,
        } => format!("scrub: {done_bytes} of {total_bytes} bytes checked"),
        EventKind::CheckDone {
            chunks,
            bytes,
            bad_chunks,
        } => format!(
            "scrub: {chunks} chunks ({bytes} bytes) checked, {} bad{}",
            bad_chunks.len(),
            if bad_chunks.is_empty() {
                String::new()
            } else {
                format!(
                    " (quarantined, wanted from peers): {}",
                    bad_chunks.join(", ")
                )
            }
        ),
        EventKind::Error { what, place } => format!("{}: {}", p(place), p(what)),
    };
    let kind = serde_json::to_value(&e.kind)
        .ok()
        .and_then(|v| v["type"].as_str().map(str::to_string))
        .unwrap_or_default();
    format!("{} {} {kind} {what}", e.id, e.time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use backer_fs::history::ChangeKind;

    #[test]
    fn a_readable_line_escapes_names() {
        let e = Event {
            id: 3,
            time: "2026-12-03T12:00:00.000Z".into(),
            kind: EventKind::LocalChange {
                path: "evil\x1b[2Jname\nfake".into(),
                kind: ChangeKind::Added,
                from: None,
            },
        };
        let line = readable(&e);
        assert_eq!(
            line,
            "3 2026-12-03T12:00:00.000Z LocalChange added evil\\x1b[2Jname\\x0afake"
        );
    }
}
