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
