//! `firewall`: inbound default-deny with nftables, in ONE table the tool owns (`table inet
//! claw_provision` by default).
//!
//! - Input: loopback, established/related traffic, IPv6 neighbour discovery, ping (`icmp`), the
//!   TCP `ports` open to everyone and the `peers` ports open only to named sources (inventory
//!   hosts, inventory groups, IP addresses or CIDRs). Everything else is dropped (no reset).
//! - Per host: a port may be a string that renders to a number (`port = "{{ backend_port }}"`,
//!   see [`port`]); a `from` entry that renders to an empty string is dropped, and a peer left
//!   with no source (or naming only empty groups) opens its port to nobody: no rule, and the
//!   plan says `5432 from no source`. One step shared by hosts of different roles can so open
//!   a port only where the host's groups and variables say so.
//! - Containers (`containers = true`): Docker publishes ports by DNAT in PREROUTING, so those
//!   connections never reach the input hook. A forward chain at priority `filter - 10` (before
//!   Docker's own filter chains, whether Docker uses iptables-nft or legacy iptables) drops new
//!   DNATed connections whose ORIGINAL destination port (`ct original proto-dst`) is not allowed
//!   for everyone or for that source. This is Docker's DOCKER-USER idea without touching Docker's
//!   tables, so a restart of Docker (which rebuilds its chains) cannot undo it.
//! - The table is replaced atomically in one `nft -f` transaction (`table` + `delete table` +
//!   the full definition); rules of other tables (Docker's, the distribution's) are never touched.
//! - Probe: the sha256 of the LIVE table listing against the one recorded right after the last
//!   apply, plus the sha256 of the ruleset file that apply loaded against the desired ruleset.
//! - Refused at plan time: a ruleset that does not open the SSH port the connection uses.
//! - The safety net: a timer on the host restores the previous table unless a NEW connection
//!   confirms the change in time; under systemd it is a transient service
//!   (`claw-provision-fw-rollback-TOKEN`, outside the SSH session, so logind's
//!   `KillUserProcesses` cannot end it), elsewhere a detached process. If the previous table
//!   cannot be loaded back, `minimal_ruleset` (the SSH port open, the rest dropped) is loaded.
//! - Persistence: the ruleset is kept in /etc/claw-provision/firewall/NAME.nft; under systemd a
//!   template unit `claw-provision-firewall@NAME.service` (before network-pre.target, hence
//!   before Docker) loads it at boot. Without systemd the plan warns that it is not restored.

use super::StepError;
use crate::fact::FirewallState;
use crate::fact::firewall::{UNIT_PATH, ruleset_path, state_path, unit_instance};
use crate::plan::{Action, Change, Confirm, ContentChange, Op};
use crate::quote::quote;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::sync::Arc;

mod peers;
mod port;
mod ruleset;

#[cfg(test)]
use peers::Net;
pub(crate) use peers::Peer;
use peers::{lookup, peers};
pub(crate) use port::PortArg;
pub(crate) use ruleset::{minimal_ruleset, ruleset};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// TCP ports open to everyone (default 22, 80, 443); integers or strings that render to one.
    pub ports: Option<Vec<PortArg>>,
    /// TCP ports open only to some sources.
    #[serde(default)]
    pub peers: Vec<PeerArgs>,
    /// Accept ping (ICMP/ICMPv6 echo requests; default true). Neighbour discovery is always on.
    pub icmp: Option<bool>,
    /// Name of the nftables table the step owns (default `claw_provision`).
    pub table: Option<String>,
    /// Filter connections to ports that containers publish (default true).
    pub containers: Option<bool>,
    /// The safety net: the host restores the previous ruleset unless claw-provision confirms,
    /// through a NEW SSH connection, within this time (default "60s").
    pub confirm_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerArgs {
    /// An integer, or a string that renders to one (`"{{ backend_port }}"`).
    pub port: PortArg,
    /// Inventory host names, inventory group names, IP addresses or CIDRs; an entry that
    /// renders to an empty string is dropped.
    pub from: Vec<String>,
}

/// The desired firewall of one host.
#[derive(Debug, Clone)]
pub struct Desired {
    pub table: String,
    pub ports: Vec<u16>,
    pub peers: Vec<Peer>,
    /// The ruleset file: one `nft -f` transaction replacing the table.
    pub ruleset: String,
    pub sha256: String,
    /// Seconds the host waits for the confirmation before it rolls back.
    pub confirm_secs: u64,
    /// The port sshd listens on: what the fallback ruleset keeps open.
    pub ssh_port: u64,
}

