//! Command line: clap arguments → a command that runs. Parsing does no I/O.

use crate::error::{Error, Outcome};
use crate::inventory::{Inventory, SshConfigChoice};
use crate::plan::HostPlan;
use crate::playbook::Playbook;
use crate::report::{self, Format, Verbosity, json, text};
use crate::run::{self, HostOutcome, HostState, Mode, Observer, Prepared, RunOptions};
use crate::saved_plan;
use crate::secret::Secret;
use crate::select::{Selection, StepFilter};
use crate::ssh::PassphraseSource;
use clap::{Args, Parser, Subcommand};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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
    ssh: &SshConfigChoice,
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

fn tag(s: &str) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty tag (tags are comma-separated: --tags web,db)".into());
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
        None => SshConfigChoice::Default,
        Some(p) if p.as_os_str() == "none" => SshConfigChoice::Off,
        Some(p) => SshConfigChoice::File(p),
    };
    let v = Verbosity::from_flags(cli.verbose, cli.quiet);
    match cli.command {
        Command::Validate(a) => validate(&a, v, ssh),
        Command::Hosts(a) => hosts(&a, ssh),
        Command::Plan(a) => {
            let saved = match a.out {
                Some(f) => Saved::Out(f),
                None => Saved::None,
            };
            run_cmd(a.run, Mode::Plan, false, false, v, saved, ssh)
        }
        Command::Apply(a) => {
            if a.force_unlock && !a.yes {
                confirm_force_unlock()?;
            }
            let (yes, saved) = match a.plan {
                // A saved plan was reviewed when it was made: it is applied without asking.
                Some(f) => (true, Saved::Apply(f)),
                None => (a.yes, Saved::None),
            };
            run_cmd(a.run, Mode::Apply, yes, a.force_unlock, v, saved, ssh)
        }
        Command::Run(a) => adhoc(&a, v, ssh),
        Command::KnownHosts(a) => fleet_keys(&a, ssh),
        Command::Facts(a) => facts(&a, ssh),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "claw-provision",
                &mut out,
            );
            write_stdout(&out)
        }
        Command::Init { dir } => init(&dir),
        Command::Man => {
            let mut out = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut out)
                .map_err(|e| Error::Io(format!("cannot render the manual page: {e}")))?;
            write_stdout(&out)
        }
    }
}

/// The files `init` writes, relative to its directory.
const INIT_FILES: [(&str, &str); 3] = [
    ("inventory.toml", include_str!("init/inventory.toml")),
    ("playbook.toml", include_str!("init/playbook.toml")),
    (
        "templates/app.conf.tera",
        include_str!("init/app.conf.tera"),
    ),
];

