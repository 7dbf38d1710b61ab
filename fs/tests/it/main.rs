//! backer-fs integration tests: one binary, one module per area.

mod copy;
mod crash;
mod defer;
mod gc;
mod history;
mod install;
mod kv_suite;
mod large_dir;
mod links;
mod model;
mod posix;
mod private_store;
mod setid;
mod snapshots;
mod util;
