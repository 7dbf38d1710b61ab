//! Hard links and the committed tree: a file keeps its one name in its
//! record and only further names in the `Links` keyspace; whatever the
//! links, renames, exchanges and unlinks, every name of a changed file
//! must be rebuilt by the next commit. Random sequences check that every
//! live name's committed entry has the file's size and mode, and that the
//! committed tree holds no name the live namespace lacks.

use backer_fs::store::{Kv, Space};
use backer_fs::tree::{dir, Kind, NodeStore};
use backer_fs::vfs::{Ino, RenameMode, SetAttr, ROOT};
use backer_fs::{Error, Hash};
use proptest::prelude::*;

use crate::util::{TestFs, ME};

const NAMES: [&str; 5] = ["a", "b", "c", "d/a", "d/b"];

#[derive(Clone, Debug)]
enum Op {
    /// Replace the content of a name with this many bytes.
    Write(usize, u16),
    Link(usize, usize),
    Unlink(usize),
    Rename(usize, usize, RenameMode),
    Chmod(usize, u32),
    Commit,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let n = 0..NAMES.len();
    prop_oneof![
        3 => (n.clone(), 0..5000u16).prop_map(|(i, len)| Op::Write(i, len)),
        3 => (n.clone(), n.clone()).prop_map(|(a, b)| Op::Link(a, b)),
        1 => n.clone().prop_map(Op::Unlink),
        2 => (n.clone(), n.clone(), prop::sample::select(vec![
            RenameMode::Replace, RenameMode::NoReplace, RenameMode::Exchange,
        ]))
            .prop_map(|(a, b, m)| Op::Rename(a, b, m)),
        1 => (n, prop::sample::select(vec![0o600u32, 0o644, 0o755])).prop_map(|(i, m)| Op::Chmod(i, m)),
        2 => Just(Op::Commit),
        1 => Just(Op::Reopen),
    ]
}

/// Nodes read straight from the engine.
struct KvNodes<'a>(&'a dyn Kv);

impl NodeStore for KvNodes<'_> {
    fn get_node(&self, hash: &Hash) -> backer_fs::Result<Option<Vec<u8>>> {
        self.0.get(Space::Nodes, hash.as_bytes())
    }

    fn put_node(&mut self, _: Hash, _: Vec<u8>) -> backer_fs::Result<()> {
        Err(Error::ReadOnly)
    }
}

/// (parent inode, name) of one of [`NAMES`].
fn split(fs: &TestFs, i: usize) -> (Ino, &'static [u8]) {
    match NAMES[i].split_once('/') {
        Some((d, n)) => (fs.path(d).unwrap(), n.as_bytes()),
        None => (ROOT, NAMES[i].as_bytes()),
    }
}

fn run(fs: &mut TestFs, op: &Op) {
    let v = fs.vfs();
    // Errors (no such name, name taken...) are part of the game.
    match *op {
        Op::Write(i, len) => {
            let (p, n) = split(fs, i);
            let ino = match v.names().lookup(p, n) {
                Ok(a) => a.ino,
                Err(_) => match v.names().create(ME, p, n, 0o644, false) {
                    Ok((a, fh)) => {
                        v.files().release(fh).unwrap();
                        a.ino
                    }
                    Err(_) => return,
                },
            };
            let fh = v.files().open(ino, true, false).unwrap();
            v.files()
                .write(fh, 0, &vec![i as u8 + 1; usize::from(len)])
                .unwrap();
            v.files().release(fh).unwrap();
        }
        Op::Link(a, b) => {
            let ((pa, na), (pb, nb)) = (split(fs, a), split(fs, b));
            if let Ok(attr) = v.names().lookup(pa, na) {
                let _ = v.names().link(attr.ino, pb, nb);
            }
        }
        Op::Unlink(i) => {
            let (p, n) = split(fs, i);
            let _ = v.names().unlink(p, n);
        }
        Op::Rename(a, b, mode) => {
            let ((pa, na), (pb, nb)) = (split(fs, a), split(fs, b));
            let _ = v.names().rename(pa, na, pb, nb, mode);
        }
        Op::Chmod(i, mode) => {
            let (p, n) = split(fs, i);
            if let Ok(attr) = v.names().lookup(p, n) {
                let set = SetAttr {
                    mode: Some(mode),
                    ..Default::default()
                };
                v.names().setattr(attr.ino, &set).unwrap();
            }
        }
        Op::Commit => check(fs),
        Op::Reopen => {
            v.sync().unwrap();
            fs.reopen();
        }
    }
}

/// Commits, then compares the committed tree with the live namespace.
fn check(fs: &TestFs) {
    let v = fs.vfs();
    v.commit().unwrap();
    let store = v.store();
    let nodes = KvNodes(store.kv());
    let root = v.root_hash().unwrap();
    let d = dir::get(&nodes, root, b"d").unwrap().expect("d committed");
    for (dir_ino, dir_hash, at) in [(ROOT, root, ""), (fs.path("d").unwrap(), d.hash, "d/")] {
        for e in v.names().readdir(dir_ino, 0, usize::MAX).unwrap() {
            if e.kind == Kind::Dir {
                continue;
            }
            let name = String::from_utf8_lossy(&e.name);
            let attr = v.names().getattr(e.ino).unwrap();
            let c = dir::get(&nodes, dir_hash, &e.name)
                .unwrap()
                .unwrap_or_else(|| panic!("{at}{name} is not committed"));
            assert!(!c.deleted, "{at}{name} committed as deleted");
            assert_eq!(c.size, attr.size, "committed size of {at}{name}");
            assert_eq!(c.mode & 0o7777, attr.perm, "committed mode of {at}{name}");
        }
        for c in dir::entries(&nodes, dir_hash).unwrap() {
            if !c.deleted && c.kind != Kind::Dir {
                let name = String::from_utf8_lossy(&c.name);
                assert!(
                    v.names().lookup(dir_ino, &c.name).is_ok(),
                    "{at}{name} is committed but gone"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_name_of_a_changed_file_is_committed(ops in prop::collection::vec(op(), 1..40)) {
        let mut fs = TestFs::new();
        fs.vfs().names().mkdir(ME, ROOT, b"d", 0o755).unwrap();
        for op in &ops {
            run(&mut fs, op);
        }
        check(&fs);
        fs.vfs().sync().unwrap();
        fs.reopen();
        check(&fs);
    }
}

#[test]
fn a_second_name_of_a_file_sees_its_changes() {
    let fs = TestFs::new();
    fs.vfs().names().mkdir(ME, ROOT, b"d", 0o755).unwrap();
    let ops = [
        Op::Write(0, 10),
        Op::Commit,
        Op::Link(0, 3),
        Op::Commit,
        // Through the first name: both entries must change.
        Op::Write(0, 20),
        Op::Commit,
        // The first name goes: the second stays, and follows changes.
        Op::Unlink(0),
        Op::Write(3, 30),
        Op::Chmod(3, 0o600),
        Op::Commit,
        Op::Rename(3, 1, RenameMode::Replace),
        Op::Write(1, 40),
        Op::Commit,
    ];
    let mut fs = fs;
    for op in &ops {
        run(&mut fs, op);
    }
    assert_eq!(
        fs.vfs()
            .names()
            .getattr(fs.path("b").unwrap())
            .unwrap()
            .size,
        40
    );
}
