//! `completions` and `man`: generated from the clap definitions.

use super::*;

pub(super) fn completions(shell: clap_complete::Shell) -> Result<Outcome, Error> {
    let mut out = Vec::new();
    clap_complete::generate(
        shell,
        &mut <Cli as clap::CommandFactory>::command(),
        "claw-provision",
        &mut out,
    );
    write_stdout(&out)
}

pub(super) fn man() -> Result<Outcome, Error> {
    let mut out = Vec::new();
    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
        .render(&mut out)
        .map_err(|e| Error::Io(format!("cannot render the manual page: {e}")))?;
    write_stdout(&out)
}
