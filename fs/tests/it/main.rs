//! backer-fs integration tests: one binary, one module per area.

mod copy;
mod crash;
mod defer;
mod door;
mod events;
mod failed_txn;
mod full_disk;
mod gc;
mod history;
mod ignore;
mod ignore_syncthing;
mod ignore_vfs;
mod install;
mod integrity;
mod kv_suite;
mod large_dir;
mod links;
mod model;
#[cfg(feature = "fuse")]
mod mount_drop;
mod posix;
mod private_store;
mod publish;
mod rebuild;
mod setid;
mod snapshots;
mod util;
