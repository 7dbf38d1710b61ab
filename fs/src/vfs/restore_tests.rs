//! Tests of [`History::restore`].

use std::sync::Arc;

use super::*;
use crate::store::Store;
use crate::tree::vv::Causality;
use crate::vfs::{Ctx, Ino, Vfs, VfsOptions};

const ME: Ctx = Ctx {
    uid: 1000,
    gid: 1000,
};

fn new_vfs() -> (tempfile::TempDir, Vfs) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::create(&dir.path().join("store")).unwrap());
    let vfs = Vfs::new(store, VfsOptions::default()).unwrap();
    (dir, vfs)
}

fn put(v: &Vfs, parent: Ino, name: &str, data: &[u8]) -> Ino {
    let (ino, fh) = match v.names().lookup(parent, name.as_bytes()) {
        Ok(a) => (a.ino, v.files().open(a.ino, true, false).unwrap()),
        Err(_) => {
            let (a, fh) = v
                .names()
                .create(ME, parent, name.as_bytes(), 0o644, false)
                .unwrap();
            (a.ino, fh)
        }
    };
    assert_eq!(v.files().write(fh, 0, data).unwrap() as usize, data.len());
    v.files().release(fh).unwrap();
    ino
}

fn get(v: &Vfs, parent: Ino, name: &str) -> Vec<u8> {
    let a = v.names().lookup(parent, name.as_bytes()).unwrap();
    let fh = v.files().open(a.ino, false, false).unwrap();
    let out = v.files().read(fh, 0, 1 << 20).unwrap();
    v.files().release(fh).unwrap();
    out
}

fn committed(v: &Vfs) -> Hash {
    v.commit().unwrap();
    v.root_hash().unwrap()
}

fn entry(v: &Vfs, root: Hash, path: &[&str]) -> Option<Entry> {
    let store = v.store();
    let txn = Txn::new(store.kv());
    let path: Vec<&[u8]> = path.iter().map(|p| p.as_bytes()).collect();
    entry_at(&ReadNodes(&txn), root, &path).unwrap()
}

#[test]
fn a_file_goes_back_to_an_older_version_that_dominates() {
    let (_d, v) = new_vfs();
    let dir = v.names().mkdir(ME, ROOT, b"d", 0o755).unwrap().ino;
    put(&v, dir, "f", b"one");
    let r1 = committed(&v);
    put(&v, dir, "f", b"two, longer");
    let r2 = committed(&v);
    let cur = entry(&v, r2, &["d", "f"]).unwrap();
    let installed = v.history().restore(&[b"d", b"f"], r1).unwrap().unwrap();
    assert_eq!(get(&v, dir, "f"), b"one");
    let r3 = v.root_hash().unwrap();
    assert_eq!(installed.commit.root, r3);
    let new = entry(&v, r3, &["d", "f"]).unwrap();
    let old = entry(&v, r1, &["d", "f"]).unwrap();
    assert_eq!(new.hash, old.hash);
    assert_eq!(new.size, 3);
    assert_eq!(new.vv.compare(&cur.vv), Causality::Dominates);
    assert_eq!(new.vv.compare(&old.vv), Causality::Dominates);
    // The ancestor dominates its old self too.
    let d_cur = entry(&v, r2, &["d"]).unwrap();
    let d_new = entry(&v, r3, &["d"]).unwrap();
    assert_eq!(d_new.vv.compare(&d_cur.vv), Causality::Dominates);
    // Restoring again changes nothing; a later edit still dominates.
    assert!(v.history().restore(&[b"d", b"f"], r1).unwrap().is_none());
    put(&v, dir, "f", b"three");
    let r4 = committed(&v);
    let later = entry(&v, r4, &["d", "f"]).unwrap();
    assert_eq!(later.vv.compare(&new.vv), Causality::Dominates);
}

