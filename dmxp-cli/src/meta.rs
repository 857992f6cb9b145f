//! `dmxp completions SHELL` and `dmxp man [COMMAND]`: the shell completion script and the man
//! pages, generated from the same clap definition as `--help`.

use std::io::{self, Write};

use anyhow::Result;
use clap::{Args, Command};
use clap_complete::Shell;

use crate::Outcome;

#[derive(Args, Debug)]
#[command(after_help = "Install, for example:\n  \
    dmxp completions bash > ~/.local/share/bash-completion/completions/dmxp\n  \
    dmxp completions zsh > ~/.zfunc/_dmxp   (with fpath+=~/.zfunc before compinit)\n  \
    dmxp completions fish > ~/.config/fish/completions/dmxp.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: Shell,
}

#[derive(Args, Debug)]
#[command(after_help = "Install, for example:\n  \
    dmxp man > ~/.local/share/man/man1/dmxp.1\n  \
    dmxp man inspect > ~/.local/share/man/man1/dmxp-inspect.1")]
pub struct ManArgs {
    /// A command whose page to print (`dmxp-COMMAND(1)`) instead of the page of `dmxp`.
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

/// The names of the commands the man pages cover (hidden ones left out).
fn visible_commands(cmd: &Command) -> Vec<String> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_owned())
        .collect()
}

pub fn completions(args: CompletionsArgs, mut cmd: Command) -> Result<Outcome> {
    let name = cmd.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, name, &mut script);
    let mut out = io::stdout().lock();
    out.write_all(&script)?;
    out.flush()?;
    Ok(Outcome::Success)
}

pub fn man(args: ManArgs, mut cmd: Command) -> Result<Outcome> {
    // Built, the commands know their full names (`dmxp-inspect`, `dmxp inspect`).
    cmd.build();
    let page = match &args.command {
        None => cmd,
        Some(name) => match cmd.find_subcommand(name) {
            Some(sub) if !sub.is_hide_set() => sub.clone(),
            _ => {
                return Ok(Outcome::Usage(format!(
                    "no man page for `{name}`: the commands are {}",
                    visible_commands(&cmd).join(", ")
                )))
            }
        },
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .source(format!("dmxp {}", env!("CARGO_PKG_VERSION")))
        .manual("DMXP")
        .render(&mut roff)?;
    let mut out = io::stdout().lock();
    out.write_all(&roff)?;
    out.flush()?;
    Ok(Outcome::Success)
}
