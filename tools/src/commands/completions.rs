//! `backer completions bash|zsh|fish` and the man page, both generated
//! from the clap grammar of [`crate::cli`], so they cannot drift from it.
//! `./install.sh` and the Debian package install them.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, Shell};

/// Prints the completion script for `shell` on stdout.
pub(crate) fn completions(shell: Shell) -> Result<()> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "backer", &mut out);
    write_stdout(&out)
}

/// Writes the man pages, backer(1) and one per subcommand
/// (backer-mount(1)...), in roff, into the folder `dir`.
pub(crate) fn man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(bytes)?;
    stdout.flush()?;
    Ok(())
}