/// The confirm-or-revert protocol of a firewall change ([`crate::plan::Op::confirm`]), which the
/// runner drives through these methods without knowing which kind asked for it: the applied
/// script printed a token ([`Confirm::token`]); a NEW connection runs
/// [`Confirm::confirm_script`] within the window; if none can, the host's timer rolls the
/// change back, and [`Confirm::rolled_back_script`], run through the old connection after the
/// window, tells how, for [`Confirm::failure`].
impl Confirm {
    /// The rollback token the applied script printed (`@fw-token\tTOKEN`).
    pub fn token(&self, applied_stdout: &str) -> Result<String, StepError> {
        applied_stdout
            .lines()
            .find_map(|l| l.strip_prefix("@fw-token\t").map(|t| t.trim().to_string()))
            .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_hexdigit()))
            .ok_or(StepError::Internal {
                what: "the firewall change did not report its rollback token (bug)",
            })
    }

    /// The script a new connection runs to confirm the change (see [`confirm_script`]).
    pub fn confirm_script(&self, token: &str) -> String {
        confirm_script(&self.table, token)
    }

    /// Whether the confirmation script's answer (trimmed) says the change stays.
    pub fn confirmed(&self, answer: &str) -> bool {
        answer == "confirmed"
    }

    /// The script the old connection runs after the window (see [`rolled_back_script`]).
    pub fn rolled_back_script(&self, token: &str) -> String {
        rolled_back_script(&self.table, token)
    }

    /// The error of a change that was not confirmed: `why` no confirmation landed, and what
    /// the rollback check answered (its output, trimmed) or why it could not run.
    pub fn failure(&self, why: &str, rollback: Result<&str, &str>) -> String {
        let secs = self.window.as_secs();
        let verdict = match rollback {
            Ok(answer) if answer.starts_with("rolled-back") => {
                match answer.trim_start_matches("rolled-back").trim() {
                    "minimal" => format!(
                        "after {secs} s the host could not load the previous ruleset back and loaded a minimal one instead (the SSH port open, everything else dropped): check the firewall"
                    ),
                    "deleted" => format!(
                        "after {secs} s the host could load neither the previous ruleset nor a minimal one and deleted the table: check the firewall"
                    ),
                    _ => format!("the host restored the previous ruleset after {secs} s"),
                }
            }
            Ok(_) => "the host's rollback did not report back: check the firewall".to_string(),
            Err(e) => format!("the rollback cannot be checked ({e})"),
        };
        format!("the new firewall ruleset was not confirmed ({why}); {verdict}")
    }
}

/// The confirmation of a firewall change, run through a NEW connection: it wins the race
/// against the rollback timer (both rename the change's own token file first) and puts the new
/// ruleset file and state in place, or reports `expired`.
fn confirm_script(table: &str, token: &str) -> String {
    let d = "/var/lib/claw-provision/firewall";
    format!(
        r#"pend={pend}
if mv -f "$pend" "$pend.confirmed" 2>/dev/null; then
  mv -f {file}.new.{token} {file}
  mv -f {state}.new.{token} {state}
  rm -f "$pend.confirmed" {rb} {min}
  echo confirmed
else
  echo expired
fi
"#,
        pend = quote(&format!("{d}/{table}.pending.{token}")),
        rb = quote(&format!("{d}/{table}.rollback.{token}")),
        min = quote(&format!("{d}/{table}.minimal.{token}")),
        file = quote(&ruleset_path(table)),
        state = quote(&state_path(table)),
        token = quote(token),
    )
}

/// Through the old connection, after the window: whether the timer rolled `token`'s change back
/// (`rolled-back previous`, `rolled-back minimal`: the fallback ruleset, `rolled-back deleted`), or
/// `unknown`.
fn rolled_back_script(table: &str, token: &str) -> String {
    let f = quote(&format!(
        "/var/lib/claw-provision/firewall/{table}.pending.{token}.rolled-back"
    ));
    format!(
        "if [ -e {f} ]; then how=$(cat {f}); rm -f {f}; echo \"rolled-back $how\"; else echo unknown; fi\n"
    )
}

/// The environment variable that lets a test force a ruleset which blocks the SSH port (to prove
/// the rollback). Only a build with the cargo feature `test-lockout-switch` (the integration tests'
/// build, never a release) looks at it.
pub(crate) const TEST_ALLOW_LOCKOUT: &str = "CLAW_PROVISION_TEST_ALLOW_SSH_LOCKOUT";

/// Whether this build lets [`TEST_ALLOW_LOCKOUT`] switch the lock-out guard off, and it is set.
fn lockout_allowed() -> bool {
    cfg!(feature = "test-lockout-switch") && std::env::var_os(TEST_ALLOW_LOCKOUT).is_some()
}

pub(crate) const DEFAULT_TABLE: &str = "claw_provision";
const DEFAULT_PORTS: &[u16] = &[22, 80, 443];

/// The boot unit (systemd template, instance = table name).
pub(crate) const UNIT: &str = "# managed by claw-provision (firewall step)
[Unit]
Description=claw-provision firewall: nftables table inet %i
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/sbin/nft -f /etc/claw-provision/firewall/%i.nft

[Install]
WantedBy=sysinit.target
";

/// The `table` argument (default [`DEFAULT_TABLE`]): a name nft and the unit's instance take.
fn table_name(table: Option<String>) -> Result<String, StepError> {
    let table = table.unwrap_or_else(|| DEFAULT_TABLE.into());
    if table.is_empty()
        || table.len() > 64
        || !table.starts_with(|c: char| c.is_ascii_alphabetic())
        || !table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(StepError::arg(format!(
            "`table = \"{table}\"`: a letter, then letters, digits and `_` (at most 64)"
        )));
    }
    Ok(table)
}

/// The port sshd listens on: the inventory's port, unless the host's `sshd_port` variable says
/// otherwise (the inventory reaches it through a proxy or NAT on another port).
fn ssh_port(ctx: &Map<String, Value>) -> Result<u64, StepError> {
    lookup(ctx, &["sshd_port"])
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .or_else(|| lookup(ctx, &["host", "port"]).and_then(Value::as_u64))
        .ok_or(StepError::Internal {
            what: "the host's SSH port is not in the template context",
        })
}