fn init(dir: &Path) -> Result<Outcome, Error> {
    let io = |what: &Path, e: std::io::Error| Error::Io(format!("{}: {e}", what.display()));
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(Error::Usage(format!(
                    "{}: not empty; init writes only into a new or empty directory (nothing was written)",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        Err(e) => return Err(io(dir, e)),
    }
    for (name, text) in INIT_FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        // create_new: never replaces a file (one made meanwhile included)
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        f.write_all(text.as_bytes()).map_err(|e| io(&path, e))?;
        report::out(&format!("created {}\n", path.display()));
    }
    let inv = dir.join("inventory.toml");
    report::out(&format!(
        "next: set your servers in {inv}, then
  claw-provision validate {inv}
  claw-provision plan {inv}\n",
        inv = inv.display()
    ));
    Ok(Outcome::Done)
}

fn write_stdout(bytes: &[u8]) -> Result<Outcome, Error> {
    let mut o = std::io::stdout().lock();
    match o.write_all(bytes).and_then(|()| o.flush()) {
        Ok(()) => Ok(Outcome::Done),
        // `| head` closed the pipe: not an error worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(Outcome::Done),
        Err(e) => Err(Error::Io(format!("cannot write to stdout: {e}"))),
    }
}

struct Loaded {
    inv: Inventory,
    pb: Playbook,
    /// What --tags/--skip-tags/--step selected (None: every step).
    selection: Option<Selection>,
}

fn load(a: &SelectArgs, filter: &StepFilter, ssh: &SshConfigChoice) -> Result<Loaded, Error> {
    let inv = load_inventory(&a.inventory, ssh);
    let pb_path = match (&a.playbook, &inv) {
        (Some(p), _) => Some(p.clone()),
        (None, Ok(i)) => i.playbook.clone(),
        (None, Err(_)) => Inventory::playbook_hint(&a.inventory),
    };
    let pb = pb_path.as_deref().map(Playbook::load);
    let mut errors = vec![];
    if let Err(e) = &inv {
        errors.extend(e.0.clone());
    }
    if let Some(Err(e)) = &pb {
        errors.extend(e.0.clone());
    }
    if !errors.is_empty() {
        return Err(Error::Config(crate::error::ConfigErrors(errors)));
    }
    let inv = inv.expect("checked above");
    let Some(pb) = pb else {
        return Err(Error::Usage(format!(
            "{}: the inventory names no playbook; add `playbook = \"../playbooks/site.toml\"` to it or pass --playbook FILE",
            a.inventory.display()
        )));
    };
    let mut pb = pb.expect("checked above");
    if let Some(t) = &a.task {
        pb = pb.with_task(t).map_err(Error::Usage)?;
    }
    let selection = crate::select::select_steps(&mut pb, filter).map_err(Error::Usage)?;
    Ok(Loaded { inv, pb, selection })
}

fn select<'a>(l: &'a Loaded, a: &SelectArgs) -> Result<Vec<&'a crate::inventory::Host>, Error> {
    let sel = l.inv.select(&l.pb.hosts).map_err(|e| {
        Error::Usage(format!(
            "{}: `hosts = \"{}\"`: {e}",
            l.pb.path.display(),
            l.pb.hosts
        ))
    })?;
    let Some(limit) = &a.limit else {
        return Ok(sel);
    };
    let lim = crate::select::limit(&l.inv, limit).map_err(Error::Usage)?;
    let out: Vec<_> = sel
        .into_iter()
        .filter(|h| lim.iter().any(|x| x.name == h.name))
        .collect();
    if out.is_empty() {
        return Err(Error::Usage(format!(
            "--limit {limit}: selects none of the playbook's hosts (`{}`)",
            l.pb.hosts
        )));
    }
    Ok(out)
}

fn validate(va: &ValidateArgs, v: Verbosity, ssh: &SshConfigChoice) -> Result<Outcome, Error> {
    let a = &va.select;
    let l = load(a, &va.steps.filter(), ssh)?;
    let hosts = select(&l, a)?;
    run::prepare(&l.inv, &l.pb, &hosts, &a.extra)?;
    let steps = l.pb.steps.len();
    let selected: Vec<&str> = (l.pb.steps.iter())
        .filter(|s| s.not_selected.is_none())
        .map(|s| s.name.as_str())
        .collect();
    match a.output {
        Format::Text if v == Verbosity::Quiet => {}
        Format::Text => {
            if let Some(sel) = &l.selection {
                report::out(&text::selection(sel));
            }
            report::out(&format!(
                "ok: {} hosts, playbook `{}`{} with {steps} steps and {} handlers\n",
                hosts.len(),
                l.pb.name,
                l.pb.task
                    .as_ref()
                    .map(|t| format!(", task `{t}`"))
                    .unwrap_or_default(),
                l.pb.handlers.len()
            ));
            if v >= Verbosity::Verbose {
                report::out("steps:\n");
                for s in &l.pb.steps {
                    let tags = if s.tags.is_empty() {
                        String::new()
                    } else {
                        format!(" [tags: {}]", s.tags.join(", "))
                    };
                    let what = match (&s.not_selected, s.rescue) {
                        (Some(why), _) => format!(" ({why})"),
                        (None, true) => " (rescue)".into(),
                        (None, false) => String::new(),
                    };
                    report::out(&format!("  {} {}{tags}{what}\n", s.kind, s.name));
                }
            }
            if l.pb.task.is_none() && !l.pb.tasks.is_empty() {
                report::out("tasks (--task NAME):\n");
                let w = l.pb.tasks.iter().map(|t| t.name.len()).max().unwrap_or(0);
                for t in &l.pb.tasks {
                    report::out(&format!("  {:w$}  {}\n", t.name, t.description));
                }
            }
        }
        Format::Json => json::Events::default().emit(serde_json::json!({"event": "validate", "ok": true, "hosts": hosts.len(), "steps": steps, "selected_steps": selected, "task": l.pb.task, "tasks": l.pb.tasks.iter().map(|t| serde_json::json!({"name": t.name, "description": t.description})).collect::<Vec<_>>()})),
    }
    Ok(Outcome::Done)
}

