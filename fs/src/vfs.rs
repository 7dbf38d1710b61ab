//! POSIX-like operations on the live namespace, with no FUSE types.
//!
//! A [`Vfs`] has three parts, each with its own requests and its own
//! state, all under one lock (the kernel's requests are short, and one
//! writer means no conflicting transactions):
//! - the live namespace, [`Vfs::names`] ([`Names`]: `vfs/names.rs`,
//!   `vfs/attrs.rs`, `vfs/xattr.rs`): inodes, names, link counts, owners,
//!   xattrs, in the store;
//! - the open files, [`Vfs::files`] ([`Files`]: `vfs/handles.rs`, state
//!   in `vfs/open_files.rs`): handles and the bytes written through them;
//! - history, [`Vfs::history`] ([`History`]: `vfs/history.rs`): the
//!   snapshot view, restores, collections.
//!
//! The `Vfs` itself commits, installs trees made elsewhere and publishes
//! new roots.
//!
//! The live namespace changes with every operation, atomically: each
//! operation reads and writes through one [`Txn`] applied as one batch.
//! What an operation changes in memory because of its transaction (an
//! open file closed, a file displaced by a peer's version) runs only once
//! that transaction applied (`Inner::on_commit`, as Garage's db layer
//! does); what it changes ahead of it (a fold, a truncate, a setattr's
//! explicit mtime dropping the pending one) is put back if it does not
//! (`OpenFiles::keep_for_rollback`), and an open file it did not open is
//! never dropped by it. A release whose transaction does not apply leaves
//! its file open with no handle: a later commit finishes the close
//! (`Inner::finish_closes`), one file at a time, so one that keeps
//! failing holds up no other file's commit. Every name an operation touches is marked dirty in the
//! same batch; [`Vfs::commit`] later folds the dirty names into new tree
//! nodes (only the paths that changed) and appends the new root to the
//! commit log. Marks are in the store, so a crash between an operation
//! and its commit loses nothing: the next commit picks them up.
//!
//! File bytes are buffered per open inode ([`file::FileData`]) and chunked
//! at release and fsync (at the close when the disk is tight, and while
//! written when a file's unflushed bytes pass [`file::FOLD_THRESHOLD`]);
//! see `vfs/handles.rs`. fsync returns once its root is durable.
//!
//! A tree made elsewhere (a merge with a peer's) replaces the committed
//! one through [`Vfs::install_steps`] (`vfs/install_steps.rs`): bounded
//! steps, each changing part of the namespace to match it and committing
//! that part's tree in one transaction, so a merge of any size never holds
//! the vfs lock or memory in proportion to the tree. [`Vfs::install_with`]
//! does it in one transaction (restore, small installs, tests).
//!
//! A mount comes in through [`Door`] (`vfs/door.rs`), which composes the
//! three parts and holds the rules that are the file system's rather than
//! the kernel protocol's (the read-only history view, set-id dropping,
//! O_APPEND under the writeback cache). New roots reach peers through one
//! event, published once durable (`vfs/publish.rs`).

mod attrs;
mod commit;
mod committer;
mod door;
mod file;
mod gc;
mod handles;
mod history;
mod ignored;
mod install;
mod install_steps;
mod names;
mod open_files;
mod publish;
mod records;
mod restore;
mod snapshots;
mod types;
mod xattr;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

pub(crate) use commit::META_HEAD;
pub use commit::{read_log, Commit};
pub use committer::Committer;
pub use door::{Caller, Door, OpenMode, ReadReply};
pub use gc::Pins;
pub use handles::Files;
pub use history::History;
pub use ignored::{child_path, saved_ignore_patterns, IgnoreStatus};
pub use install::Installed;
pub use install_steps::InstallStep;
pub use names::{Names, NewNode};
pub use publish::{Durable, Hold, RootObserver};
pub use restore::entry_at;
pub use snapshots::{is_view, snapshot_name, VIEW_BIT};
pub use types::*;

use crate::error::Result;
use crate::hash::Hash;
use crate::store::{Space, Store, Txn};
use crate::tree::Timestamp;
use commit::Head;
use open_files::OpenFiles;
use records::{InodeRecord, NamespaceTxn};

/// The vfs's clock: wall time for mtimes and commits. Tests inject one.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Wall-clock time now.
pub fn system_now() -> Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        secs: d.as_secs() as i64,
        nanos: d.subsec_nanos(),
    }
}

