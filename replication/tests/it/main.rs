//! backer-replication integration tests: real sled stores in temp dirs,
//! sessions over `tokio::io::duplex`. One binary, one module per area.

mod basic;
mod efficiency;
mod util;
