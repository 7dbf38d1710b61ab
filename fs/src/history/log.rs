//! The log: each commit compared with the next older one in the log (its
//! first parent, the root it followed here, unless `gc` dropped that):
//! names added, modified, deleted, renamed (a file deleted and one added
//! with the same content in the same commit) and conflict copies (added
//! names holding `.sync-conflict-`). With a path, only the changes at or
//! under it are listed, and commits without any are skipped.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{commit_id, commits, empty_dir_hash, split_path, time_name};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::tree::{dir, Entry, Kind, Timestamp};
use crate::vfs::entry_at;
use crate::{Hash, NodeId};

/// One commit of the log and what it changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Its position in this store's log.
    pub seq: u64,
    /// Its id, in hex.
    pub commit: String,
    /// The root it made, in hex.
    pub root: String,
    /// When, as snapshot folders name it.
    pub time: String,
    /// The node that made the commit, as `backer id` prints it (on a
    /// peer, a merge's is the merging node: each [`Change::by`] names who
    /// made the change).
    pub author: String,
    /// The roots it followed, in hex.
    pub parents: Vec<String>,
    /// What changed since the next older commit of the log.
    pub changes: Vec<Change>,
}

/// What happened to a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// It is new.
    Added,
    /// Its content or metadata changed.
    Modified,
    /// It is gone.
    Deleted,
    /// A file that was deleted elsewhere in the same commit, same content.
    Renamed,
    /// A conflict copy appeared.
    Conflict,
}

impl ChangeKind {
    /// The word `log` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Renamed => "renamed",
            ChangeKind::Conflict => "conflict",
        }
    }
}

/// One change of a commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The name's path from the root.
    pub path: String,
    /// What happened to it.
    pub change: ChangeKind,
    /// What it is (was, when deleted).
    #[serde(with = "kind_name")]
    pub kind: Kind,
    /// Its size in bytes.
    pub size: u64,
    /// For a rename, the path it had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The node that made the change, as `backer id` prints it: the
    /// entry's `modified_by` (a deletion's: its tombstone's), which a
    /// merge keeps, so on a peer it names the node where the edit was
    /// made, not the one that merged it. Empty in logs from before this
    /// field (read as the commit's author).
    #[serde(default)]
    pub by: String,
    /// The content hash, to pair renames.
    #[serde(skip)]
    hash: Hash,
}

/// [`Kind`] as one lowercase word (`file`, `dir`, `symlink`...).
pub(crate) mod kind_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::tree::Kind;

    const NAMES: [(Kind, &str); 7] = [
        (Kind::File, "file"),
        (Kind::Dir, "dir"),
        (Kind::Symlink, "symlink"),
        (Kind::Fifo, "fifo"),
        (Kind::Socket, "socket"),
        (Kind::CharDev, "chardev"),
        (Kind::BlockDev, "blockdev"),
    ];

    /// The word for `k`.
    pub fn name(k: Kind) -> &'static str {
        NAMES.iter().find(|(x, _)| *x == k).map_or("?", |(_, n)| n)
    }

    pub(crate) fn serialize<S: Serializer>(k: &Kind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name(*k))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        let word = String::deserialize(d)?;
        NAMES
            .iter()
            .find(|(_, n)| *n == word)
            .map(|(k, _)| *k)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown kind {word:?}")))
    }
}

