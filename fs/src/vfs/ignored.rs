//! `.backerignore` in the vfs: which names of the live namespace stay out
//! of the replicated tree, and which entries of that tree stay out of the
//! namespace (DESIGN.md, "Ignore patterns"; the language is
//! [`crate::ignore`]).
//!
//! The rule the commit and the install share: **the tree entry of an
//! ignored path never changes here.** A commit skips the dirty names
//! whose path is ignored (so a local file never enters the tree, and one
//! that was replicated before keeps its last replicated version on the
//! peers); an install skips the namespace side of such names (so a peer's
//! file is neither shown nor created, and a local file of that name is
//! left alone), while the tree takes the merged entry, so every node's
//! root stays the same. A pull does not fetch the chunks of such files
//! (`replication/src/reconcile/pull.rs`): their content is absent on
//! purpose, and `check` does not count it missing.
//!
//! The patterns are read from the namespace, at the start of every commit
//! and install, when the content of `.backerignore` or of a file it
//! includes changed ([`IgnoreState::refresh`] compares content hashes: a
//! few lookups). A file is folded at its close, so patterns written
//! through the mount apply to everything committed after that close.
//! Every good set is saved in the store (`Space::Meta`, key `ignore`, the
//! pattern lines with includes expanded): a file that does not parse
//! keeps the saved set in force, across restarts too. With no good set
//! ever saved, new names are held back from the tree until the file
//! parses (nothing a typo meant to keep private leaks).
//!
//! When a set replaces another, the names that were ignored (or held
//! back) and no longer are get marked dirty, so the next commit takes
//! them as local changes. Their vectors are not joined with the tree's
//! entry of the same name (the dirty mark says so): a peer's newer
//! version and the local file are then concurrent, and the merge's
//! conflict rules apply.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::commit::{load_extents, ReadNodes, TxnNodes};
use super::file::FileData;
use super::records::NamespaceTxn;
use super::types::{Ino, ROOT};
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::ignore::{Match, Patterns, IGNORE_FILE};
use crate::store::{codec, Space, Store, Txn};
use crate::tree::{dir, Kind};

/// Where the last good set is kept.
const META_IGNORE: &[u8] = b"ignore";

/// The largest pattern file read (a bigger one is an error, not a stall).
const MAX_PATTERN_FILE: u64 = 1 << 20;

/// The value of a dirty mark set because a name stopped being ignored:
/// its commit does not join the tree entry's vector (see the module doc).
pub(crate) const MARK_UNIGNORED: &[u8] = b"u";

/// What the patterns in force say about one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Replicated.
    Replicate,
    /// Stays here; `deletable`: `(?d)`.
    Ignored { deletable: bool },
    /// New paths are held back: the pattern file does not parse and no
    /// good set was ever seen.
    HeldBack,
}

/// The saved set.
#[derive(Serialize, Deserialize)]
struct Saved {
    lines: Vec<String>,
}

/// What `status` shows of the patterns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IgnoreStatus {
    /// The pattern file's parse error, one line, if it does not parse.
    pub error: Option<String>,
    /// True when new paths are held back from replication (the file does
    /// not parse and no good set was ever seen).
    pub held_back: bool,
    /// Ignored names in the mount (an ignored folder counts once; the
    /// pattern file itself is not counted).
    pub local: u64,
    /// Entries of the replicated tree this node ignores and does not
    /// show (their content is not fetched).
    pub remote: u64,
}

/// The vfs's patterns and where they came from.
#[derive(Default)]
pub(crate) struct IgnoreState {
    loaded: bool,
    /// `None`: held back (see [`Verdict::HeldBack`]).
    pats: Option<Arc<Patterns>>,
    /// The pattern files read (paths relative to the root) and the
    /// content each had (`None`: absent).
    sources: Vec<(Vec<u8>, Option<Hash>)>,
    error: Option<String>,
}

