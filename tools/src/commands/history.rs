//! `backer log [PATH] [--json]`: the commits, newest first, each with what
//! it changed (see [`backer_fs::history::log`]); with PATH, only the
//! changes at or under PATH (from the folder's root, or as the shell
//! means it inside the mount: see [`super::tree_path`]).

use std::path::Path;

use anyhow::Result;
use backer_fs::history::{kind_name, printable, Change, LogEntry};
use backer_fs::tree::Kind;
use backer_fs::NodeId;

use super::backend::Backend;

/// A node id's short form, from its display form.
fn short_id(full: &str) -> String {
    full.parse::<NodeId>()
        .map(|id| id.short())
        .unwrap_or_else(|_| full.chars().take(7).collect())
}

/// `backer log [PATH] [--json]`.
pub(crate) fn run(store_dir: &Path, path: Option<&str>, json_out: bool) -> Result<()> {
    let backend = Backend::connect(store_dir)?;
    let path = path
        .map(|p| super::tree_path::for_backend(&backend, p))
        .transpose()?;
    // "" (the mount's root, ".") is everything.
    let path = path.filter(|p| !p.is_empty());
    let log = backend.log(path.as_deref())?;
    if json_out {
        println!("{}", serde_json::to_value(&log)?);
        return Ok(());
    }
    for c in &log {
        print_commit(c);
    }
    Ok(())
}

/// Who made a change: its own author (a merge keeps it), else the
/// commit's (a log from before changes carried one).
fn change_by<'a>(c: &'a LogEntry, ch: &'a Change) -> &'a str {
    if ch.by.is_empty() {
        &c.author
    } else {
        &ch.by
    }
}

/// The nodes that made a commit's changes (its author when it has none),
/// short, in order of first appearance.
fn authors(c: &LogEntry) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for ch in &c.changes {
        let id = short_id(change_by(c, ch));
        if !out.contains(&id) {
            out.push(id);
        }
    }
    if out.is_empty() {
        out.push(short_id(&c.author));
    }
    out
}

/// One commit as `log` prints it for people: "by" names the nodes that
/// made its changes, each change line its own when there are several.
fn print_commit(c: &LogEntry) {
    let authors = authors(c);
    println!(
        "{}  commit {}  by {}",
        c.time,
        &c.commit[..c.commit.len().min(12)],
        authors.join(", ")
    );
    for ch in &c.changes {
        let shown = match &ch.from {
            Some(f) => format!("{} -> {}", printable(f), printable(&ch.path)),
            None => printable(&ch.path).into_owned(),
        };
        let tail = match ch.kind {
            Kind::Dir => "/".to_string(),
            Kind::File => format!("  ({} bytes)", ch.size),
            k => format!("  ({})", kind_name(k)),
        };
        let by = if authors.len() > 1 {
            format!("  by {}", short_id(change_by(c, ch)))
        } else {
            String::new()
        };
        println!("    {:<9} {shown}{tail}{by}", ch.change.as_str());
    }
    if c.changes.is_empty() {
        println!("    (no visible change)");
    }
}
