//! The mount(8) helper: the same binary run under the name `mount.backer`.
//! `mount -t backer STORE DIR` and an fstab line `STORE DIR backer defaults
//! 0 0` run `/sbin/mount.backer STORE DIR [-sfnv] [-o OPTS]`.
//!
//! Options: `rw`, `ro`, `allow_other`, `auto_unmount`; mount(8)'s generic
//! ones (`defaults`, `nosuid`, `nodev`, `noatime`, `_netdev`, `x-*`...) are
//! accepted and have no further effect (backer mounts are always nosuid and
//! nodev). Anything else is a one-line error.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Result};

use crate::node::MountArgs;

/// The name under which the binary acts as the mount helper.
const HELPER_NAME: &str = "mount.backer";

/// Options mount(8) may pass that mean nothing more to us.
const GENERIC: &[&str] = &[
    "defaults",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "owner",
    "group",
    "_netdev",
    "nofail",
    "atime",
    "noatime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "diratime",
    "nodiratime",
    "async",
    "sync",
    "dirsync",
    "lazytime",
    "nolazytime",
    "default_permissions",
    "loud",
    "silent",
];

/// Whether this process was started as `mount.backer` (by name, whatever
/// the folder).
pub(crate) fn invoked_as_mount_helper() -> bool {
    std::env::args_os()
        .next()
        .is_some_and(|argv0| is_helper_name(&argv0))
}

/// Whether `argv0`'s file name is [`HELPER_NAME`].
fn is_helper_name(argv0: &OsStr) -> bool {
    Path::new(argv0).file_name() == Some(OsStr::new(HELPER_NAME))
}

/// A parsed helper command line.
#[derive(Debug, PartialEq, Eq)]
struct HelperArgs {
    store: PathBuf,
    mount: MountArgs,
}

fn parse(args: &[OsString]) -> Result<HelperArgs> {
    let mut positional = Vec::new();
    let mut mount = MountArgs::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        match s.as_ref() {
            "-o" => {
                let opts = it.next().ok_or_else(|| anyhow!("-o needs a value"))?;
                apply_options(&opts.to_string_lossy(), &mut mount)?;
            }
            "-t" | "-N" => {
                it.next(); // the type (backer) and mount namespace are ours already
            }
            flag if flag.starts_with('-') && flag.len() > 1 => {
                // -s (sloppy), -f (fake), -n (no mtab), -v (verbose), -r (ro)
                for c in flag[1..].chars() {
                    match c {
                        's' | 'f' | 'n' | 'v' => {}
                        'r' => mount.read_only = true,
                        'w' => mount.read_only = false,
                        other => bail!("unknown flag -{other}"),
                    }
                }
            }
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [store, dir] = <[PathBuf; 2]>::try_from(positional)
        .map_err(|_| anyhow!("usage: mount.backer STORE DIR [-o OPTIONS]"))?;
    mount.dir = dir;
    let store =
        std::fs::canonicalize(&store).map_err(|e| anyhow!("store {}: {e}", store.display()))?;
    Ok(HelperArgs { store, mount })
}

fn apply_options(opts: &str, mount: &mut MountArgs) -> Result<()> {
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "rw" => mount.read_only = false,
            "ro" => mount.read_only = true,
            "allow_other" => mount.allow_other = Some(true),
            "auto_unmount" => mount.auto_unmount = true,
            o if GENERIC.contains(&o) || o.starts_with("x-") || o.starts_with("comment=") => {}
            other => bail!("unknown mount option '{other}'"),
        }
    }
    Ok(())
}

/// Runs as the mount helper: mounts in the background and returns once
/// the mount is up.
pub(crate) fn run() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let result = parse(&args).and_then(|h| {
        crate::store_dir::act_as_store_owner(&h.store)?;
        crate::commands::mount::run(&h.store, &h.mount)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mount.backer: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_helper_name_in_any_folder() {
        assert!(is_helper_name(OsStr::new("mount.backer")));
        assert!(is_helper_name(OsStr::new("/sbin/mount.backer")));
        assert!(!is_helper_name(OsStr::new("/usr/local/bin/backer")));
        assert!(!is_helper_name(OsStr::new("mount.backer.old")));
    }

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn parses_what_mount8_passes() {
        let h = parse(&args(&[
            "/tmp",
            "/mnt/x",
            "-n",
            "-o",
            "rw,nosuid,nodev,allow_other,x-systemd.automount",
        ]))
        .unwrap();
        assert_eq!(h.store, std::fs::canonicalize("/tmp").unwrap());
        assert_eq!(h.mount.dir, PathBuf::from("/mnt/x"));
        assert_eq!(h.mount.allow_other, Some(true));
        assert!(!h.mount.read_only);
        let h = parse(&args(&["/tmp", "/mnt/x", "-sv", "-o", "ro,defaults"])).unwrap();
        assert!(h.mount.read_only);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        assert!(parse(&args(&["/tmp", "/mnt/x", "-o", "frobnicate"])).is_err());
        assert!(parse(&args(&["/tmp"])).is_err());
        assert!(parse(&args(&["/tmp", "/a", "/b"])).is_err());
        assert!(parse(&args(&["/tmp", "/a", "-q"])).is_err());
        assert!(parse(&args(&["/nonexistent-store-xyz", "/a"])).is_err());
    }
}