/// How a vfs is opened.
#[derive(Clone)]
pub struct VfsOptions {
    /// Owner of the root directory when the store is new (and of what
    /// later arrives from peers).
    pub owner: Ctx,
    /// Wall clock.
    pub clock: Clock,
}

impl Default for VfsOptions {
    fn default() -> Self {
        VfsOptions {
            owner: Ctx::default(),
            clock: Arc::new(system_now),
        }
    }
}

struct Inner {
    store: Arc<Store>,
    /// The open files and their handles (`vfs/open_files.rs`).
    files: OpenFiles,
    head: Head,
    /// The newest commit this process made (for [`Vfs::make_durable`]).
    latest: Option<CommitInfo>,
    /// This node's edit clock: every version-vector bump takes the next
    /// tick ([`crate::tree::VersionVector::bump_to`]); kept in the store.
    clock: u64,
    /// What the running operation changes in memory once its transaction
    /// applied (see [`Inner::on_commit`]).
    on_commit: Vec<OnCommit>,
    /// The ignore patterns in force (`vfs/ignored.rs`).
    ignore: ignored::IgnoreState,
}

/// An in-memory change that an operation's transaction stands for, run
/// only once that transaction applied (as Garage's db layer runs a
/// `Transaction::on_commit` closure), and dropped with it otherwise.
type OnCommit = Box<dyn FnOnce(&mut Inner) + Send>;

impl Inner {
    /// Starts an operation's transaction: nothing is kept from an earlier
    /// one that ended early (an error before its [`Inner::settle`]).
    fn begin(&mut self) {
        self.files.forget_rollback();
        self.on_commit.clear();
    }

    /// Runs `f` once the running operation's transaction applied
    /// ([`Inner::settle`]); if it does not, `f` never runs, so memory
    /// never claims what the store lacks (a closed file whose bytes were
    /// not stored, a displaced file that kept its name).
    fn on_commit(&mut self, f: impl FnOnce(&mut Inner) + Send + 'static) {
        self.on_commit.push(Box::new(f));
    }

    /// The running operation's transaction applied: its in-memory effects
    /// run, in the order they were staged.
    fn applied(&mut self) {
        self.files.forget_rollback();
        for f in std::mem::take(&mut self.on_commit) {
            f(self);
        }
    }

    /// The running operation's transaction did not apply: its effects are
    /// dropped and the open files it changed ahead of it are put back.
    fn not_applied(&mut self) {
        self.on_commit.clear();
        self.files.roll_back();
    }

    /// The head moved to the commit `info` (applied): remember it (it is
    /// published once durable, see `vfs/publish.rs`).
    fn moved_head(&mut self, info: &CommitInfo) {
        self.head = commit::Head {
            seq: info.seq,
            root: Some(info.root),
        };
        self.latest = Some(info.clone());
    }

    /// Ends a transaction run outside [`Vfs::write_op`] (begun with
    /// [`Inner::begin`]): `applied` says whether it applied; its effects
    /// run if so, else the open files are put back.
    fn settle(&mut self, applied: Result<()>) -> Result<()> {
        match applied {
            Ok(()) => self.applied(),
            Err(_) => self.not_applied(),
        }
        applied
    }

    /// Marks every name of `ino` dirty (its entry must be rebuilt).
    fn mark_names_dirty(&self, txn: &mut Txn<'_>, ino: Ino, rec: &InodeRecord) -> Result<()> {
        if rec.is_dir() {
            if ino != ROOT {
                txn.mark_dirty(rec.parent, &rec.name);
            }
            return Ok(());
        }
        for (parent, name) in txn.names_of(ino, rec)? {
            txn.mark_dirty(parent, &name);
        }
        Ok(())
    }
}

/// The POSIX-like file system over a [`Store`]. Thread-safe. Requests go
/// to its three parts ([`Vfs::names`], [`Vfs::files`], [`Vfs::history`]);
/// the vfs itself commits, installs trees and publishes roots.
pub struct Vfs {
    inner: Mutex<Inner>,
    clock: Clock,
    owner: Ctx,
    /// Bumped by every operation that marks something dirty.
    changes: AtomicU64,
    /// Signalled on a change while the [`Committer`] sleeps.
    wake: (Mutex<()>, Condvar),
    /// Set by the committer while it waits for a first change.
    committer_asleep: AtomicBool,
    /// When the vfs was opened, and the last change after it (ns).
    started: std::time::Instant,
    last_change: AtomicU64,
    /// History's part: the snapshot view, collections
    /// (`vfs/history.rs`).
    history: history::HistoryState,
    /// Signalled when a fold without the lock ends (writers that ran too
    /// far ahead of one wait for it).
    stream_folded: (Mutex<()>, Condvar),
    /// Telling the root observer of durable roots (`vfs/publish.rs`).
    announce: publish::Announcer,
    /// How much one step of a staged install may do.
    install_step: Mutex<InstallStep>,
}