impl Desired {
    pub fn from_args(a: Args, ctx: &Map<String, Value>) -> Result<Self, StepError> {
        let table = table_name(a.table)?;
        let mut ports = match &a.ports {
            Some(ports) => ports
                .iter()
                .map(|p| p.resolve("ports"))
                .collect::<Result<Vec<u16>, _>>()?,
            None => DEFAULT_PORTS.to_vec(),
        };
        ports.sort_unstable();
        ports.dedup();
        // Never lock the provisioner out: the SSH port of the connection must stay open to all.
        let ssh = ssh_port(ctx)?;
        let confirm_secs = super::compose::parse_duration(
            "confirm_timeout",
            a.confirm_timeout.as_deref().unwrap_or("60s"),
        )?;
        if !(10..=3600).contains(&confirm_secs) {
            return Err(StepError::arg(
                "`confirm_timeout` must be between 10s and 1h",
            ));
        }
        if !ports.iter().any(|p| u64::from(*p) == ssh) && !lockout_allowed() {
            return Err(StepError::arg(format!(
                "this ruleset would block SSH port {ssh}, which claw-provision connects to; add {ssh} to `ports`"
            )));
        }
        let peers = peers(ctx, &a.peers, &ports)?;
        let ruleset = ruleset(
            &table,
            &ports,
            &peers,
            a.icmp.unwrap_or(true),
            a.containers.unwrap_or(true),
        );
        let sha256 = super::file::sha256_hex(ruleset.as_bytes());
        Ok(Self {
            table,
            ports,
            peers,
            ruleset,
            sha256,
            confirm_secs,
            ssh_port: ssh,
        })
    }

    fn target(&self) -> String {
        format!("nftables table inet {}", self.table)
    }

