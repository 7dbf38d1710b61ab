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

use backer_fs::tree::encode::entry_to_bytes;
use backer_fs::tree::{dir, Entry, Kind, NodeStore};
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
    let root = m.dir(local, remote, 0)?;
    Ok(Merged {
        root,
        changed: m.changed,
        conflicts: m.conflicts,
    })
}

/// Whether `a` and `b` hold the same data (kind, bytes, target, device),
/// whatever their mode, mtime and history.
pub fn same_content(a: &Entry, b: &Entry) -> bool {
    a.deleted == b.deleted
        && a.kind == b.kind
        && a.size == b.size
        && a.hash == b.hash
        && a.target == b.target
        && a.rdev == b.rdev
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

impl<S: NodeStore> Merger<'_, S> {
    /// Merges the directory trees `l` (local) and `r` at nesting `depth`.
    fn dir(&mut self, l: Hash, r: Hash, depth: u32) -> Result<Hash> {
        if l == r {
            return Ok(l);
        }
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        let mut changes: BTreeMap<Vec<u8>, Option<Entry>> = BTreeMap::new();
        let mut copies = Vec::new();
        for (le, re) in dir::diff(&*self.store, l, r)? {
            let Some(re) = re else {
                continue; // only here: ours stands
            };
            if depth == 0 && re.name == RESERVED_NAME {
                return Err(Error::InvalidName);
            }
            let (out, copy) = self.entry(le.as_ref(), &re, depth)?;
            copies.extend(copy);
            if le.as_ref() != Some(&out) {
                changes.insert(out.name.clone(), Some(out));
            }
        }
        for copy in copies {
            self.place(l, &mut changes, copy)?;
        }
        self.changed += changes.len();
        dir::update(&mut *self.store, l, &changes)
    }

    /// The merge of our version `l` (if any) and their version `r` of one
    /// name, as [`classify`] decides: the entry that keeps the name, and a
    /// conflict copy to place beside it.
    fn entry(
        &mut self,
        l: Option<&Entry>,
        r: &Entry,
        depth: u32,
    ) -> Result<(Entry, Option<Entry>)> {
        let class = classify(l, r);
        let Some(l) = l else {
            return Ok((self.adopt(r.clone(), depth)?, None));
        };
        let vv = l.vv.join(&r.vv);
        Ok(match class {
            Class::Ours => (l.clone(), None),
            Class::Theirs => (self.adopt(r.clone(), depth)?, None),
            Class::MergeDirs => {
                let hash = self.dir(l.hash, r.hash, depth + 1)?;
                let meta = winner(l, r).0;
                (
                    Entry {
                        hash,
                        vv,
                        ..meta.clone()
                    },
                    None,
                )
            }
            Class::BothDeleted => (
                Entry {
                    vv,
                    ..winner(l, r).0.clone()
                },
                None,
            ),
            Class::TheirEdit => (self.keep_edit(r, l, vv, depth)?, None),
            Class::OurEdit => (self.keep_edit(l, r, vv, depth)?, None),
            Class::Conflict => {
                let (w, lose) = winner(l, r);
                let w = self.adopt(Entry { vv, ..w.clone() }, depth)?;
                if same_content(&w, lose) {
                    (w, None)
                } else {
                    (w, Some(self.adopt(lose.clone(), depth)?))
                }
            }
        })
    }

    /// A live version concurrent with a delete: the edit survives (with the
    /// joined vector); under a directory tombstone, only what the delete had
    /// not seen survives inside it.
    fn keep_edit(
        &mut self,
        live: &Entry,
        tomb: &Entry,
        vv: backer_fs::tree::VersionVector,
        depth: u32,
    ) -> Result<Entry> {
        let mut out = Entry { vv, ..live.clone() };
        if live.kind == Kind::Dir {
            out.hash = if tomb.kind == Kind::Dir {
                self.prune(live.hash, tomb, depth + 1)?
            } else {
                self.canonical_dir(live.hash, depth + 1)?
            };
        }
        Ok(out)
    }

    /// The directory `h` less every entry the tombstone `tomb` has seen
    /// (those become tombstones), recursively; rebuilt canonically.
    fn prune(&mut self, h: Hash, tomb: &Entry, depth: u32) -> Result<Hash> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        let mut entries = dir::entries(&*self.store, h)?;
        for c in &mut entries {
            if seen_by(c, &tomb.vv) {
                if !c.deleted {
                    *c = Entry {
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
                    };
                }
            } else if c.kind == Kind::Dir && !c.deleted {
                c.hash = self.prune(c.hash, tomb, depth + 1)?;
                // A directory's vector sees everything beneath it, the
                // tombstones just made there included.
                for k in dir::entries(&*self.store, c.hash)? {
                    c.vv.join_from(&k.vv);
                }
            }
        }
        dir::build(&mut *self.store, &entries)
    }

    /// `e` as this node stores it: a directory's subtree rebuilt canonically.
    fn adopt(&mut self, mut e: Entry, depth: u32) -> Result<Entry> {
        if e.kind == Kind::Dir && !e.deleted {
            e.hash = self.canonical_dir(e.hash, depth + 1)?;
        }
        Ok(e)
    }

    /// The directory tree `h` rebuilt the way [`dir::build`] cuts it, with
    /// every subdirectory rebuilt too (the same hash for canonical trees).
    fn canonical_dir(&mut self, h: Hash, depth: u32) -> Result<Hash> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        let mut entries = dir::entries(&*self.store, h)?;
        for c in &mut entries {
            if c.kind == Kind::Dir && !c.deleted {
                c.hash = self.canonical_dir(c.hash, depth + 1)?;
            }
        }
        dir::build(&mut *self.store, &entries)
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
                Some(e) if same_content(&e, &copy) => return Ok(()),
                Some(_) => continue,
            }
            changes.insert(name, Some(copy));
            self.conflicts += 1;
            return Ok(());
        }
        Err(Error::corrupt("no free conflict name after 1000 tries"))
    }
}
