//! `backer check [--repair] [--json]`: verify every pack record, tree node
//! and index entry (see [`backer_fs::check`]); exit 1 while anything is
//! still bad. Run by the node when one runs, else here.

use std::path::Path;

use anyhow::{bail, Result};
use backer_fs::check::Report;

use super::backend::Backend;
use super::du::human;

/// `backer check [--repair] [--json]`.
pub(crate) fn run(store_dir: &Path, repair: bool, json_out: bool) -> Result<()> {
    let r = match Backend::connect_or_damaged(store_dir)? {
        Ok(backend) => backend.check(repair)?,
        // The database is missing or does not open: the packs rebuild it.
        Err(why) => backer_fs::check::run_damaged(store_dir, why, repair).map_err(|e| {
            anyhow::anyhow!("cannot rebuild the store at {}: {e}", store_dir.display())
        })?,
    };
    if json_out {
        println!("{}", serde_json::to_value(&r)?);
    } else {
        print(&r);
    }
    if r.still_bad > 0 {
        bail!(
            "{} problem{} left in the store",
            r.still_bad,
            if r.still_bad == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

fn print(r: &Report) {
    if let Some(why) = &r.index_damaged {
        println!("the store's database (its index) is missing or damaged: {why}");
        println!("run 'backer check --repair' to rebuild it from the packs");
        return;
    }
    if let Some(b) = &r.rebuilt {
        println!(
            "rebuilt the database from the packs ({}): {} chunks, {} tree nodes, {} commits{}",
            b.reason,
            b.chunks,
            b.nodes,
            b.commits,
            match &b.head {
                Some((seq, root)) => format!(", head commit {seq} (root {root})"),
                None => String::new(),
            }
        );
        if b.commits_left_out > 0 {
            println!(
                "left out {} commits whose trees are not whole (collected history or damage)",
                b.commits_left_out
            );
        }
        println!("not restored (the packs do not hold them):");
        for what in &b.not_restored {
            println!("  {what}");
        }
    }
    println!(
        "checked {} packs ({}, {} records), {} index entries, {} tree nodes of {} roots naming {} chunks",
        r.packs,
        human(r.bytes),
        r.records,
        r.index_entries,
        r.nodes,
        r.roots,
        r.chunks
    );
    let lists = [
        ("bad chunks (bytes fail their hash)", &r.bad_chunks),
        ("bad records (header damaged, bytes good)", &r.bad_records),
        ("missing chunks", &r.missing_chunks),
        ("bad tree nodes", &r.bad_nodes),
        ("missing tree nodes", &r.missing_nodes),
        (
            "tree nodes and commits with no good record in the packs",
            &r.unbacked,
        ),
        (
            "repaired: record written again from the database",
            &r.repaired.backed,
        ),
        ("repaired: re-indexed from the packs", &r.repaired.reindexed),
        ("repaired: record written again", &r.repaired.rewritten),
        ("repaired: quarantined", &r.repaired.quarantined),
        ("repaired: healed from peers", &r.repaired.healed),
    ];
    for (what, list) in lists {
        if !list.is_empty() {
            println!("{what}: {}", list.len());
            for h in list {
                println!("  {h}");
            }
        }
    }
    if !r.damaged.is_empty() {
        let bytes: u64 = r.damaged.iter().map(|d| d.len).sum();
        println!(
            "damaged pack bytes: {} in {} ranges",
            human(bytes),
            r.damaged.len()
        );
        for d in &r.damaged {
            println!("  pack {} at {}: {} bytes", d.pack, d.offset, d.len);
        }
    }
    if let Some(note) = &r.heal_note {
        println!("{note}");
    }
    if r.still_bad == 0 {
        println!("no problems found");
    }
}
