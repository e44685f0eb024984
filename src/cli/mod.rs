//! Command line: clap arguments → a command that runs. Parsing does no I/O. One file per
//! command (or group of commands); this one holds the arguments and the dispatch.

mod completions;
mod facts;
mod hosts;
mod init;
mod known_hosts;
mod load;
mod options;
mod plan_apply;
mod run;
mod validate;

use crate::error::{Error, Outcome};
use crate::inventory::Inventory;
use crate::plan::HostPlan;
use crate::playbook::Playbook;
use crate::report::{self, Format, Verbosity, json, text};
use crate::run::{HostOutcome, HostState, Mode, Observer, Prepared, RunOptions};
use crate::saved_plan;
use crate::select::{Selection, StepFilter};
use clap::{Args, Parser, Subcommand};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const AFTER_HELP: &str = "\
Exit codes: 0 success (nothing to change), 1 error (a bad input or argument, a host failed or
unreachable, the confirmation declined), 2 changes pending (plan) or made (apply) when
--detailed-exitcode is given, 130 plan or apply interrupted by Ctrl-C.

Environment: CLAW_SSH_PASSPHRASE (passphrase of encrypted keys), CLAW_BECOME_PASSWORD
(sudo password), SSH_AUTH_SOCK (ssh-agent), CLAW_SSH_CONFIG (as --ssh-config), NO_COLOR.";

pub use crate::version::VERSION;

#[derive(Debug, Parser)]
#[command(name = "claw-provision", version = VERSION, about = "Brings servers to a declared state over one SSH connection per host.", after_help = AFTER_HELP)]
pub struct Cli {
    /// OpenSSH client configuration to read (`none`: none). Default: the inventory's
    /// `ssh_config`, else ~/.ssh/config if it exists. The inventory's settings win over it.
    #[arg(long, global = true, value_name = "FILE|none", env = "CLAW_SSH_CONFIG")]
    pub ssh_config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
    /// More text output: -v also lists the steps that change nothing (plans of unchanged hosts
    /// included) and the time of every step of apply; -vv also the script each changing step
    /// and handler of apply runs on the host (never for a step that handles secrets). JSON
    /// output is the same at every level.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors and the final summary line (no plans, progress or step lines; `apply`
    /// without --yes still shows the plan it asks about).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// Loads an inventory with the ssh_config the command line chose (`--ssh-config`, read once by
/// [`execute`] and passed to each command).
fn load_inventory(
    path: &Path,
    ssh: &crate::inventory::SshConfigChoice,
) -> Result<Inventory, crate::error::ConfigErrors> {
    Inventory::load_with(path, ssh)
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show, per host and step, what apply would change (touches nothing).
    #[command(
        after_help = "Examples:\n  claw-provision plan inventory/prod.toml\n  claw-provision plan inventory/prod.toml --limit 'web-*' -e release=v2\n  claw-provision plan inventory/prod.toml --limit @canary.txt --tags nginx\n  claw-provision plan inventory/prod.toml -q --detailed-exitcode   # 2 = changes pending (cron/CI)\n  claw-provision plan inventory/prod.toml --out prod.plan       # then: apply inventory/prod.toml --plan prod.plan"
    )]
    Plan(PlanArgs),
    /// Change only what differs from the declared state.
    #[command(
        after_help = "Examples:\n  claw-provision apply inventory/prod.toml            # shows the plan and asks\n  claw-provision apply inventory/prod.toml --yes --output json\n  claw-provision apply inventory/prod.toml --plan prod.plan   # exactly the saved plan, no question\n  claw-provision apply inventory/prod.toml --tags nginx --skip-tags slow --limit 'web-*,!web-3'\n  claw-provision apply inventory/prod.toml --step 'app config' -v   # from there on, timed\n  CLAW_BECOME_PASSWORD=... claw-provision apply inventory/prod.toml --yes"
    )]
    Apply(ApplyArgs),
    /// Check inventory, playbook and templates offline; report every error at once.
    #[command(
        after_help = "Examples:\n  claw-provision validate inventory/prod.toml\n  claw-provision validate inventory/prod.toml -v --tags nginx   # which steps --tags nginx runs"
    )]
    Validate(ValidateArgs),
    /// List the selected hosts with their resolved connection settings.
    #[command(
        after_help = "Examples:\n  claw-provision hosts inventory/prod.toml\n  claw-provision hosts inventory/prod.toml --limit web --output json"
    )]
    Hosts(SelectArgs),
    /// Run a shell command on every selected host, in parallel (no playbook needed).
    #[command(after_help = RUN_HELP)]
    Run(AdhocArgs),
    /// Read every host's SSH host key and print it as known_hosts lines, or record the new ones
    /// (--pin) in the inventory's known_hosts file. A changed key is never replaced.
    #[command(
        name = "known-hosts",
        after_help = "Examples:\n  claw-provision known-hosts inventory/prod.toml            # known_hosts lines, # comments say new/known/CHANGED\n  claw-provision known-hosts inventory/prod.toml --pin      # record the keys of new hosts\n\nExit status: 1 when a host could not be read or presents a changed or revoked key."
    )]
    KnownHosts(KnownHostsArgs),
    /// Print each selected host's facts as one JSON document (one connection, one round trip per host).
    #[command(after_help = FACTS_HELP)]
    Facts(FactsArgs),
    /// Print the shell completion script for SHELL.
    #[command(
        after_help = "Examples:\n  claw-provision completions bash > /etc/bash_completion.d/claw-provision\n  claw-provision completions zsh > \"${fpath[1]}/_claw-provision\""
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a starting inventory, playbook and template into DIR (new or empty).
    #[command(
        after_help = "Example:\n  claw-provision init site && claw-provision validate site/inventory.toml"
    )]
    Init {
        /// Directory to create the files in (it must be new or empty).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Print the manual page (roff).
    #[command(
        after_help = "Example:\n  claw-provision man > /usr/local/share/man/man1/claw-provision.1"
    )]
    Man,
}