    /// The script that loads the ruleset (stdin) and records the result.
    fn script(&self) -> String {
        let t = quote(&self.table);
        let file = quote(&ruleset_path(&self.table));
        let state = quote(&state_path(&self.table));
        let unit = quote(UNIT_PATH);
        format!(
            r#"set -eu
mkdir -p /etc/claw-provision/firewall /var/lib/claw-provision/firewall
# Uploads of a run cut short (SIGKILL: no trap ran); under the apply lock, none is in use.
rm -f -- /etc/claw-provision/firewall/.upload.*
tmp=$(mktemp /etc/claw-provision/firewall/.upload.XXXXXX)
trap 'rm -f "$tmp" "$tmp.unit"' EXIT
cat > "$tmp"
s=$(sha256sum < "$tmp")
[ "${{s%% *}}" = {sha} ] || {{ echo "the ruleset arrived damaged (sha256 mismatch)" >&2; exit 1; }}
chmod 0644 "$tmp"
if [ -d /run/systemd/system ]; then
  printf '%s' {unit_text} > "$tmp.unit"
  chmod 0644 "$tmp.unit"
  mv -f "$tmp.unit" {unit}
  systemctl daemon-reload
  systemctl enable --quiet {instance}
fi
# The safety net. The previous table (or none) is kept; the new ruleset file and state wait
# beside the old ones until the change is confirmed through a new SSH connection; a timer
# restores the previous table unless that happens within {secs} s. Every file carries this
# change's token, and arming cancels the timers of earlier unconfirmed changes. If the previous
# table cannot be loaded back, a minimal one keeps the SSH port open (and drops the rest); if
# even that fails, the table is deleted. Where systemd runs, the timer is a transient service
# (not in the SSH session: logind's KillUserProcesses cannot end it); elsewhere a detached
# process.
d=/var/lib/claw-provision/firewall
token=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
rm -f "$d"/{t}.pending.*
rb="$d/"{t}".rollback.$token"
pend="$d/"{t}".pending.$token"
min="$d/"{t}".minimal.$token"
{{ printf 'table inet %s\ndelete table inet %s\n' {t} {t}; nft list table inet {t} 2>/dev/null || true; }} > "$rb"
printf '%s' {minimal} > "$min"
: > "$pend"
w='
  sleep "$1"
  mv -f "$2" "$2.firing" 2>/dev/null || exit 0
  if nft -f "$3"; then how=previous
  elif nft -f "$6"; then how=minimal
  else nft delete table inet "$7"; how=deleted
  fi
  rm -f "$4" "$5" "$3" "$6" "$2.firing"
  echo "$how" > "$2.rolled-back"
'
set -- {secs} "$pend" "$rb" {file}".new.$token" {state}".new.$token" "$min" {t}
if [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1 \
  && systemd-run --quiet --collect --unit="claw-provision-fw-rollback-$token" \
    --description="claw-provision firewall rollback of table "{t} -- /bin/sh -c "$w" claw-fw-rollback "$@" </dev/null >/dev/null 2>&1; then
  :
else
  setsid nohup sh -c "$w" claw-fw-rollback "$@" </dev/null >/dev/null 2>&1 &
fi
printf '@fw-token\t%s\n' "$token"
nft -f "$tmp"
mv -f "$tmp" {file}".new.$token"
l=$(nft list table inet {t})
l=$(printf '%s\n' "$l" | sha256sum)
printf '%s\n' "${{l%% *}}" > {state}".new.$token"
"#,
            sha = quote(&self.sha256),
            secs = self.confirm_secs,
            minimal = quote(&minimal_ruleset(&self.table, self.ssh_port)),
            unit_text = quote(UNIT),
            instance = quote(&unit_instance(&self.table)),
        )
    }

    /// Compares with the probe of the live table.
    pub fn diff(&self, o: &FirewallState) -> Result<Change, StepError> {
        let target = self.target();
        let (live, recorded, ruleset, boot) = match o {
            FirewallState::NoNft => {
                return Ok(Change::deferred(target, "nft is not installed yet"));
            }
            FirewallState::Seen {
                live,
                recorded,
                ruleset,
                boot,
            } => (live, recorded, ruleset, boot),
        };
        let (action, mut reasons) = self.table_reasons(live, recorded, ruleset);
        let warnings = self.boot_reasons(boot, &mut reasons);
        let summary = self.summary();
        if reasons.is_empty() {
            let mut c = Change::noop(
                target,
                format!("the live table is the one applied ({summary})"),
            );
            c.warnings = warnings;
            return Ok(c);
        }
        let content = (ruleset.as_deref() != Some(self.sha256.as_str())).then(|| ContentChange {
            path: ruleset_path(&self.table),
            old_sha256: ruleset.clone(),
            new: Arc::new(self.ruleset.clone().into_bytes()),
            sensitive: false,
            old: None,
            keys: None,
        });
        // Plans show details, not the reason, of an update: say there what differs.
        let mut details = if action == Action::Create {
            vec![]
        } else {
            reasons.clone()
        };
        details.push(summary);
        Ok(Change {
            action,
            target,
            details,
            reason: reasons.join("; "),
            content,
            clears: None,
            housekeeping: false,
            tidies: vec![],
            op: Some(self.op()),
            upload_bytes: self.ruleset.len() as u64,
            upload_dir: Some("/etc/claw-provision/firewall".into()),
            warnings,
        })
    }

    /// Whether the table is created or replaced, and why it is replaced, from the sha256 of
    /// the `live` table, of the one `recorded` by the last apply and of the `ruleset` file it
    /// loaded (empty reasons: the table is the one applied).
    fn table_reasons(
        &self,
        live: &Option<String>,
        recorded: &Option<String>,
        ruleset: &Option<String>,
    ) -> (Action, Vec<String>) {
        let mut reasons = vec![];
        let action = match live {
            None => {
                reasons.push("the table does not exist".to_string());
                Action::Create
            }
            Some(_) if recorded.is_none() && ruleset.is_none() => {
                reasons.push(
                    "a table of this name exists but was not applied by claw-provision".to_string(),
                );
                Action::Update
            }
            Some(l) => {
                if recorded.as_ref() != Some(l) {
                    reasons.push(
                        "the live table differs from the one applied (changed by hand or by another tool)"
                            .to_string(),
                    );
                }
                if ruleset.as_deref() != Some(self.sha256.as_str()) {
                    reasons.push(if ruleset.is_none() {
                        "no ruleset applied by claw-provision".to_string()
                    } else {
                        "the desired ruleset changed".to_string()
                    });
                }
                Action::Update
            }
        };
        (action, reasons)
    }

    /// What the probe says of the boot unit (`boot`, see [`FirewallState::Seen`]): adds to
    /// `reasons` why it must be written or enabled; returns the warnings (no systemd: the
    /// table is not restored after a reboot).
    fn boot_reasons(
        &self,
        boot: &Option<(Option<String>, bool)>,
        reasons: &mut Vec<String>,
    ) -> Vec<String> {
        let mut warnings = vec![];
        match boot {
            None => warnings.push(
                "no systemd on this host: the firewall table is not restored after a reboot"
                    .to_string(),
            ),
            Some((unit, enabled)) => {
                let want = super::file::sha256_hex(UNIT.as_bytes());
                if unit.as_deref() != Some(want.as_str()) {
                    reasons.push(format!(
                        "the boot unit {UNIT_PATH} is {}",
                        if unit.is_none() {
                            "missing"
                        } else {
                            "out of date"
                        }
                    ));
                } else if !enabled {
                    reasons.push(format!(
                        "the boot unit {} is not enabled",
                        unit_instance(&self.table)
                    ));
                }
            }
        }
        warnings
    }

    /// The operation of a change: [`Self::script`] with the ruleset on stdin, confirmed
    /// through a new connection within the window (see [`Confirm`]).
    fn op(&self) -> Op {
        Op {
            script: self.script(),
            stdin: Arc::new(self.ruleset.clone().into_bytes()),
            stdin_from: None,
            show_output: false,
            stdout_to: None,
            confirm: Some(Confirm {
                table: self.table.clone(),
                window: std::time::Duration::from_secs(self.confirm_secs),
            }),
        }
    }

    /// `open 22, 80, 443; 8000 from 2 sources; 5432 from no source`, for display (a peer
    /// without sources opens nothing).
    fn summary(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let mut s = format!("open {}", ports.join(", "));
        for p in &self.peers {
            let n = p.v4.len() + p.v6.len();
            let from = match n {
                0 => "no source".to_string(),
                1 => "1 source".to_string(),
                n => format!("{n} sources"),
            };
            s.push_str(&format!("; {} from {from}", p.port));
        }
        s
    }
}

/// The `firewall` step kind.
pub(crate) struct FirewallKind;

impl super::StepKind for FirewallKind {
    fn name(&self) -> &'static str {
        "firewall"
    }

    fn check_args(&self, args: toml::Value) -> Result<(), toml::de::Error> {
        super::check::<Args>(args)
    }