impl IgnoreState {
    /// The verdict on `path` (relative to the root, `/`-separated). A
    /// folder that a `!` pattern may include something below is not
    /// ignored as a whole: its names are judged one by one, as Syncthing
    /// keeps such a folder as their parent.
    pub(crate) fn verdict(&self, path: &[u8], is_dir: bool) -> Verdict {
        match &self.pats {
            Some(p) => verdict(p, path, is_dir),
            None if path == IGNORE_FILE.as_bytes() => Verdict::Ignored { deletable: false },
            None => Verdict::HeldBack,
        }
    }

    /// The set in force for an install (held back: nothing but the
    /// pattern file, which is always ignored).
    pub(crate) fn patterns(&self) -> Arc<Patterns> {
        self.pats.clone().unwrap_or_default()
    }

    /// Whether new paths are held back (no set ever parsed).
    pub(crate) fn held_back(&self) -> bool {
        self.loaded && self.pats.is_none()
    }

    pub(crate) fn status(&self) -> IgnoreStatus {
        IgnoreStatus {
            error: self.error.clone(),
            held_back: self.pats.is_none(),
            local: 0,
            remote: 0,
        }
    }

    /// Re-reads the pattern files if their content changed since the last
    /// read (or on the first call, after the saved set), saves a good set
    /// and marks the names a new set stops ignoring. Changes are applied
    /// in a transaction of their own.
    ///
    /// A pattern file open for writing (or still held open) is not read:
    /// an editor's truncate-then-write would otherwise show an empty set
    /// for a moment, and everything it ignored would leak. It is read
    /// after its close.
    pub(crate) fn refresh(&mut self, store: &Store, is_open: &dyn Fn(Ino) -> bool) -> Result<()> {
        let txn = Txn::new(store.kv());
        for (path, _) in &self.sources {
            if let Some((ino, _)) = file_at(&txn, path)? {
                if is_open(ino) {
                    return Ok(());
                }
            }
        }
        if self.loaded {
            let mut same = true;
            for (path, hash) in &self.sources {
                if file_at(&txn, path)?.map(|(_, r)| r.hash()) != *hash {
                    same = false;
                    break;
                }
            }
            if same {
                return Ok(());
            }
        } else {
            self.loaded = true;
            if let Some(b) = txn.get(Space::Meta, META_IGNORE)? {
                match codec::decode::<Saved>(&b, "saved ignore patterns")
                    .map_err(|e| e.to_string())
                    .and_then(|s| Patterns::from_lines(&s.lines).map_err(|e| e.to_string()))
                {
                    Ok(p) => self.pats = Some(Arc::new(p)),
                    Err(e) => tracing::warn!(error = %e, "the saved ignore patterns do not load"),
                }
            }
        }
        let mut txn = Txn::new(store.kv());
        let (read, sources) = read_patterns(store, &txn)?;
        self.sources = sources;
        let old = self.pats.clone();
        match read {
            Ok(p) => {
                if self.error.take().is_some() || old.as_deref() != Some(&p) {
                    tracing::info!(patterns = p.lines().len(), "ignore patterns loaded");
                }
                let lines = p.lines().to_vec();
                txn.put(Space::Meta, META_IGNORE, codec::encode(&Saved { lines })?);
                self.pats = Some(Arc::new(p));
            }
            Err(e) => {
                if self.error.as_deref() != Some(e.as_str()) {
                    if old.is_some() {
                        tracing::error!("{e} (the last good ignore patterns stay in force)");
                    } else {
                        tracing::error!("{e} (new paths are held back until it is fixed)");
                    }
                }
                self.error = Some(e);
            }
        }
        if old != self.pats {
            let new = self.patterns();
            mark_unignored(&mut txn, old.as_deref(), &new)?;
        }
        txn.commit()
    }
}

/// `patterns`'s verdict on `path` (see [`IgnoreState::verdict`]).
pub(crate) fn verdict(patterns: &Patterns, path: &[u8], is_dir: bool) -> Verdict {
    match patterns.matches(path) {
        Match::Ignored {
            deletable,
            can_skip_dir,
        } if can_skip_dir || !is_dir => Verdict::Ignored { deletable },
        _ => Verdict::Replicate,
    }
}

/// Reads `.backerignore` and what it includes from the namespace: the set
/// (or the one-line error) and the files read with their content hashes.
type Read = (
    std::result::Result<Patterns, String>,
    Vec<(Vec<u8>, Option<Hash>)>,
);

