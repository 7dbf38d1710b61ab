//! Heals: chunks this node wants back (a copy here failed its check, or
//! a pull found no peer with it), asked of the peer by hash outside any
//! pull ([`backer_fs::heal::Wanted`] says which). Answers come in the
//! order asked, mixed with a pull's ([`crate::proto`]), so every hash
//! asked is tagged with who asked it ([`Order`]) and each answer goes to
//! its asker.

use std::collections::{HashSet, VecDeque};

use backer_fs::Hash;

use crate::error::{Error, Result};
use crate::local::Local;
use crate::proto::{Message, MAX_BATCH};

/// Heal requests in flight at most: with a pull's window (4096 items by
/// default) well under what a peer serves before it cuts us off
/// ([`crate::proto::MAX_OUTSTANDING`]).
pub(crate) const HEAL_IN_FLIGHT: usize = 1024;

/// Hashes waiting to be asked, at most (the rest come with a later
/// [`super::Reconcile::handle_wanted`]).
const HEAL_QUEUE: usize = 4096;

/// Who asked for the next answers.
#[derive(Clone, Copy, Debug)]
enum Asker {
    /// This many items of the pull.
    Pull(usize),
    /// One chunk to heal.
    Heal(Hash),
}

/// Who each outstanding answer is for, in the order asked.
#[derive(Debug, Default)]
pub(crate) struct Order(VecDeque<Asker>);

/// Where an answer goes.
pub(crate) enum For {
    Pull,
    Heal(Hash),
}

impl Order {
    /// The pull sent `msg`.
    pub(crate) fn pulled(&mut self, msg: &Message) {
        let n = match msg {
            Message::GetDirNodes(h) | Message::GetContentNodes(h) | Message::GetChunks(h) => {
                h.len()
            }
            _ => return,
        };
        match self.0.back_mut() {
            Some(Asker::Pull(k)) => *k += n,
            _ => self.0.push_back(Asker::Pull(n)),
        }
    }

    /// Who the next answer is for.
    pub(crate) fn next(&mut self) -> Result<For> {
        match self.0.front_mut() {
            None => Err(Error::Protocol("an answer nobody asked for".into())),
            Some(Asker::Heal(h)) => {
                let h = *h;
                self.0.pop_front();
                Ok(For::Heal(h))
            }
            Some(Asker::Pull(k)) => {
                *k -= 1;
                if *k == 0 {
                    self.0.pop_front();
                }
                Ok(For::Pull)
            }
        }
    }
}

/// The heals of one session.
#[derive(Debug, Default)]
pub(crate) struct Heals {
    /// To ask, in order.
    queue: VecDeque<Hash>,
    /// Queued or asked, not yet answered.
    known: HashSet<Hash>,
    in_flight: usize,
}

/// What an answer to a heal did.
pub(crate) enum Healed {
    /// Stored again.
    Stored(Hash),
    /// The peer lacks it.
    Refused(Hash),
}

impl Heals {
    /// Queues what is wanted and not already asked.
    pub(crate) fn want(&mut self, hashes: Vec<Hash>) {
        for h in hashes {
            if self.queue.len() >= HEAL_QUEUE {
                break;
            }
            if self.known.insert(h) {
                self.queue.push_back(h);
            }
        }
    }

    /// The next request, if any may go out now.
    pub(crate) fn next_request(&mut self, order: &mut Order) -> Option<Message> {
        let room = HEAL_IN_FLIGHT.saturating_sub(self.in_flight).min(MAX_BATCH);
        let n = room.min(self.queue.len());
        if n == 0 {
            return None;
        }
        let hashes: Vec<Hash> = self.queue.drain(..n).collect();
        self.in_flight += n;
        order.0.extend(hashes.iter().map(|h| Asker::Heal(*h)));
        Some(Message::GetChunks(hashes))
    }

    /// The answer to the heal of `hash`: verified and stored, or a
    /// refusal. Bytes that do not match the hash are bad data.
    pub(crate) fn answer(
        &mut self,
        local: &mut dyn Local,
        hash: Hash,
        bytes: Option<Vec<u8>>,
    ) -> Result<Healed> {
        self.in_flight -= 1;
        self.known.remove(&hash);
        let Some(bytes) = bytes else {
            return Ok(Healed::Refused(hash));
        };
        if Hash::of(&bytes) != hash {
            return Err(Error::BadData(format!("chunk {hash} fails verification")));
        }
        local.heal_chunk(hash, &bytes)?;
        Ok(Healed::Stored(hash))
    }
}
