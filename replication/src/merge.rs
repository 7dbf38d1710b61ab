//! The merge rules: two directory trees in, one tree out, entry by entry
//! by version vector (DESIGN.md, "Replication" step 4 and "Traps").
//!
//! - The dominating version wins. A merge joins vectors and never bumps.
//! - Concurrent edits: one deterministic winner keeps the name (the newer
//!   mtime, then the larger author id, then the larger encoding); the
//!   other content is kept beside it as a conflict copy
//!   ([`conflict_name`]). Identical content is no conflict.
//! - A concurrent delete and edit keeps the edit. Against a directory
//!   tombstone (whose vector carries its subtree's maximum) the surviving
//!   directory keeps only the entries the delete had not seen.
//! - Directories present on both sides merge entry by entry, descending
//!   only where hashes differ ([`dir::diff`]).
//!
//! The result depends only on the two trees, not on which side is local:
//! `merge(a, b)` and `merge(b, a)` give the same root, so two nodes that
//! merge each other's trees converge at once. Directories taken from the
//! remote side are rebuilt with [`dir::build`], so a peer that cuts nodes
//! in other places cannot make our trees non-canonical.

pub(crate) mod class;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::BTreeMap;
use std::rc::Rc;

use backer_fs::tree::encode::entry_to_bytes;
use backer_fs::tree::{dir, Entry, Kind, NodeStore, VersionVector};
use backer_fs::vfs::{MAX_DEPTH, RESERVED_NAME};
use backer_fs::{Error, Hash, Result};

pub use backer_fs::tree::conflict::conflict_name;

use class::{classify, seen_by, Class};

/// What a merge made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Merged {
    /// The merged root.
    pub root: Hash,
    /// Entries that differ from the local tree's (all directories).
    pub changed: usize,
    /// Conflict copies made.
    pub conflicts: usize,
}

/// Merges the tree `remote` into `local` (both fully in `store`) and
/// returns the merged root, whose new nodes are written to `store`.
///
/// Errors: [`Error::Corrupt`] for a missing or damaged node,
/// [`Error::InvalidName`] for a remote `.backer` in the root,
/// [`Error::TooDeep`] for nesting beyond [`MAX_DEPTH`].
pub fn merge_roots<S: NodeStore>(store: &mut S, local: Hash, remote: Hash) -> Result<Merged> {
    let mut m = Merger {
        store,
        changed: 0,
        conflicts: 0,
    };
    let root = m.run(Job::Merge {
        l: local,
        r: remote,
        depth: 0,
    })?;
    Ok(Merged {
        root,
        changed: m.changed,
        conflicts: m.conflicts,
    })
}

/// Of two concurrent versions, the one that keeps the name: the newer
/// mtime, then the larger author id, then the larger encoding (a total
/// order, so every node picks the same). Returns (winner, loser).
pub fn winner<'e>(a: &'e Entry, b: &'e Entry) -> (&'e Entry, &'e Entry) {
    let key = |e: &Entry| (e.mtime, e.modified_by, entry_to_bytes(e));
    if key(a) >= key(b) {
        (a, b)
    } else {
        (b, a)
    }
}

struct Merger<'s, S> {
    store: &'s mut S,
    changed: usize,
    conflicts: usize,
}

/// A directory tree to compute. The merge's recursion follows the peer's
/// nesting (up to [`MAX_DEPTH`]), so it runs on an explicit stack of these
/// and their [`Frame`]s: the merge fits an ordinary thread's stack.
#[derive(Clone, Debug)]
enum Job {
    /// Our directory tree `l` merged with their `r`, name by name.
    Merge { l: Hash, r: Hash, depth: u32 },
    /// The tree `h` rebuilt the way [`dir::build`] cuts it, every
    /// subdirectory too (the same hash for canonical trees).
    Canonical { h: Hash, depth: u32 },
    /// The tree `h` less every entry the directory tombstone `tomb` has
    /// seen (those become tombstones), rebuilt canonically.
    Prune {
        h: Hash,
        tomb: Rc<Entry>,
        depth: u32,
    },
}

/// A directory waiting for its subdirectories.
struct Frame {
    /// Subdirectories still to compute, the next one last.
    jobs: Vec<Job>,
    /// Their trees, in the order the jobs were made.
    done: Vec<Hash>,
    then: Then,
}

/// What a [`Frame`] does once its subdirectories are computed.
enum Then {
    /// Builds `entries`, every live subdirectory's hash replaced by the
    /// next result; `join`: and its vector joined with its entries'.
    Build { entries: Vec<Entry>, join: bool },
    /// Applies a merge's outcome to our tree `l`.
    Merge { l: Hash, names: Vec<Outcome> },
}

/// The merge's outcome for one name of a [`Job::Merge`].
struct Outcome {
    /// Our entry before.
    old: Option<Entry>,
    /// The entry that keeps the name; `sub`: its hash is the next result.
    out: (Entry, bool),
    /// A conflict copy to place beside it, likewise.
    copy: Option<(Entry, bool)>,
}

