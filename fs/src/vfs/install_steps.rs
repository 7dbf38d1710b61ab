//! A staged install: a peer's tree made the committed root in bounded
//! steps, each its own transaction and commit (DESIGN.md, trap "Big
//! merges").
//!
//! [`Vfs::install_with`] installs a whole tree in one transaction under the
//! vfs lock: a first sync of 100,000 files held the lock for seconds and the
//! whole transaction in memory (1.6 GiB). A staged install walks the same
//! differences (`vfs/install.rs`) but stops after [`InstallStep::names`]
//! names or [`InstallStep::time`] (checked before each name), whichever
//! comes first, and commits what it did:
//!
//! - Every step's root is a real tree that the namespace equals: each
//!   directory's tree is its old one with the names applied so far set to
//!   their new entries, and a subdirectory's entry (new attributes) names
//!   the tree its record holds at that moment; the step then rebuilds the
//!   trees on the way up to the root. Each entry is wholly old or wholly
//!   new; a name in both trees is changed within one step (the old inode
//!   goes and the new one comes in the same transaction), so it never
//!   answers ENOENT in between. Conflicts, tombstones and open files are
//!   handled per name exactly as in the one-transaction install.
//! - Each step appends a commit whose parents are the previous root and
//!   the peer's root: `log` shows a merge that took several steps as
//!   several merge commits with the same second parent; the last one's root
//!   is the whole merge.
//! - Between steps the vfs lock is free: local operations run, and a
//!   commit of theirs may move the root. The next step then sees a root
//!   other than the one it left, and asks for a new target computed from
//!   the new root (the merge is a join, so merging the peer's tree into the
//!   new root again gives the same entries for what it had installed).
//! - A step's root is not announced by the install (peers hear only the
//!   last one); a local commit between steps announces its root as usual,
//!   which is safe: each entry in it is a whole version with its vector.
//! - Resumable: a node killed between steps restarts from the last step's
//!   root; the next sync's pull skips what that root holds, and finds the
//!   nodes and chunks already received in the store.

use std::cmp::Reverse;
use std::time::{Duration, Instant};

use super::commit::{ReadNodes, TxnNodes};
use super::install::{Apply, Staged, Task};
use super::records::NamespaceTxn;
use super::types::*;
use super::{Installed, Vfs};
use crate::error::{Error, Result};
use crate::hash::Hash;
use crate::store::Txn;
use crate::tree::dir;

/// How much one step of a staged install may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallStep {
    /// Names applied per step (at least one is).
    pub names: usize,
    /// Time per step: no new name is started after it.
    pub time: Duration,
}

impl Default for InstallStep {
    /// 2,000 names or 15 ms: a step of small files applies about 1,000
    /// names in 15 ms on a slow disk's page cache, and the lock is never
    /// held much longer than the ~20 ms a mount can wait unnoticed.
    fn default() -> Self {
        InstallStep {
            names: 2000,
            time: Duration::from_millis(15),
        }
    }
}

/// Times a staged install asks for a target outside the vfs lock before it
/// asks under the lock (so that busy local writes cannot starve it).
const TRIES_UNLOCKED: u32 = 3;

