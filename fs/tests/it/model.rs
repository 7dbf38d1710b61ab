//! A reference-model test: random sequences of requests run through the
//! mount's door (`vfs::Door`, on a real sled store) and against a small
//! in-memory model; every read, readdir, getattr and error must agree.
//! The store is reopened in the middle of sequences. The model knows the
//! door's rules: `.backer` in the root is the read-only history view
//! (found, never listed, EROFS to every write naming it), and a write or
//! truncate by a caller without CAP_FSETID drops setuid/setgid.

use std::collections::BTreeMap;

use backer_fs::vfs::{Caller, Ino, NewNode, OpenMode, RenameMode, SetAttr};
use proptest::prelude::*;

use crate::util::TestFs;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    /// Bytes and permission bits.
    File(Vec<u8>, u32),
    Dir,
}

/// The history view's folder in the root.
const VIEW: &str = ".backer";

/// A caller with or without CAP_FSETID.
fn caller(privileged: bool) -> Caller {
    Caller {
        uid: if privileged { 0 } else { 1000 },
        gid: 1000,
        pid: 1,
        may_keep_setid: privileged,
    }
}

/// The reference rule: a write or truncate by a caller without CAP_FSETID
/// drops setuid, and setgid when the group may execute.
fn drop_setid(mode: u32) -> u32 {
    if mode & 0o010 != 0 {
        mode & !0o6000
    } else {
        mode & !0o4000
    }
}

/// Whether a write naming `p` names the view (or something in it).
fn names_view(p: &str) -> bool {
    p == VIEW || p.starts_with(".backer/")
}

/// Paths are '/'-joined names from a small alphabet, at most 2 deep, so
/// operations collide often.
#[derive(Clone, Debug)]
enum Op {
    Create(String),
    Mkdir(String),
    /// Path, offset, bytes, whether the writer holds CAP_FSETID.
    Write(String, u32, Vec<u8>, bool),
    Truncate(String, u32, bool),
    Chmod(String, u32),
    Read(String),
    Unlink(String),
    Rmdir(String),
    Rename(String, String, RenameMode),
    Readdir(String),
    Getattr(String),
    Commit,
    Reopen,
}

fn path() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec!["a", "b", "c", VIEW]);
    prop::collection::vec(name, 1..=2).prop_map(|v| v.join("/"))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => path().prop_map(Op::Create),
        2 => path().prop_map(Op::Mkdir),
        4 => (path(), 0u32..300_000, prop::collection::vec(any::<u8>(), 0..2000), any::<bool>())
            .prop_map(|(p, o, d, k)| Op::Write(p, o, d, k)),
        1 => (path(), 0u32..400_000, any::<bool>()).prop_map(|(p, s, k)| Op::Truncate(p, s, k)),
        2 => (path(), prop::sample::select(vec![0o644, 0o4755, 0o2755, 0o6745, 0o2644]))
            .prop_map(|(p, m)| Op::Chmod(p, m)),
        3 => path().prop_map(Op::Read),
        2 => path().prop_map(Op::Unlink),
        1 => path().prop_map(Op::Rmdir),
        2 => (path(), path(), prop::sample::select(vec![RenameMode::Replace, RenameMode::NoReplace, RenameMode::Exchange]))
            .prop_map(|(a, b, m)| Op::Rename(a, b, m)),
        1 => prop::sample::select(vec!["", "a", "b", VIEW]).prop_map(|p| Op::Readdir(p.to_string())),
        2 => path().prop_map(Op::Getattr),
        1 => Just(Op::Commit),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Default)]
struct Model {
    nodes: BTreeMap<String, Node>,
}

fn parent(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(d, _)| d)
}

impl Model {
    fn dir_ok(&self, d: &str) -> Result<(), i32> {
        if d.is_empty() || d == VIEW {
            return Ok(());
        }
        match self.nodes.get(d) {
            Some(Node::Dir) => Ok(()),
            Some(Node::File(..)) => Err(libc::ENOTDIR),
            None => Err(libc::ENOENT),
        }
    }

    /// Resolves like the kernel does: each component looked up in turn.
    fn lookup(&self, p: &str) -> Result<&Node, i32> {
        self.dir_ok(parent(p))?;
        if p == VIEW {
            return Ok(&Node::Dir);
        }
        if parent(p) == VIEW {
            return Err(libc::ENOENT); // it holds only "snapshots"
        }
        self.nodes.get(p).ok_or(libc::ENOENT)
    }

