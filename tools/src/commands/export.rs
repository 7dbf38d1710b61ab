//! `backer export DIR`: write the store's newest committed tree to a plain
//! folder (see [`backer_fs::history::export`]). When a node runs, it
//! writes the folder from its newest commit while it goes on; else the
//! store is opened here, with a progress bar on a terminal.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use super::backend::Backend;

/// Exports the committed tree of the store at `store_dir` into `out`.
pub(crate) fn run(store_dir: &Path, out: &Path) -> Result<()> {
    // The node may run in another folder: it gets an absolute path.
    let to = std::path::absolute(out).with_context(|| format!("bad folder {}", out.display()))?;
    let backend = Backend::connect(store_dir)?;
    let local = matches!(backend, Backend::Local(_));
    let bar = (local && std::io::stderr().is_terminal()).then(progress_bar);
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
    let result = backend.export(to, progress);
    if let Some(pb) = &bar {
        pb.finish_and_clear();
    }
    let s = result?;
    for w in &s.warnings {
        eprintln!("backer: warning: {w}");
    }
    println!(
        "Exported {} files ({} bytes), {} folders, {} symlinks, {} fifos to {}{}",
        s.files,
        s.bytes,
        s.dirs,
        s.symlinks,
        s.fifos,
        out.display(),
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
