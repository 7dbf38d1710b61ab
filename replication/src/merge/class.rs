//! The merge's decision for one name, in one place: the merge acts on it
//! ([`classify`]) and a pull fetches by it ([`need`]). If the two derived
//! their rules separately and drifted, a pull would under-fetch and the
//! merge would install a tree whose nodes or chunks are missing.

use backer_fs::tree::{Causality, Entry, Kind, VersionVector};
use backer_fs::Hash;

/// What the merge does with a name held by both sides (or only by theirs),
/// by version vector (DESIGN.md, "Replication" step 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    /// The two entries are identical, or ours has seen theirs: ours stands.
    Ours,
    /// Theirs has seen ours (or we hold no entry): theirs is taken whole,
    /// a directory's subtree rebuilt canonically.
    Theirs,
    /// Both live directories with equal or concurrent vectors: merged
    /// entry by entry.
    MergeDirs,
    /// Concurrent deletes: one tombstone.
    BothDeleted,
    /// Our live version concurrent with their delete: ours survives (less
    /// what their directory tombstone saw, if both are directories).
    OurEdit,
    /// Their live version concurrent with our delete: theirs survives (less
    /// what our directory tombstone saw, if both are directories).
    TheirEdit,
    /// Concurrent live versions (or equal vectors with different data,
    /// which only a buggy or hostile peer makes): one keeps the name, the
    /// other is kept beside it as a conflict copy unless they hold the
    /// same content.
    Conflict,
}

/// How the merge classifies our entry `ours` and their entry `theirs` of
/// one name, in a directory that is merged name by name.
pub(crate) fn classify(ours: Option<&Entry>, theirs: &Entry) -> Class {
    let Some(l) = ours else {
        return Class::Theirs;
    };
    if l == theirs {
        return Class::Ours;
    }
    let both_dirs =
        l.kind == Kind::Dir && theirs.kind == Kind::Dir && !l.deleted && !theirs.deleted;
    match l.vv.compare(&theirs.vv) {
        // A directory's vector joins every edit beneath it, so the
        // dominating side's subtree already holds the other's edits (or
        // their deliberate outcome: a delete, a conflict copy).
        Causality::Dominates => Class::Ours,
        Causality::DominatedBy => Class::Theirs,
        Causality::Equal | Causality::Concurrent if both_dirs => Class::MergeDirs,
        Causality::Equal | Causality::Concurrent => match (l.deleted, theirs.deleted) {
            (true, true) => Class::BothDeleted,
            (false, true) => Class::OurEdit,
            (true, false) => Class::TheirEdit,
            (false, false) => Class::Conflict,
        },
    }
}

/// Whether a directory tombstone with vector `tomb` has seen the version
/// `e`: under it, `e` becomes a tombstone too.
pub(crate) fn seen_by(e: &Entry, tomb: &VersionVector) -> bool {
    matches!(
        e.vv.compare(tomb),
        Causality::DominatedBy | Causality::Equal
    )
}

/// How the merge treats one of their directories, and so how a pull walks
/// it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode<'t> {
    /// Merged name by name with our live directory at the same path.
    Merge,
    /// Taken whole (rebuilt canonically): every entry of it is kept.
    Adopt,
    /// Kept less every entry the directory tombstone with this vector has
    /// seen.
    Prune(&'t VersionVector),
}

/// What a merge's result may reference of one of their entries: what a
/// pull must hold before merging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need<'t> {
    /// Nothing: ours stands, it is a tombstone, or we hold the content.
    Nothing,
    /// Their file's content (its content list and chunks).
    Content,
    /// Their directory, walked in this mode, beside our live directory at
    /// the same path if the mode keeps one (its nodes are ours, so held).
    Dir {
        /// How the merge treats it.
        mode: Mode<'t>,
        /// Our live directory at the same path, for [`Mode::Merge`] and
        /// [`Mode::Adopt`].
        ours: Option<Hash>,
    },
}

/// What the merge needs of their entry `theirs`, in a directory of theirs
/// it treats by `mode`, where `ours` is our entry of the same name (our
/// live directory at that path holds it, if any).
pub(crate) fn need<'t>(mode: Mode<'t>, ours: Option<&'t Entry>, theirs: &'t Entry) -> Need<'t> {
    if theirs.deleted {
        return Need::Nothing; // a tombstone references nothing
    }
    let ours_dir = ours
        .filter(|o| o.kind == Kind::Dir && !o.deleted)
        .map(|o| o.hash);
    let kept = |mode| match theirs.kind {
        Kind::Dir => Need::Dir {
            ours: match mode {
                Mode::Prune(_) => None,
                _ => ours_dir,
            },
            mode,
        },
        // The same content here: held (a hostile peer's other size for
        // the same hash is not the same, and is fetched and refused).
        Kind::File if ours.is_some_and(|o| o.same_content(theirs)) => Need::Nothing,
        Kind::File => Need::Content,
        _ => Need::Nothing, // symlinks and devices carry their data inline
    };
    match mode {
        Mode::Adopt => kept(Mode::Adopt),
        Mode::Prune(tomb) if seen_by(theirs, tomb) => Need::Nothing,
        Mode::Prune(tomb) => kept(Mode::Prune(tomb)),
        Mode::Merge => match classify(ours, theirs) {
            Class::Ours | Class::BothDeleted | Class::OurEdit => Need::Nothing,
            Class::MergeDirs => kept(Mode::Merge),
            Class::Theirs | Class::Conflict => kept(Mode::Adopt),
            Class::TheirEdit => match ours {
                Some(o) if o.kind == Kind::Dir => kept(Mode::Prune(&o.vv)),
                _ => kept(Mode::Adopt),
            },
        },
    }
}
