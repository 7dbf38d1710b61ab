//! Which folder holds the store: `--store`, else `$BACKER_STORE`, else the
//! XDG data dir (`$XDG_DATA_HOME/backer`, else `$HOME/.local/share/backer`);
//! and whether this process may use it.

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The store folder for this run, made absolute (so messages name it
/// unambiguously), reading the real environment; refused if this process
/// would leave files in it that its owner cannot use ([`check_owner`]),
/// unless the mount helper started it ([`act_as_store_owner`]).
pub(crate) fn resolve(flag: Option<&Path>) -> Result<PathBuf> {
    let dir = choose(flag, |name| std::env::var_os(name))?;
    let dir =
        std::path::absolute(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    if std::env::var_os(AS_OWNER_ENV).is_some() {
        act_as_store_owner(&dir)?;
    } else {
        check_owner(&dir)?;
    }
    Ok(dir)
}

/// Set by the mount helper for the node it starts: that node runs on its
/// store as [`act_as_store_owner`] says.
pub(crate) const AS_OWNER_ENV: &str = "BACKER_AS_STORE_OWNER";

/// The store owner's (uid, gid) this process acts as ([`act_as_store_owner`]).
static ACTING: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();

/// Whether [`act_as_store_owner`] made this process act as another user.
#[cfg(feature = "fuse")]
pub(crate) fn acting_as_store_owner() -> bool {
    ACTING.get().is_some()
}

/// The (uid, gid) [`act_as_store_owner`] made this process act as: the
/// user its mount belongs to.
#[cfg(feature = "fuse")]
pub(crate) fn store_owner() -> Option<(u32, u32)> {
    ACTING.get().copied()
}

/// The store owner's uid that this process acts as, if any: that user is
/// served on the control socket like the node's own (the store and its
/// mount are theirs; only root started the node for them).
pub(crate) fn acting_owner_uid() -> Option<u32> {
    ACTING.get().map(|&(uid, _)| uid)
}

/// For the mount(8) helper only (DESIGN.md: `mount -t backer STORE DIR`
/// and fstab lines are root's): root may run a node on a store another
/// user owns, but every file it makes there is born the owner's: the
/// file-system uid and gid of this thread become the store folder's
/// owner's (setfsuid, setfsgid), and every thread started after inherits
/// them, so the store never holds a file its owner cannot use. Call it
/// before any other thread starts. The node keeps root's other powers
/// (mounting); the mount point must be reachable by the store's owner.
/// Anyone but root, or root on its own store: nothing to do.
pub(crate) fn act_as_store_owner(dir: &Path) -> Result<()> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(()); // no store: the open says so
    };
    let (uid, gid) = (meta.uid(), meta.gid());
    if uid == 0 {
        return Ok(());
    }
    // SAFETY: setfsgid/setfsuid change this thread's credentials only;
    // each returns the previous id, so a second call tells whether the
    // first took.
    let took = unsafe {
        libc::setfsgid(gid);
        libc::setfsuid(uid);
        libc::setfsgid(gid) as u32 == gid && libc::setfsuid(uid) as u32 == uid
    };
    if !took {
        bail!(
            "cannot act as the owner (uid {uid}) of the store at {}",
            dir.display()
        );
    }
    let _ = ACTING.set((uid, gid));
    Ok(())
}

/// Refuses root on a store that belongs to another user (`sudo backer
/// ...` on someone's store): every file root made there (the database's,
/// the log, a pack) would be root's, and the store's owner could no longer
/// open it. A store not made yet counts as its nearest existing folder's.
/// Everyone else is stopped by the store's 0700 modes anyway.
fn check_owner(dir: &Path) -> Result<()> {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let Some(owner) = dir.ancestors().find_map(|p| std::fs::metadata(p).ok()) else {
        return Ok(());
    };
    let uid = owner.uid();
    if uid == 0 {
        return Ok(());
    }
    let who = user_name(uid).unwrap_or_else(|| format!("#{uid}"));
    bail!(
        "the store at {} belongs to user {who}: run backer as that user \
         (e.g. sudo -u {who} backer ...), so that it stays theirs",
        dir.display()
    )
}

/// The login name of `uid`, if the user database has one.
fn user_name(uid: u32) -> Option<String> {
    let mut pwd = std::mem::MaybeUninit::<libc::passwd>::uninit();
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found = std::ptr::null_mut();
    // SAFETY: getpwuid_r writes only into `pwd` and `buf` (whose length
    // it is given) and sets `found` to `pwd` or null.
    let r = unsafe {
        libc::getpwuid_r(
            uid,
            pwd.as_mut_ptr(),
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        )
    };
    if r != 0 || found.is_null() {
        return None;
    }
    // SAFETY: on success `pwd` is initialised and `pw_name` points at a
    // NUL-terminated string inside `buf`, which is still alive.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.assume_init().pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The choice itself, with the environment passed in. Empty variables count
/// as unset, and a relative `$XDG_DATA_HOME` is ignored, as the XDG base
/// directory spec says.
fn choose(flag: Option<&Path>, env: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    if let Some(dir) = flag {
        return Ok(dir.to_path_buf());
    }
    if let Some(dir) = var("BACKER_STORE") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(data) = var("XDG_DATA_HOME").map(PathBuf::from) {
        if data.is_absolute() {
            return Ok(data.join("backer"));
        }
    }
    match var("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/backer")),
        None => bail!("no store folder: pass --store DIR or set $BACKER_STORE (no $HOME)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<OsString> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn flag_beats_environment() {
        let vars = [("BACKER_STORE", "/env"), ("HOME", "/home/u")];
        let dir = choose(Some(Path::new("/flag")), env(&vars)).unwrap();
        assert_eq!(dir, Path::new("/flag"));
    }

    #[test]
    fn backer_store_beats_xdg() {
        let vars = [("BACKER_STORE", "/env"), ("XDG_DATA_HOME", "/xdg")];
        assert_eq!(choose(None, env(&vars)).unwrap(), Path::new("/env"));
    }

    #[test]
    fn xdg_data_home_then_home() {
        let vars = [("XDG_DATA_HOME", "/xdg"), ("HOME", "/home/u")];
        assert_eq!(choose(None, env(&vars)).unwrap(), Path::new("/xdg/backer"));
        let vars = [("HOME", "/home/u")];
        let dir = choose(None, env(&vars)).unwrap();
        assert_eq!(dir, Path::new("/home/u/.local/share/backer"));
    }

    #[test]
    fn empty_or_relative_variables_are_skipped() {
        let vars = [
            ("BACKER_STORE", ""),
            ("XDG_DATA_HOME", "rel"),
            ("HOME", "/home/u"),
        ];
        let dir = choose(None, env(&vars)).unwrap();
        assert_eq!(dir, Path::new("/home/u/.local/share/backer"));
    }

    #[test]
    fn user_zero_is_root() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }

    #[test]
    fn nothing_set_is_an_error() {
        assert!(choose(None, env(&[])).is_err());
    }
}
