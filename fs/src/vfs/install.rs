//! Installing a tree made elsewhere (a merge with a peer's tree) as the
//! committed root, and making the live namespace match it, in one
//! transaction.
//!
//! The namespace equals the committed tree `base` once pending changes are
//! committed, so only the names [`dir::diff`] finds between `base` and the
//! new root need work, directory by directory (only into subdirectories
//! whose hashes differ):
//!
//! - a name only in the new tree is created (a directory with its whole
//!   subtree), owned by the vfs owner, setuid/setgid bits dropped;
//! - a name only in `base` is removed (a directory with its subtree); a
//!   file that is open lives on as an orphan, as after unlink;
//! - a directory in both is updated in place and descended into;
//! - a non-directory with the same kind and content is updated in place
//!   (mode, mtime, version), so open handles keep working; otherwise the
//!   old inode is unlinked and a new one made for the name: a peer's
//!   content never rewrites an inode in place (DESIGN.md, "Traps"), so a
//!   reader holding the old file sees the old version whole.
//!
//! Hard links are local: a name of a multiply linked inode whose mode or
//! mtime changes gets an inode of its own, so the other names keep theirs.
//!
//! An open file whose name gets other content lives on as an orphan: its
//! handles read (and write) the old version until the last release frees
//! it. Turning bytes written locally to such an orphan into a conflict copy
//! at release (DESIGN.md, "Traps") is not done here.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::commit::{self, ReadNodes, TxnNodes};
use super::ignored::{self, Verdict};
use super::records::{ts_pair, Dirent, InodeRecord, NamespaceTxn};
use super::types::*;
use super::{names, Inner, Vfs};
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::ignore::Patterns;
use crate::store::{Space, Txn};
use crate::tree::content::{self, Extent};
use crate::tree::{dir, Entry, Kind, NodeStore, Timestamp};

mod keep;

/// Setuid and setgid: never installed from a tree (mounts are nosuid).
const SUID_BITS: u32 = 0o6000;

/// What [`Vfs::install_with`] changed, for kernel cache invalidation and
/// peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// The commit recorded for the new root.
    pub commit: CommitInfo,
    /// (parent inode, name) of every name that was added, removed or now
    /// names another inode (names inside added or removed directories
    /// included).
    pub names: Vec<(Ino, Vec<u8>)>,
    /// Inodes whose attributes changed in place (directories whose names
    /// changed included), or that were removed or lost a link; sorted.
    pub inodes: Vec<Ino>,
    /// Keeps this root (and later ones) from being published while this
    /// or a clone lives: drop it once the kernel's caches were told
    /// (`vfs/publish.rs`).
    pub hold: super::Hold,
}

impl Vfs {
    /// Replaces the committed tree with one computed from it, and makes the
    /// live namespace match: under the vfs lock, commits pending local
    /// changes first (as [`Vfs::commit`]: open files' unfolded bytes join
    /// at their release), then calls `f(nodes, base)` with a node store
    /// over the same transaction and `base`, the committed root. `f` returns
    /// the new root (its nodes stored through `nodes` or already in the
    /// store) and the second parent to record (the peer's root), or `None`
    /// to change nothing. One transaction: after a crash the store holds
    /// the old tree or the new.
    ///
    /// The new root's directory trees must be canonical (as
    /// [`dir::is_canonical`] checks): later local commits update them in
    /// place. Their file contents' nodes must be stored; their chunks
    /// should be, or reads of those files fail. `f` runs under the vfs lock
    /// and must not call the vfs.
    ///
    /// Returns `None` when `f` does, or returns `base` itself. Errors (and
    /// nothing installed): a `.backer` entry in the root
    /// ([`Error::InvalidName`]), directories nested deeper than
    /// [`MAX_DEPTH`] ([`Error::TooDeep`]), a file over [`MAX_FILE_SIZE`]
    /// ([`Error::FileTooLarge`]), missing or damaged nodes
    /// ([`Error::Corrupt`]), and `f`'s own errors.
    pub fn install_with(
        &self,
        f: impl FnOnce(&mut dyn NodeStore, Hash) -> Result<Option<(Hash, Hash)>>,
    ) -> Result<Option<Installed>> {
        let now = self.now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let store = inner.store.clone();
        inner.commit(now)?;

        let mut txn = Txn::new(store.kv());
        let base = txn.inode(ROOT)?.hash();
        let Some((root, second)) = f(&mut TxnNodes(&mut txn), base)? else {
            return Ok(None);
        };
        if root == base {
            return Ok(None);
        }
        self.install_root(inner, txn, base, root, vec![base.0, second.0], now)
            .map(Some)
    }

