//! Shared test helpers: real sled stores in temp dirs.

use std::sync::Arc;

use backer_fs::store::Store;
use backer_fs::vfs::{Ctx, Door, Fh, Ino, Vfs, VfsOptions, ROOT};

/// A vfs over a fresh sled store in a temp dir (kept alive by the guard).
pub(crate) struct TestFs {
    pub dir: tempfile::TempDir,
    pub vfs: Option<Arc<Vfs>>,
}

pub(crate) const ME: Ctx = Ctx {
    uid: 1000,
    gid: 1000,
};

impl TestFs {
    pub(crate) fn new() -> TestFs {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::create(&dir.path().join("store")).unwrap());
        let vfs = Vfs::new(store, VfsOptions::default()).unwrap();
        TestFs {
            dir,
            vfs: Some(Arc::new(vfs)),
        }
    }

    pub(crate) fn vfs(&self) -> &Vfs {
        self.vfs.as_deref().unwrap()
    }

    /// The door a mount with the writeback cache would use.
    pub(crate) fn door(&self) -> Door {
        Door::new(self.vfs.clone().unwrap(), true)
    }

    /// Drops the vfs and the store, then opens both again.
    pub(crate) fn reopen(&mut self) {
        self.vfs = None;
        let store = Arc::new(Store::open(&self.dir.path().join("store")).unwrap());
        self.vfs = Some(Arc::new(Vfs::new(store, VfsOptions::default()).unwrap()));
    }

    /// Creates (or truncates) a file at `name` in `parent` with `data`.
    pub(crate) fn put(&self, parent: Ino, name: &str, data: &[u8]) -> Ino {
        put(self.vfs(), parent, name, data)
    }

    /// The whole content of `ino`.
    pub(crate) fn get(&self, ino: Ino) -> Vec<u8> {
        let v = self.vfs();
        let fh = v.files().open(ino, false, false).unwrap();
        let size = v.names().getattr(ino).unwrap().size;
        let mut out = Vec::new();
        while (out.len() as u64) < size {
            let chunk = v.files().read(fh, out.len() as u64, 1 << 20).unwrap();
            assert!(!chunk.is_empty(), "short read at {}", out.len());
            out.extend_from_slice(&chunk);
        }
        v.files().release(fh).unwrap();
        out
    }

    /// Resolves a slash-separated path from the root.
    pub(crate) fn path(&self, path: &str) -> backer_fs::Result<Ino> {
        let mut ino = ROOT;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            ino = self.vfs().names().lookup(ino, part.as_bytes())?.ino;
        }
        Ok(ino)
    }
}

pub(crate) fn write_all(v: &Vfs, fh: Fh, off: u64, data: &[u8]) {
    for (i, piece) in data.chunks(128 * 1024).enumerate() {
        let n = v
            .files()
            .write(fh, off + (i * 128 * 1024) as u64, piece)
            .unwrap();
        assert_eq!(n as usize, piece.len());
    }
}

pub(crate) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    use rand::{RngCore, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// A vfs over a new store in `dir` whose clock reads `millis`
/// (milliseconds since the epoch).
pub(crate) fn vfs_with_clock(
    dir: &std::path::Path,
    millis: Arc<std::sync::atomic::AtomicI64>,
) -> Vfs {
    let store = Arc::new(Store::create(&dir.join("store")).unwrap());
    let opts = VfsOptions {
        clock: Arc::new(move || {
            let ms = millis.load(std::sync::atomic::Ordering::SeqCst);
            backer_fs::tree::Timestamp {
                secs: ms.div_euclid(1000),
                nanos: (ms.rem_euclid(1000) * 1_000_000) as u32,
            }
        }),
        ..VfsOptions::default()
    };
    Vfs::new(store, opts).unwrap()
}

/// Creates (or truncates) a file at `name` in `parent` of `v` with `data`.
pub(crate) fn put(v: &Vfs, parent: Ino, name: &str, data: &[u8]) -> Ino {
    let (attr, fh) = match v.names().lookup(parent, name.as_bytes()) {
        Ok(a) => (a.clone(), v.files().open(a.ino, true, false).unwrap()),
        Err(_) => v
            .names()
            .create(ME, parent, name.as_bytes(), 0o644, false)
            .unwrap(),
    };
    write_all(v, fh, 0, data);
    v.files().release(fh).unwrap();
    attr.ino
}
