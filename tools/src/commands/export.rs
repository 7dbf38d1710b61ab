//! `backer export DIR [--keep-setid] [--keep-owners]`: write the store's newest committed
//! tree to a plain folder (see [`backer_fs::history::export_tree`]), in
//! this process with the caller's permissions: when a node runs, it
//! streams its newest commit while it goes on; else the store is opened
//! here. A progress bar shows on a terminal.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{anyhow, Result};
use backer_fs::history::{printable, WriteOptions};
use indicatif::{ProgressBar, ProgressStyle};

use super::backend::Backend;

/// Exports the committed tree of the store at `store_dir` into `out`.
pub(crate) fn run(store_dir: &Path, out: &Path, opts: WriteOptions) -> Result<()> {
    opts.check().map_err(|e| anyhow!("{e}"))?;
    let backend = Backend::connect(store_dir)?;
    let bar = std::io::stderr().is_terminal().then(progress_bar);
    let tell = |done: u64, total: u64| {
        if let Some(pb) = &bar {
            pb.set_length(total);
            pb.set_position(done);
        }
    };
    let progress: Option<&dyn Fn(u64, u64)> = match bar {
        Some(_) => Some(&tell),
        None => None,
    };
    let result = backend.export(out, opts, progress);
    if let Some(pb) = &bar {
        pb.finish_and_clear();
    }
    let s = result.map_err(|e| anyhow!("{}", printable(&format!("{e:#}"))))?;
    for w in &s.warnings {
        eprintln!("backer: warning: {}", printable(w));
    }
    let devices = match s.devices {
        0 => String::new(),
        n => format!(", {n} devices"),
    };
    println!(
        "Exported {} files ({} bytes), {} folders, {} symlinks, {} fifos{devices} to {}{}",
        s.files,
        s.bytes,
        s.dirs,
        s.symlinks,
        s.fifos,
        printable(&out.display().to_string()),
        if s.skipped > 0 {
            format!(" ({} skipped)", s.skipped)
        } else {
            String::new()
        }
    );
    Ok(())
}

fn progress_bar() -> ProgressBar {
    let style = ProgressStyle::with_template(
        "exporting {bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec} {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    ProgressBar::new(0).with_style(style)
}
