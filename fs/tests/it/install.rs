//! `Vfs::install_with`: a tree made on one store installed on another
//! makes the second's namespace equal to the first's, atomically.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use backer_fs::store::kv::{KeyValue, ALL_SPACES};
use backer_fs::store::{Batch, Kv, Space, Txn};
use backer_fs::tree::content::{self, Extent};
use backer_fs::tree::{dir, Causality, Entry, Kind, NodeStore, Timestamp, VersionVector};
use backer_fs::vfs::{Installed, NewNode, RenameMode, SetAttr, Vfs, RESERVED_NAME, ROOT};
use backer_fs::{Error, Hash, NodeId};

use crate::util::{random_bytes, TestFs, ME};

/// Reads nodes from a store's engine, keeping a copy of each one read.
struct Nodes<'a> {
    kv: &'a dyn Kv,
    seen: RefCell<BTreeMap<Hash, Vec<u8>>>,
}

impl<'a> Nodes<'a> {
    fn new(kv: &'a dyn Kv) -> Self {
        Nodes {
            kv,
            seen: RefCell::default(),
        }
    }
}

impl NodeStore for Nodes<'_> {
    fn get_node(&self, hash: &Hash) -> backer_fs::Result<Option<Vec<u8>>> {
        let got = self.kv.get(Space::Nodes, hash.as_bytes())?;
        if let Some(bytes) = &got {
            self.seen.borrow_mut().insert(*hash, bytes.clone());
        }
        Ok(got)
    }

    fn put_node(&mut self, _: Hash, _: Vec<u8>) -> backer_fs::Result<()> {
        Err(Error::ReadOnly)
    }
}

