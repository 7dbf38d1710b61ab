//! Test nodes: a real store and vfs in a temp dir, path-level helpers over
//! the vfs API, and one-shot syncs over in-memory pipes.

use std::sync::Arc;

use backer_fs::store::Store;
use backer_fs::tree::Kind;
use backer_fs::vfs::{Ctx, Ino, RenameMode, Vfs, VfsOptions, ROOT};
use backer_fs::{chunk, Hash};
use backer_replication::{run, Channels, Config, Hello, Outcome, VfsLocal};

pub(crate) const ME: Ctx = Ctx { uid: 0, gid: 0 };

/// One node: a store in a temp dir and its vfs.
pub(crate) struct Node {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) vfs: Arc<Vfs>,
}

impl Node {
    pub(crate) fn new() -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::create(&dir.path().join("store")).unwrap());
        let vfs = Arc::new(Vfs::new(store, VfsOptions::default()).unwrap());
        Node { _dir: dir, vfs }
    }

    pub(crate) fn local(&self) -> VfsLocal {
        VfsLocal::new(self.vfs.clone())
    }

    pub(crate) fn hello(&self) -> Hello {
        Hello::new(self.vfs.store().node_id(), chunk::params_fingerprint())
    }

    /// Commits pending changes and returns the root.
    pub(crate) fn root(&self) -> Hash {
        self.vfs.commit().unwrap();
        self.vfs.root_hash().unwrap()
    }

    /// The inode at `path` ("a/b/c"), if any.
    pub(crate) fn lookup(&self, path: &str) -> Option<Ino> {
        let mut ino = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self.vfs.names().lookup(ino, part.as_bytes()).ok()?.ino;
        }
        Some(ino)
    }

    fn parent_of<'p>(&self, path: &'p str) -> (Ino, &'p str) {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        (self.mkdir_p(dir), name)
    }

    /// Creates every directory on `path`; returns the last one.
    pub(crate) fn mkdir_p(&self, path: &str) -> Ino {
        let mut ino = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = match self.vfs.names().lookup(ino, part.as_bytes()) {
                Ok(a) => a.ino,
                Err(_) => {
                    self.vfs
                        .names()
                        .mkdir(ME, ino, part.as_bytes(), 0o755)
                        .unwrap()
                        .ino
                }
            };
        }
        ino
    }

    /// Writes `data` as the whole content of the file at `path`.
    pub(crate) fn write(&self, path: &str, data: &[u8]) {
        let (parent, name) = self.parent_of(path);
        let fh = match self.vfs.names().lookup(parent, name.as_bytes()) {
            Ok(a) => self.vfs.files().open(a.ino, true, false).unwrap(),
            Err(_) => {
                self.vfs
                    .names()
                    .create(ME, parent, name.as_bytes(), 0o644, false)
                    .unwrap()
                    .1
            }
        };
        self.vfs.files().write(fh, 0, data).unwrap();
        self.vfs.files().release(fh).unwrap();
    }

    /// Writes `data` at `offset` into the existing file at `path`.
    pub(crate) fn write_at(&self, path: &str, offset: u64, data: &[u8]) {
        let ino = self.lookup(path).unwrap();
        let fh = self.vfs.files().open(ino, false, false).unwrap();
        self.vfs.files().write(fh, offset, data).unwrap();
        self.vfs.files().release(fh).unwrap();
    }

    /// The whole content of the file at `path`.
    pub(crate) fn read(&self, path: &str) -> Option<Vec<u8>> {
        let ino = self.lookup(path)?;
        let size = self.vfs.names().getattr(ino).ok()?.size;
        let fh = self.vfs.files().open(ino, false, false).ok()?;
        let mut out = Vec::new();
        while (out.len() as u64) < size {
            let part = self
                .vfs
                .files()
                .read(fh, out.len() as u64, 1 << 20)
                .unwrap();
            if part.is_empty() {
                break;
            }
            out.extend_from_slice(&part);
        }
        self.vfs.files().release(fh).unwrap();
        Some(out)
    }

    pub(crate) fn remove(&self, path: &str) {
        let (parent, name) = self.parent_of(path);
        let attr = self.vfs.names().lookup(parent, name.as_bytes()).unwrap();
        if attr.kind == Kind::Dir {
            for e in self.list(path) {
                self.remove(&format!("{path}/{e}"));
            }
            self.vfs.names().rmdir(parent, name.as_bytes()).unwrap();
        } else {
            self.vfs.names().unlink(parent, name.as_bytes()).unwrap();
        }
    }

    pub(crate) fn rename(&self, from: &str, to: &str) {
        let (p1, n1) = self.parent_of(from);
        let (p2, n2) = self.parent_of(to);
        self.vfs
            .names()
            .rename(p1, n1.as_bytes(), p2, n2.as_bytes(), RenameMode::Replace)
            .unwrap();
    }

    /// The names in the directory at `path`, sorted.
    pub(crate) fn list(&self, path: &str) -> Vec<String> {
        let ino = self.lookup(path).unwrap();
        let mut out = Vec::new();
        let mut cookie = 0;
        loop {
            let batch = self.vfs.names().readdir(ino, cookie, 1000).unwrap();
            let Some(last) = batch.last() else { break };
            cookie = last.cookie;
            for e in batch {
                if e.name != b"." && e.name != b".." {
                    out.push(String::from_utf8(e.name).unwrap());
                }
            }
        }
        out.sort();
        out
    }

    /// Every file under `path` with its bytes (directories end with '/',
    /// symlinks show their target), for comparing two nodes.
    pub(crate) fn snapshot(&self, path: &str) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for name in self.list(path) {
            let p = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            let attr = self.vfs.names().getattr(self.lookup(&p).unwrap()).unwrap();
            match attr.kind {
                Kind::Dir => {
                    out.push((format!("{p}/"), vec![]));
                    out.extend(self.snapshot(&p));
                }
                Kind::Symlink => {
                    out.push((p.clone(), self.vfs.names().readlink(attr.ino).unwrap()))
                }
                _ => out.push((p.clone(), self.read(&p).unwrap())),
            }
        }
        out
    }
}

/// A one-shot session configuration.
pub(crate) fn once() -> Config {
    Config {
        once: true,
        ..Config::default()
    }
}

/// Runs a one-shot sync between `a` and `b` over an in-memory pipe.
pub(crate) async fn sync(a: &Node, b: &Node) -> (Outcome<VfsLocal>, Outcome<VfsLocal>) {
    a.vfs.commit().unwrap();
    b.vfs.commit().unwrap();
    let (x, y) = tokio::io::duplex(1 << 20);
    let fa = run(x, a.local(), a.hello(), once(), Channels::default());
    let fb = run(y, b.local(), b.hello(), once(), Channels::default());
    tokio::join!(fa, fb)
}

/// Syncs and asserts both sides finished cleanly with equal roots.
pub(crate) async fn sync_ok(a: &Node, b: &Node) -> (Outcome<VfsLocal>, Outcome<VfsLocal>) {
    let (oa, ob) = sync(a, b).await;
    if let Err(e) = &oa.result {
        panic!("side a: {e}");
    }
    if let Err(e) = &ob.result {
        panic!("side b: {e}");
    }
    assert_eq!(a.root(), b.root(), "roots differ after a sync");
    (oa, ob)
}

/// Deterministic pseudo-random bytes.
pub(crate) fn bytes(seed: u64, len: usize) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut v = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}
