//! `backer du [--json]`: how much the live tree and its history take (see
//! [`backer_fs::history::Du`] for what each number means).

use std::path::Path;

use anyhow::Result;

use super::backend::Backend;

/// Bytes for people: `1234567 (1.2 MiB)`.
pub(crate) fn human(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{n} bytes ({v:.1} {})", UNITS[u])
}

/// `backer du [--json]`.
pub(crate) fn run(store_dir: &Path, json_out: bool) -> Result<()> {
    let du = Backend::connect(store_dir)?.du()?;
    if json_out {
        println!("{}", serde_json::to_value(&du)?);
        return Ok(());
    }
    println!(
        "live          {} in {} files",
        human(du.live_bytes),
        du.live_files
    );
    println!("history       {}", human(du.history_bytes));
    println!(
        "dedup saving  {} (live data {}, stored once as {})",
        human(du.dedup_saving_bytes),
        human(du.live_data_bytes),
        human(du.live_unique_bytes)
    );
    println!(
        "stored        {} in {} chunks, {} commits",
        human(du.stored_bytes),
        du.stored_chunks,
        du.commits
    );
    Ok(())
}