    /// Makes the live namespace match the tree `root` (the committed tree
    /// is `base`), records the commit of `root` with `parents` and applies
    /// `txn`, all under the vfs lock the caller holds (`inner`). Shared by
    /// [`Vfs::install_with`] and [`super::History::restore`].
    pub(super) fn install_root(
        &self,
        inner: &mut Inner,
        mut txn: Txn<'_>,
        base: Hash,
        root: Hash,
        parents: Vec<[u8; 32]>,
        now: Timestamp,
    ) -> Result<Installed> {
        let store = inner.store.clone();
        inner.begin();
        let patterns = inner.ignore.patterns();
        let mut apply = Apply::new(&mut *inner, &mut txn, &patterns, self.owner, now, None);
        apply.run_from_root(base, root)?;
        let (names, inodes) = apply.finish()?;
        let info = inner.commit_install(txn, root, parents, now, store.node_id(), names.len())?;
        tracing::debug!(
            seq = info.seq,
            %base,
            %root,
            names = names.len(),
            inodes = inodes.len(),
            "install"
        );
        Ok(Installed {
            commit: info,
            names,
            inodes,
            hold: self.announce.hold(),
        })
    }
}

/// (parent, name) pairs, for the kernel's caches.
pub(super) type Names = Vec<(Ino, Vec<u8>)>;

impl Inner {
    /// Records an install of `root` as a commit with `parents` in `txn`,
    /// applies it and moves the head (the install and each step of a
    /// staged one end so).
    pub(super) fn commit_install(
        &mut self,
        mut txn: Txn<'_>,
        root: Hash,
        parents: Vec<[u8; 32]>,
        now: Timestamp,
        me: crate::identity::NodeId,
        names: usize,
    ) -> Result<CommitInfo> {
        let info = commit::append(&mut txn, &self.head, root, parents, now, me, names)?;
        self.settle(txn.commit())?;
        self.moved_head(&info);
        Ok(info)
    }
}

impl Vfs {
    /// Makes a namespace that was just made (an empty root) match the
    /// committed tree `root`, recording no commit: a database rebuilt
    /// from the packs (`check/rebuild.rs`) holds the trees and the log
    /// but no namespace. What the tree does not hold (owners, extended
    /// attributes, hard links) is as for a tree from a peer.
    pub(super) fn check_out(&self, root: Hash) -> Result<()> {
        let now = self.now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let store = inner.store.clone();
        let mut txn = Txn::new(store.kv());
        let base = txn.inode(ROOT)?.hash();
        if base == root {
            return Ok(());
        }
        inner.begin();
        let patterns = inner.ignore.patterns();
        let mut apply = Apply::new(&mut *inner, &mut txn, &patterns, self.owner, now, None);
        let res = apply
            .run_from_root(base, root)
            .and_then(|()| apply.finish())
            .and_then(|_| txn.commit());
        inner.settle(res)?;
        tracing::info!(%root, "made the namespace from the newest commit");
        Ok(())
    }
}

/// A directory whose names must go from the tree `old` (`None`: it was just
/// created, empty) to the tree `new`. In a staged install `old` is read
/// from the directory's record instead (`vfs/install_steps.rs`).
#[derive(Clone, Debug)]
pub(super) struct Task {
    pub(super) dir: Ino,
    pub(super) old: Option<Hash>,
    pub(super) new: Hash,
    /// The directory's depth (the root's is 0).
    pub(super) depth: u32,
    /// Its path from the root (for the ignore patterns).
    pub(super) path: Vec<u8>,
}