fn join(prefix: &str, name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    if prefix.is_empty() {
        name.into_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// One step of the differ: the work a recursive differ would do in one
/// call, kept on an explicit stack (trees may be deeper than a thread's
/// stack allows).
enum Task {
    /// The changes between the folder trees `a` and `b` at the path.
    Dirs(String, Hash, Hash),
    /// The changes from one entry to another at the path.
    Pair(String, Option<Entry>, Option<Entry>),
    /// The entry and everything under it, as one change made by the node
    /// given (else each entry's `modified_by`).
    Whole(String, Entry, ChangeKind, Option<NodeId>),
}

/// Lists the changes between two trees' entries.
struct Differ<'a> {
    nodes: &'a Store,
    out: Vec<Change>,
    todo: Vec<Task>,
    /// Stop once this many changes are listed (`usize::MAX`: never).
    limit: usize,
    /// Who deleted what has no tombstone left (the commit's author).
    fallback: NodeId,
}

impl Differ<'_> {
    fn push(&mut self, path: &str, change: ChangeKind, e: &Entry, by: Option<NodeId>) {
        self.out.push(Change {
            path: path.to_string(),
            change,
            kind: e.kind,
            size: e.size,
            hash: e.hash,
            from: None,
            by: by.unwrap_or(e.modified_by).to_string(),
        });
    }

    /// Runs `first` and everything it leads to, in the order a recursive
    /// walk would list them: tasks are pushed in reverse.
    fn run(&mut self, first: Task) -> Result<()> {
        self.todo.push(first);
        while let Some(task) = self.todo.pop() {
            if self.out.len() >= self.limit {
                self.todo.clear();
                break;
            }
            match task {
                Task::Dirs(path, a, b) => {
                    let pairs = dir::diff(self.nodes, a, b)?;
                    for (x, y) in pairs.into_iter().rev() {
                        let Some(name) = x.as_ref().or(y.as_ref()).map(|e| e.name.clone()) else {
                            continue;
                        };
                        self.todo.push(Task::Pair(join(&path, &name), x, y));
                    }
                }
                Task::Pair(path, a, b) => self.pair(path, a, b),
                Task::Whole(path, e, change, by) => {
                    self.push(&path, change, &e, by);
                    if e.kind == Kind::Dir {
                        let list = dir::entries(self.nodes, e.hash)?;
                        for child in list.into_iter().rev().filter(|c| !c.deleted) {
                            let p = join(&path, &child.name);
                            self.todo.push(Task::Whole(p, child, change, by));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The changes from `a` to `b` at `path` (tombstones count as absent).
    fn pair(&mut self, path: String, a: Option<Entry>, b: Option<Entry>) {
        // A deletion was made by whoever made the tombstone.
        let deleter = Some(
            b.as_ref()
                .filter(|e| e.deleted)
                .map_or(self.fallback, |e| e.modified_by),
        );
        let a = a.filter(|e| !e.deleted);
        let b = b.filter(|e| !e.deleted);
        match (a, b) {
            (None, None) => {}
            (Some(a), None) => self
                .todo
                .push(Task::Whole(path, a, ChangeKind::Deleted, deleter)),
            (None, Some(b)) => self
                .todo
                .push(Task::Whole(path, b, ChangeKind::Added, None)),
            (Some(a), Some(b)) if a.kind == Kind::Dir && b.kind == Kind::Dir => {
                if a.mode != b.mode {
                    self.push(&path, ChangeKind::Modified, &b, None);
                }
                if a.hash != b.hash {
                    self.todo.push(Task::Dirs(path, a.hash, b.hash));
                }
            }
            (Some(a), Some(b)) if a.kind != b.kind => {
                let by = Some(b.modified_by);
                self.todo
                    .push(Task::Whole(path.clone(), b, ChangeKind::Added, None));
                self.todo
                    .push(Task::Whole(path, a, ChangeKind::Deleted, by));
            }
            (Some(a), Some(b)) => {
                if (a.mode, a.mtime, a.size, a.hash, &a.target, a.rdev)
                    != (b.mode, b.mtime, b.size, b.hash, &b.target, b.rdev)
                {
                    self.push(&path, ChangeKind::Modified, &b, None);
                }
            }
        }
    }

    /// Pairs deletions and additions of the same content as renames, and
    /// marks added conflict copies.
    fn finish(mut self) -> Vec<Change> {
        let mut deleted: HashMap<Hash, Vec<usize>> = HashMap::new();
        for (i, c) in self.out.iter().enumerate() {
            if c.change == ChangeKind::Deleted && c.kind == Kind::File && c.hash != Hash::ZERO {
                deleted.entry(c.hash).or_default().push(i);
            }
        }
        let mut gone = vec![false; self.out.len()];
        for i in 0..self.out.len() {
            let c = &self.out[i];
            if c.change != ChangeKind::Added {
                continue;
            }
            if c.path.contains(".sync-conflict-") {
                self.out[i].change = ChangeKind::Conflict;
                continue;
            }
            if c.kind != Kind::File || c.hash == Hash::ZERO {
                continue;
            }
            if let Some(j) = deleted.get_mut(&c.hash).and_then(Vec::pop) {
                gone[j] = true;
                let from = self.out[j].path.clone();
                self.out[i].change = ChangeKind::Renamed;
                self.out[i].from = Some(from);
            }
        }
        self.out
            .into_iter()
            .zip(gone)
            .filter(|(_, g)| !g)
            .map(|(c, _)| c)
            .collect()
    }
}

/// The entry at `path` in `root` (for the empty path: the root itself, as
/// a folder entry).
fn at_path(nodes: &Store, root: Hash, path: &[&[u8]]) -> Result<Option<Entry>> {
    if path.is_empty() {
        return Ok(Some(Entry {
            name: Vec::new(),
            kind: Kind::Dir,
            mode: 0o755,
            mtime: Timestamp::default(),
            size: 0,
            hash: root,
            target: Vec::new(),
            rdev: 0,
            vv: Default::default(),
            modified_by: NodeId::default(),
            deleted: false,
        }));
    }
    entry_at(nodes, root, path)
}

/// The changes from the tree `a` to the tree `b` (both roots), as the log
/// lists a commit's, but at most about `limit` of them: the walk stops
/// there, so the work is bounded whatever the trees (the event bus diffs
/// every published root). The flag says whether it stopped early. A
/// deletion whose tombstone is gone is credited to this node.
pub fn diff(store: &Store, a: Hash, b: Hash, limit: usize) -> Result<(Vec<Change>, bool)> {
    let mut d = Differ {
        nodes: store,
        out: Vec::new(),
        todo: Vec::new(),
        limit,
        fallback: store.node_id(),
    };
    d.run(Task::Dirs(String::new(), a, b))?;
    let cut = d.out.len() >= limit;
    let mut out = d.finish();
    out.truncate(limit);
    Ok((out, cut))
}

/// The log of the store, newest first, as `backer log` shows it (see the
/// module documentation); with `path`, only what changed at or under it.
///
/// Errors: [`Error::Request`] for a bad path or one that no version has.
pub fn log(store: &Store, path: Option<&str>) -> Result<Vec<LogEntry>> {
    let names = split_path(path.unwrap_or(""))?;
    let names: Vec<&[u8]> = names.iter().map(Vec::as_slice).collect();
    let prefix = names
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect::<Vec<_>>()
        .join("/");
    let empty = empty_dir_hash();
    let log = commits(store)?;
    let mut ever = names.is_empty();
    let mut out = Vec::new();
    for (i, c) in log.iter().enumerate() {
        let root = Hash(c.root);
        // The next older commit of the log: the first parent, unless a
        // collection dropped that one (then the changes since the last
        // version kept).
        let parent = log.get(i + 1).map_or(empty, |older| Hash(older.root));
        let (a, b) = (
            at_path(store, parent, &names)?,
            at_path(store, root, &names)?,
        );
        ever |= a.is_some() || b.is_some();
        let mut d = Differ {
            nodes: store,
            out: Vec::new(),
            todo: Vec::new(),
            limit: usize::MAX,
            fallback: NodeId(c.author),
        };
        if names.is_empty() {
            d.run(Task::Dirs(String::new(), parent, root))?;
        } else {
            d.run(Task::Pair(prefix.clone(), a, b))?;
        }
        let changes = d.finish();
        if changes.is_empty() && !names.is_empty() {
            continue;
        }
        out.push(LogEntry {
            seq: c.seq,
            commit: commit_id(c)?,
            root: root.to_hex(),
            time: time_name(c.time),
            author: NodeId(c.author).to_string(),
            parents: c.parents.iter().map(|p| Hash(*p).to_hex()).collect(),
            changes,
        });
    }
    if !ever {
        return Err(Error::Request(format!(
            "{prefix}: no such path in any version"
        )));
    }
    Ok(out)
}