const RUN_HELP: &str = "\
The words after `--` are joined with spaces into one command line for the remote shell, exactly
as `ssh host WORDS...` does: quote what your local shell must not expand (`-- 'ls /srv | wc -l'`).
It runs as the become user when the inventory says `become = true` (override with --become or
--no-become), with stdin closed, in `/` with LC_ALL=C, under the host's `command_timeout` (or
--timeout). Output is grouped per host, in inventory order, then a summary.

Exit codes: 0 if the command exited 0 on every host, 1 otherwise (a non-zero exit, a signal, a
timeout, an unreachable or failed host, a bad inventory, --limit or argument).

Examples:
  claw-provision run inventory/prod.toml -- uptime
  claw-provision run inventory/prod.toml --limit web --forks 5 -- 'systemctl is-active nginx'
  claw-provision run inventory/prod.toml --no-become --output json -- id -u";

const FACTS_HELP: &str = "\
Prints ONE JSON object keyed by host name, in inventory order. Each entry has `state` (ok,
unreachable, failed), `address`, `elapsed_ms`, and either `error` or `facts` (exactly what
templates and `when` see as `facts.*`: os_id, os_version, os_codename, os_like, arch, deb_arch,
kernel, init, hostname, docker, docker_version, compose, compose_version), `resources` (cpus,
mem_total_kb, mem_available_kb, uptime_s, free_kb of /, /tmp and /var) and `problems` (why a
plan would refuse the host). Only the inventory is read; nothing secret is probed.

Exit codes: 0 every host answered, 1 a host was unreachable or failed (it still has its entry),
or a bad inventory or --limit.

Examples:
  claw-provision facts inventory/prod.toml | jq -r 'to_entries[] | \"\\(.key) \\(.value.facts.kernel)\"'
  claw-provision facts inventory/prod.toml --limit web | jq 'map_values(.facts.docker_version)'
  claw-provision facts inventory/prod.toml | jq -r 'to_entries[] | select(.value.state != \"ok\") | .key'";