fn hosts(a: &SelectArgs, ssh: &SshConfigChoice) -> Result<Outcome, Error> {
    let l = load(a, &StepFilter::default(), ssh)?;
    let hosts = select(&l, a)?;
    let ev = json::Events::default();
    for h in hosts {
        let keys: Vec<String> = h
            .identity_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        match a.output {
            Format::Text => report::out(&format!(
                "{}\t{}@{}:{}\tgroups={}\tkeys={}{}\tknown_hosts={} ({})\tbecome={}{}\n",
                h.name,
                h.user,
                h.address,
                h.port,
                h.groups.join(","),
                if keys.is_empty() { "agent,~/.ssh/id_*".into() } else { keys.join(",") },
                if h.identities_only { " (identities only)" } else { "" },
                h.known_hosts.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(","),
                h.host_key_policy.as_str(),
                if h.become_ { format!("sudo -u {}", h.become_user) } else { "no".into() },
                if h.jump.is_empty() { String::new() } else { format!("\tjump={}", jump_text(&h.jump)) },
            )),
            Format::Json => ev.emit(serde_json::json!({
                "event": "host", "host": h.name, "address": h.address, "port": h.port, "user": h.user,
                "groups": h.groups, "identity_files": keys, "known_hosts": h.known_hosts,
                "host_key_policy": h.host_key_policy, "become": h.become_, "become_user": h.become_user,
                "connect_timeout_s": h.connect_timeout.as_secs(), "command_timeout_s": h.command_timeout.as_secs(),
                "keepalive_interval_s": h.keepalive_interval.as_secs(), "identities_only": h.identities_only,
                "jump": h.jump.iter().map(|j| serde_json::json!({
                    "name": j.name, "address": j.address, "port": j.port, "user": j.user,
                    "identity_files": j.identity_files, "identities_only": j.identities_only,
                    "known_hosts": j.known_hosts, "host_key_policy": j.host_key_policy,
                })).collect::<Vec<_>>(),
            })),
        }
    }
    Ok(Outcome::Done)
}

