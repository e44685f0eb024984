//! OpenSSH client configuration (`~/.ssh/config`, `--ssh-config FILE`): the subset that decides
//! where and how to connect, resolved the way `ssh -G HOST` resolves it (tests use OpenSSH as the
//! oracle).
//!
//! Supported: `Host` pattern lists with `!` negation; `Match` with `all`, `host`, `originalhost`,
//! `user`, `localuser` (each may be negated with `!`); `Include` (globs; relative paths are under
//! `~/.ssh`, as for OpenSSH's user configuration); and the keywords `HostName`, `User`, `Port`,
//! `IdentityFile`, `IdentitiesOnly`, `ProxyJump`, `ProxyCommand` (recognized, to be refused),
//! `UserKnownHostsFile`, `GlobalKnownHostsFile`, `HostKeyAlias`, `HashKnownHosts`,
//! `StrictHostKeyChecking`, `ConnectTimeout` and `ServerAliveInterval`.
//!
//! Options that change how host keys are trusted and that we do not implement are an error for
//! the hosts they apply to ([`Resolved::unsupported`], naming file and line), never ignored:
//! `KnownHostsCommand`, `VerifyHostKeyDNS yes|ask` (trust from DNS), `CheckHostIP yes` (a second
//! check, by address, that can refuse), `RevokedHostKeys` (keys to refuse),
//! `NoHostAuthenticationForLocalhost yes`, and `HostKeyAlgorithms` unless it only adds (`+`) or
//! reorders (`^`): a list that leaves algorithms out refuses keys of those types. Not errors, as
//! they cannot make us trust a key OpenSSH would refuse: `UpdateHostKeys` (we never learn keys
//! beyond accept-new's first one), `CASignatureAlgorithms` (host certificates are not trusted at
//! all), `FingerprintHash`, `VisualHostKey`, `StrictHostKeyChecking ask` (taken as `yes`).
//! Every other keyword is ignored: this is not `ssh`, and operators' files are full of options
//! that do not concern us.
//!
//! As in OpenSSH, the first value obtained for a keyword wins (values given before the file is
//! read — the inventory's, like `ssh`'s command line — win over the file), except `IdentityFile`,
//! which accumulates. `Match` criteria that would need more than the file and the names
//! (`exec`, `canonical`, `final`, `localnetwork`, `tagged`) are an error naming the file and line.
//!
//! The file is parsed once ([`SshConfig::load`]) and queried per host ([`SshConfig::query`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ConfigErrors;

mod proxy_jump;
mod query;
mod read;
mod tokens;

pub use proxy_jump::{BadHop, Hop, HopProblem, jump_token, parse_jump};
use query::Query;
use read::parse;
pub use tokens::{ExpandError, Tokens, expand, home, local_user};

/// A parsed configuration file with its includes.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    items: Vec<Item>,
}

#[derive(Debug, Clone)]
enum Item {
    Host(Vec<String>),
    Match(Vec<Criterion>),
    /// An `Include`d file (one per glob match, in order); `None` marks the end of its effect.
    Include(SshConfig),
    Opt(Opt),
}

#[derive(Debug, Clone)]
struct Criterion {
    negated: bool,
    kind: CriterionKind,
}

#[derive(Debug, Clone)]
enum CriterionKind {
    All,
    Host(String),
    OriginalHost(String),
    User(String),
    LocalUser(String),
}

/// One keyword line we use, its value already checked.
#[derive(Debug, Clone)]
struct Opt {
    value: Value,
    file: PathBuf,
    line: usize,
}

#[derive(Debug, Clone)]
enum Value {
    HostName(String),
    User(String),
    Port(u16),
    IdentityFile(String),
    IdentitiesOnly(bool),
    ProxyJump(String),
    ProxyCommand(String),
    UserKnownHostsFile(Vec<String>),
    GlobalKnownHostsFile(Vec<String>),
    HostKeyAlias(String),
    HashKnownHosts(bool),
    /// A host-key option we do not implement (keyword as OpenSSH spells it, value as written):
    /// the first one for a host decides whether it is an error ([`Resolved::unsupported`]).
    Trust(&'static str, String),
    StrictHostKeyChecking(StrictHostKeyChecking),
    ConnectTimeout(Option<Duration>),
    ServerAliveInterval(Duration),
}

/// `StrictHostKeyChecking` as OpenSSH reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    Yes,
    No,
    Ask,
    AcceptNew,
}

/// Values given before the file is read; they win over it (the inventory's settings, like
/// `ssh -l USER -p PORT -o HostName=ADDR`). `Match host` and `Match user` see them.
#[derive(Debug, Clone, Default)]
pub struct Preset {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
}