#[derive(Debug, Args)]
pub struct FactsArgs {
    /// Inventory file (TOML); the playbook it names is not read.
    pub inventory: PathBuf,
    /// Hosts to probe: names, groups or globs, comma-separated; `!` excludes (e.g. `web,!web-3`).
    #[arg(long, value_name = "PATTERN")]
    pub limit: Option<String>,
    /// Hosts probed at the same time.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    pub forks: u16,
    /// Ask for the sudo password (else CLAW_BECOME_PASSWORD, else passwordless sudo).
    #[arg(short = 'K', long)]
    pub ask_become_pass: bool,
}

#[derive(Debug, Args)]
pub struct AdhocArgs {
    /// Inventory file (TOML); the playbook it names is not read.
    pub inventory: PathBuf,
    /// Hosts to act on: names, groups or globs, comma-separated; `!` excludes (e.g.
    /// `'web-*,!web-3'`); `@FILE` reads them from FILE (one or more a line, `#` comments).
    #[arg(long, value_name = "PATTERN")]
    pub limit: Option<String>,
    /// Hosts worked on at the same time.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    pub forks: u16,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Format,
    /// Ask for the sudo password (else CLAW_BECOME_PASSWORD, else passwordless sudo).
    #[arg(short = 'K', long)]
    pub ask_become_pass: bool,
    /// Run as the become user even where the inventory says `become = false`.
    #[arg(long = "become", conflicts_with = "no_become")]
    pub become_: bool,
    /// Run as the login user even where the inventory says `become = true`.
    #[arg(long)]
    pub no_become: bool,
    /// Time limit of the command on each host (default: the host's `command_timeout`).
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    pub timeout: Option<std::time::Duration>,
    /// Write each host's whole stdout and stderr to DIR/HOST.stdout and DIR/HOST.stderr (the
    /// terminal and JSON still show at most --output-limit of each).
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Output shown per host and stream (its first and last halves; the bytes between are
    /// counted, not kept): `1M` (default), `64K`, `10M`...
    #[arg(long, value_name = "SIZE", value_parser = output_limit)]
    pub output_limit: Option<usize>,
    /// The command (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct KnownHostsArgs {
    /// Inventory file (TOML); the playbook it names is not read.
    pub inventory: PathBuf,
    /// Hosts to read: names, groups or globs, comma-separated; `!` excludes.
    #[arg(long, value_name = "PATTERN")]
    pub limit: Option<String>,
    /// Hosts read at the same time.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    pub forks: u16,
    /// Record the keys of hosts no known_hosts file names yet, in each host's (first)
    /// known_hosts file; print one line per host instead of known_hosts lines.
    #[arg(long)]
    pub pin: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Format,
}

impl AdhocArgs {
    /// `Some(b)` when --become/--no-become overrides the inventory.
    pub fn become_override(&self) -> Option<bool> {
        match (self.become_, self.no_become) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}

#[derive(Debug, Args)]
pub struct SelectArgs {
    /// Inventory file (TOML).
    pub inventory: PathBuf,
    /// Playbook to use instead of the one the inventory names.
    #[arg(long, value_name = "FILE")]
    pub playbook: Option<PathBuf>,
    /// Hosts to act on: names, groups or globs, comma-separated; `!` excludes (e.g.
    /// `'web-*,!web-3'`); `@FILE` reads them from FILE (one or more a line, `#` comments).
    #[arg(long, value_name = "PATTERN")]
    pub limit: Option<String>,
    /// Extra variable (highest precedence), repeatable.
    #[arg(short = 'e', long = "extra-var", value_name = "KEY=VALUE", value_parser = crate::vars::parse_extra)]
    pub extra: Vec<(String, String)>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub output: Format,
    /// Run the playbook's task NAME (`[[tasks]]`: start, stop, backup, update, ...) instead of
    /// its steps; `validate` lists them.
    #[arg(long, value_name = "NAME")]
    pub task: Option<String>,
}

/// Which steps run: `--tags`, `--skip-tags`, `--step` (see `src/select.rs`).
#[derive(Debug, Args, Default)]
pub struct StepArgs {
    /// Run only the steps that have one of these tags (comma-separated, repeatable); the others
    /// are shown as not selected. A tag no step has is an error. Handlers notified by the
    /// selected steps run; `secret` steps and the [rollout] health step always run.
    #[arg(long, value_name = "TAG,...", value_delimiter = ',', value_parser = tag)]
    pub tags: Vec<String>,
    /// Do not run the steps that have one of these tags (wins over --tags).
    #[arg(long, value_name = "TAG,...", value_delimiter = ',', value_parser = tag)]
    pub skip_tags: Vec<String>,
    /// Start at step NAME: the steps before it do not run (with --tags/--skip-tags, the steps
    /// from NAME on that they select). With --task, a step of the task.
    #[arg(long, value_name = "NAME")]
    pub step: Option<String>,
}

impl StepArgs {
    pub fn filter(&self) -> StepFilter {
        StepFilter {
            tags: self.tags.clone(),
            skip_tags: self.skip_tags.clone(),
            start_at: self.step.clone(),
        }
    }

