//! The `claw-provision` binary: parses the command line, runs it (`cli::execute`) and turns an
//! error into its message on stderr and the exit code.

use clap::Parser;

fn main() {
    let cli = claw_provision::cli::Cli::parse();
    let code = match claw_provision::cli::execute(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{}", claw_provision::cli::render_error(&e));
            e.code()
        }
    };
    std::process::exit(code);
}