impl Vfs {
    /// Opens the vfs over `store`: creates the root directory of a new
    /// store and reclaims inodes that were unlinked while open when the
    /// previous process died.
    pub fn new(store: Arc<Store>, opts: VfsOptions) -> Result<Vfs> {
        let now = (opts.clock)();
        let mut fresh = false;
        let head = {
            let mut txn = Txn::new(store.kv());
            if txn.inode_opt(ROOT)?.is_none() {
                names::init_root(&mut txn, opts.owner, now)?;
                fresh = true;
            }
            for (k, _) in txn.scan(Space::Orphans, &[], None, usize::MAX)? {
                let ino = records::ino_at(&k, 0)?;
                tracing::info!(ino = ino.0, "reclaiming an inode unlinked while open");
                txn.remove_inode(ino)?;
            }
            let head = commit::load_head(&txn)?;
            txn.commit()?;
            head
        };
        let clock = commit::load_clock(store.kv())?;
        let checkout = head.root.filter(|_| fresh);
        let vfs = Vfs {
            inner: Mutex::new(Inner {
                store,
                files: OpenFiles::default(),
                head,
                latest: None,
                clock,
                on_commit: Vec::new(),
                ignore: ignored::IgnoreState::default(),
            }),
            clock: opts.clock,
            owner: opts.owner,
            changes: AtomicU64::new(1),
            wake: (Mutex::new(()), Condvar::new()),
            stream_folded: (Mutex::new(()), Condvar::new()),
            committer_asleep: AtomicBool::new(false),
            started: std::time::Instant::now(),
            last_change: AtomicU64::new(0),
            history: history::HistoryState::default(),
            announce: publish::Announcer::default(),
            install_step: Mutex::new(InstallStep::default()),
        };
        if let Some(root) = checkout {
            // A database rebuilt from the packs: a log, no namespace.
            vfs.check_out(root)?;
        }
        Ok(vfs)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Operations stage their writes in a Txn and apply them last, so
        // a panic mid-operation leaves the store as it was.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> Timestamp {
        (self.clock)()
    }

    /// The store underneath.
    pub fn store(&self) -> Arc<Store> {
        self.lock().store.clone()
    }

    /// The owner given at open (root's owner; peers' files' owner).
    pub fn owner(&self) -> Ctx {
        self.owner
    }

