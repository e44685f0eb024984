//! The `claw-provision` binary: parse the arguments, run the command, and turn how it ended into
//! the exit code (README "Exit codes"): 0 done, 1 an error, 2 changes with
//! `--detailed-exitcode`, 130 interrupted.

use clap::Parser;
use claw_provision::cli::{self, Cli};
use claw_provision::error::Error;
use claw_provision::report::{self, Format};

fn main() {
    let code = match Cli::try_parse() {
        Ok(cli) => {
            let format = cli.format();
            match cli::execute(cli) {
                Ok(outcome) => outcome.code(),
                Err(e) => fail(&e, format),
            }
        }
        // `--help`, `--version`: clap's "errors" that are not (exit 0).
        Err(e) if e.exit_code() == 0 => {
            let _ = e.print();
            0
        }
        // clap exits 2 on its own; an argument error is an error like any other here (1).
        Err(e) => {
            let format = if cli::json_requested(std::env::args_os()) {
                Format::Json
            } else {
                Format::Text
            };
            fail(&Error::Arguments(e), format)
        }
    };
    std::process::exit(code);
}

fn fail(e: &Error, format: Format) -> i32 {
    report::report_error(e, format);
    e.code()
}