impl Task {
    /// The root's names, from the tree `base` to the tree `new`.
    pub(super) fn root(base: Hash, new: Hash) -> Task {
        Task {
            dir: ROOT,
            old: Some(base),
            new,
            depth: 0,
            path: Vec::new(),
        }
    }
}

/// One install's state: the work list and what changed so far.
pub(super) struct Apply<'a, 't, 'k> {
    /// The ignore patterns in force: the namespace side of an ignored
    /// name is left alone (`vfs/ignored.rs`).
    patterns: &'a Patterns,
    /// No pattern set ever parsed: local names are held back.
    held_back: bool,
    pub(super) inner: &'a mut Inner,
    pub(super) txn: &'t mut Txn<'k>,
    owner: Ctx,
    now: Timestamp,
    pub(super) names: Vec<(Ino, Vec<u8>)>,
    /// Existing inodes changed in place or removed.
    touched: BTreeSet<Ino>,
    created: HashSet<Ino>,
    pub(super) tasks: Vec<Task>,
    /// A staged install (`vfs/install_steps.rs`): how many more names this
    /// step may apply, and the directories whose trees it changed (by
    /// depth, deepest first) for the walk up to the root. `None`: one
    /// transaction, every directory's tree set to its new one at once.
    pub(super) staged: Option<Staged>,
}

/// A staged step's bookkeeping (see [`Apply::staged`]).
pub(super) struct Staged {
    pub(super) budget: usize,
    pub(super) dirs: BTreeMap<(std::cmp::Reverse<u32>, Ino), ()>,
    /// The empty directory's tree, which a directory created by a step
    /// holds until its names arrive.
    pub(super) empty: Hash,
    /// When the step should end: no name is started after it (one at
    /// least is, so that every step moves on).
    pub(super) deadline: std::time::Instant,
}

/// What getattr shows of a record (ctime aside).
fn visible(r: &InodeRecord) -> (u32, (i64, u32), u32, u64, u64, u64) {
    (r.perm, r.mtime, r.nlink, r.size, r.entries, r.blocks)
}

/// The permission bits an entry from a tree gets here.
fn perm_of(e: &Entry) -> u32 {
    e.mode & 0o7777 & !SUID_BITS
}

