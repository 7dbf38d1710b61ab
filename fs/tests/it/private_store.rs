//! The store is private and its node key lives in `node.key` (issue 16,
//! DESIGN.md "Local security" and "The store's own files are the truth"):
//! modes of a new store whatever the umask left, the upgrade of a store
//! whose key is in the database, and the errors that keep a store from
//! silently becoming a new node.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backer_fs::identity::NodeKey;
use backer_fs::store::sled_kv::{SledKv, DEFAULT_CACHE_BYTES};
use backer_fs::store::{keyfile, Batch, Kv, Space, Store, FORMAT_VERSION};
use backer_fs::vfs::{read_log, Vfs, VfsOptions, ROOT};
use backer_fs::Error;

use crate::util::ME;

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// Every path under `dir` (itself included), folders first.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    if fs::symlink_metadata(dir).unwrap().is_dir() {
        for ent in fs::read_dir(dir).unwrap() {
            out.extend(walk(&ent.unwrap().path()));
        }
    }
    out
}

#[track_caller]
fn assert_private(dir: &Path) {
    for p in walk(dir) {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&p), want, "{} is {:o}", p.display(), mode(&p));
    }
}

/// Whether any file under `dir` holds `needle`.
fn any_file_holds(dir: &Path, needle: &[u8]) -> bool {
    walk(dir).iter().filter(|p| p.is_file()).any(|p| {
        fs::read(p)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle)
    })
}

/// A store (`TMP/store`) with one committed file, closed again; returns
/// its temporary folder, its path and its id.
fn store_with_a_file() -> (tempfile::TempDir, PathBuf, backer_fs::NodeId) {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("store");
    let store = Arc::new(Store::create(&dir).unwrap());
    let id = store.node_id();
    let vfs = Vfs::new(store, VfsOptions::default()).unwrap();
    let (_, fh) = vfs.names().create(ME, ROOT, b"f", 0o644, false).unwrap();
    vfs.files()
        .write(fh, 0, b"kept across the upgrade")
        .unwrap();
    vfs.files().release(fh).unwrap();
    vfs.sync().unwrap();
    (t, dir, id)
}

/// Turns a store of this format back into format 2, as an earlier version
/// made it: the key in the database, no node.key, modes from a 022 umask.
fn make_legacy(dir: &Path) -> Vec<u8> {
    let pkcs8 = fs::read(dir.join(keyfile::FILE)).unwrap();
    let kv = SledKv::open(&dir.join("db"), DEFAULT_CACHE_BYTES).unwrap();
    let mut b = Batch::default();
    b.put(Space::Meta, &b"format"[..], 2u32.to_be_bytes());
    b.put(Space::Meta, keyfile::LEGACY_KEY, pkcs8.clone());
    kv.apply(b).unwrap();
    kv.flush().unwrap();
    drop(kv);
    fs::remove_file(dir.join(keyfile::FILE)).unwrap();
    for p in walk(dir) {
        let m = if p.is_dir() { 0o755 } else { 0o644 };
        fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
    }
    pkcs8
}

fn root_of(store: &Store) -> Option<[u8; 32]> {
    read_log(store.kv(), 1).unwrap().first().map(|c| c.root)
}

#[test]
fn a_new_store_is_private_with_its_key_in_node_key() {
    let (_t, dir, id) = store_with_a_file();
    assert_private(&dir);
    let key = NodeKey::from_pkcs8(&fs::read(dir.join("node.key")).unwrap()).unwrap();
    assert_eq!(key.node_id(), id);
    assert!(!any_file_holds(&dir.join("db"), key.pkcs8()));
    assert_eq!(Store::open(&dir).unwrap().node_id(), id);
}

#[test]
fn a_store_with_its_key_in_the_database_is_upgraded_keeping_its_id() {
    let (_t, dir, id) = store_with_a_file();
    let root = root_of(&Store::open(&dir).unwrap());
    let pkcs8 = make_legacy(&dir);
    assert!(
        any_file_holds(&dir.join("db"), &pkcs8),
        "the setup put the key in db/"
    );
    assert_eq!(mode(&dir.join("db")), 0o755);

    let store = Store::open(&dir).unwrap();
    assert_eq!(store.node_id(), id);
    assert_eq!(root_of(&store), root, "the history survives the upgrade");
    assert_eq!(fs::read(dir.join("node.key")).unwrap(), pkcs8);
    assert!(store
        .kv()
        .get(Space::Meta, keyfile::LEGACY_KEY)
        .unwrap()
        .is_none());
    let format = store.kv().get(Space::Meta, b"format").unwrap().unwrap();
    assert_eq!(format, FORMAT_VERSION.to_be_bytes());
    drop(store);
    assert!(
        !any_file_holds(&dir.join("db"), &pkcs8),
        "the key is still in db/"
    );
    assert!(!dir.join("db.new").exists() && !dir.join("db.old").exists());
    assert_private(&dir);
    // And it opens again as itself.
    assert_eq!(Store::open(&dir).unwrap().node_id(), id);
}