impl Vfs {
    /// How much one step of a staged install may do.
    pub fn install_step(&self) -> InstallStep {
        *self.install_step.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets how much one step of a staged install may do (tests make
    /// steps of a few names, so that every merge takes many).
    pub fn set_install_step(&self, step: InstallStep) {
        *self.install_step.lock().unwrap_or_else(|p| p.into_inner()) = step;
    }

    /// Installs a tree in steps (see the module doc).
    ///
    /// `target(base)` computes the tree to install from the committed root
    /// `base` (its nodes written to the store, canonical as for
    /// [`Vfs::install_with`]), or `None` to change nothing; it runs outside
    /// the vfs lock, and again whenever a local commit moved the root
    /// between steps. `second` is the second parent of each step's commit
    /// (the peer's root). `each(step, last)` runs after every step, with the
    /// lock released: where a mount makes the step durable and tells the
    /// kernel. Returns the last step's commit, or `None` if nothing was
    /// installed. Errors as [`Vfs::install_with`]; steps already done stay.
    pub fn install_steps(
        &self,
        limits: InstallStep,
        second: Hash,
        mut target: impl FnMut(Hash) -> Result<Option<Hash>>,
        mut each: impl FnMut(Installed, bool) -> Result<()>,
    ) -> Result<Option<CommitInfo>> {
        // (the root the next step must find, the target, the work list)
        let mut plan: Option<(Hash, Hash, Vec<Task>)> = None;
        let mut tries = 0u32;
        let mut last = None;
        loop {
            let now = self.now();
            let mut guard = self.lock();
            let inner = &mut *guard;
            let store = inner.store.clone();
            inner.commit(now)?;
            let mut txn = Txn::new(store.kv());
            let base = txn.inode(ROOT)?.hash();
            if !matches!(&plan, Some((at, _, _)) if *at == base) {
                let to = if tries < TRIES_UNLOCKED {
                    drop(guard);
                    tries += 1;
                    let to = target(base)?;
                    plan = to.map(|t| (base, t, Vec::new()));
                    continue;
                } else {
                    target(base)?
                };
                plan = to.map(|t| (base, t, Vec::new()));
            }
            let Some((at, to, tasks)) = &mut plan else {
                return Ok(last);
            };
            if *to == base {
                return Ok(last);
            }
            if tasks.is_empty() {
                tasks.push(Task::root(base, *to));
            }
            let started = Instant::now();
            inner.begin();
            let staged = Staged {
                budget: limits.names.max(1),
                dirs: Default::default(),
                empty: dir::empty(&mut TxnNodes(&mut txn))?,
                deadline: started + limits.time,
            };
            let patterns = inner.ignore.patterns();
            let mut apply = Apply::new(
                &mut *inner,
                &mut txn,
                &patterns,
                self.owner,
                now,
                Some(staged),
            );
            apply.tasks = std::mem::take(tasks);
            while let Some(task) = apply.tasks.pop() {
                apply.dir(task)?;
                let st = apply.staged.as_ref().expect("a staged step");
                if st.budget == 0 || started.elapsed() >= limits.time {
                    break;
                }
            }
            *tasks = std::mem::take(&mut apply.tasks);
            let dirs = apply.staged.take().map(|s| s.dirs).unwrap_or_default();
            up_to_root(apply.txn, dirs)?;
            let (names, inodes) = apply.finish()?;
            let root = txn.inode(ROOT)?.hash();
            let done = tasks.is_empty();
            if done && root != *to {
                return Err(Error::corrupt(format!(
                    "a staged install ended at {root}, not at its target {to}"
                )));
            }
            let info = inner.commit_install(
                txn,
                root,
                vec![base.0, second.0],
                now,
                store.node_id(),
                names.len(),
            )?;
            *at = root;
            tracing::debug!(
                seq = info.seq,
                %base,
                %root,
                names = names.len(),
                done,
                ms = started.elapsed().as_millis() as u64,
                "install step"
            );
            drop(guard);
            last = Some(info.clone());
            each(
                Installed {
                    commit: info,
                    names,
                    inodes,
                    hold: self.announce.hold(),
                },
                done,
            )?;
            if done {
                return Ok(last);
            }
        }
    }
}

/// Rebuilds the trees from the directories a step changed up to the root:
/// each directory's entry in its parent gets the tree its record holds (the
/// entry's other fields were set when the parent's step applied its name).
fn up_to_root(
    txn: &mut Txn<'_>,
    mut dirs: std::collections::BTreeMap<(Reverse<u32>, Ino), ()>,
) -> Result<()> {
    while let Some(((Reverse(depth), ino), ())) = dirs.pop_first() {
        if ino == ROOT {
            continue;
        }
        let Some(rec) = txn.inode_opt(ino)? else {
            continue; // removed by this step, its name with it
        };
        let parent = rec.parent;
        let mut prec = txn.inode(parent)?;
        let Some(mut e) = dir::get(&ReadNodes(txn), prec.hash(), &rec.name)? else {
            return Err(Error::corrupt(
                "install: a directory's name is not in its parent's tree",
            ));
        };
        if e.hash == rec.hash() {
            continue;
        }
        e.hash = rec.hash();
        let changes = std::iter::once((rec.name.clone(), Some(e))).collect();
        prec.hash = dir::update(&mut TxnNodes(txn), prec.hash(), &changes)?.0;
        txn.put_inode(parent, &prec)?;
        dirs.insert((Reverse(depth.saturating_sub(1)), parent), ());
    }
    Ok(())
}
