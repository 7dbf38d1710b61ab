//! `backer mount DIR [--foreground] [--listen ADDR] [--import]`: mount the
//! store at DIR and run the node. A DIR that holds files is refused (the
//! mount would hide them) unless `--import` brings them into the store
//! first (see [`super::import`]). Without `--foreground` the node re-executes itself as a daemon
//! (logs in STORE/backer.log) and this command returns once the mount is
//! up, or with the daemon's last log line if it failed.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::mountinfo;
use crate::node::MountArgs;

/// How long a background mount may take to come up.
const MOUNT_WAIT: Duration = Duration::from_secs(60);

/// Checks the mount point and either runs the node here or starts it in
/// the background and waits for the mount; the node accepts peers at
/// `listen` (else the config's address). With `import`, a non-empty
/// mount point's files are brought into the store first.
pub(crate) fn run_listening(
    store: &Path,
    args: &MountArgs,
    listen: Option<SocketAddr>,
    web: Option<String>,
    import: bool,
) -> Result<()> {
    let store = &super::require_store(store)?;
    // A dead mount left by a killed node fails every stat with ENOTCONN.
    if backer_fs::fuse::clear_dead_mount(&args.dir)
        .with_context(|| format!("cannot clear the dead mount at {}", args.dir.display()))?
    {
        tracing::info!(dir = %args.dir.display(), "cleared a dead mount left by a killed node");
    }
    let dir = std::fs::canonicalize(&args.dir)
        .map_err(|e| anyhow!("mount point {}: {e}", args.dir.display()))?;
    if !dir.is_dir() {
        bail!("mount point {} is not a directory", dir.display());
    }
    if let Some(m) = mountinfo::mount_at(&dir) {
        bail!(
            "{} is already a mount point ({} from {})",
            dir.display(),
            m.fs_type,
            m.source
        );
    }
    super::require_no_node(store)?;
    if store.starts_with(&dir) {
        bail!(
            "cannot mount at {}: it holds the store {}, which the mount would hide",
            dir.display(),
            store.display()
        );
    }
    if !is_empty(&dir)? {
        if !import {
            bail!(
                "{} is not empty: a mount would hide its files; 'backer mount {} --import' \
                 brings them into the store first",
                dir.display(),
                dir.display()
            );
        }
        let done = super::import::run(store, &dir)?;
        println!(
            "Imported {} ({} bytes) from {}; the originals are in {}",
            super::plural(done.files, "file"),
            done.bytes,
            dir.display(),
            done.originals.display()
        );
    }
    let args = MountArgs {
        dir,
        ..args.clone()
    };
    if args.foreground {
        crate::node::run(store, Some(&args), listen, web)
    } else {
        start_daemon(store, &args, listen, web.as_deref())?;
        println!("Mounted {} at {}", store.display(), args.dir.display());
        if let Some(addr) = listen {
            note_listen_is_for_this_run(store, addr);
        }
        Ok(())
    }
}

/// `--listen` holds for one run (DESIGN.md: flags override the config for
/// one run); says how to keep it when the config says otherwise.
fn note_listen_is_for_this_run(store: &Path, addr: SocketAddr) {
    let saved = crate::config::Config::load(store)
        .ok()
        .and_then(|c| c.listen);
    if saved != Some(addr) {
        println!(
            "Listening at {addr} for this run only; to keep it, put listen = \"{addr}\" in {}",
            crate::config::path(store).display()
        );
    }
}

/// Whether the folder `dir` has no entries.
fn is_empty(dir: &Path) -> Result<bool> {
    let mut it =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    Ok(it.next().is_none())
}

/// Starts the node in the background (a re-executed `mount --foreground`,
/// logging to STORE/backer.log) and returns once the mount is up, with
/// the node's process (dropping it leaves the node running; the import
/// waits on it for the exit status of its last commit).
pub(super) fn start_daemon(
    store: &Path,
    args: &MountArgs,
    listen: Option<SocketAddr>,
    web: Option<&str>,
) -> Result<std::process::Child> {
    let log_path = store.join("backer.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
    let mut cmd = Command::new(std::env::current_exe().context("cannot find the backer binary")?);
    cmd.arg("--store")
        .arg(store)
        .arg("mount")
        .arg(&args.dir)
        .arg("--foreground");
    if args.read_only {
        cmd.arg("--read-only");
    }
    match args.allow_other {
        Some(true) => {
            cmd.arg("--allow-other");
        }
        Some(false) => {
            cmd.arg("--no-allow-other");
        }
        None => {}
    }
    if args.auto_unmount {
        cmd.arg("--auto-unmount");
    }
    if let Some(addr) = listen {
        cmd.arg("--listen").arg(addr.to_string());
    }
    if let Some(web) = web {
        cmd.arg("--web").arg(web);
    }
    if crate::store_dir::acting_as_store_owner() {
        cmd.env(crate::store_dir::AS_OWNER_ENV, "1");
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no Rust state; it
    // detaches the daemon from our terminal and process group.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("cannot start the node")?;
    let deadline = Instant::now() + MOUNT_WAIT;
    loop {
        if mountinfo::mount_at(&args.dir)
            .is_some_and(|m| m.fs_type.starts_with("fuse") && Path::new(&m.source) == store)
        {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            let tail = last_log_line(&log_path, log_start).unwrap_or_default();
            bail!("the node exited ({status}) before the mount was up: {tail}");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the mount did not come up within {}s (see {})",
                MOUNT_WAIT.as_secs(),
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last non-empty line the daemon logged since `from`.
fn last_log_line(path: &Path, from: u64) -> Option<String> {
    let text = std::fs::read(path).ok()?;
    let text = String::from_utf8_lossy(text.get(from as usize..)?).into_owned();
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(line.trim_start_matches("backer: ").to_string())
}
