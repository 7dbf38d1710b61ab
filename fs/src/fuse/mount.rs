//! Mounting: the mount options, the mounted session and its unmounter,
//! and clearing a dead mount left by a killed node.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use fuser::{Config, INodeNo, MountOption, SessionACL};

use super::BackerFs;
use crate::vfs::Vfs;

/// How to mount.
#[derive(Clone, Debug)]
pub struct MountOptions {
    /// Let every user in (root mounts: a shared system folder), with the
    /// kernel checking mode bits (`default_permissions`).
    pub allow_other: bool,
    /// Mount read-only.
    pub read_only: bool,
    /// Ask the kernel to unmount when the process dies (needs fusermount3).
    pub auto_unmount: bool,
    /// The source shown in /proc/mounts (the store folder).
    pub fsname: String,
    /// FUSE worker threads.
    pub threads: usize,
    /// The user (uid, gid) the mount belongs to, when root mounts for a
    /// store's owner (the mount(8) helper acting as that owner): without
    /// `allow_other` only that user gets in. `None`: this process's user.
    pub owner: Option<(u32, u32)>,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            read_only: false,
            auto_unmount: false,
            fsname: "backer".into(),
            threads: 2,
            owner: None,
        }
    }
}

/// A mounted, not yet serving, session. Dropped without [`Mounted::run`]
/// (the node failed after mounting), its mount goes with it.
pub struct Mounted {
    session: fuser::Session<BackerFs>,
    vfs: Arc<Vfs>,
    /// Root's own mount ([`mount_as_root`]): fuser holds no handle to
    /// it, so this one detaches it if the session does not end by an
    /// unmount.
    own_mount: Option<OwnMount>,
}

/// A mount root made with mount(2) ([`mount_as_root`]). fuser's own
/// mounts unmount when its session goes (its `UmountOnDrop`); this does
/// the same for ours: dropped while armed (the node failed after
/// mounting, before or while serving) it detaches the mount, which would
/// otherwise stay behind dead (ENOTCONN) with nobody serving it.
struct OwnMount {
    path: std::path::PathBuf,
    /// Cleared when the session ended by an unmount: the mount is gone,
    /// and umount(2) on the path could hit a newer mount made there.
    armed: bool,
}

impl OwnMount {
    /// The session ended by an unmount: nothing left to detach.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for OwnMount {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = umount(&self.path, libc::MNT_DETACH) {
                tracing::error!(path = %self.path.display(), error = %e,
                    "cannot detach the mount after the node failed");
            }
        }
    }
}

