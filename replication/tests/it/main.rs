//! backer-replication integration tests: real sled stores in temp dirs,
//! sessions over `tokio::io::duplex`. One binary, one module per area.

mod basic;
mod converge;
mod efficiency;
mod faults;
mod gc;
mod live;
mod peer_abuse;
mod peers;
mod quic;
mod quic_flood;
mod raw_quic;
mod resume;
mod util;
