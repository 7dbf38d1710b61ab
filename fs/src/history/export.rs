//! `backer export`: a committed tree written to a plain folder by
//! [`super::write`]: folders, files with their bytes (holes stay holes),
//! symlinks with their targets, fifos; each with its permission bits
//! (set-id bits only for root's `--keep-setid`, and only where the live
//! tree vouches for them: [`super::write`]) and mtime (a folder's after
//! its children are written). Sockets, and devices unless root asks for
//! them and the live tree vouches for them, are skipped with a warning.
//! Files are streamed one chunk at a time.
//!
//! The tree is a committed root: immutable, so the export is consistent
//! even while a node goes on changing the live tree.

use std::fs;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::head;
use super::write::{live_entries, open_target, write_entries, Source, Tell, WriteOptions};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::tree::Kind;
use crate::Hash;

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exported {
    /// Regular files written.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Folders written.
    pub dirs: u64,
    /// Symlinks written.
    pub symlinks: u64,
    /// Fifos written.
    pub fifos: u64,
    /// Device nodes written (root's `--keep-setid --keep-owners` only).
    #[serde(default)]
    pub devices: u64,
    /// Devices and sockets skipped.
    pub skipped: u64,
    /// What was skipped or looked wrong, one line each.
    pub warnings: Vec<String>,
}

/// Checks that `out` is an empty folder or does not exist (returns
/// whether it exists).
///
/// Errors: [`Error::Request`] for anything else.
pub fn check_target(out: &Path) -> Result<bool> {
    let no = |why: String| Err(Error::Request(why));
    match fs::metadata(out) {
        Ok(m) if !m.is_dir() => no(format!("{} exists and is not a folder", out.display())),
        Ok(_) => {
            let mut list = fs::read_dir(out)
                .map_err(|e| Error::io(format!("cannot list {}", out.display()), e))?;
            if list.next().is_some() {
                return no(format!(
                    "{} is not empty (export into a new or empty folder)",
                    out.display()
                ));
            }
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => no(format!("{}: {e}", out.display())),
    }
}

/// Exports the newest committed tree of `store` into `out` (a new or empty
/// folder), as [`export_tree`] does.
pub fn export(
    store: &Store,
    out: &Path,
    opts: WriteOptions,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<Exported> {
    let root = head(store)?.map(|c| Hash(c.root));
    export_tree(store, root, out, opts, progress)
}

/// Writes the folder tree `root` (`None`: an empty tree) from `src` into
/// `out` (a new or empty folder of the caller's; made with the caller's
/// umask, see [`super::write`]), in this process. `progress` hears
/// (bytes written, bytes in all) as files are written.
///
/// Errors: [`Error::Request`] for a target that is in the way or options
/// the caller may not use; the source's and the target's errors.
pub fn export_tree(
    src: &impl Source,
    root: Option<Hash>,
    out: &Path,
    opts: WriteOptions,
    progress: Option<&dyn Fn(u64, u64)>,
) -> Result<Exported> {
    opts.check()?;
    check_target(out)?;
    let dir = open_target(out)?;
    let Some(root) = root else {
        return Ok(Exported::default());
    };
    let tell = match progress {
        Some(to) => Some(Tell::new(to, tree_bytes(src, root)?)),
        None => None,
    };
    write_entries(
        src,
        dir,
        out,
        Vec::new(),
        live_entries(src, root)?,
        opts,
        tell,
    )
}

/// The bytes of every live file under the folder tree `root`.
fn tree_bytes(nodes: &impl Source, root: Hash) -> Result<u64> {
    let mut total = 0u64;
    let mut folders = vec![root];
    while let Some(hash) = folders.pop() {
        for e in live_entries(nodes, hash)? {
            match e.kind {
                Kind::File => total = total.saturating_add(e.size),
                Kind::Dir => folders.push(e.hash),
                _ => {}
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_must_be_missing_or_an_empty_folder() {
        let t = tempfile::tempdir().unwrap();
        assert!(check_target(t.path()).unwrap());
        assert!(!check_target(&t.path().join("new")).unwrap());
        fs::write(t.path().join("f"), b"x").unwrap();
        let e = check_target(t.path()).unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        let e = check_target(&t.path().join("f")).unwrap_err().to_string();
        assert!(e.contains("not a folder"), "{e}");
    }
}