/// umount2(2) of `path` with `flags`.
fn umount(path: &Path, flags: libc::c_int) -> io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid NUL-terminated path; umount2 only reads it.
    if unsafe { libc::umount2(c.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts a [`Mounted`] session from another thread (signal handlers).
pub struct Unmounter(UnmountBy);

enum UnmountBy {
    /// fuser's own handle (mounts through fusermount3).
    Fuser(fuser::SessionUnmounter),
    /// umount(2) of this path (root's [`mount_as_root`]).
    Path(std::path::PathBuf),
}

impl Unmounter {
    /// Unmounts; the serving loop then returns.
    pub fn unmount(&mut self) -> io::Result<()> {
        match &mut self.0 {
            UnmountBy::Fuser(u) => u.unmount(),
            UnmountBy::Path(p) => umount(p, 0),
        }
    }
}

/// The file system type the mount table shows: `fuse.backer`, as
/// fusermount3 names a mount with `subtype=backer` (fuser's own mount(2)
/// as root passes plain `fuse`, so root mounts itself, [`mount_as_root`]).
const FS_TYPE: &str = "fuse.backer";

/// Mounts as root with mount(2) under the type [`FS_TYPE`]; returns the
/// /dev/fuse descriptor to serve, or `None` if mount(2) is not permitted
/// here (an unprivileged namespace: fusermount3 then does it).
fn mount_as_root(
    mountpoint: &Path,
    opts: &MountOptions,
) -> io::Result<Option<std::os::fd::OwnedFd>> {
    use std::os::unix::fs::PermissionsExt;
    let rootmode = std::fs::metadata(mountpoint)?.permissions().mode();
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    use std::os::fd::AsRawFd;
    let (uid, gid) = match opts.owner {
        Some(ids) => ids,
        // SAFETY: getuid/getgid cannot fail.
        None => unsafe { (libc::getuid(), libc::getgid()) },
    };
    let mut data = format!(
        "fd={},rootmode={rootmode:o},user_id={uid},group_id={gid},default_permissions",
        dev.as_raw_fd()
    );
    if opts.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    if opts.read_only {
        flags |= libc::MS_RDONLY;
    }
    let cstr = |s: &[u8]| {
        std::ffi::CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (source, target) = (
        cstr(opts.fsname.as_bytes())?,
        cstr(mountpoint.as_os_str().as_bytes())?,
    );
    let (fstype, data) = (cstr(FS_TYPE.as_bytes())?, cstr(data.as_bytes())?);
    // SAFETY: every pointer is a valid NUL-terminated string that outlives
    // the call; mount(2) only reads them.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EPERM) => Ok(None),
            _ => Err(e),
        };
    }
    Ok(Some(dev.into()))
}

/// Mounts `vfs` at `mountpoint`. The kernel mount exists when this returns;
/// call [`Mounted::run`] to serve it.
pub fn mount(vfs: Arc<Vfs>, mountpoint: &Path, opts: &MountOptions) -> io::Result<Mounted> {
    let mut cfg = Config::default();
    cfg.mount_options = vec![
        MountOption::FSName(opts.fsname.clone()),
        MountOption::Subtype("backer".into()),
        MountOption::DefaultPermissions,
        MountOption::NoSuid,
        MountOption::NoDev,
        if opts.read_only {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    if opts.allow_other {
        cfg.acl = SessionACL::All;
    }
    if opts.auto_unmount {
        cfg.mount_options.push(MountOption::AutoUnmount);
        // fuser refuses AutoUnmount with the Owner ACL.
        if cfg.acl == SessionACL::Owner {
            cfg.acl = SessionACL::RootAndOwner;
        }
    }
    cfg.n_threads = Some(opts.threads.max(1));
    let fs = BackerFs {
        door: crate::vfs::Door::new(vfs.clone(), !opts.read_only),
    };
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root && !opts.auto_unmount {
        if let Some(fd) = mount_as_root(mountpoint, opts)? {
            // Armed from here: a failed handshake detaches it too.
            let own = OwnMount {
                path: mountpoint.to_path_buf(),
                armed: true,
            };
            // The kernel already lets in only the mount's user_id (or,
            // with allow_other, everyone): fuser's own check compares
            // with this process's euid, root, which would shut out the
            // store's owner that `opts.owner` named.
            let acl = match opts.owner {
                Some(_) => SessionACL::All,
                None => cfg.acl,
            };
            let session = fuser::Session::from_fd(fs, fd, acl, cfg)?;
            return Ok(Mounted {
                session,
                vfs,
                own_mount: Some(own),
            });
        }
    }
    if opts.owner.is_some() && !opts.allow_other {
        // fusermount3 makes the mount root's, and fuser lets in only its
        // own euid (root) besides: the owner would be locked out.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a mount for the store's owner without allow_other needs root's own \
             mount(2), which auto_unmount or this namespace rules out: mount \
             with allow_other, or without auto_unmount",
        ));
    }
    Ok(Mounted {
        session: fuser::Session::new(fs, mountpoint, &cfg)?,
        vfs,
        own_mount: None,
    })
}

impl Mounted {
    /// A handle that unmounts from any thread.
    pub fn unmounter(&mut self) -> Unmounter {
        match &self.own_mount {
            Some(m) => Unmounter(UnmountBy::Path(m.path.clone())),
            None => Unmounter(UnmountBy::Fuser(self.session.unmount_callable())),
        }
    }

    /// Sends kernel cache notifications (used when peers change things).
    pub fn notifier(&self) -> fuser::Notifier {
        self.session.notifier()
    }

    /// A function that tells the kernel to forget what it cached of what
    /// an installed merge changed: the dentries of changed names (added
    /// ones too: the kernel may hold a negative entry) and the attributes
    /// and pages of changed inodes. Call it after the install returned
    /// (holding no vfs lock) from a thread that serves no FUSE request
    /// (DESIGN.md, "Traps").
    pub fn invalidator(&self) -> impl Fn(&crate::vfs::Installed) + Send + Sync + 'static {
        let notifier = self.session.notifier();
        move |installed: &crate::vfs::Installed| {
            for (parent, name) in &installed.names {
                let name = std::ffi::OsStr::from_bytes(name);
                // ENOENT: the kernel did not cache it; nothing to do.
                let _ = notifier.inval_entry(INodeNo(parent.0), name);
            }
            for ino in &installed.inodes {
                let _ = notifier.inval_inode(INodeNo(ino.0), 0, 0);
            }
        }
    }

    /// Serves requests until the file system is unmounted (`umount`,
    /// `fusermount3 -u`, or an [`Unmounter`]), then folds what is still
    /// open, commits and makes the store durable.
    ///
    /// That final sync runs here, after fuser's session is gone, not in
    /// `destroy`: fuser drops its mount handle (which calls umount(2) on
    /// the mount point's path if it believes the mount still stands) only
    /// after `destroy` returns, and a slow `destroy` let a new mount at
    /// the same path come up meanwhile and be unmounted by the old node.
    ///
    /// If serving fails, root's own mount is detached (fuser's own mounts
    /// unmount when its session goes).
    pub fn run(self) -> io::Result<()> {
        let Mounted {
            session,
            vfs,
            own_mount,
        } = self;
        let served = session.run();
        match own_mount {
            Some(m) if served.is_ok() => m.disarm(),
            m => drop(m),
        }
        if let Err(e) = vfs.sync() {
            tracing::error!(error = %e, "final sync at unmount failed");
        }
        served
    }
}

/// If `path` is a dead FUSE mount left by a killed node (stat fails with
/// ENOTCONN), detaches it and returns true.
pub fn clear_dead_mount(path: &Path) -> io::Result<bool> {
    match std::fs::metadata(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {}
        _ => return Ok(false),
    }
    let status = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        // Not installed or refused: as root, detach it ourselves.
        umount(path, libc::MNT_DETACH)?;
    }
    Ok(true)
}
