//! A running node's tree as a [`Source`] for the writer of `export` and
//! `restore --to`: nodes and chunks asked for over one connection, and
//! checked against their hashes here (a node's as its tree is decoded, a
//! chunk's at once), so the command writes only what the hashes name.

use std::cell::RefCell;

use backer_fs::history::{LiveFile, Source};
use backer_fs::tree::NodeStore;
use backer_fs::{Error, Hash};

use super::client::Session;
use super::{Request, Response};

/// The tree of the node at the other end of a [`Session`].
pub(crate) struct RemoteSource {
    session: RefCell<Session>,
}

impl RemoteSource {
    /// Reads through `session`.
    pub(crate) fn new(session: Session) -> RemoteSource {
        RemoteSource {
            session: RefCell::new(session),
        }
    }

    /// Asks for the bytes `req` names.
    fn bytes(&self, req: Request) -> backer_fs::Result<Vec<u8>> {
        let fail = |why: String| Error::Engine(why.into());
        let reply = self
            .session
            .borrow_mut()
            .call(&req)
            .map_err(|e| fail(format!("{e:#}")))?;
        match reply {
            Response::Bytes(hex) => {
                super::from_hex(&hex).ok_or_else(|| fail("the node sent bad hex".into()))
            }
            Response::Error(e) => Err(fail(e)),
            other => Err(fail(format!("the node answered out of turn: {other:?}"))),
        }
    }
}

impl NodeStore for RemoteSource {
    fn get_node(&self, hash: &Hash) -> backer_fs::Result<Option<Vec<u8>>> {
        self.bytes(Request::Node {
            hash: hash.to_hex(),
        })
        .map(Some)
    }

    fn put_node(&mut self, _: Hash, _: Vec<u8>) -> backer_fs::Result<()> {
        Err(Error::ReadOnly)
    }
}

impl Source for RemoteSource {
    fn chunk(&self, hash: &Hash) -> backer_fs::Result<Vec<u8>> {
        let bytes = self.bytes(Request::Chunk {
            hash: hash.to_hex(),
        })?;
        if Hash::of(&bytes) != *hash {
            return Err(Error::corrupt(format!(
                "the node sent chunk {hash} with other bytes"
            )));
        }
        Ok(bytes)
    }

    fn live(&self, names: &[Vec<u8>]) -> backer_fs::Result<Option<LiveFile>> {
        let req = Request::Owner {
            path: super::to_hex(&names.join(&b'/')),
        };
        let fail = |why: String| Error::Engine(why.into());
        match self.session.borrow_mut().call(&req) {
            Ok(Response::Owner(ids)) => Ok(ids),
            Ok(Response::Error(e)) => Err(fail(e)),
            Ok(other) => Err(fail(format!("the node answered out of turn: {other:?}"))),
            Err(e) => Err(fail(format!("{e:#}"))),
        }
    }
}