fn read_patterns(store: &Store, txn: &Txn<'_>) -> Result<Read> {
    let mut sources = Vec::new();
    let Some((bytes, hash)) = read_file(store, txn, IGNORE_FILE.as_bytes())? else {
        sources.push((IGNORE_FILE.as_bytes().to_vec(), None));
        return Ok((Ok(Patterns::default()), sources));
    };
    sources.push((IGNORE_FILE.as_bytes().to_vec(), Some(hash)));
    let read = std::cell::RefCell::new(Vec::new());
    let failure = std::cell::RefCell::new(None);
    let load = |p: &std::path::Path| -> std::io::Result<Vec<u8>> {
        use std::os::unix::ffi::OsStrExt;
        let path = p.as_os_str().as_bytes().to_vec();
        match read_file(store, txn, &path) {
            Ok(Some((b, h))) => {
                read.borrow_mut().push((path, Some(h)));
                Ok(b)
            }
            Ok(None) => {
                read.borrow_mut().push((path, None));
                Err(std::io::ErrorKind::NotFound.into())
            }
            Err(e) => {
                let msg = e.to_string();
                *failure.borrow_mut() = Some(e);
                Err(std::io::Error::other(msg))
            }
        }
    };
    let parsed = Patterns::parse(&bytes, IGNORE_FILE, &load);
    if let Some(e) = failure.into_inner() {
        return Err(e);
    }
    sources.extend(read.into_inner());
    Ok((parsed.map_err(|e| e.to_string()), sources))
}