    /// The selection as given, for a saved plan (None: every step).
    pub fn describe(&self) -> Option<String> {
        let mut parts = Vec::new();
        let mut tags = self.tags.clone();
        tags.sort();
        tags.dedup();
        let mut skip = self.skip_tags.clone();
        skip.sort();
        skip.dedup();
        if !tags.is_empty() {
            parts.push(format!("--tags {}", tags.join(",")));
        }
        if !skip.is_empty() {
            parts.push(format!("--skip-tags {}", skip.join(",")));
        }
        if let Some(s) = &self.step {
            parts.push(format!("--step '{s}'"));
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// An empty name in `--tags`/`--skip-tags` (clap shows it after the value it was given).
#[derive(Debug, thiserror::Error)]
#[error("empty tag (tags are comma-separated: --tags web,db)")]
struct EmptyTag;

fn tag(s: &str) -> Result<String, EmptyTag> {
    let t = s.trim();
    if t.is_empty() {
        return Err(EmptyTag);
    }
    Ok(t.to_string())
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub steps: StepArgs,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub select: SelectArgs,
    #[command(flatten)]
    pub steps: StepArgs,
    /// Hosts worked on at the same time.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..))]
    pub forks: u16,
    /// Exit 2 when changes are pending (plan) or were made (apply), 0 when none, 1 on an error
    /// (which wins): the drift check of cron or CI.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// After the summary: per host connections, channels, remote round trips, bytes and the
    /// time in connect / probe / apply; for the run: wall time, CPU time and peak memory (the
    /// JSON summary always has them).
    #[arg(long)]
    pub stats: bool,
    /// Ask for the sudo password (else CLAW_BECOME_PASSWORD, else passwordless sudo).
    #[arg(short = 'K', long)]
    pub ask_become_pass: bool,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Also save the plan to FILE (JSON, mode 0600): per host and step the change and
    /// fingerprints of what it is based on, no secret value. `apply INVENTORY --plan FILE`
    /// applies exactly it. Not written when a host could not be planned.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Apply the plan saved by `plan --out FILE`, without asking: give the same inventory and
    /// options (--playbook, --limit, --task, -e). Refused before any change if its inputs
    /// changed; a host whose probed state changed since (drift) is refused, naming the steps,
    /// and the others are applied (exit 1 then).
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Apply without showing the plan and asking (required without a terminal).
    #[arg(short, long)]
    pub yes: bool,
    /// Break the apply lock of the selected hosts first (it ends the other run's hold; asks
    /// first unless --yes).
    #[arg(long)]
    pub force_unlock: bool,
}

impl Cli {
    /// The output format the command was given (`--output`); text for the commands without one.
    pub fn format(&self) -> Format {
        match &self.command {
            Command::Validate(a) => a.select.output,
            Command::Hosts(a) => a.output,
            Command::Plan(a) => a.run.select.output,
            Command::Apply(a) => a.run.select.output,
            Command::Run(a) => a.output,
            Command::KnownHosts(a) => a.output,
            Command::Facts(_)
            | Command::Completions { .. }
            | Command::Init { .. }
            | Command::Man => Format::Text,
        }
    }
}

/// Whether raw arguments that clap refused ask for `--output json` (before any `--`), so that
/// their error is a JSON event too.
pub fn json_requested(args: impl IntoIterator<Item = std::ffi::OsString>) -> bool {
    let args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let args = args.split(|a| a == "--").next().unwrap_or_default();
    args.iter().any(|a| a == "--output=json")
        || args
            .windows(2)
            .any(|w| w[0] == "--output" && w[1] == "json")
}

/// Runs the parsed command; how it ended decides the exit code ([`Outcome::code`],
/// [`Error::code`]).
pub fn execute(cli: Cli) -> Result<Outcome, Error> {
    let ssh = &match cli.ssh_config {
        None => crate::inventory::SshConfigChoice::Default,
        Some(p) if p.as_os_str() == "none" => crate::inventory::SshConfigChoice::Off,
        Some(p) => crate::inventory::SshConfigChoice::File(p),
    };
    let v = Verbosity::from_flags(cli.verbose, cli.quiet);
    match cli.command {
        Command::Validate(a) => validate::validate(&a, v, ssh),
        Command::Hosts(a) => hosts::hosts(&a, ssh),
        Command::Plan(a) => plan_apply::run_cmd(options::plan(a, v), ssh),
        Command::Apply(a) => plan_apply::run_cmd(options::apply(a, v), ssh),
        Command::Run(a) => run::adhoc(&a, v, ssh),
        Command::KnownHosts(a) => known_hosts::fleet_keys(&a, ssh),
        Command::Facts(a) => facts::facts(&a, ssh),
        Command::Completions { shell } => completions::completions(shell),
        Command::Init { dir } => init::init(&dir),
        Command::Man => completions::man(),
    }
}

fn write_stdout(bytes: &[u8]) -> Result<Outcome, Error> {
    match report::out_bytes(bytes) {
        Ok(()) => Ok(Outcome::Done),
        // `| head` closed the pipe: not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Outcome::Done),
        Err(e) => Err(Error::Io(format!("cannot write to stdout: {e}"))),
    }
}

/// A bad `--output-limit` (clap shows it after the value it was given).
#[derive(Debug, thiserror::Error)]
enum OutputLimitError {
    /// Not a size (`parse_size`'s reason).
    #[error("{0}")]
    Size(String),
    /// A size below 2 bytes or beyond this machine's memory.
    #[error("`{value}`: not a usable size")]
    Unusable { value: String },
}

/// `--output-limit`: a size of at least 2 bytes.
fn output_limit(s: &str) -> Result<usize, OutputLimitError> {
    let n =
        crate::resource::fetch::parse_size(s).map_err(|e| OutputLimitError::Size(e.to_string()))?;
    usize::try_from(n)
        .ok()
        .filter(|n| *n >= 2)
        .ok_or_else(|| OutputLimitError::Unusable {
            value: s.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<AdhocArgs, clap::Error> {
        let cli = Cli::try_parse_from(["claw-provision", "run"].iter().chain(args))?;
        match cli.command {
            Command::Run(a) => Ok(a),
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn run_arguments() {
        let a = parse(&["inv.toml", "--limit", "h2", "--", "exit", "3"]).unwrap();
        assert_eq!(a.limit.as_deref(), Some("h2"));
        assert_eq!(a.command, ["exit", "3"]);
        assert_eq!(a.become_override(), None);
        assert_eq!(a.forks, 20);
        // Everything after `--` is the command, options included.
        let a = parse(&[
            "inv.toml",
            "--no-become",
            "--timeout",
            "5m",
            "--",
            "ls",
            "--limit",
            "-K",
        ])
        .unwrap();
        assert_eq!(a.command, ["ls", "--limit", "-K"]);
        assert_eq!(a.become_override(), Some(false));
        assert_eq!(a.timeout, Some(std::time::Duration::from_secs(300)));
        assert!(!a.ask_become_pass);
        let a = parse(&["inv.toml", "--become", "-K", "--forks", "2", "--", "id"]).unwrap();
        assert_eq!(a.become_override(), Some(true));
        assert!(a.ask_become_pass);
        assert_eq!(a.forks, 2);
    }

    #[test]
    fn selection_and_verbosity_arguments() {
        let cli = Cli::try_parse_from([
            "claw-provision",
            "apply",
            "inv.toml",
            "--tags",
            "web, db",
            "--tags",
            "nginx",
            "--skip-tags",
            "slow",
            "--step",
            "app config",
            "-vv",
            "--limit",
            "@hosts.txt,!web-3",
        ])
        .unwrap();
        assert_eq!(
            Verbosity::from_flags(cli.verbose, cli.quiet),
            Verbosity::Commands
        );
        let Command::Apply(a) = cli.command else {
            panic!("not apply")
        };
        let f = a.run.steps.filter();
        assert_eq!(f.tags, ["web", "db", "nginx"]);
        assert_eq!(f.skip_tags, ["slow"]);
        assert_eq!(f.start_at.as_deref(), Some("app config"));
        assert_eq!(a.run.select.limit.as_deref(), Some("@hosts.txt,!web-3"));
        // -q and -v anywhere (global), but not together; tags not empty
        let cli = Cli::try_parse_from(["claw-provision", "-q", "plan", "inv.toml"]).unwrap();
        assert_eq!(
            Verbosity::from_flags(cli.verbose, cli.quiet),
            Verbosity::Quiet
        );
        assert!(Cli::try_parse_from(["claw-provision", "plan", "inv.toml", "-q", "-v"]).is_err());
        assert!(
            Cli::try_parse_from(["claw-provision", "plan", "inv.toml", "--tags", "a,,b"]).is_err()
        );
        let cli = Cli::try_parse_from(["claw-provision", "validate", "inv.toml", "--tags", "web"])
            .unwrap();
        assert!(matches!(cli.command, Command::Validate(v) if v.steps.tags == ["web"]));
        // run and hosts take --limit, not step selection
        assert!(
            Cli::try_parse_from(["claw-provision", "hosts", "inv.toml", "--tags", "web"]).is_err()
        );
    }

    #[test]
    fn run_argument_errors() {
        assert!(parse(&["inv.toml"]).is_err(), "a command is required");
        assert!(
            parse(&["inv.toml", "hostname"]).is_err(),
            "the command comes after --"
        );
        assert!(parse(&["inv.toml", "--become", "--no-become", "--", "id"]).is_err());
        assert!(parse(&["inv.toml", "--forks", "0", "--", "id"]).is_err());
        assert!(parse(&["inv.toml", "--timeout", "soon", "--", "id"]).is_err());
    }

    /// The value parsers' errors as clap renders them (first line), word for word.
    #[test]
    fn value_parser_messages() {
        let first_line = |e: clap::Error| e.to_string().lines().next().unwrap().to_string();
        let e = Cli::try_parse_from(["claw-provision", "plan", "inv.toml", "--tags", "a,,b"])
            .unwrap_err();
        assert_eq!(
            first_line(e),
            "error: invalid value '' for '--tags <TAG,...>': empty tag (tags are comma-separated: --tags web,db)"
        );
        let e = parse(&["inv.toml", "--output-limit", "1", "--", "id"]).unwrap_err();
        assert_eq!(
            first_line(e),
            "error: invalid value '1' for '--output-limit <SIZE>': `1`: not a usable size"
        );
        let e = parse(&["inv.toml", "--output-limit", "lots", "--", "id"]).unwrap_err();
        let want = crate::resource::fetch::parse_size("lots").unwrap_err();
        assert_eq!(
            first_line(e),
            format!("error: invalid value 'lots' for '--output-limit <SIZE>': {want}")
        );
    }
}
