//! A peer deleted a folder that holds files this node ignores: as in
//! Syncthing, an ignored file blocks the delete (it is not this node's to
//! replicate, so it is not the peer's to remove) unless its pattern has
//! `(?d)`. The folder stays with the blocking files and the folders on
//! their way; everything else in it goes. The tree keeps the peer's
//! tombstone, so roots converge; the folder that stays gets an empty tree
//! of its own, so a later local change in it comes back as a new version
//! of just that.

use super::super::commit::TxnNodes;
use super::super::ignored::{self, Verdict};
use super::super::records::NamespaceTxn;
use super::super::types::Ino;
use super::Apply;
use crate::error::{Error, Result};
use crate::store::Space;
use crate::tree::{dir, Kind};

impl Apply<'_, '_, '_> {
    /// The names in the directory `dino` (at `path`), with their kinds.
    fn listing(&self, dino: Ino) -> Result<Vec<(Vec<u8>, super::Dirent)>> {
        let mut out = Vec::new();
        for (k, _) in self
            .txn
            .scan(Space::Dirents, &dino.to_be_bytes(), None, usize::MAX)?
        {
            let name = k[8..].to_vec();
            let d = self
                .txn
                .dirent(dino, &name)?
                .ok_or_else(|| Error::corrupt("install: a directory entry vanished"))?;
            out.push((name, d));
        }
        Ok(out)
    }

    /// Whether the directory `dino` (at `path`) holds, at any depth, an
    /// ignored name whose pattern lacks `(?d)`.
    pub(super) fn keeps_ignored(&self, dino: Ino, path: &[u8]) -> Result<bool> {
        let mut stack = vec![(dino, path.to_vec())];
        while let Some((dino, dpath)) = stack.pop() {
            for (name, d) in self.listing(dino)? {
                let cpath = ignored::child_path(&dpath, &name);
                let is_dir = d.kind == Kind::Dir;
                match ignored::verdict(self.patterns, &cpath, is_dir) {
                    Verdict::Ignored { deletable: false } => return Ok(true),
                    Verdict::Ignored { deletable: true } => {}
                    _ if is_dir => stack.push((d.ino, cpath)),
                    _ => {}
                }
            }
        }
        Ok(false)
    }

    /// Empties the directory `dino` (at `path`) but for what an ignored
    /// name keeps; the directory itself stays.
    pub(super) fn remove_around_ignored(&mut self, dino: Ino, path: &[u8]) -> Result<()> {
        let mut drec = self.txn.inode(dino)?;
        for (name, d) in self.listing(dino)? {
            let cpath = ignored::child_path(path, &name);
            match ignored::verdict(self.patterns, &cpath, d.kind == Kind::Dir) {
                Verdict::Ignored { deletable: false } => {}
                Verdict::Ignored { deletable: true } => {
                    self.remove_all(dino, &mut drec, &name, d)?;
                }
                _ => self.remove(dino, &mut drec, &name, d, &cpath)?,
            }
        }
        drec.hash = dir::empty(&mut TxnNodes(self.txn))?.0;
        drec.ctime = super::ts_pair(self.now);
        self.touched.insert(dino);
        self.txn.put_inode(dino, &drec)?;
        tracing::info!(
            path = %String::from_utf8_lossy(path),
            "a peer deleted this folder; it stays for the ignored files in it"
        );
        Ok(())
    }
}
