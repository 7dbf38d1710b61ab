//! The mount(8) helper: the same binary run under the name `mount.backer`.
//! `mount -t backer STORE DIR` and an fstab line `STORE DIR backer defaults
//! 0 0` run `/sbin/mount.backer STORE DIR [-sfnv] [-o OPTS]`.
//!
//! Options: `rw`, `ro`, `allow_other`, `auto_unmount`, `listen=ADDR`
//! (accept peers at ADDR, as `backer mount --listen`); mount(8)'s generic
//! ones (`defaults`, `nosuid`, `nodev`, `noatime`, `_netdev`, `x-*`...) are
//! accepted and have no further effect (backer mounts are always nosuid and
//! nodev). Anything else is a one-line error.

use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
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

/// What `mount.backer --help` prints.
const USAGE: &str = "\
usage: mount.backer STORE DIR [-sfnvrw] [-o OPTIONS]

The mount(8) helper of backer: `mount -t backer STORE DIR`, or the fstab
line `STORE DIR backer defaults 0 0`. Mounts the backer store STORE at DIR
and runs its node in the background (logs in STORE/backer.log); returns
once the mount is up. Unmount with `umount DIR` or `backer stop`.

Options (-o, comma-separated):
  rw, ro              read-write (default) or read-only
  allow_other         let every user in, the kernel checking mode bits
                      (default when root)
  auto_unmount        the kernel unmounts if the node dies
  listen=ADDR         accept peers at ADDR (ip:port) [default: `listen`
                      in STORE/config.toml, else only dial out]
  defaults, nosuid, nodev, noatime, _netdev, nofail, x-*, ...
                      mount(8)'s generic options: accepted, no effect
Flags: -s -f -n -v (accepted), -r (ro), -w (rw), -h/--help (this text).
";

/// A parsed helper command line.
#[derive(Debug, PartialEq, Eq)]
struct HelperArgs {
    store: PathBuf,
    mount: MountArgs,
    /// `-o listen=ADDR`.
    listen: Option<SocketAddr>,
}

/// What the helper was asked to do.
#[derive(Debug, PartialEq, Eq)]
enum Helper {
    /// Print [`USAGE`].
    Help,
    /// Mount.
    Mount(HelperArgs),
}

fn parse(args: &[OsString]) -> Result<Helper> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Helper::Help);
    }
    let mut positional = Vec::new();
    let mut mount = MountArgs::default();
    let mut listen = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        match s.as_ref() {
            "-o" => {
                let opts = it.next().ok_or_else(|| anyhow!("-o needs a value"))?;
                apply_options(&opts.to_string_lossy(), &mut mount, &mut listen)?;
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
    Ok(Helper::Mount(HelperArgs {
        store,
        mount,
        listen,
    }))
}

fn apply_options(opts: &str, mount: &mut MountArgs, listen: &mut Option<SocketAddr>) -> Result<()> {
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        if let Some(addr) = o.strip_prefix("listen=") {
            let addr = addr
                .parse()
                .map_err(|_| anyhow!("listen={addr}: not an address such as 0.0.0.0:22000"))?;
            *listen = Some(addr);
            continue;
        }
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
    let result = parse(&args).and_then(|h| match h {
        Helper::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Helper::Mount(h) => {
            crate::store_dir::act_as_store_owner(&h.store)?;
            crate::commands::mount::run_listening(&h.store, &h.mount, h.listen, None, false)
        }
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

    fn mount(v: &[&str]) -> HelperArgs {
        match parse(&args(v)).unwrap() {
            Helper::Mount(h) => h,
            Helper::Help => panic!("help for {v:?}"),
        }
    }

    #[test]
    fn help_and_listen() {
        for v in [&["-h"][..], &["--help"], &["/tmp", "/mnt", "-h"]] {
            assert_eq!(parse(&args(v)).unwrap(), Helper::Help);
        }
        let h = mount(&["/tmp", "/mnt/x", "-o", "rw,listen=127.0.0.1:22000"]);
        assert_eq!(h.listen, Some("127.0.0.1:22000".parse().unwrap()));
        assert_eq!(mount(&["/tmp", "/mnt/x"]).listen, None);
        assert!(parse(&args(&["/tmp", "/mnt/x", "-o", "listen=nowhere"])).is_err());
    }

    #[test]
    fn parses_what_mount8_passes() {
        let h = mount(&[
            "/tmp",
            "/mnt/x",
            "-n",
            "-o",
            "rw,nosuid,nodev,allow_other,x-systemd.automount",
        ]);
        assert_eq!(h.store, std::fs::canonicalize("/tmp").unwrap());
        assert_eq!(h.mount.dir, PathBuf::from("/mnt/x"));
        assert_eq!(h.mount.allow_other, Some(true));
        assert!(!h.mount.read_only);
        let h = mount(&["/tmp", "/mnt/x", "-sv", "-o", "ro,defaults"]);
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