#[test]
fn a_missing_or_damaged_key_file_is_an_error_not_a_new_node() {
    let (_t, dir, _) = store_with_a_file();
    let key_path = dir.join("node.key");
    let good = fs::read(&key_path).unwrap();

    fs::remove_file(&key_path).unwrap();
    let err = Store::open(&dir).unwrap_err();
    assert!(matches!(err, Error::NodeKey(_)), "{err}");
    assert!(err.to_string().contains("node.key is missing"), "{err}");
    assert!(!key_path.exists(), "an open made a new key");

    let mut bad = good.clone();
    bad.truncate(good.len() - 3);
    fs::write(&key_path, &bad).unwrap();
    let err = Store::open(&dir).unwrap_err();
    assert!(matches!(err, Error::NodeKey(_)), "{err}");
    assert!(err.to_string().contains("damaged"), "{err}");
    assert_eq!(
        fs::read(&key_path).unwrap(),
        bad,
        "an open replaced the key"
    );

    fs::write(&key_path, &good).unwrap();
    Store::open(&dir).unwrap();
}

#[test]
fn an_upgrade_cut_short_between_its_renames_is_finished_on_open() {
    let (_t, dir, id) = store_with_a_file();
    let root = root_of(&Store::open(&dir).unwrap());
    // The new database is complete and the old one moved aside; the
    // second rename did not happen.
    fs::rename(dir.join("db"), dir.join("db.new")).unwrap();
    fs::create_dir(dir.join("db.old")).unwrap();
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.node_id(), id);
    assert_eq!(root_of(&store), root);
    assert!(!dir.join("db.new").exists() && !dir.join("db.old").exists());
}

#[test]
fn an_empty_database_beside_an_unfinished_swap_costs_no_copy() {
    let (_t, dir, id) = store_with_a_file();
    let root = root_of(&Store::open(&dir).unwrap());
    // The swap stopped between its renames, and another process's open
    // made an empty `db/` meanwhile (the engine creates a missing one).
    fs::rename(dir.join("db"), dir.join("db.new")).unwrap();
    fs::create_dir(dir.join("db.old")).unwrap();
    fs::create_dir(dir.join("db")).unwrap();
    assert!(Store::open(&dir).is_err(), "an empty database is no store");
    assert!(
        dir.join("db.new").is_dir(),
        "the complete copy must survive a failed open"
    );
    // Once the empty one is cleared away, the swap finishes as usual.
    fs::remove_dir_all(dir.join("db")).unwrap();
    let store = Store::open(&dir).unwrap();
    assert_eq!(store.node_id(), id);
    assert_eq!(root_of(&store), root);
}

#[test]
fn init_over_a_key_file_without_a_database_keeps_the_key() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("store");
    let key = NodeKey::generate().unwrap();
    fs::create_dir(&dir).unwrap();
    keyfile::write(&dir, &key).unwrap();
    let store = Store::create(&dir).unwrap();
    assert_eq!(store.node_id(), key.node_id());
    drop(store);
    assert!(matches!(Store::create(&dir), Err(Error::Exists)));
}

#[test]
fn init_refuses_a_folder_that_holds_something_else() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("thesis.tex"), b"mine").unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let err = Store::create(t.path()).unwrap_err().to_string();
    assert!(err.contains("not empty and holds no store"), "{err}");
    assert_eq!(mode(t.path()), 0o755, "left as it was");
    assert!(!t.path().join("db").exists());
}

/// A FUSE mount at `at` whose daemon is gone: every stat of it fails with
/// ENOTCONN (as a crashed `backer mount` leaves). Unmounted when dropped.
struct DeadMount(PathBuf);

impl DeadMount {
    fn new(at: &Path) -> DeadMount {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let dev = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .unwrap();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&dev);
        let opts = CString::new(format!("fd={fd},rootmode=40000,user_id=0,group_id=0")).unwrap();
        let target = CString::new(at.as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                c"backer-test".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "mount: {}", std::io::Error::last_os_error());
        drop(dev); // the daemon's end closed: the mount is dead
        DeadMount(at.to_path_buf())
    }
}

impl Drop for DeadMount {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        let target = std::ffi::CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn a_dead_mount_left_in_the_store_does_not_stop_an_open() {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
        return;
    }
    let (_t, dir, id) = store_with_a_file();
    fs::create_dir(dir.join("mnt")).unwrap();
    fs::create_dir(dir.join("packs/mnt")).unwrap();
    let _a = DeadMount::new(&dir.join("mnt"));
    let _b = DeadMount::new(&dir.join("packs/mnt"));
    let e = fs::metadata(dir.join("mnt")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN), "the setup");
    assert_eq!(Store::open(&dir).unwrap().node_id(), id);
}