/// Jump hosts as `user@address:port,...`.
fn jump_text(jump: &[crate::inventory::JumpHost]) -> String {
    jump.iter()
        .map(|j| format!("{}@{}", j.user, crate::ssh::target_of(&j.address, j.port)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Passphrases from CLAW_SSH_PASSPHRASE or a terminal prompt, asked once per key file.
struct Passphrases {
    cache: Mutex<HashMap<PathBuf, Option<Secret>>>,
}

impl PassphraseSource for Passphrases {
    fn passphrase(&self, key: &Path) -> Option<Secret> {
        // Called from async tasks: let the runtime move other hosts' work elsewhere while the
        // operator types (their keepalives and timeouts keep running).
        tokio::task::block_in_place(|| self.ask(key))
    }
}

impl Passphrases {
    fn ask(&self, key: &Path) -> Option<Secret> {
        // One prompt at a time; answers are reused for every host.
        let mut cache = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = cache.get(key) {
            return p.clone();
        }
        let p = match std::env::var("CLAW_SSH_PASSPHRASE") {
            Ok(v) => Some(Secret::new(v)),
            Err(_) if std::io::stdin().is_terminal() => {
                rpassword::prompt_password(format!("Passphrase for {}: ", key.display()))
                    .ok()
                    .map(Secret::new)
            }
            Err(_) => None,
        };
        cache.insert(key.to_path_buf(), p.clone());
        p
    }
}

fn become_password(ask: bool) -> Result<Option<Secret>, Error> {
    let pw = if ask {
        rpassword::prompt_password("Become (sudo) password: ").map_err(|e| {
            Error::Usage(format!(
                "--ask-become-pass: cannot read the password from the terminal: {e}"
            ))
        })?
    } else if let Ok(v) = std::env::var("CLAW_BECOME_PASSWORD") {
        v
    } else {
        return Ok(None);
    };
    // The password travels as one line on stdin: a line break would leak the rest into the script.
    if pw.contains(['\n', '\r']) {
        return Err(Error::Usage(
            "the become password must not contain a line break".into(),
        ));
    }
    Ok(Some(Secret::new(pw)))
}
/// Ctrl-C during a run: the first lets every host finish its running step and stop (locks go
/// with the connections, the summary is printed); the second ends the process at once.
fn on_ctrl_c(interrupt: Arc<std::sync::atomic::AtomicBool>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        interrupt.store(true, std::sync::atomic::Ordering::SeqCst);
        report::err(
            "\ninterrupted: every host stops after its running step (Ctrl-C again to abort now)\n",
        );
        if tokio::signal::ctrl_c().await.is_ok() {
            report::err("aborted\n");
            std::process::exit(130);
        }
    });
}

/// --force-unlock without --yes: the operator confirms on a terminal.
fn confirm_force_unlock() -> Result<(), Error> {
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "apply --force-unlock: no terminal to confirm on; add --yes to break the locks without asking"
                .into(),
        ));
    }
    report::err(
        "--force-unlock ends the connection of any other apply running on the selected hosts (its running step is cut short, and that run fails). Break the locks? [y/N] ",
    );
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        Err(Error::Usage(
            "cancelled: no lock was broken, nothing was changed".into(),
        ))
    }
}

/// Who takes the apply lock: `user@machine pid N, playbook NAME[, task T]` (no secret in it).
fn lock_holder(pb: &Playbook) -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", unsafe { libc::getuid() }));
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let machine = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".into()
    };
    format!(
        "{user}@{machine} pid {}, playbook {}{}",
        std::process::id(),
        pb.name,
        pb.task
            .as_ref()
            .map(|t| format!(", task {t}"))
            .unwrap_or_default()
    )
}

/// A saved plan to write (`plan --out`) or to apply (`apply --plan`).
enum Saved {
    None,
    Out(PathBuf),
    Apply(PathBuf),
}

