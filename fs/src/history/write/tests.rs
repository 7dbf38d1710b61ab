//! Tests of the writer: modes and times set on open files, so a name
//! swapped for a symlink meanwhile changes nothing outside the target.

use super::*;

#[test]
fn mtimes_are_set_on_links_themselves() {
    let t = tempfile::tempdir().unwrap();
    let link = t.path().join("l");
    std::os::unix::fs::symlink("nowhere", &link).unwrap();
    let when = Timestamp {
        secs: 1_000_000_000,
        nanos: 5,
    };
    let dir: OwnedFd = File::open(t.path()).unwrap().into();
    set_mtime_at(&dir, &cname(b"l").unwrap(), when, &link).unwrap();
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(&link).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_000_000_000, 5));
}

mod swaps {
    use std::cell::Cell;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::history::{export, export_tree, head};
    use crate::vfs::{Ctx, SetAttr, Vfs, VfsOptions, ROOT};

    const ROOT_USER: Ctx = Ctx { uid: 0, gid: 0 };

    /// A store with `d/` (0755) holding `f` (0644, bytes) and `s`
    /// (setuid 04755) and `g` (setgid 02755), committed.
    fn store_with_tree() -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::create(&dir.path().join("store")).unwrap());
        let v = Vfs::new(store.clone(), VfsOptions::default()).unwrap();
        let d = v.names().mkdir(ROOT_USER, ROOT, b"d", 0o755).unwrap().ino;
        for (name, mode) in [("f", 0o644), ("s", 0o4755), ("g", 0o2755)] {
            let (a, fh) = v
                .names()
                .create(ROOT_USER, d, name.as_bytes(), 0o600, false)
                .unwrap();
            v.files().write(fh, 0, b"#!/bin/sh\n").unwrap();
            v.files().release(fh).unwrap();
            let set = SetAttr {
                mode: Some(mode),
                ..SetAttr::default()
            };
            v.names().setattr(a.ino, &set).unwrap();
        }
        v.commit().unwrap();
        v.sync().unwrap();
        (dir, store)
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn setid_bits_are_dropped_unless_kept() {
        let (dir, store) = store_with_tree();
        let out = dir.path().join("out");
        let done = export(&store, &out, WriteOptions::default(), None).unwrap();
        assert_eq!(done.files, 3);
        assert_eq!(mode(&out.join("d/f")), 0o644);
        assert_eq!(mode(&out.join("d/s")), 0o755, "setuid dropped");
        assert_eq!(mode(&out.join("d/g")), 0o755, "setgid dropped");
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            let kept = dir.path().join("kept");
            let opts = WriteOptions {
                keep_setid: true,
                ..WriteOptions::default()
            };
            // The store alone vouches for nothing: the tree's bits could
            // be anyone's.
            let done = export(&store, &kept, opts, None).unwrap();
            assert_eq!(mode(&kept.join("d/s")), 0o755);
            assert_eq!(done.warnings.len(), 2, "{:?}", done.warnings);
            // The live tree has them, root's own: kept.
            let v = Vfs::new(store.clone(), VfsOptions::default()).unwrap();
            let root = head(&store).unwrap().map(|c| Hash(c.root));
            let live = dir.path().join("live");
            export_tree(&LiveTree::new(&v), root, &live, opts, None).unwrap();
            assert_eq!(mode(&live.join("d/s")), 0o4755);
            assert_eq!(mode(&live.join("d/g")), 0o2755);
        }
    }

    /// The store as a source that, once, swaps a name the writer has just
    /// made for a symlink to `outside`: when the first chunk is read (the
    /// file being written) or when the folder `dir` is listed.
    struct Swapper<'a> {
        store: &'a Store,
        out: PathBuf,
        dir: Hash,
        outside: PathBuf,
        swapped_file: Cell<bool>,
        swapped_dir: Cell<bool>,
    }

    impl Swapper<'_> {
        fn swap(&self, name: &str) {
            let at = self.out.join(name);
            std::fs::rename(&at, self.out.join(format!("{name}.real"))).unwrap();
            std::os::unix::fs::symlink(&self.outside, &at).unwrap();
        }
    }

    impl NodeStore for Swapper<'_> {
        fn get_node(&self, hash: &Hash) -> Result<Option<Vec<u8>>> {
            if *hash == self.dir && !self.swapped_dir.replace(true) {
                self.swap("d");
            }
            self.store.get_node(hash)
        }

        fn put_node(&mut self, _: Hash, _: Vec<u8>) -> Result<()> {
            Err(Error::ReadOnly)
        }
    }

    impl Source for Swapper<'_> {
        fn chunk(&self, hash: &Hash) -> Result<Vec<u8>> {
            if !self.swapped_file.replace(true) {
                self.swap("d.real/f");
            }
            self.store.chunk(hash)
        }
    }

    #[test]
    fn a_name_swapped_for_a_symlink_meanwhile_changes_nothing_outside() {
        let (dir, store) = store_with_tree();
        let root = Hash(head(&store).unwrap().unwrap().root);
        let d = dir::get(&*store, root, b"d").unwrap().unwrap().hash;
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
        let old = std::fs::metadata(&outside).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let src = Swapper {
            store: &store,
            out: out.clone(),
            dir: d,
            outside: outside.clone(),
            swapped_file: Cell::new(false),
            swapped_dir: Cell::new(false),
        };
        let entries = live_entries(&*store, root).unwrap();
        // The file's swap makes `d.real/f` a link to `outside` (a folder
        // here, so a write through it would fail loudly too).
        let opts = WriteOptions::default();
        let target = open_target(&out).unwrap();
        let _ = write_entries(&src, target, &out, Vec::new(), entries, opts, None);
        assert!(src.swapped_dir.get() && src.swapped_file.get());
        let now = std::fs::metadata(&outside).unwrap();
        assert_eq!(now.mode() & 0o7777, 0o700, "the outside folder's mode");
        assert_eq!(
            (now.mtime(), now.mtime_nsec()),
            (old.mtime(), old.mtime_nsec()),
            "the outside folder's mtime"
        );
        // What was written went into the real folders.
        assert_eq!(mode(&out.join("d.real")), 0o755);
        assert_eq!(mode(&out.join("d.real/f.real")), 0o644);
    }
}

