//! Which folder holds the store: `--store`, else `$BACKER_STORE`, else the
//! XDG data dir (`$XDG_DATA_HOME/backer`, else `$HOME/.local/share/backer`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The store folder for this run, made absolute (so messages name it
/// unambiguously), reading the real environment.
pub(crate) fn resolve(flag: Option<&Path>) -> Result<PathBuf> {
    let dir = choose(flag, |name| std::env::var_os(name))?;
    std::path::absolute(&dir).with_context(|| format!("cannot resolve {}", dir.display()))
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
    fn nothing_set_is_an_error() {
        assert!(choose(None, env(&[])).is_err());
    }
}