/// The job that stores `e` the way this node does: a live directory's
/// subtree rebuilt canonically.
fn adopt(e: &Entry, depth: u32) -> Option<Job> {
    (e.kind == Kind::Dir && !e.deleted).then_some(Job::Canonical {
        h: e.hash,
        depth: depth + 1,
    })
}

impl<S: NodeStore> Merger<'_, S> {
    /// Computes `root` and every job it leads to, depth first.
    fn run(&mut self, root: Job) -> Result<Hash> {
        let mut stack: Vec<Frame> = Vec::new();
        let mut value = self.begin(root, &mut stack)?;
        loop {
            if let Some(h) = value.take() {
                match stack.last_mut() {
                    Some(parent) => parent.done.push(h),
                    None => return Ok(h),
                }
            }
            let Some(top) = stack.last_mut() else {
                return Err(Error::corrupt("the merge lost its result"));
            };
            value = match top.jobs.pop() {
                Some(job) => self.begin(job, &mut stack)?,
                None => match stack.pop() {
                    Some(f) => Some(self.finish(f)?),
                    None => None,
                },
            };
        }
    }

    /// Starts `job`: its tree if it needs no subdirectory computed, else
    /// `None` with its frame pushed.
    fn begin(&mut self, job: Job, stack: &mut Vec<Frame>) -> Result<Option<Hash>> {
        let (mut jobs, then) = match job {
            Job::Merge { l, r, .. } if l == r => return Ok(Some(l)),
            Job::Merge { depth, .. } | Job::Canonical { depth, .. } | Job::Prune { depth, .. }
                if depth > MAX_DEPTH =>
            {
                return Err(Error::TooDeep)
            }
            Job::Merge { l, r, depth } => self.merge_dir(l, r, depth)?,
            Job::Canonical { h, depth } => {
                let entries = dir::entries(&*self.store, h)?;
                let jobs = entries.iter().filter_map(|c| adopt(c, depth)).collect();
                (
                    jobs,
                    Then::Build {
                        entries,
                        join: false,
                    },
                )
            }
            Job::Prune { h, tomb, depth } => {
                let mut entries = dir::entries(&*self.store, h)?;
                let mut jobs = Vec::new();
                for c in &mut entries {
                    if seen_by(c, &tomb.vv) {
                        if !c.deleted {
                            *c = pruned(c, &tomb);
                        }
                    } else if c.kind == Kind::Dir && !c.deleted {
                        jobs.push(Job::Prune {
                            h: c.hash,
                            tomb: tomb.clone(),
                            depth: depth + 1,
                        });
                    }
                }
                // A directory's vector sees everything beneath it, the
                // tombstones made there included.
                (
                    jobs,
                    Then::Build {
                        entries,
                        join: true,
                    },
                )
            }
        };
        let frame = Frame {
            done: Vec::with_capacity(jobs.len()),
            jobs: {
                jobs.reverse();
                jobs
            },
            then,
        };
        if frame.jobs.is_empty() {
            return self.finish(frame).map(Some);
        }
        stack.push(frame);
        Ok(None)
    }

    /// Merges the directories `l` (ours) and `r` at nesting `depth`, up
    /// to their subdirectories: what each name becomes, and the
    /// subdirectories to compute first.
    fn merge_dir(&mut self, l: Hash, r: Hash, depth: u32) -> Result<(Vec<Job>, Then)> {
        let mut jobs = Vec::new();
        let mut names = Vec::new();
        for (le, re) in dir::diff(&*self.store, l, r)? {
            let Some(re) = re else {
                continue; // only here: ours stands
            };
            if depth == 0 && re.name == RESERVED_NAME {
                return Err(Error::InvalidName);
            }
            let (out, copy) = self.entry(le.as_ref(), &re, depth);
            let mut sub = |(e, job): (Entry, Option<Job>)| {
                let has = job.is_some();
                jobs.extend(job);
                (e, has)
            };
            let out = sub(out);
            let copy = copy.map(&mut sub);
            names.push(Outcome { old: le, out, copy });
        }
        Ok((jobs, Then::Merge { l, names }))
    }

    /// The merge of our version `l` (if any) and their version `r` of one
    /// name, as [`classify`] decides: the entry that keeps the name and a
    /// conflict copy to place beside it, each with the job that computes
    /// its directory tree, if any.
    #[allow(clippy::type_complexity)]
    fn entry(
        &mut self,
        l: Option<&Entry>,
        r: &Entry,
        depth: u32,
    ) -> ((Entry, Option<Job>), Option<(Entry, Option<Job>)>) {
        let class = classify(l, r);
        let Some(l) = l else {
            return ((r.clone(), adopt(r, depth)), None);
        };
        let vv = l.vv.join(&r.vv);
        let out = match class {
            Class::Ours => (l.clone(), None),
            Class::Theirs => (r.clone(), adopt(r, depth)),
            Class::MergeDirs => {
                let job = Job::Merge {
                    l: l.hash,
                    r: r.hash,
                    depth: depth + 1,
                };
                (
                    Entry {
                        vv,
                        ..winner(l, r).0.clone()
                    },
                    Some(job),
                )
            }
            Class::BothDeleted => (
                Entry {
                    vv,
                    ..winner(l, r).0.clone()
                },
                None,
            ),
            Class::TheirEdit => keep_edit(r, l, vv, depth),
            Class::OurEdit => keep_edit(l, r, vv, depth),
            Class::Conflict => {
                let (w, lose) = winner(l, r);
                let w = Entry { vv, ..w.clone() };
                let job = adopt(&w, depth);
                // Both live: only a non-directory can hold the same content
                // as the other, and adopting leaves those as they are.
                let copy = (!w.same_content(lose)).then(|| (lose.clone(), adopt(lose, depth)));
                return ((w, job), copy);
            }
        };
        (out, None)
    }

    /// Completes a frame whose subdirectories are computed.
    fn finish(&mut self, f: Frame) -> Result<Hash> {
        let mut done = f.done.into_iter();
        let mut next = || {
            done.next()
                .ok_or_else(|| Error::corrupt("the merge lost a subtree"))
        };
        match f.then {
            Then::Build { mut entries, join } => {
                for c in entries
                    .iter_mut()
                    .filter(|c| c.kind == Kind::Dir && !c.deleted)
                {
                    c.hash = next()?;
                    if join {
                        for k in dir::entries(&*self.store, c.hash)? {
                            c.vv.join_from(&k.vv);
                        }
                    }
                }
                dir::build(&mut *self.store, &entries)
            }
            Then::Merge { l, names } => {
                let mut changes: BTreeMap<Vec<u8>, Option<Entry>> = BTreeMap::new();
                let mut copies = Vec::new();
                for n in names {
                    let (mut out, sub) = n.out;
                    if sub {
                        out.hash = next()?;
                    }
                    if let Some((mut copy, sub)) = n.copy {
                        if sub {
                            copy.hash = next()?;
                        }
                        copies.push(copy);
                    }
                    if n.old.as_ref() != Some(&out) {
                        changes.insert(out.name.clone(), Some(out));
                    }
                }
                for copy in copies {
                    self.place(l, &mut changes, copy)?;
                }
                self.changed += changes.len();
                dir::update(&mut *self.store, l, &changes)
            }
        }
    }

    /// Puts the conflict copy of `lose` beside its name: the first free
    /// conflict name, or none if the copy is already there (or its deletion
    /// has seen it).
    fn place(
        &mut self,
        l: Hash,
        changes: &mut BTreeMap<Vec<u8>, Option<Entry>>,
        lose: Entry,
    ) -> Result<()> {
        for attempt in 1..=1000 {
            let name = conflict_name(&lose.name, lose.mtime, lose.modified_by, attempt);
            let existing = match changes.get(&name) {
                Some(e) => e.clone(),
                None => dir::get(&*self.store, l, &name)?,
            };
            let copy = Entry {
                name: name.clone(),
                ..lose.clone()
            };
            match existing {
                None => {}
                Some(t) if t.deleted => {
                    if seen_by(&lose, &t.vv) {
                        return Ok(()); // the copy was made and deleted since
                    }
                    let vv = lose.vv.join(&t.vv);
                    changes.insert(name, Some(Entry { vv, ..copy }));
                    self.conflicts += 1;
                    return Ok(());
                }
                Some(e) if e.same_content(&copy) => return Ok(()),
                Some(_) => continue,
            }
            changes.insert(name, Some(copy));
            self.conflicts += 1;
            return Ok(());
        }
        Err(Error::corrupt("no free conflict name after 1000 tries"))
    }
}

/// A live version concurrent with a delete: the edit survives (with the
/// joined vector); under a directory tombstone, only what the delete had
/// not seen survives inside it.
fn keep_edit(live: &Entry, tomb: &Entry, vv: VersionVector, depth: u32) -> (Entry, Option<Job>) {
    let out = Entry { vv, ..live.clone() };
    let job = (live.kind == Kind::Dir).then(|| {
        if tomb.kind == Kind::Dir {
            Job::Prune {
                h: live.hash,
                tomb: Rc::new(tomb.clone()),
                depth: depth + 1,
            }
        } else {
            Job::Canonical {
                h: live.hash,
                depth: depth + 1,
            }
        }
    });
    (out, job)
}

/// `c` deleted by the directory tombstone `tomb` above it.
fn pruned(c: &mut Entry, tomb: &Entry) -> Entry {
    Entry {
        name: std::mem::take(&mut c.name),
        kind: c.kind,
        mode: c.mode,
        mtime: tomb.mtime,
        size: 0,
        hash: Hash::ZERO,
        target: Vec::new(),
        rdev: 0,
        vv: c.vv.join(&tomb.vv),
        modified_by: tomb.modified_by,
        deleted: true,
    }
}