fn run_cmd(
    a: RunArgs,
    mode: Mode,
    yes: bool,
    force_unlock: bool,
    v: Verbosity,
    saved: Saved,
    ssh: &SshConfigChoice,
) -> Result<Outcome, Error> {
    // A saved plan that cannot be used stops the run before anything else.
    let plan_file = match &saved {
        Saved::Apply(f) => Some(Arc::new(saved_plan::PlanFile::read(f)?)),
        Saved::Out(f) => {
            let dir = crate::error::base_dir(f);
            if !dir.is_dir() {
                return Err(Error::Usage(format!(
                    "--out {}: the directory {} does not exist",
                    f.display(),
                    dir.display()
                )));
            }
            None
        }
        Saved::None => None,
    };
    let interactive = std::io::stdin().is_terminal()
        && std::io::stdout().is_terminal()
        && std::io::stderr().is_terminal();
    if mode == Mode::Apply && !yes && !interactive {
        return Err(Error::Usage(
            "apply: no terminal to confirm on; pass --yes to apply without asking".into(),
        ));
    }
    if mode == Mode::Apply && !yes && a.select.output == Format::Json {
        return Err(Error::Usage(
            "apply --output json needs --yes (the plan cannot be confirmed in JSON mode)".into(),
        ));
    }
    let l = load(&a.select, &a.steps.filter(), ssh)?;
    let hosts = select(&l, &a.select)?;
    let prepared = run::prepare(&l.inv, &l.pb, &hosts, &a.select.extra)?;
    let key = match (&saved, &plan_file) {
        (Saved::Out(_), _) => Some(saved_plan::Key::random()?),
        (_, Some(f)) => Some(f.key().map_err(Error::Usage)?),
        _ => None,
    };
    let inputs = key.as_ref().map(|k| {
        let sel = saved_plan::Selection {
            inventory: &a.select.inventory,
            playbook: &l.pb,
            limit: a.select.limit.as_deref(),
            steps: a.steps.describe(),
            extra: &a.select.extra,
        };
        let secrets = prepared
            .first()
            .map_or(&[][..], |p| &p.playbook.operator_secrets[..]);
        saved_plan::inputs(k, &sel, secrets)
    });
    if let (Saved::Apply(f), Some(plan), Some(k), Some(now)) = (&saved, &plan_file, &key, &inputs)
        && let Err(why) = plan.check_inputs(k, now, &prepared)
    {
        return Err(Error::Usage(format!(
            "--plan {}: made from other inputs, nothing was changed; plan again:\n  - {}",
            f.display(),
            why.join("\n  - ")
        )));
    }
    // What `plan --out` writes needs the hosts' steps after the run.
    let kept: Vec<Prepared> = match &saved {
        Saved::Out(_) => prepared.clone(),
        _ => Vec::new(),
    };
    let format = a.select.output;
    if let (Format::Text, Some(sel), true) = (format, &l.selection, v > Verbosity::Quiet) {
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{}", text::selection(sel));
        let _ = out.flush();
    }
    let interrupt = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let confirm = mode == Mode::Apply && !yes;
    let opts = RunOptions {
        mode,
        forks: usize::from(a.forks),
        become_password: become_password(a.ask_become_pass && hosts.iter().any(|h| h.become_))?,
        fetch_diffs: format == Format::Text && (mode == Mode::Plan || confirm),
        ssh: crate::ssh::Client::new(Arc::new(Passphrases {
            cache: Mutex::new(HashMap::new()),
        })),
        lock_holder: (mode == Mode::Apply).then(|| lock_holder(&l.pb)),
        lock_client: crate::fact::lock::local_client(),
        force_unlock,
        interrupt: interrupt.clone(),
        fingerprint: key.clone(),
        saved: plan_file.clone(),
    };
    let events = Arc::new(json::Events::default());
    let progress = Arc::new(text::Progress::new(mode == Mode::Apply, v));
    let observer: Arc<dyn Observer> = match format {
        Format::Json => Arc::new(json::JsonObserver {
            events: events.clone(),
            apply: mode == Mode::Apply,
        }),
        Format::Text => progress.clone(),
    };
    let order: Vec<String> = prepared.iter().map(|p| p.host.name.clone()).collect();
    let addresses: HashMap<String, String> = prepared
        .iter()
        .map(|p| (p.host.name.clone(), p.host.address.clone()))
        .collect();
    let paint = text::Paint(report::color());
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the async runtime: {e}")))?;
    // The operator answered no to the confirmation.
    let mut declined = false;
    let mut outcomes: Vec<HostOutcome> = rt.block_on(async {
        if !confirm {
            on_ctrl_c(interrupt.clone());
            return Ok(run::run(prepared, opts, observer, None).await);
        }
        let (gate_tx, gate_rx) = tokio::sync::watch::channel(None);
        let (plan_tx, mut plan_rx) = tokio::sync::mpsc::unbounded_channel();
        let n = prepared.len();
        let handle = tokio::spawn(run::run(prepared, opts, observer, Some((gate_rx, plan_tx))));
        let mut plans: HashMap<String, HostPlan> = HashMap::new();
        let mut ended = std::collections::HashSet::new();
        while plans.len() + ended.len() < n {
            match plan_rx.recv().await {
                Some((host, Some(plan))) => {
                    plans.insert(host, plan);
                }
                Some((host, None)) => {
                    if !plans.contains_key(&host) {
                        ended.insert(host);
                    }
                }
                None => break,
            }
        }
        progress.pause();
        let mut out = std::io::stdout().lock();
        for h in &order {
            if let Some(p) = plans.get(h) {
                let _ = write!(
                    out,
                    "{}",
                    text::plan(h, &addresses[h], p, paint, v >= Verbosity::Verbose)
                );
            }
        }
        // All new host keys at once, before the question (never a prompt per host).
        let _ = write!(out, "{}", progress.take_learned(&order));
        if !ended.is_empty() {
            let mut names: Vec<&String> = ended.iter().collect();
            names.sort_by_key(|n| order.iter().position(|o| o == *n));
            let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
            let _ = writeln!(
                out,
                "\nnot planned (failed or unreachable; see the summary): {}",
                names.join(", ")
            );
        }
        let changes: usize = plans.values().map(HostPlan::changes).sum();
        let go = if changes == 0 {
            if !plans.is_empty() {
                let _ = writeln!(out, "\nNothing to change.");
            }
            true
        } else {
            let hosts = plans.values().filter(|p| !p.is_empty()).count();
            let _ = write!(
                out,
                "\nApply {changes} change{} on {hosts} host{}? [y/N] ",
                if changes == 1 { "" } else { "s" },
                if hosts == 1 { "" } else { "s" }
            );
            let _ = out.flush();
            let mut answer = String::new();
            let _ = std::io::stdin().read_line(&mut answer);
            let yes = matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes");
            if !yes {
                let _ = writeln!(out, "Cancelled: nothing was changed.");
            }
            declined = !yes;
            yes
        };
        drop(out);
        progress.resume();
        // Until the answer, Ctrl-C ends the process (nothing was changed yet).
        on_ctrl_c(interrupt.clone());
        let _ = gate_tx.send(Some(go));
        handle.await.map_err(|e| {
            Error::Io(format!(
                "internal error: the run ended abnormally: {e} (bug, please report)"
            ))
        })
    })?;
    progress.finish();
    let by_name: HashMap<String, usize> = order
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();
    outcomes.sort_by_key(|o| by_name.get(&o.name).copied().unwrap_or(usize::MAX));
    let command = if mode == Mode::Plan { "plan" } else { "apply" };
    match format {
        Format::Json => {
            if mode == Mode::Plan {
                for o in &outcomes {
                    if let Some(p) = &o.plan {
                        events.emit(p.event(&o.name));
                    }
                }
            }
            events.emit(json::summary_event(command, &outcomes, start.elapsed()));
        }
        Format::Text => {
            let mut out = std::io::stdout().lock();
            if mode == Mode::Plan && v > Verbosity::Quiet {
                for o in &outcomes {
                    if let Some(p) = &o.plan {
                        let all = v >= Verbosity::Verbose;
                        let _ = write!(out, "{}", text::plan(&o.name, &o.address, p, paint, all));
                    }
                }
            }
            let _ = write!(out, "{}", progress.take_learned(&order));
            let summary = if v == Verbosity::Quiet {
                text::summary_quiet(&outcomes, mode == Mode::Apply, paint)
            } else {
                text::summary(&outcomes, mode == Mode::Apply, paint)
            };
            let _ = write!(out, "{summary}");
            if a.stats {
                let _ = write!(out, "{}", text::stats(&outcomes, start.elapsed()));
            }
        }
    }
    if let (Saved::Out(f), Some(k), Some(inputs)) = (&saved, &key, inputs) {
        let file = saved_plan::PlanFile::new(k, inputs, &kept, &outcomes).map_err(|e| {
            Error::HostsFailed(format!("--out {}: no plan written: {e}", f.display()))
        })?;
        file.write(f)?;
        let changes: usize = file.hosts.iter().map(|h| h.changes).sum();
        match format {
            Format::Json => events.emit(serde_json::json!({"event": "plan_saved", "file": f.display().to_string(), "changes": changes, "hosts": file.hosts.len()})),
            Format::Text => report::out(&format!(
                "Plan saved to {}: apply exactly it with `claw-provision apply {} --plan {}`\n",
                f.display(),
                a.select.inventory.display(),
                f.display()
            )),
        }
    }
    // Ctrl-C wins: the hosts it stopped count as failed.
    if interrupt.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(Error::Interrupted);
    }
    if outcomes
        .iter()
        .any(|o| matches!(o.state, HostState::Failed | HostState::Unreachable))
    {
        return Err(Error::Reported);
    }
    if declined {
        return Err(Error::Declined);
    }
    let changed = outcomes.iter().any(|o| o.state == HostState::Changed);
    Ok(if a.detailed_exitcode && changed {
        Outcome::Changes
    } else {
        Outcome::Done
    })
}

