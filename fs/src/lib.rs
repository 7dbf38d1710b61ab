//! backer-fs: everything one backer node needs to hold a folder, with no
//! network: the content-addressed [`store`], the [`chunk`]er, the merkle
//! [`tree`], the POSIX-like [`vfs`] over the live namespace and the
//! typed [`history`] (log, restore, export, du) the command line prints.
//!
//! Data flows one way: the vfs changes the live namespace and marks what it
//! touched dirty; a commit folds dirty entries into new immutable tree nodes
//! (only the paths that changed) and appends the new root to the commit log.

pub mod check;
pub mod chunk;
pub mod error;
pub mod events;
#[cfg(feature = "fuse")]
pub mod fuse;
pub mod gc;
pub mod hash;
pub mod heal;
pub mod history;
pub mod identity;
pub mod ignore;
pub mod scrub;
pub mod store;
pub mod tree;
pub mod vfs;

pub use error::{Error, Result};
pub use hash::Hash;
pub use identity::NodeId;
