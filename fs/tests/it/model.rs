//! A reference-model test: random sequences of vfs operations run against
//! the vfs (on a real sled store) and against a small in-memory model;
//! every read, readdir, getattr and error must agree. The store is
//! reopened in the middle of sequences.

use std::collections::BTreeMap;

use backer_fs::vfs::{Ino, RenameMode, SetAttr};
use proptest::prelude::*;

use crate::util::{TestFs, ME};

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    File(Vec<u8>),
    Dir,
}

/// Paths are '/'-joined names from a small alphabet, at most 2 deep, so
/// operations collide often.
#[derive(Clone, Debug)]
enum Op {
    Create(String),
    Mkdir(String),
    Write(String, u32, Vec<u8>),
    Truncate(String, u32),
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
    let name = prop::sample::select(vec!["a", "b", "c"]);
    prop::collection::vec(name, 1..=2).prop_map(|v| v.join("/"))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => path().prop_map(Op::Create),
        2 => path().prop_map(Op::Mkdir),
        4 => (path(), 0u32..300_000, prop::collection::vec(any::<u8>(), 0..2000)).prop_map(|(p, o, d)| Op::Write(p, o, d)),
        1 => (path(), 0u32..400_000).prop_map(|(p, s)| Op::Truncate(p, s)),
        3 => path().prop_map(Op::Read),
        2 => path().prop_map(Op::Unlink),
        1 => path().prop_map(Op::Rmdir),
        2 => (path(), path(), prop::sample::select(vec![RenameMode::Replace, RenameMode::NoReplace, RenameMode::Exchange]))
            .prop_map(|(a, b, m)| Op::Rename(a, b, m)),
        1 => prop::sample::select(vec!["", "a", "b"]).prop_map(|p| Op::Readdir(p.to_string())),
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
        if d.is_empty() {
            return Ok(());
        }
        match self.nodes.get(d) {
            Some(Node::Dir) => Ok(()),
            Some(Node::File(_)) => Err(libc::ENOTDIR),
            None => Err(libc::ENOENT),
        }
    }

    /// Resolves like the kernel does: each component looked up in turn.
    fn lookup(&self, p: &str) -> Result<&Node, i32> {
        self.dir_ok(parent(p))?;
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
        if self.nodes.contains_key(p) {
            return Err(libc::EEXIST);
        }
        self.nodes.insert(p.to_string(), node);
        Ok(())
    }

    fn file_mut(&mut self, p: &str) -> Result<&mut Vec<u8>, i32> {
        self.lookup(p)?;
        match self.nodes.get_mut(p) {
            Some(Node::File(d)) => Ok(d),
            _ => Err(libc::EISDIR),
        }
    }

    fn remove(&mut self, p: &str, dir: bool) -> Result<(), i32> {
        match (self.lookup(p)?, dir) {
            (Node::Dir, false) => return Err(libc::EISDIR),
            (Node::File(_), true) => return Err(libc::ENOTDIR),
            (Node::Dir, true) if !self.children(p).is_empty() => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        self.nodes.remove(p);
        Ok(())
    }

    fn rename(&mut self, a: &str, b: &str, mode: RenameMode) -> Result<(), i32> {
        self.dir_ok(parent(a))?;
        self.dir_ok(parent(b))?;
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
                (Node::Dir, Node::File(_)) => return Err(libc::ENOTDIR),
                (Node::File(_), Node::Dir) => return Err(libc::EISDIR),
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

/// The vfs side: resolves paths by lookups, as the kernel would.
fn split(fs: &TestFs, p: &str) -> Result<(Ino, Vec<u8>), i32> {
    let (d, name) = p.rsplit_once('/').unwrap_or(("", p));
    let dir = fs.path(d).map_err(|e| e.errno())?;
    // The kernel walks into the parent: it must be a directory.
    if fs.vfs().getattr(dir).unwrap().kind != backer_fs::tree::Kind::Dir {
        return Err(libc::ENOTDIR);
    }
    Ok((dir, name.as_bytes().to_vec()))
}

fn run(fs: &mut TestFs, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    match op {
        Op::Create(p) => {
            let want = model.create(p, Node::File(vec![]));
            let got = split(fs, p).and_then(|(d, n)| {
                let (_, fh) = fs
                    .vfs()
                    .create(ME, d, &n, 0o644, false)
                    .map_err(|e| e.errno())?;
                fs.vfs().release(fh).map_err(|e| e.errno())
            });
            prop_assert_eq!(got, want, "create {}", p);
        }
        Op::Mkdir(p) => {
            let want = model.create(p, Node::Dir);
            let got = split(fs, p).and_then(|(d, n)| {
                fs.vfs()
                    .mkdir(ME, d, &n, 0o755)
                    .map(|_| ())
                    .map_err(|e| e.errno())
            });
            prop_assert_eq!(got, want, "mkdir {}", p);
        }
        Op::Write(p, off, data) => {
            let want = model.file_mut(p).map(|f| {
                let end = *off as usize + data.len();
                // A write of nothing changes nothing, wherever it is.
                if !data.is_empty() {
                    if f.len() < end {
                        f.resize(end, 0);
                    }
                    f[*off as usize..end].copy_from_slice(data);
                }
            });
            let got = fs.path(p).map_err(|e| e.errno()).and_then(|ino| {
                let fh = fs.vfs().open(ino, false, false).map_err(|e| e.errno())?;
                fs.vfs()
                    .write(fh, u64::from(*off), data)
                    .map_err(|e| e.errno())?;
                fs.vfs().release(fh).map_err(|e| e.errno())
            });
            prop_assert_eq!(got, want, "write {}", p);
        }
        Op::Truncate(p, size) => {
            let want = model.file_mut(p).map(|f| f.resize(*size as usize, 0));
            let got = fs.path(p).map_err(|e| e.errno()).and_then(|ino| {
                fs.vfs()
                    .setattr(
                        ino,
                        &SetAttr {
                            size: Some(u64::from(*size)),
                            ..Default::default()
                        },
                    )
                    .map(|_| ())
                    .map_err(|e| e.errno())
            });
            prop_assert_eq!(got, want, "truncate {}", p);
        }
        Op::Read(p) => {
            let want = model.lookup(p).map(|n| match n {
                Node::File(d) => Some(d.clone()),
                Node::Dir => None,
            });
            let got = fs.path(p).map_err(|e| e.errno()).map(|ino| {
                match fs.vfs().getattr(ino).unwrap().kind {
                    backer_fs::tree::Kind::Dir => None,
                    _ => Some(fs.get(ino)),
                }
            });
            prop_assert_eq!(got, want, "read {}", p);
        }
        Op::Unlink(p) => {
            let want = model.remove(p, false);
            let got = split(fs, p).and_then(|(d, n)| fs.vfs().unlink(d, &n).map_err(|e| e.errno()));
            prop_assert_eq!(got, want, "unlink {}", p);
        }
        Op::Rmdir(p) => {
            let want = model.remove(p, true);
            let got = split(fs, p).and_then(|(d, n)| fs.vfs().rmdir(d, &n).map_err(|e| e.errno()));
            prop_assert_eq!(got, want, "rmdir {}", p);
        }
        Op::Rename(a, b, mode) => {
            let want = model.rename(a, b, *mode);
            let got = split(fs, a).and_then(|(da, na)| {
                let (db, nb) = split(fs, b)?;
                fs.vfs()
                    .rename(da, &na, db, &nb, *mode)
                    .map_err(|e| e.errno())
            });
            prop_assert_eq!(got, want, "rename {} {} {:?}", a, b, mode);
        }
        Op::Readdir(p) => {
            let want = model.dir_ok(p).map(|_| {
                let mut c = model.children(p);
                c.sort();
                c
            });
            let got = fs.path(p).map_err(|e| e.errno()).and_then(|ino| {
                let mut names: Vec<String> = fs
                    .vfs()
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
                Node::File(d) => (backer_fs::tree::Kind::File, d.len() as u64),
                Node::Dir => (backer_fs::tree::Kind::Dir, model.children(p).len() as u64),
            });
            let got = fs.path(p).map_err(|e| e.errno()).map(|ino| {
                let a = fs.vfs().getattr(ino).unwrap();
                (a.kind, a.size)
            });
            prop_assert_eq!(got, want, "getattr {}", p);
        }
        Op::Commit => {
            fs.vfs()
                .commit()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        Op::Reopen => fs.reopen(),
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
            if n == Node::Dir {
                run(&mut fs, &mut model, &Op::Readdir(p))?;
            }
        }
    }
}