mod setid;

mod target {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn umask() -> u32 {
        // SAFETY: umask(2) swaps the mask; it is put back at once.
        let m = unsafe { libc::umask(0o022) };
        // SAFETY: as above.
        unsafe { libc::umask(m) };
        m as u32
    }

    #[test]
    fn missing_folders_are_made_with_the_callers_umask_and_opened() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("a/b");
        let fd = open_target(&out).unwrap();
        assert_eq!(dev_ino(&fd, &out).unwrap(), {
            let m = std::fs::metadata(&out).unwrap();
            (m.dev(), m.ino())
        });
        let m = std::fs::metadata(&out).unwrap().mode() & 0o7777;
        assert_eq!(m, 0o777 & !umask());
    }

    #[test]
    fn a_symlink_or_another_users_folder_is_not_written_into() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, t.path().join("link")).unwrap();
        assert!(open_target(&t.path().join("link")).is_err());
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        // Made first by someone else (in /tmp, say): refused, not used.
        let theirs = t.path().join("theirs");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
        let e = open_target(&theirs).unwrap_err().to_string();
        assert!(e.contains("another user"), "{e}");
        // A folder made inside it is ours, held open: usable.
        let fd = open_target(&theirs.join("mine")).unwrap();
        assert_eq!(fstat(&fd, &theirs).unwrap().st_uid, 0);
    }

    #[test]
    fn a_link_on_the_way_is_followed_only_if_it_is_the_callers_or_roots() {
        let t = tempfile::tempdir().unwrap();
        let real = t.path().join("real");
        std::fs::create_dir_all(real.join("in")).unwrap();
        // Ours, relative, through another link of ours: followed.
        std::os::unix::fs::symlink("real", t.path().join("mine")).unwrap();
        std::os::unix::fs::symlink("mine/in", t.path().join("deeper")).unwrap();
        let fd = open_target(&t.path().join("deeper/out")).unwrap();
        let made = real.join("in/out");
        assert_eq!(dev_ino(&fd, &made).unwrap(), {
            let m = std::fs::metadata(&made).unwrap();
            (m.dev(), m.ino())
        });
        // A loop of links: an error, not a hang.
        std::os::unix::fs::symlink("loop2", t.path().join("loop1")).unwrap();
        std::os::unix::fs::symlink("loop1", t.path().join("loop2")).unwrap();
        assert!(open_target(&t.path().join("loop1/out")).is_err());
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        // Someone else's link in a shared folder: not followed, nothing made.
        let victim = t.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        let theirs = t.path().join("theirs");
        std::os::unix::fs::symlink(&victim, &theirs).unwrap();
        std::os::unix::fs::lchown(&theirs, Some(65534), Some(65534)).unwrap();
        let e = open_target(&theirs.join("out")).unwrap_err().to_string();
        assert!(e.contains("symlink of another user"), "{e}");
        assert!(!victim.join("out").exists());
    }
}
