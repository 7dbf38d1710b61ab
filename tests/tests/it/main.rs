//! backer's integration tests, as one test binary with a module per area.
//! They run the real `backer` binary; see the `backer_tests` helpers.

mod cli;
