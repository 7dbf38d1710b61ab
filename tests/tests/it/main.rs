//! backer's integration tests, as one test binary with a module per area.
//! They run the real `backer` binary; see the `backer_tests` helpers. The
//! mount tests need root, /dev/fuse and fuse3 (fusermount3).

mod authors;
mod cli;
mod copy;
mod durability;
mod events;
mod first_use;
mod full_disk;
mod heal;
mod history;
mod ignore;
mod integrity;
mod lifecycle;
mod local_security;
mod mirror;
mod mirror_faults;
mod mirror_util;
mod mount_helper;
mod mount_util;
mod package;
mod paths;
mod peer_export;
mod peers;
mod posix;
mod posix_meta;
mod private_store;
mod privileges;
mod programs;
mod refused;
mod roundtrip;
mod service;
mod snapshots_view;
mod special;
mod truth;
mod web;
mod web_browser;
mod web_limits;
mod web_util;