impl<'a, 't, 'k> Apply<'a, 't, 'k> {
    /// An install over `txn` with nothing done yet; `staged`: a step of a
    /// staged install.
    pub(super) fn new(
        inner: &'a mut Inner,
        txn: &'t mut Txn<'k>,
        patterns: &'a Patterns,
        owner: Ctx,
        now: Timestamp,
        staged: Option<Staged>,
    ) -> Apply<'a, 't, 'k> {
        let held_back = inner.ignore.held_back();
        Apply {
            patterns,
            held_back,
            inner,
            txn,
            owner,
            now,
            names: Vec::new(),
            touched: BTreeSet::new(),
            created: HashSet::new(),
            tasks: Vec::new(),
            staged,
        }
    }

    /// Walks the whole namespace from the tree `base` to `root`, in one
    /// go (not staged).
    pub(super) fn run_from_root(&mut self, base: Hash, root: Hash) -> Result<()> {
        self.tasks.push(Task::root(base, root));
        while let Some(task) = self.tasks.pop() {
            self.dir(task)?;
        }
        Ok(())
    }

    /// Ends the walk: the names changed and the existing inodes touched
    /// (for the kernel), with the dirty marks the namespace changes left
    /// cleared (the namespace equals the tree: nothing is left to fold).
    pub(super) fn finish(self) -> Result<(Names, Vec<Ino>)> {
        let Apply {
            names,
            touched,
            created,
            txn,
            ..
        } = self;
        let inodes: Vec<Ino> = touched
            .into_iter()
            .filter(|i| !created.contains(i))
            .collect();
        for (k, _) in txn.scan(Space::Dirty, &[], None, usize::MAX)? {
            txn.remove(Space::Dirty, k);
        }
        Ok((names, inodes))
    }

    /// Applies a directory's differences, queueing its subdirectories. In
    /// a staged step, only as many names as the budget allows: the
    /// directory's tree becomes its old one with those names' new entries
    /// (a subdirectory's with the tree its record holds now), and the task
    /// goes back on the list for the rest.
    pub(super) fn dir(&mut self, task: Task) -> Result<()> {
        let mut drec = self.txn.inode(task.dir)?;
        if !drec.is_dir() {
            return Err(Error::corrupt("install: a directory's inode is not one"));
        }
        let old = match (&self.staged, task.old) {
            (Some(_), _) => Some(drec.hash()),
            (None, old) => old,
        };
        let mut changes = match old {
            Some(old) => dir::diff(&ReadNodes(self.txn), old, task.new)?,
            None => dir::entries(&ReadNodes(self.txn), task.new)?
                .into_iter()
                .map(|e| (None, Some(e)))
                .collect(),
        };
        let mut rest = false;
        // A task cut short goes back below the subdirectories it queued:
        // they must finish (and `up_to_root` carry their trees up) before
        // its names are diffed again, else the same subdirectories come
        // back first every step and the install never ends.
        let below_children = self.tasks.len();
        if let Some(st) = &mut self.staged {
            // At least one name, so that every step moves on.
            let keep = st.budget.max(1);
            if changes.len() > keep {
                changes.truncate(keep);
                rest = true;
            }
            st.budget = st.budget.saturating_sub(changes.len());
        }
        let mut tree: BTreeMap<Vec<u8>, Option<Entry>> = BTreeMap::new();
        let before = visible(&drec);
        let names_before = self.names.len();
        let mut vv = drec.vv();
        let total = changes.len();
        for (done, (old, new)) in changes.into_iter().enumerate() {
            if let Some(st) = &mut self.staged {
                if done > 0 && std::time::Instant::now() >= st.deadline {
                    // The names not started go back to the budget.
                    st.budget += total - done;
                    rest = true;
                    break;
                }
            }
            let Some(name) = new.as_ref().or(old.as_ref()).map(|e| e.name.clone()) else {
                continue;
            };
            if task.dir == ROOT && name == RESERVED_NAME && new.is_some() {
                return Err(Error::InvalidName);
            }
            if let Some(n) = &new {
                vv.join_from(&n.vv);
            }
            if self.staged.is_some() {
                tree.insert(name.clone(), new.clone());
            }
            let live = new.filter(|e| !e.deleted);
            let here = self.txn.dirent(task.dir, &name)?;
            let path = ignored::child_path(&task.path, &name);
            let is_dir = here
                .as_ref()
                .map(|d| d.kind)
                .or(live.as_ref().map(|e| e.kind))
                == Some(Kind::Dir);
            // While the pattern file has never parsed, local names are
            // held back (never committed): an install must not replace or
            // remove them, only add what is not here.
            let verdict = if self.held_back && here.is_some() {
                Verdict::Ignored { deletable: false }
            } else {
                ignored::verdict(self.patterns, &path, is_dir)
            };
            if let Verdict::Ignored { .. } = verdict {
                // Neither fetched nor shown; a local file of that name
                // stays as it is. The tree takes the merged entry (above,
                // or with the directory's new tree), so roots converge.
                continue;
            }
            let ino = match (here, live) {
                (None, None) => None,
                (Some(d), None) => {
                    self.remove(task.dir, &mut drec, &name, d, &path)?;
                    None
                }
                (None, Some(n)) => Some(self.create(task.dir, &mut drec, n, task.depth, &path)?),
                (Some(d), Some(n)) => self.change(task.dir, &mut drec, d, n, task.depth, &path)?,
            };
            // A subdirectory's entry names the tree its record holds
            // now: its own names arrive in this or a later step.
            if let (Some(ino), Some(Some(e))) = (ino, tree.get_mut(&name)) {
                if e.kind == Kind::Dir && !e.deleted {
                    e.hash = self.txn.inode(ino)?.hash();
                }
            }
        }
        match &mut self.staged {
            None => drec.hash = task.new.0,
            Some(st) => {
                drec.hash = dir::update(&mut TxnNodes(self.txn), drec.hash(), &tree)?.0;
                st.dirs
                    .insert((std::cmp::Reverse(task.depth), task.dir), ());
                if rest {
                    self.tasks.insert(below_children, task.clone());
                }
            }
        }
        if task.dir == ROOT {
            // The root has no entry: its vector joins what it holds.
            drec.set_vv(&vv);
        }
        if visible(&drec) != before || self.names.len() != names_before {
            drec.ctime = ts_pair(self.now);
            self.touched.insert(task.dir);
        }
        self.txn.put_inode(task.dir, &drec)
    }

    /// `name` in `parent` (named by `d`) is live in both trees as `n`.
    /// Returns the directory inode the name holds after, if it is one.
    fn change(
        &mut self,
        parent: Ino,
        prec: &mut InodeRecord,
        d: Dirent,
        n: Entry,
        depth: u32,
        path: &[u8],
    ) -> Result<Option<Ino>> {
        let mut rec = self.txn.inode(d.ino)?;
        let kind = rec.kind()?;
        let before = visible(&rec);
        let (perm, mtime) = (perm_of(&n), ts_pair(n.mtime));
        if kind == Kind::Dir && n.kind == Kind::Dir {
            let old = rec.hash();
            rec.perm = perm;
            rec.mtime = mtime;
            rec.set_vv(&n.vv);
            if self.staged.is_none() {
                rec.hash = n.hash.0;
            }
            self.put_changed(d.ino, &mut rec, before)?;
            if old != n.hash {
                self.tasks.push(Task {
                    dir: d.ino,
                    old: Some(old),
                    new: n.hash,
                    depth: depth + 1,
                    path: path.to_vec(),
                });
            }
            return Ok(Some(d.ino));
        }
        let same_content = kind == n.kind
            && match kind {
                Kind::File => rec.hash == n.hash.0 && rec.size == n.size,
                Kind::Symlink => rec.target == n.target,
                Kind::CharDev | Kind::BlockDev => rec.rdev == n.rdev,
                Kind::Fifo | Kind::Socket => true,
                Kind::Dir => false,
            };
        let same_attrs = rec.perm == perm && rec.mtime == mtime;
        if same_content && (rec.nlink <= 1 || same_attrs) {
            rec.perm = perm;
            rec.mtime = mtime;
            if rec.nlink <= 1 {
                rec.set_vv(&n.vv);
            } else {
                // Other names share the record: keep what they have seen.
                let mut vv = rec.vv();
                vv.join_from(&n.vv);
                rec.set_vv(&vv);
            }
            return self.put_changed(d.ino, &mut rec, before).map(|()| None);
        }
        let name = n.name.clone();
        self.remove(parent, prec, &name, d, path)?;
        self.create(parent, prec, n, depth, path).map(Some)
    }

    /// Saves a record changed in place, noting it if getattr would differ.
    fn put_changed(
        &mut self,
        ino: Ino,
        rec: &mut InodeRecord,
        before: (u32, (i64, u32), u32, u64, u64, u64),
    ) -> Result<()> {
        if visible(rec) != before {
            rec.ctime = ts_pair(self.now);
            self.touched.insert(ino);
        }
        self.txn.put_inode(ino, rec)
    }

    /// Notes an open file losing its last name to the peer's tree, so
    /// that bytes written here are not lost with it.
    fn displace(&mut self, ino: Ino, parent: Ino, name: &[u8]) -> Result<()> {
        let rec = self.txn.inode(ino)?;
        if rec.nlink <= 1 {
            self.inner.displace(ino, parent, name, rec.hash());
        }
        Ok(())
    }

    /// Removes `name` (named by `d`, at `path`) from `parent`, a directory
    /// with its whole subtree; an open file is kept as an orphan until
    /// released. A directory holding an ignored file that is not `(?d)`
    /// stays, with just what keeps it (`install/keep.rs`).
    fn remove(
        &mut self,
        parent: Ino,
        prec: &mut InodeRecord,
        name: &[u8],
        d: Dirent,
        path: &[u8],
    ) -> Result<()> {
        if d.kind == Kind::Dir && self.keeps_ignored(d.ino, path)? {
            return self.remove_around_ignored(d.ino, path);
        }
        self.remove_all(parent, prec, name, d)
    }

    /// Removes `name` (named by `d`) from `parent`, a directory with
    /// everything below it, ignored or not.
    fn remove_all(
        &mut self,
        parent: Ino,
        prec: &mut InodeRecord,
        name: &[u8],
        d: Dirent,
    ) -> Result<()> {
        self.txn.remove_dirent(parent, prec, name, &d);
        self.names.push((parent, name.to_vec()));
        if d.kind != Kind::Dir {
            self.touched.insert(d.ino);
            self.displace(d.ino, parent, name)?;
            return self
                .inner
                .drop_link(self.txn, d.ino, (parent, name), self.now);
        }
        prec.nlink = prec.nlink.saturating_sub(1);
        let mut dirs = vec![d.ino];
        while let Some(dino) = dirs.pop() {
            let mut drec = self.txn.inode(dino)?;
            let keys = self
                .txn
                .scan(Space::Dirents, &dino.to_be_bytes(), None, usize::MAX)?;
            for (k, _) in keys {
                let name = &k[8..];
                let child = self
                    .txn
                    .dirent(dino, name)?
                    .ok_or_else(|| Error::corrupt("install: a directory entry vanished"))?;
                self.txn.remove_dirent(dino, &mut drec, name, &child);
                self.names.push((dino, name.to_vec()));
                if child.kind == Kind::Dir {
                    dirs.push(child.ino);
                } else {
                    self.touched.insert(child.ino);
                    self.displace(child.ino, dino, name)?;
                    self.inner
                        .drop_link(self.txn, child.ino, (dino, name), self.now)?;
                }
            }
            self.txn.remove_inode(dino)?;
            self.touched.insert(dino);
        }
        Ok(())
    }

    /// Creates a new inode for the live entry `n` in `parent` (at `depth`),
    /// queueing a directory's subtree; returns the inode.
    fn create(
        &mut self,
        parent: Ino,
        prec: &mut InodeRecord,
        n: Entry,
        depth: u32,
        path: &[u8],
    ) -> Result<Ino> {
        let kind = n.kind;
        let mut rec = InodeRecord::new(kind, perm_of(&n), self.owner.uid, self.owner.gid, self.now);
        rec.mtime = ts_pair(n.mtime);
        rec.set_vv(&n.vv);
        let ino = names::alloc_ino(self.txn)?;
        match kind {
            Kind::File => {
                if n.size > MAX_FILE_SIZE {
                    return Err(Error::FileTooLarge);
                }
                let extents = content::extents(&ReadNodes(self.txn), n.hash)?;
                let (mut len, mut data) = (0u64, 0u64);
                for e in &extents {
                    len = len.saturating_add(e.len());
                    if let Extent::Data { len: l, .. } = e {
                        data += u64::from(*l);
                    }
                }
                if len > n.size {
                    return Err(Error::corrupt(format!(
                        "install: the content of {:?} is longer than its size",
                        String::from_utf8_lossy(&n.name)
                    )));
                }
                rec.size = n.size;
                rec.hash = n.hash.0;
                rec.blocks = data.div_ceil(512);
            }
            Kind::Dir => {
                if depth + 1 > MAX_DEPTH {
                    return Err(Error::TooDeep);
                }
                rec.nlink = 2;
                rec.parent = parent;
                rec.name = n.name.clone();
                rec.hash = match &self.staged {
                    Some(st) => st.empty.0,
                    None => n.hash.0,
                };
                prec.nlink += 1;
                self.tasks.push(Task {
                    dir: ino,
                    old: None,
                    new: n.hash,
                    depth: depth + 1,
                    path: path.to_vec(),
                });
            }
            Kind::Symlink => {
                rec.size = n.target.len() as u64;
                rec.target = n.target.clone();
            }
            Kind::CharDev | Kind::BlockDev => rec.rdev = n.rdev,
            Kind::Fifo | Kind::Socket => {}
        }
        if kind != Kind::Dir {
            self.txn.add_name(ino, &mut rec, parent, &n.name);
        }
        self.txn.put_inode(ino, &rec)?;
        self.txn.add_dirent(parent, prec, &n.name, ino, kind);
        self.names.push((parent, n.name));
        self.created.insert(ino);
        Ok(ino)
    }
}
