//! Which path of the tree a command's PATH argument names (`log`,
//! `restore`). Inside the mount, paths mean what they mean to the shell:
//! an absolute path under the mount point, or a relative one when the
//! working folder is inside the mount. Any other path is from the
//! folder's root, as it always was (`docs/a.txt`, `/docs/a.txt`).
//!
//! Paths are resolved by their words, not on disk: the file may be gone
//! (that is why one restores it), so `..` is taken lexically.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Result};

use super::backend::Backend;

/// The tree path `arg` names, for a node mounted at `mount` (if any) and
/// a command run in `cwd` ("": the root).
pub(crate) fn resolve(arg: &str, mount: Option<&Path>, cwd: Option<&Path>) -> Result<String> {
    let given = Path::new(arg);
    let inside = |p: &Path| mount.and_then(|m| p.strip_prefix(m).ok().map(Path::to_path_buf));
    let rel = if given.is_absolute() {
        let full = normalise(given);
        match inside(&full) {
            Some(rel) => rel,
            None => full.strip_prefix("/").unwrap_or(&full).to_path_buf(),
        }
    } else {
        match cwd.and_then(inside) {
            Some(here) => normalise(&here.join(given)),
            None => normalise(given),
        }
    };
    if rel.components().any(|c| matches!(c, Component::ParentDir)) {
        bail!("{arg} is outside the folder");
    }
    let words: Vec<String> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(w) => Some(w.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    Ok(words.join("/"))
}

/// `p` with `.` dropped and each `..` taking the word before it (a
/// leading `..` of a relative path stays, to be refused).
fn normalise(p: &Path) -> PathBuf {
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {} // "/.." is "/"
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    out.iter().collect()
}

/// The tree path `arg` names for the store behind `backend`: the running
/// node's mount point and this process's working folder decide.
pub(crate) fn for_backend(backend: &Backend, arg: &str) -> Result<String> {
    let mount = match backend {
        Backend::Remote(_) => backend.status()?.mount.map(PathBuf::from),
        Backend::Local(_) => None,
    };
    let cwd = std::env::current_dir().ok();
    resolve(arg, mount.as_deref(), cwd.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(arg: &str, mount: Option<&str>, cwd: Option<&str>) -> Result<String> {
        resolve(arg, mount.map(Path::new), cwd.map(Path::new))
    }

    #[test]
    fn outside_the_mount_paths_are_from_the_root() {
        assert_eq!(
            r("docs/a.txt", None, Some("/home/u")).unwrap(),
            "docs/a.txt"
        );
        assert_eq!(
            r("docs/a.txt", Some("/m"), Some("/home/u")).unwrap(),
            "docs/a.txt"
        );
        assert_eq!(r("./docs//x/../a", Some("/m"), None).unwrap(), "docs/a");
        assert!(r("../etc", Some("/m"), Some("/home")).is_err());
    }

    #[test]
    fn absolute_paths_inside_the_mount() {
        assert_eq!(r("/m/docs/a.txt", Some("/m"), None).unwrap(), "docs/a.txt");
        assert_eq!(r("/m/docs/../b", Some("/m"), None).unwrap(), "b");
        assert_eq!(r("/m", Some("/m"), None).unwrap(), "");
        // Elsewhere, from the root as before.
        assert_eq!(r("/mnt/docs", Some("/m"), None).unwrap(), "mnt/docs");
        assert_eq!(r("/m/../etc", Some("/m"), None).unwrap(), "etc");
        assert_eq!(r("/m/a", None, None).unwrap(), "m/a");
    }

    #[test]
    fn relative_paths_from_a_folder_inside_the_mount() {
        assert_eq!(
            r("a.txt", Some("/m"), Some("/m/docs")).unwrap(),
            "docs/a.txt"
        );
        assert_eq!(r("../b", Some("/m"), Some("/m/docs")).unwrap(), "b");
        assert_eq!(r(".", Some("/m"), Some("/m/docs")).unwrap(), "docs");
        assert!(r("../../x", Some("/m"), Some("/m/docs")).is_err());
    }
}
