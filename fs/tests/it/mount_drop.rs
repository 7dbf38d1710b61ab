//! Root's own mount (mount(2) of type fuse.backer, served through
//! fuser's `Session::from_fd`): a node that fails after mounting leaves
//! no dead mount behind, and a mount made for a store's owner belongs to
//! that owner.

use std::path::Path;
use std::sync::Arc;

use backer_fs::fuse::{mount, MountOptions};
use backer_fs::store::Store;
use backer_fs::vfs::{Vfs, VfsOptions};

/// The fields after " - " (type, source, super options) of the mount at
/// `dir` in /proc/self/mountinfo, if one is there.
fn mount_at(dir: &Path) -> Option<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_str().unwrap();
    table
        .lines()
        .rev()
        .filter(|l| l.split(' ').nth(4) == Some(dir))
        .find_map(|l| l.split_once(" - ").map(|(_, tail)| tail.to_string()))
}

/// A new store's tree and an empty mount point, in `t`.
fn setup(t: &Path) -> (Arc<Vfs>, std::path::PathBuf) {
    let store = Arc::new(Store::create(&t.join("store")).unwrap());
    let vfs = Arc::new(Vfs::new(store, VfsOptions::default()).unwrap());
    let mnt = t.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    (vfs, mnt)
}

/// A mounted session dropped before it serves (a `?` in the node after
/// mounting) takes its mount with it: nothing stays behind at the
/// mount point, which answers stat again instead of ENOTCONN.
#[test]
fn a_mount_never_served_is_detached_when_dropped() {
    let t = tempfile::tempdir().unwrap();
    let (vfs, mnt) = setup(t.path());
    let mounted = mount(vfs, &mnt, &MountOptions::default()).unwrap();
    let shown = mount_at(&mnt).expect("mounted");
    assert!(shown.starts_with("fuse.backer "), "{shown}");
    drop(mounted);
    assert_eq!(mount_at(&mnt), None);
    std::fs::metadata(&mnt).unwrap();
}

/// Root mounting for a store's owner (the mount(8) helper) makes the
/// mount that user's, so without allow_other the owner gets in.
#[test]
fn a_mount_for_the_store_owner_belongs_to_the_owner() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return; // only root mounts for another user
    }
    let t = tempfile::tempdir().unwrap();
    let (vfs, mnt) = setup(t.path());
    let opts = MountOptions {
        owner: Some((4321, 4322)),
        ..MountOptions::default()
    };
    let mounted = mount(vfs, &mnt, &opts).unwrap();
    let shown = mount_at(&mnt).expect("mounted");
    assert!(shown.contains("user_id=4321,group_id=4322"), "{shown}");
    drop(mounted);
    assert_eq!(mount_at(&mnt), None);
}

/// fusermount3 (auto_unmount) would make the mount root's: refused with
/// an error rather than a mount its owner cannot enter.
#[test]
fn a_mount_for_the_owner_through_fusermount_needs_allow_other() {
    let t = tempfile::tempdir().unwrap();
    let (vfs, mnt) = setup(t.path());
    let opts = MountOptions {
        owner: Some((4321, 4322)),
        auto_unmount: true,
        ..MountOptions::default()
    };
    let err = mount(vfs, &mnt, &opts).err().expect("refused");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert_eq!(mount_at(&mnt), None);
}
