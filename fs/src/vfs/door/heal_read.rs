//! A read that meets a damaged or missing chunk waits for its heal from
//! a peer (DESIGN.md, "Integrity"), holding nothing while it waits: the
//! caller's answer is handed to the store's registry of wanted chunks
//! ([`crate::heal::Wanted`]), whose own thread reads again once the chunk
//! is stored and answers from there. So a mount's worker thread is free
//! at once and no vfs lock is held across the wait: one damaged chunk
//! never freezes the mount. With no connected peer that may have the
//! chunk, the read fails at once (`EIO`).

use std::time::Instant;

use super::Door;
use crate::error::{Error, Result};
use crate::heal::{Outcome, READ_WAIT};
use crate::vfs::{Fh, Ino};

/// Where a read's answer goes, exactly once: the bytes read, or the error.
pub type ReadReply = Box<dyn FnOnce(Result<&[u8]>) + Send>;

/// One read, to be tried again after a heal.
#[derive(Clone, Copy)]
struct ReadAt {
    ino: Ino,
    fh: Fh,
    offset: u64,
    size: u32,
}

impl Door {
    /// [`Door::read`], answering through `reply` exactly once: here, or,
    /// when the read met a chunk a connected peer may heal, from the heal
    /// registry's thread once the chunk is healed (or after
    /// [`READ_WAIT`] at most, with `EIO`). `buf` is the caller's buffer
    /// for a read answered here.
    pub fn read_healing(
        &self,
        ino: Ino,
        fh: Fh,
        offset: u64,
        size: u32,
        buf: &mut Vec<u8>,
        reply: ReadReply,
    ) {
        match self.read(ino, fh, offset, size, buf) {
            Ok(n) => reply(Ok(&buf[..n])),
            Err(Error::BadChunk(hash)) => {
                let at = ReadAt {
                    ino,
                    fh,
                    offset,
                    size,
                };
                self.clone()
                    .wait_for_heal(hash, Instant::now() + READ_WAIT, at, reply)
            }
            Err(e) => reply(Err(e)),
        }
    }

    fn wait_for_heal(self, hash: crate::Hash, deadline: Instant, at: ReadAt, reply: ReadReply) {
        let wanted = self.vfs.store().wanted().clone();
        let door = self.clone();
        let then = Box::new(move |outcome: Outcome| {
            let mut buf = Vec::new();
            match door.read(at.ino, at.fh, at.offset, at.size, &mut buf) {
                Ok(n) => reply(Ok(&buf[..n])),
                // The read goes on to another damaged chunk: wait for
                // that one too, within the same deadline.
                Err(Error::BadChunk(next)) if outcome == Outcome::Healed => {
                    door.wait_for_heal(next, deadline, at, reply)
                }
                Err(e) => {
                    if outcome != Outcome::Unavailable {
                        tracing::error!(chunk = %hash, ?outcome, "a read waited for a chunk's heal in vain: EIO");
                    }
                    reply(Err(e))
                }
            }
        });
        match wanted.wait(hash, deadline, then) {
            Ok(()) => tracing::info!(chunk = %hash, "a read waits for a chunk's heal from a peer"),
            // No connected peer may have it: read once more (it may have
            // been healed meanwhile), else EIO at once.
            Err(then) => then(Outcome::Unavailable),
        }
    }
}