    fn desired(
        &self,
        args: toml::Value,
        ctx: &serde_json::Map<String, serde_json::Value>,
        _: &super::Sources<'_>,
    ) -> Result<super::Desired, StepError> {
        Ok(super::Desired::Firewall(Desired::from_args(
            super::args(args)?,
            ctx,
        )?))
    }

    /// Needs `nft`, and systemd to load the ruleset at boot.
    fn needs(&self) -> &'static [super::kind::Need] {
        &[
            super::kind::Need::Command {
                name: "nft",
                package: "nftables",
            },
            super::kind::Need::Systemd,
        ]
    }
}

/// Asks for the live table and the recorded state.
impl super::DesiredState for Desired {
    fn probe(&self, p: &mut crate::fact::ProbeScript) -> Vec<usize> {
        p.add_upload_dir("/etc/claw-provision/firewall");
        vec![p.add(crate::fact::Request::Firewall(self.table.clone()))]
    }

    fn diff_answers(
        &self,
        observed: &[&crate::fact::Observed],
    ) -> Option<Result<Change, StepError>> {
        match observed {
            [crate::fact::Observed::Firewall(o)] => Some(self.diff(o)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::peers::minimal;

    #[test]
    fn minimal_ruleset_keeps_only_ssh_open() {
        assert_eq!(
            minimal_ruleset("claw", 2222),
            "# claw-provision firewall rollback: the saved ruleset could not be loaded back\n\
             table inet claw\ndelete table inet claw\ntable inet claw {\n\
             \tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\
             \t\tiif \"lo\" accept\n\
             \t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept\n\
             \t\tct state established,related accept\n\t\ttcp dport 2222 accept\n\t}\n}\n"
        );
    }
    use super::*;
    use serde_json::json;

    /// The confirm-or-revert protocol the runner drives: the token, the answers, the messages.
    #[test]
    fn confirmation_token_answers_and_failure_messages() {
        let c = Confirm {
            table: DEFAULT_TABLE.into(),
            window: std::time::Duration::from_secs(30),
        };
        assert_eq!(c.token("loaded\n@fw-token\t0a1B9f \n").unwrap(), "0a1B9f");
        let bug = "internal error: the firewall change did not report its rollback token (bug)";
        for out in ["loaded\n", "@fw-token\t\n", "@fw-token\tnot-hex\n"] {
            assert_eq!(c.token(out).unwrap_err().to_string(), bug, "{out:?}");
        }
        let script = c.confirm_script("0a1b");
        assert!(script.contains("claw_provision.pending.0a1b"), "{script}");
        assert!(c.confirmed("confirmed"));
        assert!(!c.confirmed("expired"));
        assert!(
            c.rolled_back_script("0a1b")
                .contains("pending.0a1b.rolled-back")
        );
        let why = "no new SSH connection within 28 s";
        let head = format!("the new firewall ruleset was not confirmed ({why}); ");
        for (answer, verdict) in [
            (
                Ok("rolled-back previous"),
                "the host restored the previous ruleset after 30 s".to_string(),
            ),
            (
                Ok("rolled-back minimal"),
                "after 30 s the host could not load the previous ruleset back and loaded a minimal one instead (the SSH port open, everything else dropped): check the firewall".into(),
            ),
            (
                Ok("rolled-back deleted"),
                "after 30 s the host could load neither the previous ruleset nor a minimal one and deleted the table: check the firewall".into(),
            ),
            (
                Ok("unknown"),
                "the host's rollback did not report back: check the firewall".into(),
            ),
            (
                Err("connection lost"),
                "the rollback cannot be checked (connection lost)".into(),
            ),
        ] {
            assert_eq!(c.failure(why, answer), format!("{head}{verdict}"));
        }
    }

    fn ctx(port: u16) -> Map<String, Value> {
        let v = json!({
            "backend_port": 8000,
            "host": {"name": "h1", "address": "10.0.0.2", "port": port, "groups": ["app"]},
            "inventory": {
                "hosts": {
                    "h1": {"name": "h1", "address": "10.0.0.2", "port": port, "groups": ["app"]},
                    "web1": {"name": "web1", "address": "10.0.0.3", "port": 22, "groups": ["web"]},
                    "web2": {"name": "web2", "address": "fd00::3", "port": 22, "groups": ["web"]},
                    "dns": {"name": "dns", "address": "web.example.com", "port": 22, "groups": []},
                },
                "groups": {"web": ["web1", "web2"], "app": ["h1"], "edge": [], "all": ["h1", "web1", "web2", "dns"]},
            },
        });
        v.as_object().unwrap().clone()
    }

    fn args(toml_text: &str) -> Args {
        toml::from_str(toml_text).unwrap()
    }

    fn desired(toml_text: &str, port: u16) -> Result<Desired, StepError> {
        Desired::from_args(args(toml_text), &ctx(port))
    }

    #[test]
    fn default_ruleset_text() {
        let d = desired("", 22).unwrap();
        assert_eq!(d.table, "claw_provision");
        assert_eq!(
            d.ruleset,
            "# managed by claw-provision (firewall step); changes made here are overwritten
table inet claw_provision
delete table inet claw_provision
table inet claw_provision {
\tchain input {
\t\ttype filter hook input priority filter; policy drop;
\t\tiif \"lo\" accept
\t\ticmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept
\t\tct state established,related accept
\t\tct state invalid drop
\t\ticmp type echo-request accept
\t\ticmpv6 type echo-request accept
\t\tip6 saddr fe80::/10 udp dport 546 accept
\t\ttcp dport { 22, 80, 443 } accept
\t}

\tchain forward {
\t\ttype filter hook forward priority filter - 10; policy accept;
\t\tct state new ct status dnat jump published
\t}

\tchain published {
\t\tmeta l4proto tcp ct original proto-dst 22 return
\t\tmeta l4proto tcp ct original proto-dst 80 return
\t\tmeta l4proto tcp ct original proto-dst 443 return
\t\tdrop
\t}
}
"
        );
    }

    #[test]
    fn ruleset_variants() {
        // (args, port, lines that must be present, lines that must be absent)
        let cases: &[(&str, u16, &[&str], &[&str])] = &[
            (
                "ports = [2222, 443, 443]\nicmp = false\ncontainers = false\ntable = \"fw\"",
                2222,
                &["table inet fw {", "tcp dport { 443, 2222 } accept"],
                &["echo-request", "chain forward", "claw_provision"],
            ),
            (
                "ports = [22]",
                22,
                &[
                    "tcp dport 22 accept",
                    "meta l4proto tcp ct original proto-dst 22 return",
                ],
                &["dport 80"],
            ),
            (
                "peers = [{ port = 8000, from = [\"web\", \"10.1.0.0/16\", \"10.1.2.3\", \"h1\"] }]",
                22,
                &[
                    "ip saddr { 10.0.0.2, 10.0.0.3, 10.1.0.0/16 } tcp dport 8000 accept",
                    "ip6 saddr fd00::3 tcp dport 8000 accept",
                    "ip saddr { 10.0.0.2, 10.0.0.3, 10.1.0.0/16 } meta l4proto tcp ct original proto-dst 8000 return",
                    "ip6 saddr fd00::3 meta l4proto tcp ct original proto-dst 8000 return",
                ],
                &["10.1.2.3"],
            ),
            (
                // Two entries for one port merge; a port open to all needs no peer rule.
                "peers = [{ port = 5432, from = [\"10.0.0.9/24\"] }, { port = 5432, from = [\"fd00::/8\"] }, { port = 80, from = [\"web1\"] }]",
                22,
                &[
                    "ip saddr 10.0.0.0/24 tcp dport 5432 accept",
                    "ip6 saddr fd00::/8 tcp dport 5432 accept",
                ],
                &["10.0.0.9", "10.0.0.3"],
            ),
        ];
        for (a, port, present, absent) in cases {
            let d = desired(a, *port).unwrap_or_else(|e| panic!("{a}: {e}"));
            let lines: Vec<&str> = d.ruleset.lines().map(str::trim).collect();
            for p in *present {
                assert!(lines.contains(p), "{a}: missing `{p}` in\n{}", d.ruleset);
            }
            for p in *absent {
                assert!(
                    !d.ruleset.contains(p),
                    "{a}: unexpected `{p}` in\n{}",
                    d.ruleset
                );
            }
        }
    }

    /// The step as a run builds it for a host: checked unrendered (as at load), then rendered
    /// with `ctx` through the template renderer and deserialised.
    fn rendered(toml_text: &str, ctx: &Map<String, Value>) -> Result<Desired, StepError> {
        let kind: crate::resource::Kind = "firewall".parse().unwrap();
        let args: toml::Table = toml::from_str(toml_text).unwrap();
        kind.check_args(toml::Value::Table(args.clone()))
            .unwrap_or_else(|e| panic!("{toml_text}: refused at load: {e}"));
        let cache = crate::template::Cache::default();
        let src = super::super::Sources {
            files_dir: std::path::Path::new("."),
            templates_dir: std::path::Path::new("."),
            images: &Default::default(),
            templates: &crate::template::Renderer::new(&cache),
        };
        match super::super::desired(&kind, &args, ctx, &src)? {
            super::super::Desired::Firewall(d) => Ok(d),
            other => panic!("{other:?}"),
        }
    }

    /// One step for every role: ports from variables, sources that depend on the host's groups.
    /// A peer left without sources opens nothing and the summary says so.
    #[test]
    fn peers_rendered_per_host() {
        let step = r#"
            ports = [22, "{{ https_port }}"]
            peers = [
                { port = 5432, from = ["{% if 'data' in host.groups %}app{% endif %}"] },
                { port = "{{ backend_port }}", from = ["{% if 'app' in host.groups %}web{% endif %}", " "] },
                { port = 6379, from = ["edge"] },
            ]
        "#;
        let mut app = ctx(22);
        app.insert("https_port".into(), json!("443"));
        let mut data = app.clone();
        data["host"]["groups"] = json!(["data"]);
        // (host, summary, lines present, text absent)
        type Case<'a> = (
            &'a Map<String, Value>,
            &'a str,
            &'a [&'a str],
            &'a [&'a str],
        );
        let cases: [Case; 2] = [
            (
                &app,
                "open 22, 443; 5432 from no source; 6379 from no source; 8000 from 2 sources",
                &[
                    "tcp dport { 22, 443 } accept",
                    "ip saddr 10.0.0.3 tcp dport 8000 accept",
                    "ip6 saddr fd00::3 tcp dport 8000 accept",
                    "ip saddr 10.0.0.3 meta l4proto tcp ct original proto-dst 8000 return",
                ],
                &["5432", "6379"],
            ),
            (
                &data,
                "open 22, 443; 5432 from 1 source; 6379 from no source; 8000 from no source",
                &[
                    "ip saddr 10.0.0.2 tcp dport 5432 accept",
                    "ip saddr 10.0.0.2 meta l4proto tcp ct original proto-dst 5432 return",
                ],
                &["8000", "6379", "ip6 saddr fd00"],
            ),
        ];
        for (c, summary, present, absent) in cases {
            let d = rendered(step, c).unwrap();
            assert_eq!(d.summary(), summary);
            let lines: Vec<&str> = d.ruleset.lines().map(str::trim).collect();
            for p in present {
                assert!(lines.contains(p), "missing `{p}` in\n{}", d.ruleset);
            }
            for p in absent {
                assert!(!d.ruleset.contains(p), "unexpected `{p}` in\n{}", d.ruleset);
            }
            // Deterministic: the same host renders the same ruleset.
            assert_eq!(rendered(step, c).unwrap().ruleset, d.ruleset);
        }
        // An entry rendered empty beside a source, for the same port: that source only.
        let d = rendered(
            r#"peers = [{ port = 8000, from = ["{{ '' }}"] }, { port = 8000, from = ["", "h1"] }]"#,
            &app,
        )
        .unwrap();
        assert_eq!(d.summary(), "open 22, 80, 443; 8000 from 1 source");
        // A port open to everyone needs no peer rule, sources or not.
        let d = rendered(r#"peers = [{ port = "80", from = [""] }]"#, &app).unwrap();
        assert_eq!(d.summary(), "open 22, 80, 443");
    }

    /// Ports that render to something else than a TCP port number are refused, with the
    /// argument and the rendered value; an integer out of range is refused at load.
    #[test]
    fn templated_port_refusals() {
        let mut c = ctx(22);
        for (v, want) in [
            (
                "80a",
                r#"`peers`: port "80a" (as rendered) is not a TCP port: an integer from 1 to 65535"#,
            ),
            ("", r#"`peers`: port "" (as rendered) is not"#),
            ("+80", r#"`peers`: port "+80" (as rendered) is not"#),
            ("70000", r#"`peers`: port "70000" (as rendered) is not"#),
            ("-1", r#"`peers`: port "-1" (as rendered) is not"#),
            ("0", "`peers`: port 0 is not a TCP port"),
        ] {
            c.insert("p".into(), json!(v));
            let e = rendered(r#"peers = [{ port = "{{ p }}", from = ["h1"] }]"#, &c)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{v:?}: {e}");
        }
        c.insert("p".into(), json!("http"));
        let e = rendered(r#"ports = [22, "{{ p }}"]"#, &c)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            r#"`ports`: port "http" (as rendered) is not a TCP port: an integer from 1 to 65535"#
        );
        // " 8080 " is a port: surrounding blanks are trimmed.
        c.insert("p".into(), json!(" 8080 "));
        let d = rendered(r#"ports = [22, "{{ p }}"]"#, &c).unwrap();
        assert_eq!(d.ports, [22, 8080]);
        for (a, want) in [
            (
                "ports = [70000]",
                "port 70000 is not a TCP port (1 to 65535)",
            ),
            ("ports = [-22]", "port -22 is not a TCP port (1 to 65535)"),
            (
                "peers = [{ port = 1.5, from = [\"h1\"] }]",
                "expected a TCP port: an integer, or a string that renders to one",
            ),
        ] {
            let e = toml::from_str::<Args>(a).unwrap_err().to_string();
            assert!(e.contains(want), "{a}: {e}");
        }
    }

    #[test]
    fn refusals() {
        let cases: &[(&str, u16, &str)] = &[
            (
                "",
                2222,
                "this ruleset would block SSH port 2222, which claw-provision connects to; add 2222 to `ports`",
            ),
            (
                "ports = [80, 443]\npeers = [{ port = 22, from = [\"10.0.0.0/8\"] }]",
                22,
                "would block SSH port 22",
            ),
            ("ports = [22, 0]", 22, "`ports`: port 0 is not a TCP port"),
            (
                "peers = [{ port = 0, from = [\"h1\"] }]",
                22,
                "`peers`: port 0 is not a TCP port",
            ),
            ("table = \"1x\"", 22, "`table = \"1x\"`"),
            ("table = \"a-b\"", 22, "letters, digits and `_`"),
            (
                "peers = [{ port = 8000, from = [\"nosuch\"] }]",
                22,
                "`nosuch` is neither an inventory host, an inventory group, an IP address nor a CIDR",
            ),
            (
                "peers = [{ port = 8000, from = [\"10.0.0.0/33\"] }]",
                22,
                "`10.0.0.0/33` is neither",
            ),
            (
                "peers = [{ port = 8000, from = [\"dns\"] }]",
                22,
                "inventory host `dns` has the address `web.example.com`, not an IP address",
            ),
            (
                "peers = [{ port = 8000, from = [] }]",
                22,
                "`from` is empty",
            ),
            (
                "confirm_timeout = \"5x\"",
                22,
                "`confirm_timeout = \"5x\"`: expected a duration such as \"90s\", \"3m\" or \"1h\" (at most 24h)",
            ),
            (
                "confirm_timeout = \"5s\"",
                22,
                "`confirm_timeout` must be between 10s and 1h",
            ),
        ];
        for (a, port, want) in cases {
            let e = desired(a, *port).unwrap_err().to_string();
            assert!(e.contains(want), "{a}: {e}");
        }
        // Unknown keys and bad types are refused at load.
        assert!(toml::from_str::<Args>("port = [22]").is_err());
        assert!(toml::from_str::<Args>("ports = [70000]").is_err());
        assert!(
            toml::from_str::<Args>("peers = [{ port = 1, from = [\"x\"], extra = 1 }]").is_err()
        );
    }

    #[test]
    fn nets() {
        let n = |s: &str| Net::parse(s).unwrap().to_string();
        assert_eq!(n("10.0.0.7/24"), "10.0.0.0/24");
        assert_eq!(n("10.0.0.7/32"), "10.0.0.7");
        assert_eq!(n("0.0.0.0/0"), "0.0.0.0/0");
        assert_eq!(n("fd00::1/8"), "fd00::/8");
        assert_eq!(n("::1"), "::1");
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/x",
            "10.0.0/8",
            "fd00::/129",
            "h1",
            "",
        ] {
            assert!(Net::parse(bad).is_none(), "{bad}");
        }
        let m = minimal(vec![
            Net::parse("10.0.0.5").unwrap(),
            Net::parse("10.0.0.0/24").unwrap(),
            Net::parse("10.0.0.0/24").unwrap(),
            Net::parse("10.0.1.1").unwrap(),
        ]);
        let m: Vec<String> = m.iter().map(ToString::to_string).collect();
        assert_eq!(m, ["10.0.0.0/24", "10.0.1.1"]);
    }

    fn seen(live: Option<&str>, recorded: Option<&str>, ruleset: Option<&str>) -> FirewallState {
        FirewallState::Seen {
            live: live.map(String::from),
            recorded: recorded.map(String::from),
            ruleset: ruleset.map(String::from),
            boot: None,
        }
    }

    #[test]
    fn diffs() {
        let d = desired("", 22).unwrap();
        let l = "1".repeat(64);
        let other = "2".repeat(64);
        let want = d.sha256.as_str();
        // (observed, action, reason part, content shown)
        let cases: Vec<(FirewallState, Action, &str, bool)> = vec![
            (
                FirewallState::NoNft,
                Action::Deferred,
                "nft is not installed yet",
                false,
            ),
            (
                seen(None, None, None),
                Action::Create,
                "the table does not exist",
                true,
            ),
            (
                seen(Some(&l), Some(&l), Some(want)),
                Action::NoOp,
                "the live table is the one applied (open 22, 80, 443)",
                false,
            ),
            (
                seen(Some(&other), Some(&l), Some(want)),
                Action::Update,
                "changed by hand or by another tool",
                false,
            ),
            (
                seen(Some(&l), Some(&l), Some(&other)),
                Action::Update,
                "the desired ruleset changed",
                true,
            ),
            (
                seen(Some(&l), None, None),
                Action::Update,
                "a table of this name exists but was not applied by claw-provision",
                true,
            ),
            (
                // The ruleset file was removed by hand.
                seen(Some(&l), Some(&l), None),
                Action::Update,
                "no ruleset applied by claw-provision",
                true,
            ),
            (
                // The table was deleted by hand after an apply.
                seen(None, Some(&l), Some(want)),
                Action::Create,
                "the table does not exist",
                false,
            ),
        ];
        for (o, action, reason, content) in cases {
            let c = d.diff(&o).unwrap();
            assert_eq!(c.action, action, "{o:?}");
            assert!(c.reason.contains(reason), "{o:?}: {}", c.reason);
            assert_eq!(c.content.is_some(), content, "{o:?}");
            assert_eq!(
                c.op.is_some(),
                action.changes() && action != Action::Deferred
            );
            assert_eq!(c.target, "nftables table inet claw_provision");
            if let Some(op) = &c.op {
                assert_eq!(op.stdin.as_slice(), d.ruleset.as_bytes());
                assert!(op.script.contains("nft -f \"$tmp\""));
                assert!(op.script.contains(&d.sha256));
                assert!(!op.script.contains("flush ruleset"));
            }
            // Without systemd, the plan says the table does not survive a reboot.
            assert!(
                action == Action::Deferred || c.warnings[0].contains("not restored after a reboot")
            );
        }
    }

    #[test]
    fn boot_unit_diffs() {
        let d = desired("", 22).unwrap();
        let l = "1".repeat(64);
        let unit = crate::resource::file::sha256_hex(UNIT.as_bytes());
        let with = |boot| FirewallState::Seen {
            live: Some(l.clone()),
            recorded: Some(l.clone()),
            ruleset: Some(d.sha256.clone()),
            boot: Some(boot),
        };
        type Boot = (Option<String>, bool);
        let cases: Vec<(Boot, Action, &str)> = vec![
            ((Some(unit.clone()), true), Action::NoOp, "the one applied"),
            ((None, false), Action::Update, "is missing"),
            ((Some(l.clone()), true), Action::Update, "out of date"),
            (
                (Some(unit.clone()), false),
                Action::Update,
                "claw-provision-firewall@claw_provision.service is not enabled",
            ),
        ];
        for (boot, action, reason) in cases {
            let c = d.diff(&with(boot.clone())).unwrap();
            assert_eq!(c.action, action, "{boot:?}");
            assert!(c.reason.contains(reason), "{boot:?}: {}", c.reason);
            assert!(c.warnings.is_empty());
        }
    }
}