/// The hosts `--limit` selects (globs, `!`, `@FILE`), or all of them.
fn limited_hosts(
    inv: &Inventory,
    limit: Option<&str>,
    inventory: &Path,
) -> Result<Vec<crate::inventory::Host>, Error> {
    let selected = match limit {
        Some(l) => crate::select::limit(inv, l).map_err(Error::Usage)?,
        None => inv
            .select("all")
            .map_err(|e| Error::Usage(format!("{}: {e}", inventory.display())))?,
    };
    Ok(selected.into_iter().cloned().collect())
}

fn fleet_keys(a: &KnownHostsArgs, ssh: &SshConfigChoice) -> Result<Outcome, Error> {
    let inv = load_inventory(&a.inventory, ssh).map_err(Error::Config)?;
    let hosts = limited_hosts(&inv, a.limit.as_deref(), &a.inventory)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the async runtime: {e}")))?;
    let client = crate::ssh::Client::new(Arc::new(Passphrases {
        cache: Mutex::new(HashMap::new()),
    }));
    let reports = rt.block_on(crate::fleet_keys::scan(
        hosts,
        usize::from(a.forks),
        a.pin,
        &client,
    ));
    // Jump hosts' keys recorded on the way (accept-new).
    let mut learned = client.take_learned_host_keys();
    match a.output {
        Format::Text => {
            report::out(&crate::fleet_keys::text(&reports, a.pin));
            report::err(&text::learned_keys(&mut learned, &[]));
        }
        Format::Json => {
            let ev = json::Events::default();
            for r in &reports {
                ev.emit(crate::fleet_keys::json(r));
            }
            for (who, key) in learned {
                ev.emit(serde_json::json!({"event": "host_key_learned", "host": who, "key": key}));
            }
        }
    }
    if reports.iter().any(|r| r.state.is_problem()) {
        Err(Error::Reported)
    } else {
        Ok(Outcome::Done)
    }
}