/// What the file says for one host; `None`: the file does not say (defaults apply).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resolved {
    /// `HostName` with `%h` expanded, in lower case (not the preset one).
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// `IdentityFile` values as written (tokens and `~` not expanded; see [`expand`]).
    pub identity_files: Vec<String>,
    pub identities_only: Option<bool>,
    /// `ProxyJump` as written; `Some("none")` when the file disables it explicitly.
    pub proxy_jump: Option<String>,
    /// `ProxyCommand` as written (we do not run it; the caller refuses it unless a jump or
    /// the inventory overrides).
    pub proxy_command: Option<String>,
    /// `UserKnownHostsFile` values as written.
    pub user_known_hosts_files: Option<Vec<String>>,
    /// `GlobalKnownHostsFile` values as written.
    pub global_known_hosts_files: Option<Vec<String>>,
    /// `HostKeyAlias`, in lower case (as OpenSSH uses it).
    pub host_key_alias: Option<String>,
    pub hash_known_hosts: Option<bool>,
    /// The host-key options we do not implement, first value of each: (keyword, value, origin).
    pub trust: Vec<(&'static str, String, String)>,
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// `Some(None)`: `ConnectTimeout none`.
    pub connect_timeout: Option<Option<Duration>>,
    pub server_alive_interval: Option<Duration>,
    /// Where each value came from (`file:line`), for `hosts` and error messages.
    pub origin: Vec<(&'static str, String)>,
}

impl Resolved {
    /// The host-key options set for this host that would change which keys are trusted and
    /// that we do not implement: one message each, naming the file and line.
    pub fn unsupported(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (keyword, value, origin) in &self.trust {
            let v = value.to_ascii_lowercase();
            let bad = match *keyword {
                "KnownHostsCommand" | "RevokedHostKeys" => v != "none",
                "VerifyHostKeyDNS" => matches!(v.as_str(), "yes" | "true" | "ask"),
                "CheckHostIP" | "NoHostAuthenticationForLocalhost" => {
                    matches!(v.as_str(), "yes" | "true")
                }
                // `+` adds to the defaults and `^` puts first: nothing is left out.
                "HostKeyAlgorithms" => !(v.starts_with('+') || v.starts_with('^')),
                _ => true,
            };
            if bad {
                out.push(format!(
                    "the ssh_config ({origin}) sets `{keyword} {value}`, which changes how host \
                     keys are checked and is not supported by claw-provision; remove it for this \
                     host or pass --ssh-config none"
                ));
            }
        }
        out
    }
}

impl SshConfig {
    /// Reads `path` and its includes. A missing top file is an error (the caller checks for the
    /// default file's existence); missing includes are skipped, as by OpenSSH.
    pub fn load(path: &Path) -> Result<SshConfig, ConfigErrors> {
        let src = crate::error::read_source(path, "ssh_config")?;
        let mut errors = Vec::new();
        let cfg = parse(path, &src, 0, &mut errors);
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Parses configuration text (`path` names it in errors).
    pub fn parse(path: &Path, src: &str) -> Result<SshConfig, ConfigErrors> {
        let mut errors = Vec::new();
        let cfg = parse(path, src, 0, &mut errors);
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Resolves the settings for `host` (the name given to `ssh`), with `preset` values winning.
    pub fn query(&self, host: &str, preset: &Preset) -> Resolved {
        let mut q = Query {
            original: host,
            preset,
            r: Resolved::default(),
            local_user: local_user(),
        };
        let mut active = true;
        q.walk(self, &mut active, false);
        q.r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(src: &str) -> SshConfig {
        SshConfig::parse(Path::new("cfg"), src).unwrap()
    }

    fn q(c: &SshConfig, host: &str) -> Resolved {
        c.query(host, &Preset::default())
    }

    #[test]
    fn first_value_wins_and_identity_files_accumulate() {
        let c = cfg(
            "Host web-*\n  User deploy\n  IdentityFile ~/a\nHost *\n  User other\n  Port 2200\n  IdentityFile ~/b\n  IdentityFile ~/a\n",
        );
        let r = q(&c, "web-1");
        assert_eq!(r.user.as_deref(), Some("deploy"));
        assert_eq!(r.port, Some(2200));
        assert_eq!(r.identity_files, vec!["~/a", "~/b"]);
        assert_eq!(q(&c, "db").user.as_deref(), Some("other"));
    }

    #[test]
    fn negation_excludes() {
        let c = cfg("Host web-* !web-skip\n  Port 1\n");
        assert_eq!(q(&c, "web-1").port, Some(1));
        assert_eq!(q(&c, "web-skip").port, None);
        assert_eq!(
            q(&c, "WEB-2").port,
            None,
            "Host patterns are case-sensitive"
        );
    }

    #[test]
    fn match_host_sees_hostname_and_user_sees_preset() {
        let c = cfg(
            "Host a\n  HostName %h.internal\nMatch host *.internal\n  Port 7\nMatch user ops !host b\n  User x\n  ConnectTimeout 1m30s\n",
        );
        let r = q(&c, "a");
        assert_eq!(r.hostname.as_deref(), Some("a.internal"));
        assert_eq!(r.port, Some(7));
        let p = Preset {
            user: Some("ops".into()),
            ..Preset::default()
        };
        let r = c.query("a", &p);
        assert_eq!(r.connect_timeout, Some(Some(Duration::from_secs(90))));
        assert_eq!(c.query("b", &p).connect_timeout, None);
    }

    #[test]
    fn equals_quotes_and_comments() {
        let c = cfg(
            "Host=a\nUser = \"de ploy\" # trailing\n  IdentityFile \"/k/with space\"\nUserKnownHostsFile /a /b\n",
        );
        let r = q(&c, "a");
        assert_eq!(r.user.as_deref(), Some("de ploy"));
        assert_eq!(r.identity_files, vec!["/k/with space"]);
        let c = cfg("IdentityFile /k/with\\ space\\\\x\n");
        assert_eq!(q(&c, "a").identity_files, vec!["/k/with space\\x"]);
        assert_eq!(
            r.user_known_hosts_files,
            Some(vec!["/a".to_string(), "/b".to_string()])
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = SshConfig::parse(
            Path::new("/x/cfg"),
            "Host a\n  Port 70000\n  Match exec true\n  User\n  StrictHostKeyChecking maybe\n",
        )
        .unwrap_err();
        let msgs: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        assert_eq!(msgs.len(), 4, "{msgs:?}");
        assert!(msgs[0].starts_with("/x/cfg:2"), "{msgs:?}");
        assert!(
            msgs[1].contains("`Match exec` is not supported"),
            "{msgs:?}"
        );
        assert!(msgs[2].contains("no argument"), "{msgs:?}");
        assert!(msgs[3].contains("accept-new"), "{msgs:?}");
    }

    #[test]
    fn host_key_options_and_unsupported_trust_options() {
        let c = cfg(
            "Host a\n  HostKeyAlias Web-Alias\n  HashKnownHosts yes\n  GlobalKnownHostsFile /g1 ~/g2\n\
             Host b\n  CheckHostIP no\n  VerifyHostKeyDNS no\n  KnownHostsCommand none\n  HostKeyAlgorithms +ssh-rsa\n\
             Host c\n  KnownHostsCommand /bin/kh %H\n  VerifyHostKeyDNS ask\n  CheckHostIP yes\n\
               RevokedHostKeys /r\n  NoHostAuthenticationForLocalhost yes\n  HostKeyAlgorithms ssh-ed25519\n\
             Host *\n  CheckHostIP yes\n  UpdateHostKeys yes\n  CASignatureAlgorithms ssh-ed25519\n",
        );
        let a = q(&c, "a");
        assert_eq!(a.host_key_alias.as_deref(), Some("web-alias"));
        assert_eq!(a.hash_known_hosts, Some(true));
        assert_eq!(
            a.global_known_hosts_files,
            Some(vec!["/g1".to_string(), "~/g2".to_string()])
        );
        // `Host *` sets CheckHostIP yes for a: an error naming the line.
        let e = a.unsupported();
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("cfg:18") && e[0].contains("`CheckHostIP yes`"),
            "{e:?}"
        );
        // The first value wins: b's `no`s and `none`, and `+` adding algorithms, are fine.
        assert!(q(&c, "b").unsupported().is_empty());
        let e = q(&c, "c").unsupported();
        assert_eq!(e.len(), 6, "{e:?}");
        for (i, what) in [
            "KnownHostsCommand /bin/kh %H",
            "VerifyHostKeyDNS ask",
            "CheckHostIP yes",
            "RevokedHostKeys /r",
            "NoHostAuthenticationForLocalhost yes",
            "HostKeyAlgorithms ssh-ed25519",
        ]
        .iter()
        .enumerate()
        {
            assert!(e[i].contains(&format!("cfg:{}", i + 11)), "{e:?}");
            assert!(e[i].contains(&format!("`{what}`")), "{e:?}");
        }
    }

    #[test]
    fn include_applies_within_active_block_only() {
        let dir = tempfile::tempdir().unwrap();
        let inc = dir.path().join("inc");
        std::fs::write(&inc, "Port 9\nHost z\n  User zz\n").unwrap();
        let src = format!(
            "Host a\n  Include {p}\nHost b\n  Include {p}\n  User bb\nHost *\n  Include {p}\n",
            p = inc.display()
        );
        let c = cfg(&src);
        assert_eq!(q(&c, "a").port, Some(9));
        // The include's `Host z` ended b's block only inside the include.
        let b = q(&c, "b");
        assert_eq!((b.port, b.user.as_deref()), (Some(9), Some("bb")));
        assert_eq!(q(&c, "z").user.as_deref(), Some("zz"));
    }
}
