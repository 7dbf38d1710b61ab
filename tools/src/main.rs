//! `backer`: the command line of a backer node (see README.md and the
//! "How it is used" contract in DESIGN.md).
//!
//! Errors reach the user as one line on stderr, `backer: ...`, and exit
//! code 1; usage errors are clap's (exit code 2).

mod accept_errors;
mod cli;
mod commands;
mod config;
mod control;
mod logging;
#[cfg(feature = "fuse")]
mod mount_helper;
#[cfg(feature = "fuse")]
mod mountinfo;
mod net;
mod node;
mod sd_notify;
mod services;
mod store_dir;
mod web;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    backer_fs::store::private::restrict_umask(); // the store is private: DESIGN.md
    #[cfg(feature = "fuse")]
    if mount_helper::invoked_as_mount_helper() {
        return mount_helper::run();
    }
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report(&err);
            ExitCode::FAILURE
        }
    }
}

/// Prints `err` and its causes as one line on stderr.
fn report(err: &anyhow::Error) {
    let line = format!("{err:#}").replace('\n', " ");
    eprintln!("backer: {line}");
}
