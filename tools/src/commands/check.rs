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
    let r = Backend::connect(store_dir)?.check(repair)?;
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