    /// Runs `f` with a transaction and applies it, then the in-memory
    /// effects `f` staged ([`Inner::on_commit`]); marks the vfs changed.
    /// If `f` fails or the transaction does not apply, the effects are
    /// dropped, the open files `f` changed are put back and the handles
    /// it opened are dropped again (see [`OpenFiles::drop_handles_from`]).
    fn write_op<T>(
        &self,
        f: impl FnOnce(&mut Inner, &mut Txn<'_>, Timestamp) -> Result<T>,
    ) -> Result<T> {
        let now = self.now();
        let mut inner = self.lock();
        let store = inner.store.clone();
        let mut txn = Txn::new(store.kv());
        let first_fh = inner.files.next_fh();
        inner.begin();
        let out = f(&mut inner, &mut txn, now).and_then(|out| {
            let changed = !txn.is_empty();
            txn.commit()?;
            Ok((out, changed))
        });
        let (out, changed) = match out {
            Ok(done) => done,
            Err(e) => {
                inner.not_applied();
                inner.files.drop_handles_from(first_fh);
                return Err(e);
            }
        };
        inner.applied();
        drop(inner);
        if changed {
            self.note_change();
        }
        Ok(out)
    }

    fn note_change(&self) {
        let at = self.started.elapsed().as_nanos() as u64;
        self.last_change.store(at, Ordering::SeqCst);
        self.changes.fetch_add(1, Ordering::SeqCst);
        // The committer flags that it sleeps before it looks at the count
        // a last time: either it sees this change, or this sees the flag.
        // Taking the lock orders the notify after its wait began.
        if self.committer_asleep.load(Ordering::SeqCst) {
            let _g = self.wake.0.lock().unwrap_or_else(|p| p.into_inner());
            self.wake.1.notify_all();
        }
    }

    /// How long ago the last change was (monotonic clock).
    pub(crate) fn since_last_change(&self) -> std::time::Duration {
        let now = self.started.elapsed().as_nanos() as u64;
        let last = self.last_change.load(Ordering::SeqCst);
        std::time::Duration::from_nanos(now.saturating_sub(last))
    }

    /// A counter that grows with every change; equal values mean nothing
    /// changed in between.
    pub fn change_count(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// The current root hash: the last commit's, or the empty tree's.
    pub fn root_hash(&self) -> Result<Hash> {
        let inner = self.lock();
        let txn = Txn::new(inner.store.kv());
        Ok(txn.inode(ROOT)?.hash())
    }

    /// Folds every open file, commits and makes the store durable. Files
    /// whose close is pending (a failed release) are tried by the commit,
    /// best effort: their failure is logged, not this sync's (an fsync of
    /// another file must not fail for them).
    pub fn sync(&self) -> Result<()> {
        let now = self.now();
        let mut inner = self.lock();
        let store = inner.store.clone();
        let mut txn = Txn::new(store.kv());
        let inos: Vec<Ino> = inner
            .files
            .iter()
            .filter(|(_, of)| of.opens > 0)
            .map(|(ino, _)| ino)
            .collect();
        inner.begin();
        let folded = inos
            .into_iter()
            .try_for_each(|ino| inner.fold_file(&mut txn, ino))
            .and_then(|()| txn.commit());
        inner.settle(folded)?;
        inner.commit(now)?;
        // Other requests need not wait for the disk: what they change
        // after this point is made durable too, or by the next sync.
        drop(inner);
        self.flush_and_publish()
    }

    /// Folds everything dirty into a new root and appends it to the commit
    /// log (nothing if nothing changed). Open files' unfolded bytes are
    /// not included: they join at their release (or fsync).
    pub fn commit(&self) -> Result<Option<CommitInfo>> {
        let now = self.now();
        self.lock().commit(now)
    }

    /// [`Vfs::commit`], then makes the store durable (pack bytes, then the
    /// engine), so un-fsynced work is on disk a moment after it quiets
    /// down, not only at the next fsync.
    pub fn commit_durable(&self) -> Result<Option<CommitInfo>> {
        let info = self.commit()?;
        self.flush_and_publish()?;
        Ok(info)
    }

    /// The background committer's commit: like [`Vfs::commit_durable`],
    /// but a file open and being written (changed within `defer.quiet`)
    /// is left out until it is closed, fsynced or quiet, for at most
    /// `defer.max`; an open file that went quiet is folded and included.
    /// So a half-written file (an `O_TRUNC` open and its first writes)
    /// does not become a version that peers copy and history keeps.
    /// Returns the commit and whether something was left out (call again
    /// after `defer.quiet`).
    pub fn commit_background(&self, defer: Defer) -> Result<(Option<CommitInfo>, bool)> {
        let now = self.now();
        let out = self.lock().commit_deferring(now, Some(defer))?;
        self.flush_and_publish()?;
        Ok(out)
    }

    /// What the ignore patterns say and how many paths they keep apart
    /// (`vfs/ignored.rs`); re-reads the pattern files if they changed.
    /// Walks the namespace and the tree once.
    pub fn ignore_status(&self) -> Result<IgnoreStatus> {
        let mut inner = self.lock();
        let store = inner.store.clone();
        let inner = &mut *inner;
        let files = &inner.files;
        inner
            .ignore
            .refresh(&store, &|ino| files.get(ino).is_some_and(|of| of.opens > 0))?;
        let mut st = inner.ignore.status();
        let txn = Txn::new(store.kv());
        (st.local, st.remote) = ignored::count(&txn, &inner.ignore.patterns())?;
        Ok(st)
    }

    /// Whether this node's patterns keep `path` (relative to the root,
    /// `/`-separated) out of the mount: a pull does not fetch such a
    /// file's content.
    pub fn ignores(&self, path: &[u8], is_dir: bool) -> bool {
        let inner = self.lock();
        matches!(
            inner.ignore.verdict(path, is_dir),
            ignored::Verdict::Ignored { .. }
        )
    }

    /// The ignore patterns in force (held back: the empty set).
    pub fn ignore_patterns(&self) -> std::sync::Arc<crate::ignore::Patterns> {
        self.lock().ignore.patterns()
    }
}