fn adhoc(a: &AdhocArgs, v: Verbosity, ssh: &SshConfigChoice) -> Result<Outcome, Error> {
    let command = crate::adhoc::command_line(&a.command).map_err(Error::Usage)?;
    let inv = load_inventory(&a.inventory, ssh).map_err(Error::Config)?;
    let mut hosts = limited_hosts(&inv, a.limit.as_deref(), &a.inventory)?;
    if let Some(b) = a.become_override() {
        hosts.iter_mut().for_each(|h| h.become_ = b);
    }
    if let Some(d) = &a.output_dir {
        std::fs::create_dir_all(d)
            .map_err(|e| Error::Usage(format!("--output-dir {}: {e}", d.display())))?;
    }
    let opts = crate::adhoc::Options {
        forks: usize::from(a.forks),
        become_password: become_password(a.ask_become_pass && hosts.iter().any(|h| h.become_))?,
        ssh: crate::ssh::Client::new(Arc::new(Passphrases {
            cache: Mutex::new(HashMap::new()),
        })),
        timeout: a.timeout,
        output_limit: a.output_limit.unwrap_or(crate::adhoc::DEFAULT_OUTPUT_LIMIT),
        output_dir: a.output_dir.clone(),
        live: a.output == Format::Text && v > Verbosity::Quiet,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the async runtime: {e}")))?;
    let start = Instant::now();
    let events = json::Events::default();
    let format = a.output;
    // Whether the live text shown last ended a line.
    let mut at_line_start = true;
    let client = opts.ssh.clone();
    let results = rt.block_on(crate::adhoc::run(hosts, command, opts, |shown| {
        use crate::adhoc::Shown;
        let text = match (format, shown) {
            (Format::Json, Shown::Done { result, .. }) => {
                events.emit(crate::adhoc::host_event(result));
                return;
            }
            (Format::Json, _) => return,
            (Format::Text, Shown::LiveHeader(name, address)) => {
                crate::adhoc::live_header(name, address)
            }
            (Format::Text, Shown::Live(t)) => t.to_string(),
            // -q: only the hosts where the command failed
            (Format::Text, Shown::Done { result, .. }) if v == Verbosity::Quiet && result.ok() => {
                return;
            }
            (Format::Text, Shown::Done { result, live: true }) => {
                crate::adhoc::live_end(result, at_line_start)
            }
            (Format::Text, Shown::Done { result, .. }) => crate::adhoc::text_block(result),
        };
        if !text.is_empty() {
            at_line_start = text.ends_with('\n');
        }
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "{text}");
        let _ = out.flush();
    }));
    let mut learned = client.take_learned_host_keys();
    match format {
        Format::Text => report::out(&format!(
            "{}{}",
            text::learned_keys(&mut learned, &[]),
            crate::adhoc::text_summary(&results, v > Verbosity::Quiet)
        )),
        Format::Json => {
            for (who, key) in learned {
                events.emit(
                    serde_json::json!({"event": "host_key_learned", "host": who, "key": key}),
                );
            }
            events.emit(crate::adhoc::summary_event(&results, start.elapsed()));
        }
    }
    if results.iter().all(crate::adhoc::HostResult::ok) {
        Ok(Outcome::Done)
    } else {
        Err(Error::Reported)
    }
}