/// Copies every node and chunk reachable from `root` in `from` into `to`,
/// as replication would.
fn copy_tree(from: &Vfs, to: &Vfs, root: Hash) {
    let (src, dst) = (from.store(), to.store());
    let nodes = Nodes::new(src.kv());
    let mut chunks = BTreeSet::new();
    let mut dirs = vec![root];
    while let Some(d) = dirs.pop() {
        for e in dir::entries(&nodes, d).unwrap() {
            match e.kind {
                _ if e.deleted => {}
                Kind::Dir => dirs.push(e.hash),
                Kind::File => {
                    for x in content::extents(&nodes, e.hash).unwrap() {
                        if let Extent::Data { hash, .. } = x {
                            chunks.insert(hash);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut batch = Batch::default();
    for (hash, bytes) in nodes.seen.into_inner() {
        batch.put(Space::Nodes, hash.as_bytes().to_vec(), bytes);
    }
    dst.kv().apply(batch).unwrap();
    let mut txn = Txn::new(dst.kv());
    for hash in chunks {
        let data = src.read_chunk(&hash).unwrap();
        assert_eq!(dst.put_chunk(&mut txn, &data).unwrap(), hash);
    }
    txn.commit().unwrap();
}

/// Commits `a`, copies its tree to `b` and installs it there.
fn sync_to(a: &TestFs, b: &TestFs) -> (Hash, Installed) {
    a.vfs().sync().unwrap();
    let root = a.vfs().root_hash().unwrap();
    copy_tree(a.vfs(), b.vfs(), root);
    let done = b
        .vfs()
        .install_with(|_, _| Ok(Some((root, root))))
        .unwrap()
        .expect("something to install");
    assert_eq!(b.vfs().root_hash().unwrap(), root);
    assert_eq!(done.commit.root, root);
    (root, done)
}

/// What one name looks like through the vfs.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    path: String,
    kind: Kind,
    perm: u32,
    size: u64,
    blocks: u64,
    mtime: Timestamp,
    rdev: u64,
    /// Directories only: links are local (hard links are not replicated).
    dir_nlink: Option<u32>,
    /// File bytes or symlink target.
    data: Vec<u8>,
}

/// Everything under the root, through lookup, readdir, getattr, read and
/// readlink. `perm_mask` masks the permission bits (setuid and setgid do
/// not travel).
fn listing(fs: &TestFs, perm_mask: u32) -> Vec<Seen> {
    let v = fs.vfs();
    let mut out = Vec::new();
    let mut todo = vec![(ROOT, String::new())];
    while let Some((dir, prefix)) = todo.pop() {
        for d in v.names().readdir(dir, 0, usize::MAX).unwrap() {
            if d.name == b"." || d.name == b".." {
                continue;
            }
            let path = format!("{prefix}/{}", String::from_utf8_lossy(&d.name));
            let a = v.names().lookup(dir, &d.name).unwrap();
            assert_eq!((a.ino, a.kind), (d.ino, d.kind), "{path}");
            let data = match a.kind {
                Kind::File => fs.get(a.ino),
                Kind::Symlink => v.names().readlink(a.ino).unwrap(),
                Kind::Dir => {
                    todo.push((a.ino, path.clone()));
                    Vec::new()
                }
                _ => Vec::new(),
            };
            out.push(Seen {
                path,
                kind: a.kind,
                perm: a.perm & perm_mask,
                size: a.size,
                blocks: a.blocks,
                mtime: a.mtime,
                rdev: a.rdev,
                dir_nlink: (a.kind == Kind::Dir).then_some(a.nlink),
                data,
            });
        }
    }
    out.sort_by(|x, y| x.path.cmp(&y.path));
    out
}

fn assert_same(a: &TestFs, b: &TestFs) {
    let (la, lb) = (listing(a, !0o6000), listing(b, !0));
    assert_eq!(la.len(), lb.len());
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!(x, y);
    }
}

/// A mixed tree: nested directories, files of some hundred KiB, an empty
/// file, a sparse one, a setuid one, a symlink, a fifo, a device and a hard
/// link.
fn make_mixed(a: &TestFs) {
    let v = a.vfs();
    let docs = v.names().mkdir(ME, ROOT, b"docs", 0o755).unwrap().ino;
    let deep = v.names().mkdir(ME, docs, b"deep", 0o700).unwrap().ino;
    let er = v.names().mkdir(ME, deep, b"er", 0o755).unwrap().ino;
    let readme = a.put(docs, "readme", &random_bytes(300 << 10, 1));
    a.put(er, "big", &random_bytes(700 << 10, 2));
    a.put(ROOT, "small", b"hello");
    a.put(ROOT, "empty", b"");
    let (sparse, fh) = v.names().create(ME, ROOT, b"sparse", 0o640, false).unwrap();
    v.files().write(fh, 1 << 20, b"tail").unwrap();
    v.files().release(fh).unwrap();
    assert!(v.names().getattr(sparse.ino).unwrap().blocks < 8);
    let tool = a.put(ROOT, "tool", b"#!/bin/sh\n");
    let suid = SetAttr {
        mode: Some(0o4755),
        ..SetAttr::default()
    };
    v.names().setattr(tool, &suid).unwrap();
    v.names()
        .symlink(ME, ROOT, b"link", b"docs/readme")
        .unwrap();
    v.names()
        .mknod(ME, ROOT, b"pipe", NewNode::Special(Kind::Fifo, 0), 0o644)
        .unwrap();
    v.names()
        .mknod(
            ME,
            docs,
            b"tty",
            NewNode::Special(Kind::CharDev, 0x0401),
            0o600,
        )
        .unwrap();
    v.names().link(readme, ROOT, b"readme-link").unwrap();
    let swap = v.names().mkdir(ME, ROOT, b"swap", 0o755).unwrap().ino;
    a.put(swap, "inner", b"inner");
}

#[test]
fn installed_trees_equal_their_source_and_survive_reopen() {
    let a = TestFs::new();
    let mut b = TestFs::new();
    make_mixed(&a);
    let (_, first) = sync_to(&a, &b);
    assert_same(&a, &b);
    assert_eq!(listing(&b, !0).len(), 15);
    assert!(first.names.contains(&(ROOT, b"docs".to_vec())));
    let bv = b.vfs();
    let owner = bv.owner();
    let tool = bv.names().getattr(b.path("tool").unwrap()).unwrap();
    assert_eq!(
        (tool.perm, tool.uid, tool.gid),
        (0o755, owner.uid, owner.gid)
    );
    // Hard links are local: the peer's two names are two files here.
    let (l1, l2) = (
        b.path("docs/readme").unwrap(),
        b.path("readme-link").unwrap(),
    );
    assert_ne!(l1, l2);
    assert_eq!(bv.names().getattr(l1).unwrap().nlink, 1);
    // Nothing is left to fold: the namespace is the tree.
    assert_eq!(bv.commit().unwrap(), None);

    // Edits on a: content, a deleted directory, a rename, new files, a
    // mode change.
    let v = a.vfs();
    let docs_a = a.path("docs").unwrap();
    a.put(docs_a, "readme", &random_bytes(200 << 10, 3));
    let deep = a.path("docs/deep").unwrap();
    let er = a.path("docs/deep/er").unwrap();
    v.names().unlink(er, b"big").unwrap();
    v.names().rmdir(deep, b"er").unwrap();
    v.names().rmdir(docs_a, b"deep").unwrap();
    v.names()
        .rename(ROOT, b"small", docs_a, b"small2", RenameMode::Replace)
        .unwrap();
    a.put(ROOT, "new1", &random_bytes(50_000, 4));
    a.put(docs_a, "new2", b"two");
    let empty = a.path("empty").unwrap();
    let mode = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    v.names().setattr(empty, &mode).unwrap();
    // Kinds change: a directory becomes a file, a fifo a directory, a
    // device a file.
    let swap = a.path("swap").unwrap();
    v.names().unlink(swap, b"inner").unwrap();
    v.names().rmdir(ROOT, b"swap").unwrap();
    a.put(ROOT, "swap", b"now a file");
    v.names().unlink(ROOT, b"pipe").unwrap();
    let pipe = v.names().mkdir(ME, ROOT, b"pipe", 0o750).unwrap().ino;
    a.put(pipe, "in-pipe", b"x");
    v.names().unlink(docs_a, b"tty").unwrap();
    a.put(docs_a, "tty", b"not a device");

    let docs_b = b.path("docs").unwrap();
    let deep_b = b.path("docs/deep").unwrap();
    let empty_b = b.path("empty").unwrap();
    let swap_b = b.path("swap").unwrap();
    let (root, second) = sync_to(&a, &b);
    assert_same(&a, &b);
    for (parent, name) in [
        (ROOT, &b"small"[..]),
        (docs_b, b"small2"),
        (docs_b, b"deep"),
        (deep_b, b"er"),
        (docs_b, b"readme"),
        (ROOT, b"readme-link"),
        (ROOT, b"new1"),
        (docs_b, b"new2"),
        (ROOT, b"swap"),
        (swap_b, b"inner"),
        (ROOT, b"pipe"),
        (docs_b, b"tty"),
    ] {
        let n = (parent, name.to_vec());
        assert!(second.names.contains(&n), "{n:?} in {:?}", second.names);
    }
    assert_eq!(second.commit.changed, second.names.len());
    // A mode change is made in place: same inode, not a new name.
    assert_eq!(b.path("empty").unwrap(), empty_b);
    assert!(!second.names.contains(&(ROOT, b"empty".to_vec())));
    assert!(second.inodes.contains(&empty_b) && second.inodes.contains(&deep_b));
    let log = backer_fs::vfs::read_log(b.vfs().store().kv(), 1).unwrap();
    assert_eq!(log[0].root, root.0);
    assert_eq!(log[0].parents.len(), 2);

    b.reopen();
    assert_eq!(b.vfs().root_hash().unwrap(), root);
    assert_same(&a, &b);
    assert_eq!(b.vfs().commit().unwrap(), None);
}

fn count(fs: &TestFs, space: Space) -> usize {
    let store = fs.vfs().store();
    store.kv().scan(space, b"", None, usize::MAX).unwrap().len()
}

#[test]
fn an_open_file_replaced_by_a_peer_keeps_its_old_bytes() {
    let a = TestFs::new();
    let b = TestFs::new();
    let old = random_bytes(400 << 10, 5);
    let new = random_bytes(300 << 10, 6);
    a.put(ROOT, "f", &old);
    sync_to(&a, &b);
    let bv = b.vfs();
    let ino = b.path("f").unwrap();
    let fh = bv.files().open(ino, false, false).unwrap();

    // A mode change keeps the inode: the handle goes on working.
    let fa = a.path("f").unwrap();
    let mode = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    a.vfs().names().setattr(fa, &mode).unwrap();
    let (_, done) = sync_to(&a, &b);
    assert!(done.names.is_empty() && done.inodes == vec![ino]);
    assert_eq!(b.path("f").unwrap(), ino);
    assert_eq!(bv.names().getattr(ino).unwrap().perm, 0o600);

    // New content: a new inode at the name, the old one an orphan.
    a.put(ROOT, "f", &new);
    let (_, done) = sync_to(&a, &b);
    assert!(done.names.contains(&(ROOT, b"f".to_vec())));
    assert!(done.inodes.contains(&ino));
    let now = b.path("f").unwrap();
    assert_ne!(now, ino);
    assert_eq!(b.get(now), new);
    let mut got = Vec::new();
    while got.len() < old.len() {
        let piece = bv.files().read(fh, got.len() as u64, 1 << 20).unwrap();
        assert!(!piece.is_empty());
        got.extend_from_slice(&piece);
    }
    assert!(got == old, "the old handle must read the old bytes");
    assert_eq!(bv.names().getattr(ino).unwrap().nlink, 0);
    assert_eq!(count(&b, Space::Orphans), 1);
    bv.files().release(fh).unwrap();
    assert_eq!(count(&b, Space::Orphans), 0);
    assert!(matches!(bv.names().getattr(ino), Err(Error::NotFound)));
    assert_same(&a, &b);

    // A file open in a directory the peer deleted: an orphan too.
    let d = a.vfs().names().mkdir(ME, ROOT, b"d", 0o755).unwrap().ino;
    a.put(d, "g", b"in d");
    sync_to(&a, &b);
    let g = b.path("d/g").unwrap();
    let fh = bv.files().open(g, false, false).unwrap();
    a.vfs().names().unlink(d, b"g").unwrap();
    a.vfs().names().rmdir(ROOT, b"d").unwrap();
    let (_, done) = sync_to(&a, &b);
    assert!(done.names.contains(&(ROOT, b"d".to_vec())));
    assert!(matches!(b.path("d"), Err(Error::NotFound)));
    assert_eq!(bv.files().read(fh, 0, 100).unwrap(), b"in d");
    assert_eq!(count(&b, Space::Orphans), 1);
    bv.files().release(fh).unwrap();
    assert_eq!(count(&b, Space::Orphans), 0);
    assert_same(&a, &b);
}

#[test]
fn a_peer_changing_one_name_of_a_hard_link_splits_it() {
    let a = TestFs::new();
    let b = TestFs::new();
    // The link is made on b, and its tree installed on a.
    let f = b.put(ROOT, "f", b"shared");
    b.vfs().names().link(f, ROOT, b"g").unwrap();
    sync_to(&b, &a);
    let g = a.path("g").unwrap();
    let mode = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    a.vfs().names().setattr(g, &mode).unwrap();
    let (_, done) = sync_to(&a, &b);
    assert!(done.names.contains(&(ROOT, b"g".to_vec())));
    let g = b.path("g").unwrap();
    assert_ne!(g, f);
    assert_eq!(b.vfs().names().getattr(f).unwrap().nlink, 1);
    assert_eq!(b.vfs().names().getattr(f).unwrap().perm, 0o644);
    assert_eq!(b.vfs().names().getattr(g).unwrap().perm, 0o600);
    assert_eq!(b.get(g), b"shared");
    assert_same(&a, &b);
    assert_eq!(b.vfs().commit().unwrap(), None);
}

/// The entry `name` in the root of `fs`'s committed tree.
fn root_entry(fs: &TestFs, name: &[u8]) -> Entry {
    let store = fs.vfs().store();
    let root = fs.vfs().root_hash().unwrap();
    dir::get(&Nodes::new(store.kv()), root, name)
        .unwrap()
        .unwrap()
}

#[test]
fn a_local_edit_after_install_dominates_the_installed_version() {
    let a = TestFs::new();
    let b = TestFs::new();
    a.put(ROOT, "f", b"one");
    a.vfs().names().mkdir(ME, ROOT, b"d", 0o755).unwrap();
    sync_to(&a, &b);
    let theirs = root_entry(&a, b"f");
    assert_eq!(root_entry(&b, b"f"), theirs);
    b.put(ROOT, "f", b"two");
    b.vfs().commit().unwrap().unwrap();
    let mine = root_entry(&b, b"f");
    assert_eq!(mine.vv.compare(&theirs.vv), Causality::Dominates);
    assert_eq!(mine.modified_by, b.vfs().store().node_id());
    // A directory too, through an edit beneath it.
    let theirs = root_entry(&a, b"d");
    let d = b.path("d").unwrap();
    b.put(d, "g", b"x");
    b.vfs().commit().unwrap().unwrap();
    let mine = root_entry(&b, b"d");
    assert_eq!(mine.vv.compare(&theirs.vv), Causality::Dominates);
}

/// Every key and value of the store.
fn snapshot(fs: &TestFs) -> Vec<Vec<KeyValue>> {
    let store = fs.vfs().store();
    ALL_SPACES
        .iter()
        .map(|s| store.kv().scan(*s, b"", None, usize::MAX).unwrap())
        .collect()
}

fn dir_entry(name: &[u8], kind: Kind, hash: Hash) -> Entry {
    let mut vv = VersionVector::new();
    vv.bump(NodeId([7; 32]));
    Entry {
        name: name.to_vec(),
        kind,
        mode: 0o755,
        mtime: Timestamp {
            secs: 1_700_000_000,
            nanos: 0,
        },
        size: 0,
        hash,
        target: Vec::new(),
        rdev: 0,
        vv,
        modified_by: NodeId([7; 32]),
        deleted: false,
    }
}

#[test]
fn nothing_to_install_writes_nothing() {
    let b = TestFs::new();
    b.put(ROOT, "f", b"data");
    b.vfs().commit().unwrap().unwrap();
    let before = snapshot(&b);
    let v = b.vfs();
    assert_eq!(v.install_with(|_, _| Ok(None)).unwrap(), None);
    assert_eq!(
        v.install_with(|_, base| Ok(Some((base, base)))).unwrap(),
        None
    );
    // Nodes stored through `nodes` are dropped with the transaction.
    let got = v.install_with(|mut nodes, base| {
        dir::build(&mut nodes, &[dir_entry(b"x", Kind::Fifo, Hash::ZERO)])?;
        Ok(Some((base, Hash::ZERO)))
    });
    assert_eq!(got.unwrap(), None);
    assert!(snapshot(&b) == before, "the store changed");
}

#[test]
fn bad_trees_are_refused_whole() {
    let b = TestFs::new();
    b.put(ROOT, "f", b"data");
    b.vfs().commit().unwrap().unwrap();
    let before = snapshot(&b);
    let listed = listing(&b, !0);
    let v = b.vfs();
    // `.backer` in the root.
    let reserved = v.install_with(|mut nodes, base| {
        let mut all = dir::entries(&nodes, base)?;
        let empty = dir::empty(&mut nodes)?;
        all.push(dir_entry(b"zz", Kind::Dir, empty));
        all.insert(0, dir_entry(RESERVED_NAME, Kind::Dir, empty));
        let root = dir::build(&mut nodes, &all)?;
        Ok(Some((root, root)))
    });
    assert!(matches!(reserved, Err(Error::InvalidName)), "{reserved:?}");
    // Directories nested one deeper than MAX_DEPTH.
    let chain = |depth: u32| {
        move |mut nodes: &mut dyn NodeStore, base: Hash| -> backer_fs::Result<_> {
            let mut hash = dir::empty(&mut nodes)?;
            for _ in 1..depth {
                hash = dir::build(&mut nodes, &[dir_entry(b"d", Kind::Dir, hash)])?;
            }
            let mut all = dir::entries(&nodes, base)?;
            all.push(dir_entry(b"top", Kind::Dir, hash));
            let root = dir::build(&mut nodes, &all)?;
            Ok(Some((root, root)))
        }
    };
    let max = backer_fs::vfs::MAX_DEPTH;
    let deep = v.install_with(chain(max + 1));
    assert!(matches!(deep, Err(Error::TooDeep)), "{deep:?}");
    assert!(
        snapshot(&b) == before,
        "a refused install changed the store"
    );
    assert_eq!(listing(&b, !0), listed);
    // Exactly MAX_DEPTH is fine.
    v.install_with(chain(max)).unwrap().unwrap();
    let mut ino = b.path("top").unwrap();
    for _ in 1..max {
        ino = v.names().lookup(ino, b"d").unwrap().ino;
    }
    assert!(matches!(
        v.names().mkdir(ME, ino, b"more", 0o755),
        Err(Error::TooDeep)
    ));
}

#[test]
fn local_writes_to_a_file_a_peer_replaced_become_a_conflict_copy() {
    let a = TestFs::new();
    let b = TestFs::new();
    a.put(ROOT, "doc.txt", b"version 1");
    sync_to(&a, &b);
    let bv = b.vfs();
    let ino = b.path("doc.txt").unwrap();
    let fh = bv.files().open(ino, false, false).unwrap();
    bv.files()
        .write(fh, 0, b"local edit, not yet flushed")
        .unwrap();

    // The peer saves its own version meanwhile.
    a.put(ROOT, "doc.txt", b"the peer's version");
    sync_to(&a, &b);
    assert_eq!(b.get(b.path("doc.txt").unwrap()), b"the peer's version");
    bv.files().write(fh, 0, b"LOCAL").unwrap();
    bv.files().release(fh).unwrap();

    // The local bytes live on beside the name, as a new file to replicate.
    let names: Vec<String> = bv
        .names()
        .readdir(ROOT, 0, 100)
        .unwrap()
        .into_iter()
        .map(|e| String::from_utf8(e.name).unwrap())
        .filter(|n| n != "." && n != "..")
        .collect();
    let copy = names
        .iter()
        .find(|n| n.starts_with("doc.sync-conflict-") && n.ends_with(".txt"))
        .unwrap_or_else(|| panic!("no conflict copy in {names:?}"));
    assert_eq!(b.get(b.path(copy).unwrap()), b"LOCAL edit, not yet flushed");
    assert_eq!(count(&b, Space::Orphans), 0);
    assert!(bv.commit().unwrap().is_some(), "the copy is committed");

    // An open file that was only read is let go, as before.
    let ino = b.path("doc.txt").unwrap();
    let fh = bv.files().open(ino, false, false).unwrap();
    a.put(ROOT, "doc.txt", b"third");
    sync_to(&a, &b);
    bv.files().release(fh).unwrap();
    // (This harness installs a's tree as is, so the first copy is gone too.)
    let copies = bv
        .names()
        .readdir(ROOT, 0, 100)
        .unwrap()
        .into_iter()
        .filter(|e| e.name.windows(15).any(|w| w == b".sync-conflict-"))
        .count();
    assert_eq!(copies, 0, "no copy of a file that was not written");
}