/// The regular file at `path` (relative to the root) and its record.
fn file_at(txn: &Txn<'_>, path: &[u8]) -> Result<Option<(Ino, super::records::InodeRecord)>> {
    let mut ino = ROOT;
    let mut names = path
        .split(|b| *b == b'/')
        .filter(|n| !n.is_empty())
        .peekable();
    while let Some(name) = names.next() {
        if name == b".." || name == b"." {
            return Ok(None);
        }
        let Some(d) = txn.dirent(ino, name)? else {
            return Ok(None);
        };
        let last = names.peek().is_none();
        match (d.kind, last) {
            (Kind::File, true) => return Ok(Some((d.ino, txn.inode(d.ino)?))),
            (Kind::Dir, false) => ino = d.ino,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// The bytes of the regular file at `path` as last folded, and its
/// content hash; `None` if there is none.
fn read_file(store: &Store, txn: &Txn<'_>, path: &[u8]) -> Result<Option<(Vec<u8>, Hash)>> {
    let Some((_, rec)) = file_at(txn, path)? else {
        return Ok(None);
    };
    if rec.size > MAX_PATTERN_FILE {
        return Err(Error::FileTooLarge);
    }
    let mut data = FileData::new(load_extents(txn, rec.hash())?);
    Ok(Some((data.read(store, 0, rec.size)?, rec.hash())))
}

/// The path of the directory `ino` relative to the root (empty for it).
pub(crate) fn dir_path(txn: &Txn<'_>, mut ino: Ino) -> Result<Vec<u8>> {
    let mut names: Vec<Vec<u8>> = Vec::new();
    while ino != ROOT {
        let rec = txn.inode(ino)?;
        names.push(rec.name.clone());
        ino = rec.parent;
        if names.len() > super::types::MAX_DEPTH as usize + 1 {
            return Err(Error::corrupt("directory parents form a loop"));
        }
    }
    names.reverse();
    Ok(names.join(&b'/'))
}

/// The last good set saved in the store (the empty set if none): what
/// `check` judges a stopped store's tree by.
pub fn saved_ignore_patterns(kv: &dyn crate::store::Kv) -> Result<Patterns> {
    Ok(match kv.get(Space::Meta, META_IGNORE)? {
        Some(b) => {
            let saved: Saved = codec::decode(&b, "saved ignore patterns")?;
            Patterns::from_lines(&saved.lines).map_err(|e| Error::corrupt(e.to_string()))?
        }
        None => Patterns::default(),
    })
}

/// `dir`/`name` as a path relative to the root.
pub fn child_path(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// Marks every name that `old` kept out of the tree (`None`: held back,
/// so every name) and `new` does not, with everything below it. A folder
/// coming back gets the tree's version of itself (or an empty tree) as
/// its base: local commits skipped its names while it was ignored, so its
/// own tree is stale.
fn mark_unignored(txn: &mut Txn<'_>, old: Option<&Patterns>, new: &Patterns) -> Result<()> {
    // (directory, its path, whether it came back: all below is marked)
    let mut stack: Vec<(Ino, Vec<u8>, bool)> = vec![(ROOT, Vec::new(), false)];
    while let Some((dino, dpath, back)) = stack.pop() {
        let tree = txn.inode(dino)?.hash();
        for (k, _) in txn.scan(Space::Dirents, &dino.to_be_bytes(), None, usize::MAX)? {
            let name = k[8..].to_vec();
            let Some(d) = txn.dirent(dino, &name)? else {
                continue;
            };
            let path = child_path(&dpath, &name);
            let is_dir = d.kind == Kind::Dir;
            if verdict(new, &path, is_dir) != Verdict::Replicate {
                continue;
            }
            let was_out = match old {
                Some(o) => verdict(o, &path, is_dir) != Verdict::Replicate,
                None => true,
            };
            let comes_back = back || was_out;
            if comes_back {
                txn.put(
                    Space::Dirty,
                    super::records::dirent_key(dino, &name),
                    MARK_UNIGNORED.to_vec(),
                );
            }
            if is_dir {
                if comes_back {
                    let base = match dir::get(&ReadNodes(txn), tree, &name)? {
                        Some(e) if e.kind == Kind::Dir && !e.deleted => e.hash,
                        _ => dir::empty(&mut TxnNodes(txn))?,
                    };
                    let mut rec = txn.inode(d.ino)?;
                    rec.hash = base.0;
                    txn.put_inode(d.ino, &rec)?;
                }
                stack.push((d.ino, path, comes_back));
            }
        }
    }
    Ok(())
}

/// Counts the ignored names of the mount and the ignored entries of the
/// tree the mount does not show (see [`IgnoreStatus`]). Walks both: it
/// costs one pass over the namespace and the tree.
pub(crate) fn count(txn: &Txn<'_>, patterns: &Patterns) -> Result<(u64, u64)> {
    let mut local = 0;
    let mut stack: Vec<(Ino, Vec<u8>)> = vec![(ROOT, Vec::new())];
    while let Some((dino, dpath)) = stack.pop() {
        for (k, _) in txn.scan(Space::Dirents, &dino.to_be_bytes(), None, usize::MAX)? {
            let name = &k[8..];
            let Some(d) = txn.dirent(dino, name)? else {
                continue;
            };
            let path = child_path(&dpath, name);
            let is_dir = d.kind == Kind::Dir;
            if verdict(patterns, &path, is_dir) != Verdict::Replicate {
                if path != IGNORE_FILE.as_bytes() {
                    local += 1;
                }
            } else if is_dir {
                stack.push((d.ino, path));
            }
        }
    }
    let mut remote = 0;
    let root = txn.inode(ROOT)?.hash();
    // (tree, its path, the directory inode showing it, if any)
    let mut stack: Vec<(Hash, Vec<u8>, Option<Ino>)> = vec![(root, Vec::new(), Some(ROOT))];
    while let Some((tree, dpath, shown)) = stack.pop() {
        for e in dir::entries(&ReadNodes(txn), tree)? {
            if e.deleted {
                continue;
            }
            let path = child_path(&dpath, &e.name);
            let is_dir = e.kind == Kind::Dir;
            let here = match shown {
                Some(d) => txn.dirent(d, &e.name)?,
                None => None,
            };
            if verdict(patterns, &path, is_dir) != Verdict::Replicate {
                if here.is_none() {
                    remote += 1;
                }
            } else if is_dir {
                let ino = here.filter(|d| d.kind == Kind::Dir).map(|d| d.ino);
                stack.push((e.hash, path, ino));
            }
        }
    }
    Ok((local, remote))
}