fn facts(a: &FactsArgs, ssh: &SshConfigChoice) -> Result<Outcome, Error> {
    let inv = load_inventory(&a.inventory, ssh).map_err(Error::Config)?;
    let hosts = limited_hosts(&inv, a.limit.as_deref(), &a.inventory)?;
    let opts = crate::facts::Options {
        forks: usize::from(a.forks),
        become_password: become_password(a.ask_become_pass && hosts.iter().any(|h| h.become_))?,
        ssh: crate::ssh::Client::new(Arc::new(Passphrases {
            cache: Mutex::new(HashMap::new()),
        })),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Io(format!("cannot start the async runtime: {e}")))?;
    let client = opts.ssh.clone();
    let reports = rt.block_on(crate::facts::gather(hosts, opts));
    write_stdout(crate::facts::document(&reports).as_bytes())?;
    // stdout is the JSON document: new host keys (accept-new) are told on stderr.
    report::err(&text::learned_keys(
        &mut client.take_learned_host_keys(),
        &[],
    ));
    // A host that did not answer has its entry in the document.
    if reports.iter().all(|r| r.outcome.is_ok()) {
        Ok(Outcome::Done)
    } else {
        Err(Error::Reported)
    }
}

/// `--output-limit`: a size of at least 2 bytes.
fn output_limit(s: &str) -> Result<usize, String> {
    let n = crate::resource::fetch::parse_size(s)?;
    usize::try_from(n)
        .ok()
        .filter(|n| *n >= 2)
        .ok_or_else(|| format!("`{s}`: not a usable size"))
}

/// Tells how a command failed, unless its report already did: on stderr, and with `--output
/// json` also as `error` events on stdout (see [`json::error_events`]). Argument errors are
/// printed as clap prints them (with colour on a terminal).
pub fn report_error(e: &Error, format: Format) {
    if format == Format::Json {
        let events = json::Events::default();
        for ev in json::error_events(e) {
            events.emit(ev);
        }
    }
    if !e.needs_report() {
        return;
    }
    if let Error::Arguments(c) = e {
        let _ = c.print();
        return;
    }
    report::err(&format!("{}\n", render_error(e)));
}

/// The message printed for a failed command.
pub fn render_error(e: &Error) -> String {
    match e {
        Error::Config(c) => c.to_string(),
        // clap's own words (usage, `--help` hint), without a second `error: `.
        Error::Arguments(c) => c.render().to_string().trim_end().to_string(),
        // Host-supplied text (stderr, banners) can be part of an error.
        other => format!(
            "error: {}",
            crate::report::terminal::safe(&other.to_string())
        ),
    }
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
}