    fn children(&self, d: &str) -> Vec<String> {
        let prefix = if d.is_empty() {
            String::new()
        } else {
            format!("{d}/")
        };
        self.nodes
            .keys()
            .filter(|k| {
                k.starts_with(&prefix) && !k[prefix.len()..].contains('/') && k.len() > prefix.len()
            })
            .map(|k| k[prefix.len()..].to_string())
            .collect()
    }

    fn create(&mut self, p: &str, node: Node) -> Result<(), i32> {
        self.dir_ok(parent(p))?;
        if names_view(p) {
            return Err(libc::EROFS);
        }
        if self.nodes.contains_key(p) {
            return Err(libc::EEXIST);
        }
        self.nodes.insert(p.to_string(), node);
        Ok(())
    }

    /// A file's bytes and mode, to write (found: the view refuses it).
    fn file_mut(&mut self, p: &str) -> Result<(&mut Vec<u8>, &mut u32), i32> {
        self.lookup(p)?;
        if names_view(p) {
            return Err(libc::EROFS);
        }
        match self.nodes.get_mut(p) {
            Some(Node::File(d, m)) => Ok((d, m)),
            _ => Err(libc::EISDIR),
        }
    }

    fn remove(&mut self, p: &str, dir: bool) -> Result<(), i32> {
        self.dir_ok(parent(p))?;
        if names_view(p) {
            return Err(libc::EROFS);
        }
        match (self.lookup(p)?, dir) {
            (Node::Dir, false) => return Err(libc::EISDIR),
            (Node::File(..), true) => return Err(libc::ENOTDIR),
            (Node::Dir, true) if !self.children(p).is_empty() => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        self.nodes.remove(p);
        Ok(())
    }

    fn rename(&mut self, a: &str, b: &str, mode: RenameMode) -> Result<(), i32> {
        self.dir_ok(parent(a))?;
        self.dir_ok(parent(b))?;
        if names_view(a) || names_view(b) {
            return Err(libc::EROFS);
        }
        let src = self.nodes.get(a).ok_or(libc::ENOENT)?.clone();
        let dst = self.nodes.get(b).cloned();
        if src == Node::Dir && (b == a || b.starts_with(&format!("{a}/"))) && a != b {
            return Err(libc::EINVAL);
        }
        match (mode, &dst) {
            (RenameMode::NoReplace, Some(_)) => return Err(libc::EEXIST),
            (RenameMode::Exchange, None) => return Err(libc::ENOENT),
            (RenameMode::Exchange, Some(d)) => {
                if *d == Node::Dir && a.starts_with(&format!("{b}/")) {
                    return Err(libc::EINVAL);
                }
                if a == b {
                    return Ok(());
                }
                let moved_a = self.take_subtree(a);
                let moved_b = self.take_subtree(b);
                self.put_subtree(b, moved_a);
                self.put_subtree(a, moved_b);
                return Ok(());
            }
            _ => {}
        }
        if a == b {
            return Ok(());
        }
        if let Some(d) = &dst {
            match (&src, d) {
                (Node::Dir, Node::File(..)) => return Err(libc::ENOTDIR),
                (Node::File(..), Node::Dir) => return Err(libc::EISDIR),
                (Node::Dir, Node::Dir) if !self.children(b).is_empty() => {
                    return Err(libc::ENOTEMPTY)
                }
                _ => {}
            }
            self.nodes.remove(b);
        }
        let moved = self.take_subtree(a);
        self.put_subtree(b, moved);
        Ok(())
    }

    fn take_subtree(&mut self, p: &str) -> Vec<(String, Node)> {
        let keys: Vec<String> = self
            .nodes
            .keys()
            .filter(|k| *k == p || k.starts_with(&format!("{p}/")))
            .cloned()
            .collect();
        keys.into_iter()
            .map(|k| {
                let n = self.nodes.remove(&k).unwrap();
                (k[p.len()..].to_string(), n)
            })
            .collect()
    }

    fn put_subtree(&mut self, p: &str, nodes: Vec<(String, Node)>) {
        for (rest, n) in nodes {
            self.nodes.insert(format!("{p}{rest}"), n);
        }
    }
}

/// Resolves a path by lookups through the door, as the kernel would.
fn resolve(fs: &TestFs, p: &str) -> backer_fs::Result<Ino> {
    let door = fs.door();
    let mut ino = backer_fs::vfs::ROOT;
    for part in p.split('/').filter(|p| !p.is_empty()) {
        ino = door.lookup(ino, part.as_bytes())?.ino;
    }
    Ok(ino)
}

/// The door side: the parent resolved, and the last name.
fn split(fs: &TestFs, p: &str) -> Result<(Ino, Vec<u8>), i32> {
    let (d, name) = p.rsplit_once('/').unwrap_or(("", p));
    let dir = resolve(fs, d).map_err(|e| e.errno())?;
    // The kernel walks into the parent: it must be a directory.
    if fs.door().getattr(dir).unwrap().kind != backer_fs::tree::Kind::Dir {
        return Err(libc::ENOTDIR);
    }
    Ok((dir, name.as_bytes().to_vec()))
}

const RW: OpenMode = OpenMode {
    write: true,
    truncate: false,
    append: false,
};

fn run(fs: &mut TestFs, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let door = fs.door();
    let me = caller(false);
    match op {
        Op::Create(p) => {
            let want = model.create(p, Node::File(vec![], 0o644));
            let got = split(fs, p).and_then(|(d, n)| {
                let (a, fh) = door
                    .create(&me, d, &n, 0o644, 0, RW)
                    .map_err(|e| e.errno())?;
                door.release(a.ino, fh).map_err(|e| e.errno())
            });
            prop_assert_eq!(got, want, "create {}", p);
        }
        Op::Mkdir(p) => {
            let want = model.create(p, Node::Dir);
            let got = split(fs, p).and_then(|(d, n)| {
                door.mknod(&me, d, &n, NewNode::Dir, 0o755, 0)
                    .map(|_| ())
                    .map_err(|e| e.errno())
            });
            prop_assert_eq!(got, want, "mkdir {}", p);
        }
        Op::Write(p, off, data, privileged) => {
            let want = model.file_mut(p).map(|(f, mode)| {
                let end = *off as usize + data.len();
                // A write of nothing changes nothing, wherever it is.
                if !data.is_empty() {
                    if f.len() < end {
                        f.resize(end, 0);
                    }
                    f[*off as usize..end].copy_from_slice(data);
                }
                if !privileged {
                    *mode = drop_setid(*mode);
                }
            });
            let got = resolve(fs, p).map_err(|e| e.errno()).and_then(|ino| {
                let fh = door.open(ino, RW).map_err(|e| e.errno())?;
                door.write(&caller(*privileged), ino, fh, u64::from(*off), data)
                    .map_err(|e| e.errno())?;
                door.release(ino, fh).map_err(|e| e.errno())
            });
            prop_assert_eq!(got, want, "write {}", p);
        }
        Op::Truncate(p, size, privileged) => {
            let want = model.file_mut(p).map(|(f, mode)| {
                f.resize(*size as usize, 0);
                if !privileged {
                    *mode = drop_setid(*mode);
                }
            });
            let got = resolve(fs, p).map_err(|e| e.errno()).and_then(|ino| {
                let set = SetAttr {
                    size: Some(u64::from(*size)),
                    ..Default::default()
                };
                door.setattr(&caller(*privileged), ino, &set)
                    .map(|_| ())
                    .map_err(|e| e.errno())
            });
            prop_assert_eq!(got, want, "truncate {}", p);
        }
        Op::Chmod(p, mode) => {
            let want = model.lookup(p).map(|_| ()).and_then(|()| {
                if names_view(p) {
                    return Err(libc::EROFS);
                }
                if let Some(Node::File(_, m)) = model.nodes.get_mut(p) {
                    *m = *mode;
                }
                Ok(())
            });
            let got = resolve(fs, p).map_err(|e| e.errno()).and_then(|ino| {
                let set = SetAttr {
                    mode: Some(*mode),
                    ..Default::default()
                };
                door.setattr(&caller(true), ino, &set)
                    .map(|_| ())
                    .map_err(|e| e.errno())
            });
            prop_assert_eq!(got, want, "chmod {} {:o}", p, mode);
        }
        Op::Read(p) => {
            let want = model.lookup(p).map(|n| match n {
                Node::File(d, _) => Some(d.clone()),
                Node::Dir => None,
            });
            let got = resolve(fs, p).map_err(|e| e.errno()).map(|ino| {
                match door.getattr(ino).unwrap().kind {
                    backer_fs::tree::Kind::Dir => None,
                    _ => Some(fs.get(ino)),
                }
            });
            prop_assert_eq!(got, want, "read {}", p);
        }
        Op::Unlink(p) => {
            let want = model.remove(p, false);
            let got = split(fs, p).and_then(|(d, n)| door.unlink(d, &n).map_err(|e| e.errno()));
            prop_assert_eq!(got, want, "unlink {}", p);
        }
        Op::Rmdir(p) => {
            let want = model.remove(p, true);
            let got = split(fs, p).and_then(|(d, n)| door.rmdir(d, &n).map_err(|e| e.errno()));
            prop_assert_eq!(got, want, "rmdir {}", p);
        }
        Op::Rename(a, b, mode) => {
            let want = model.rename(a, b, *mode);
            let got = split(fs, a).and_then(|(da, na)| {
                let (db, nb) = split(fs, b)?;
                door.rename(da, &na, db, &nb, *mode).map_err(|e| e.errno())
            });
            prop_assert_eq!(got, want, "rename {} {} {:?}", a, b, mode);
        }
        Op::Readdir(p) => {
            let want = model.dir_ok(p).map(|_| {
                let mut c = match p.as_str() {
                    VIEW => vec!["snapshots".to_string()],
                    _ => model.children(p),
                };
                c.sort();
                c
            });
            let got = resolve(fs, p).map_err(|e| e.errno()).and_then(|ino| {
                let mut names: Vec<String> = door
                    .readdir(ino, 0, usize::MAX)
                    .map_err(|e| e.errno())?
                    .into_iter()
                    .skip(2)
                    .map(|e| String::from_utf8(e.name).unwrap())
                    .collect();
                names.sort();
                Ok(names)
            });
            prop_assert_eq!(got, want, "readdir {}", p);
        }
        Op::Getattr(p) => {
            let want = model.lookup(p).map(|n| match n {
                Node::File(d, m) => (backer_fs::tree::Kind::File, d.len() as u64, *m),
                Node::Dir if p == VIEW => (backer_fs::tree::Kind::Dir, 0, 0),
                Node::Dir => (
                    backer_fs::tree::Kind::Dir,
                    model.children(p).len() as u64,
                    0,
                ),
            });
            let got = resolve(fs, p).map_err(|e| e.errno()).map(|ino| {
                let a = door.getattr(ino).unwrap();
                let perm = if a.kind == backer_fs::tree::Kind::File {
                    a.perm
                } else {
                    0
                };
                (a.kind, a.size, perm)
            });
            prop_assert_eq!(got, want, "getattr {}", p);
        }
        Op::Commit => {
            fs.vfs()
                .commit()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        Op::Reopen => {
            drop(door);
            fs.reopen()
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn vfs_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        let mut fs = TestFs::new();
        let mut model = Model::default();
        for op in &ops {
            run(&mut fs, &mut model, op)?;
        }
        // Finally the whole tree agrees after a commit and a reopen.
        fs.vfs().commit().unwrap();
        fs.reopen();
        for (p, n) in model.nodes.clone() {
            run(&mut fs, &mut model, &Op::Read(p.clone()))?;
            run(&mut fs, &mut model, &Op::Getattr(p.clone()))?;
            if n == Node::Dir {
                run(&mut fs, &mut model, &Op::Readdir(p))?;
            }
        }
    }
}

/// The door's rules in one fixed sequence (the random ones meet them
/// rarely): set-id bits dropped by unprivileged writes and truncates,
/// kept by privileged ones, and `.backer` read-only but found.
#[test]
fn the_door_rules_match_the_model() {
    let mut fs = TestFs::new();
    let mut model = Model::default();
    let s = |p: &str| p.to_string();
    let ops = [
        Op::Create(s("a")),
        Op::Chmod(s("a"), 0o6755),
        Op::Write(s("a"), 0, b"x".to_vec(), true),
        Op::Getattr(s("a")),
        Op::Write(s("a"), 1, b"y".to_vec(), false),
        Op::Getattr(s("a")),
        Op::Chmod(s("a"), 0o2755),
        Op::Truncate(s("a"), 1, true),
        Op::Getattr(s("a")),
        Op::Truncate(s("a"), 0, false),
        Op::Getattr(s("a")),
        Op::Chmod(s("a"), 0o6745),
        Op::Write(s("a"), 0, b"z".to_vec(), false),
        Op::Getattr(s("a")),
        Op::Getattr(s(VIEW)),
        Op::Readdir(s(VIEW)),
        Op::Readdir(s("")),
        Op::Create(s(VIEW)),
        Op::Mkdir(s(".backer/a")),
        Op::Write(s(VIEW), 0, b"x".to_vec(), true),
        Op::Truncate(s(VIEW), 0, true),
        Op::Chmod(s(VIEW), 0o777),
        Op::Unlink(s(".backer/snapshots")),
        Op::Rmdir(s(VIEW)),
        Op::Rename(s("a"), s(VIEW), RenameMode::Replace),
        Op::Rename(s(VIEW), s("b"), RenameMode::Exchange),
        Op::Read(s(".backer/a")),
        Op::Reopen,
        Op::Getattr(s("a")),
    ];
    for op in &ops {
        run(&mut fs, &mut model, op).unwrap();
    }
}
