//! Man pages and shell completion scripts, generated from the command line's own
//! definitions so they never drift from `--help`.
use std::{io, path::Path};

use anyhow::Context as _;

/// Writes `command`'s pages: `netiso.1` and one per subcommand (`netiso-container-create.1`, …)
/// into `dir`, which is created if missing.
pub fn write_man_pages(command: clap::Command, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(command, dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))
}

/// Prints `command`'s completion script for `shell`.
pub fn print_completions(
    mut command: clap::Command,
    shell: clap_complete::Shell,
) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "netiso", &mut script);
    io::Write::write_all(&mut io::stdout().lock(), &script).context("writing to stdout")
}
