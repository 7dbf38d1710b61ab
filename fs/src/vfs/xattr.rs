//! Extended attributes: local to this node (like owners), kept per inode.

use super::records::{ino_key, ts_pair, NamespaceTxn};
use super::types::{Ino, XattrReply, XattrSet, NAME_MAX, XATTR_VALUE_MAX};
use super::Names;
use crate::error::{Error, Result};
use crate::store::{Space, Txn};

fn key(ino: Ino, name: &[u8]) -> Vec<u8> {
    let mut k = ino_key(ino).to_vec();
    k.extend_from_slice(name);
    k
}

fn check_name(name: &[u8]) -> Result<()> {
    // Linux answers ERANGE for empty and over-long attribute names.
    if name.is_empty() || name.len() > NAME_MAX {
        return Err(Error::Range);
    }
    if name.contains(&0) {
        return Err(Error::InvalidArgument("NUL in attribute name"));
    }
    // system.* names (ACLs and friends) mean something to the kernel that
    // we do not implement; storing them would pretend otherwise.
    if name.starts_with(b"system.") {
        return Err(Error::NotSupported);
    }
    Ok(())
}

/// Answers with the size only when `size` is 0, else the bytes, else ERANGE.
fn sized(bytes: Vec<u8>, size: u32) -> Result<XattrReply> {
    let len = u32::try_from(bytes.len()).map_err(|_| Error::AttributeTooLarge)?;
    if size == 0 {
        Ok(XattrReply::Size(len))
    } else if size < len {
        Err(Error::Range)
    } else {
        Ok(XattrReply::Data(bytes))
    }
}

impl Names<'_> {
    /// The value of attribute `name`.
    pub fn getxattr(&self, ino: Ino, name: &[u8], size: u32) -> Result<XattrReply> {
        check_name(name)?;
        let inner = self.vfs.lock();
        let txn = Txn::new(inner.store.kv());
        // The kernel asks for security.capability before every write(2)
        // and chown: the usual answer is "none", found without decoding
        // the inode record (only its existence decides ENOENT).
        match txn.get(Space::Xattrs, &key(ino, name))? {
            Some(v) => sized(v, size),
            None if txn.get(Space::Inodes, &ino_key(ino))?.is_some() => Err(Error::NoAttribute),
            None => Err(Error::NotFound),
        }
    }

    /// Sets attribute `name`.
    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], mode: XattrSet) -> Result<()> {
        check_name(name)?;
        if value.len() > XATTR_VALUE_MAX {
            return Err(Error::AttributeTooLarge);
        }
        self.vfs.write_op(|_, txn, now| {
            let mut rec = txn.inode(ino)?;
            let exists = txn.get(Space::Xattrs, &key(ino, name))?.is_some();
            match (mode, exists) {
                (XattrSet::Create, true) => return Err(Error::Exists),
                (XattrSet::Replace, false) => return Err(Error::NoAttribute),
                _ => {}
            }
            txn.put(Space::Xattrs, key(ino, name), value.to_vec());
            rec.ctime = ts_pair(now);
            txn.put_inode(ino, &rec)
        })
    }

    /// The NUL-terminated names of every attribute.
    pub fn listxattr(&self, ino: Ino, size: u32) -> Result<XattrReply> {
        let inner = self.vfs.lock();
        let txn = Txn::new(inner.store.kv());
        txn.inode(ino)?;
        let mut out = Vec::new();
        for (k, _) in txn.scan(Space::Xattrs, &ino_key(ino), None, usize::MAX)? {
            out.extend_from_slice(&k[8..]);
            out.push(0);
        }
        sized(out, size)
    }

    /// Removes attribute `name`.
    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        check_name(name)?;
        self.vfs.write_op(|_, txn, now| {
            let mut rec = txn.inode(ino)?;
            if txn.get(Space::Xattrs, &key(ino, name))?.is_none() {
                return Err(Error::NoAttribute);
            }
            txn.remove(Space::Xattrs, key(ino, name));
            rec.ctime = ts_pair(now);
            txn.put_inode(ino, &rec)
        })
    }
}
