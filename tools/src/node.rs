//! A running node: the vfs, its committer, the control socket and (with a
//! mount point) the FUSE session, until unmounted or signalled.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use backer_fs::events::{Bus, EventKind, Feed};
use backer_fs::store::Store;
use backer_fs::vfs::{Committer, Ctx, Vfs, VfsOptions};
use backer_replication::local::InstallHook;

/// What to mount and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct MountArgs {
    /// The mount point.
    pub(crate) dir: PathBuf,
    /// Stay in the foreground until unmounted.
    pub(crate) foreground: bool,
    /// Mount read-only.
    pub(crate) read_only: bool,
    /// Let every user in (default: when mounted by root).
    pub(crate) allow_other: Option<bool>,
    /// Ask the kernel to unmount if the node dies.
    pub(crate) auto_unmount: bool,
}

/// Quiet period before a burst of changes becomes a root, and the longest
/// a change waits for its root.
const COMMIT_QUIET: Duration = Duration::from_millis(20);
const COMMIT_MAX_DELAY: Duration = Duration::from_secs(1);

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every
/// thread started after), to be taken synchronously by [`wait_signal`].
fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc calls on a zeroed sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` is initialised; sigwait writes the signal number.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// Runs the node over the store at `store`, mounted when `mount` is given,
/// accepting peers at `listen` (else the config's address, else nowhere).
pub(crate) fn run(
    store_dir: &Path,
    mount: Option<&MountArgs>,
    listen: Option<std::net::SocketAddr>,
    web: Option<String>,
) -> Result<()> {
    let signals = block_signals();
    crate::logging::init(Some(store_dir));
    let store = Store::open(store_dir).map_err(|e| match e {
        backer_fs::Error::Locked => anyhow!(
            "the store at {} is in use by another process",
            store_dir.display()
        ),
        backer_fs::Error::NotFound => {
            anyhow!("no store at {} (run 'backer init')", store_dir.display())
        }
        other => anyhow!("cannot open the store at {}: {other}", store_dir.display()),
    })?;
    // SAFETY: getuid/getgid cannot fail.
    let owner = unsafe {
        Ctx {
            uid: libc::getuid(),
            gid: libc::getgid(),
        }
    };
    let vfs = Arc::new(Vfs::new(
        Arc::new(store),
        VfsOptions {
            owner,
            ..VfsOptions::default()
        },
    )?);
    let committer = Committer::spawn(vfs.clone(), COMMIT_QUIET, COMMIT_MAX_DELAY, |c| {
        tracing::debug!(seq = c.seq, root = %c.root, changed = c.changed, "committed");
    })?;
    // Set once the mount is up: what tells the kernel about a peer's changes.
    let invalidate: Arc<OnceLock<InstallHook>> = Arc::new(OnceLock::new());
    let hook: InstallHook = {
        let invalidate = invalidate.clone();
        Arc::new(move |installed| {
            if let Some(f) = invalidate.get() {
                f(installed);
            }
        })
    };
    let bus = Bus::new();
    crate::logging::publish_to(bus.clone());
    let feed = Feed::start(vfs.store(), bus.clone())?;
    let net = Arc::new(crate::net::Net::start(
        store_dir,
        vfs.clone(),
        listen,
        Some(hook),
        feed,
    )?);
    spawn_collector(vfs.clone(), bus.clone())?;
    let pid_path = store_dir.join("backer.pid");
    std::fs::write(&pid_path, format!("{}\n", std::process::id()))?;
    let local = Arc::new(crate::control::Local::node(
        vfs.clone(),
        mount.map(|m| m.dir.clone()),
        Some(net.clone() as Arc<dyn crate::services::PeerNet>),
        bus.clone(),
    ));
    local.set_scrub(start_scrub(&vfs, bus.clone())?);
    crate::control::serve(store_dir, local.clone())?;
    crate::web::start(store_dir, web.as_deref(), local, bus)?;
    let result = match mount {
        Some(m) => serve_mount(&vfs, m, store_dir, signals, &invalidate),
        None => {
            crate::sd_notify::notify("READY=1");
            let sig = wait_signal(&signals);
            crate::sd_notify::notify("STOPPING=1");
            tracing::info!(signal = sig, "stopping");
            Ok(())
        }
    };
    // A last commit, made durable and published: the sessions announce it
    // before they say goodbye, so peers learn our last changes now.
    drop(committer);
    let synced = vfs.sync().context("final sync");
    // Then peers hear at once that we stop (the control thread's clone of
    // `net` cannot hold this up).
    net.shutdown();
    synced?;
    let _ = std::fs::remove_file(&pid_path);
    let _ = std::fs::remove_file(crate::control::socket_path(store_dir));
    tracing::info!("stopped");
    result
}

/// Collects history in the background, every `retention.gc_every` of the
/// store's config (re-read each time, so edits apply without a restart).
fn spawn_collector(vfs: Arc<Vfs>, bus: Bus) -> Result<()> {
    std::thread::Builder::new()
        .name("backer-gc".into())
        .spawn(move || {
            let dir = vfs.store().dir().to_path_buf();
            let load = || crate::config::Config::load(&dir);
            loop {
                let every = load()
                    .and_then(|c| c.retention.gc_every())
                    .unwrap_or(crate::config::DEFAULT_GC_EVERY);
                std::thread::sleep(every);
                match load().and_then(|c| c.retention.policy()) {
                    Ok(policy) => match vfs.history().gc(&policy) {
                        Ok(report) => {
                            bus.publish(EventKind::collected(&report));
                        }
                        Err(e) => tracing::warn!(error = %e, "history collection failed"),
                    },
                    Err(e) => tracing::warn!(error = %e, "history not collected"),
                }
            }
        })?;
    Ok(())
}

/// Scrubs in the background every `check.scrub_every` of the store's
/// config (re-read before each wait).
fn start_scrub(vfs: &Arc<Vfs>, bus: Bus) -> Result<backer_fs::scrub::Scrub> {
    let dir = vfs.store().dir().to_path_buf();
    let every = move || {
        crate::config::Config::load(&dir)
            .and_then(|c| c.check.scrub_every())
            .unwrap_or(crate::config::DEFAULT_SCRUB_EVERY)
    };
    backer_fs::scrub::Scrub::start(vfs.store(), every, Some(bus))
        .map_err(|e| anyhow!("cannot start the scrub: {e}"))
}

#[cfg(feature = "fuse")]
fn serve_mount(
    vfs: &Arc<Vfs>,
    m: &MountArgs,
    store_dir: &Path,
    signals: libc::sigset_t,
    invalidate: &OnceLock<InstallHook>,
) -> Result<()> {
    // SAFETY: getuid cannot fail.
    let root = unsafe { libc::getuid() } == 0;
    let opts = backer_fs::fuse::MountOptions {
        allow_other: m.allow_other.unwrap_or(root),
        read_only: m.read_only,
        auto_unmount: m.auto_unmount,
        fsname: store_dir.display().to_string(),
        threads: 2,
        owner: crate::store_dir::store_owner(),
    };
    let mut mounted = backer_fs::fuse::mount(vfs.clone(), &m.dir, &opts)
        .map_err(|e| anyhow!("cannot mount at {}: {e}", m.dir.display()))?;
    tracing::info!(dir = %m.dir.display(), store = %store_dir.display(), "mounted");
    crate::sd_notify::notify("READY=1");
    let _ = invalidate.set(Arc::new(mounted.invalidator()));
    raise_read_ahead(&m.dir);
    let mut unmounter = mounted.unmounter();
    let dir = m.dir.clone();
    std::thread::Builder::new()
        .name("backer-signals".into())
        .spawn(move || {
            let sig = wait_signal(&signals);
            crate::sd_notify::notify("STOPPING=1");
            tracing::info!(signal = sig, "unmounting");
            if let Err(e) = unmounter.unmount() {
                // Busy (an open file, a shell inside): detach lazily so the
                // node can still stop and leave a consistent store.
                tracing::warn!(error = %e, "unmount failed; detaching lazily");
                let _ = std::process::Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg(&dir)
                    .status();
            }
        })?;
    mounted.run().map_err(|e| anyhow!("FUSE session: {e}"))?;
    tracing::info!(dir = %m.dir.display(), "unmounted");
    Ok(())
}

/// The kernel gives a FUSE mount 128 KiB of read-ahead (our max_readahead
/// of 1 MiB caps it at mount). 8 MiB, what this machine's disk has, keeps
/// several 1 MiB READs in flight for both FUSE threads: cold sequential
/// reads of 1 GiB went from 650-730 MiB/s at 1 MiB to 1250-1430 MiB/s
/// (`/tmp/rd.sh`-style remount, drop caches, dd; 2026-11-26), while 4 MiB
/// varied between 730 and 1500. The window only grows for a file read
/// sequentially, so random readers pay nothing. Root only, and only a
/// hint: failures are logged.
/// The device comes from mountinfo: a stat of the mount point would wait
/// on this very process, which is not serving requests yet.
/// The read-ahead a mount gets (see [`raise_read_ahead`]).
#[cfg(feature = "fuse")]
const READ_AHEAD_KB: &str = "8192";

#[cfg(feature = "fuse")]
fn raise_read_ahead(dir: &Path) {
    let Some(m) = crate::mountinfo::mount_at(dir) else {
        return;
    };
    let knob = PathBuf::from(format!("/sys/class/bdi/{}/read_ahead_kb", m.device));
    if let Err(e) = std::fs::write(&knob, READ_AHEAD_KB) {
        tracing::debug!(knob = %knob.display(), error = %e, "could not raise read-ahead");
    }
}

#[cfg(not(feature = "fuse"))]
fn serve_mount(
    _: &Arc<Vfs>,
    _: &MountArgs,
    _: &Path,
    _: libc::sigset_t,
    _: &OnceLock<InstallHook>,
) -> Result<()> {
    Err(anyhow!(
        "this build has no FUSE support (built without the 'fuse' feature)"
    ))
}