#[test]
fn a_deleted_directory_comes_back_whole() {
    let (_d, v) = new_vfs();
    let top = v.names().mkdir(ME, ROOT, b"top", 0o755).unwrap().ino;
    let sub = v.names().mkdir(ME, top, b"sub", 0o700).unwrap().ino;
    put(&v, top, "a", b"aaa");
    put(&v, sub, "b", b"bbbb");
    put(&v, sub, "c", b"");
    let r1 = committed(&v);
    v.names().unlink(sub, b"b").unwrap();
    v.names().unlink(sub, b"c").unwrap();
    v.names().rmdir(top, b"sub").unwrap();
    v.names().unlink(top, b"a").unwrap();
    v.names().rmdir(ROOT, b"top").unwrap();
    let r2 = committed(&v);
    let tomb = entry(&v, r2, &["top"]).unwrap();
    assert!(tomb.deleted);
    v.history().restore(&[b"top"], r1).unwrap().unwrap();
    let top = v.names().lookup(ROOT, b"top").unwrap().ino;
    let sub = v.names().lookup(top, b"sub").unwrap();
    assert_eq!(sub.perm & 0o777, 0o700);
    assert_eq!(get(&v, top, "a"), b"aaa");
    assert_eq!(get(&v, sub.ino, "b"), b"bbbb");
    assert_eq!(get(&v, sub.ino, "c"), b"");
    let r3 = v.root_hash().unwrap();
    let back = entry(&v, r3, &["top"]).unwrap();
    assert!(!back.deleted);
    assert_eq!(back.vv.compare(&tomb.vv), Causality::Dominates);
    // Every restored name dominates its tombstone.
    for p in [&["top", "a"][..], &["top", "sub"], &["top", "sub", "b"]] {
        let now = entry(&v, r3, p).unwrap();
        let was = entry(&v, r2, p);
        if let Some(was) = was {
            assert_eq!(now.vv.compare(&was.vv), Causality::Dominates, "{p:?}");
        }
    }
    // The namespace equals the tree: nothing left to commit.
    assert!(v.commit().unwrap().is_none());
}

#[test]
fn a_directory_goes_back_to_its_old_set_of_names() {
    let (_d, v) = new_vfs();
    let d = v.names().mkdir(ME, ROOT, b"d", 0o755).unwrap().ino;
    put(&v, d, "keep", b"old");
    let r1 = committed(&v);
    put(&v, d, "keep", b"new");
    put(&v, d, "extra", b"x");
    committed(&v);
    v.history().restore(&[b"d"], r1).unwrap().unwrap();
    assert_eq!(get(&v, d, "keep"), b"old");
    assert!(v.names().lookup(d, b"extra").is_err());
    let r3 = v.root_hash().unwrap();
    assert!(entry(&v, r3, &["d", "extra"]).unwrap().deleted);
}

#[test]
fn a_file_in_a_deleted_directory_brings_its_ancestor_back() {
    let (_d, v) = new_vfs();
    let d = v.names().mkdir(ME, ROOT, b"d", 0o750).unwrap().ino;
    put(&v, d, "f", b"f");
    put(&v, d, "g", b"g");
    let r1 = committed(&v);
    v.names().unlink(d, b"f").unwrap();
    v.names().unlink(d, b"g").unwrap();
    v.names().rmdir(ROOT, b"d").unwrap();
    committed(&v);
    v.history().restore(&[b"d", b"f"], r1).unwrap().unwrap();
    let d = v.names().lookup(ROOT, b"d").unwrap();
    assert_eq!(d.perm & 0o777, 0o750);
    assert_eq!(get(&v, d.ino, "f"), b"f");
    assert!(v.names().lookup(d.ino, b"g").is_err());
}

#[test]
fn bad_paths_are_refused() {
    let (_d, v) = new_vfs();
    put(&v, ROOT, "f", b"f");
    let r1 = committed(&v);
    assert!(matches!(
        v.history().restore(&[b"nope"], r1),
        Err(Error::NotFound)
    ));
    assert!(matches!(
        v.history().restore(&[b"f", b"x"], r1),
        Err(Error::NotFound)
    ));
    assert!(matches!(
        v.history().restore(&[], r1),
        Err(Error::InvalidArgument(_))
    ));
}
