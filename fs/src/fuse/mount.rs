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
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            read_only: false,
            auto_unmount: false,
            fsname: "backer".into(),
            threads: 2,
        }
    }
}

/// A mounted, not yet serving, session.
pub struct Mounted {
    session: fuser::Session<BackerFs>,
    vfs: Arc<Vfs>,
    /// Where root mounted it with [`mount_as_root`] (fuser holds no
    /// handle to that mount: we unmount it).
    own_mount: Option<std::path::PathBuf>,
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
            UnmountBy::Path(p) => {
                let c = std::ffi::CString::new(p.as_os_str().as_bytes())
                    .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
                // SAFETY: `c` is a valid NUL-terminated path; umount2 only reads it.
                if unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            }
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
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
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
            let acl = cfg.acl;
            let session = match fuser::Session::from_fd(fs, fd, acl, cfg) {
                Ok(s) => s,
                Err(e) => {
                    let _ = Unmounter(UnmountBy::Path(mountpoint.to_path_buf())).unmount();
                    return Err(e);
                }
            };
            return Ok(Mounted {
                session,
                vfs,
                own_mount: Some(mountpoint.to_path_buf()),
            });
        }
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
            Some(p) => Unmounter(UnmountBy::Path(p.clone())),
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
    pub fn run(self) -> io::Result<()> {
        let served = self.session.run();
        if let Err(e) = self.vfs.sync() {
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
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `c` is a valid NUL-terminated path; umount2 reads it only.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(true)
}
