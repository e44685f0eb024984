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

use crate::error::{ConfigError, ConfigErrors};

/// Deepest `Include` nesting (OpenSSH's READCONF_MAX_DEPTH).
const MAX_DEPTH: usize = 16;

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

struct Query<'a> {
    original: &'a str,
    preset: &'a Preset,
    r: Resolved,
    local_user: String,
}

impl Query<'_> {
    fn walk(&mut self, cfg: &SshConfig, active: &mut bool, never: bool) {
        for item in &cfg.items {
            match item {
                Item::Host(patterns) => {
                    *active = !never && host_matches(self.original, patterns);
                }
                Item::Match(criteria) => {
                    *active = !never && criteria.iter().all(|c| self.criterion(c));
                }
                Item::Include(inner) => {
                    let was = *active;
                    self.walk(inner, active, never || !was);
                    *active = was;
                }
                Item::Opt(o) if *active => self.set(o),
                Item::Opt(_) => {}
            }
        }
    }

    /// The host name `Match host` sees: HostName so far (`%h` expanded), else the original.
    fn match_host(&self) -> String {
        match self.preset.hostname.as_ref().or(self.r.hostname.as_ref()) {
            Some(h) => h.clone(),
            None => self.original.to_string(),
        }
    }

    fn criterion(&self, c: &Criterion) -> bool {
        let m = match &c.kind {
            CriterionKind::All => true,
            CriterionKind::Host(list) => {
                pattern_list(&self.match_host().to_lowercase(), list, true)
            }
            CriterionKind::OriginalHost(list) => {
                pattern_list(&self.original.to_lowercase(), list, true)
            }
            CriterionKind::User(list) => {
                let user = self
                    .preset
                    .user
                    .as_ref()
                    .or(self.r.user.as_ref())
                    .unwrap_or(&self.local_user);
                pattern_list(user, list, false)
            }
            CriterionKind::LocalUser(list) => pattern_list(&self.local_user, list, false),
        };
        m != c.negated
    }

    fn set(&mut self, o: &Opt) {
        let origin = format!("{}:{}", o.file.display(), o.line);
        let note = |key: &'static str| (key, origin.clone());
        macro_rules! first {
            ($field:expr, $v:expr, $key:literal) => {
                if $field.is_none() {
                    $field = Some($v);
                    self.r.origin.push(note($key));
                }
            };
        }
        match &o.value {
            Value::HostName(h) => {
                if self.r.hostname.is_none() {
                    // OpenSSH connects to (and shows) the expanded name in lower case.
                    self.r.hostname = Some(expand_hostname(h, self.original).to_lowercase());
                    self.r.origin.push(note("HostName"));
                }
            }
            Value::User(u) => first!(self.r.user, u.clone(), "User"),
            Value::Port(p) => first!(self.r.port, *p, "Port"),
            Value::IdentityFile(f) => {
                if !self.r.identity_files.contains(f) {
                    self.r.identity_files.push(f.clone());
                    self.r.origin.push(note("IdentityFile"));
                }
            }
            Value::IdentitiesOnly(b) => first!(self.r.identities_only, *b, "IdentitiesOnly"),
            // ProxyJump and ProxyCommand exclude each other: the first of either wins.
            Value::ProxyJump(j) => {
                if self.r.proxy_jump.is_none() && self.r.proxy_command.is_none() {
                    self.r.proxy_jump = Some(j.clone());
                    self.r.origin.push(note("ProxyJump"));
                }
            }
            Value::ProxyCommand(c) => {
                if self.r.proxy_jump.is_none() && self.r.proxy_command.is_none() {
                    self.r.proxy_command = Some(c.clone());
                    self.r.origin.push(note("ProxyCommand"));
                }
            }
            Value::UserKnownHostsFile(f) => {
                first!(
                    self.r.user_known_hosts_files,
                    f.clone(),
                    "UserKnownHostsFile"
                );
            }
            Value::GlobalKnownHostsFile(f) => {
                first!(
                    self.r.global_known_hosts_files,
                    f.clone(),
                    "GlobalKnownHostsFile"
                );
            }
            Value::HostKeyAlias(a) => first!(self.r.host_key_alias, a.clone(), "HostKeyAlias"),
            Value::HashKnownHosts(b) => first!(self.r.hash_known_hosts, *b, "HashKnownHosts"),
            Value::Trust(k, v) => {
                if !self.r.trust.iter().any(|(t, _, _)| t == k) {
                    self.r.trust.push((k, v.clone(), origin.clone()));
                }
            }
            Value::StrictHostKeyChecking(s) => {
                first!(self.r.strict_host_key_checking, *s, "StrictHostKeyChecking");
            }
            Value::ConnectTimeout(t) => first!(self.r.connect_timeout, *t, "ConnectTimeout"),
            Value::ServerAliveInterval(t) => {
                first!(self.r.server_alive_interval, *t, "ServerAliveInterval");
            }
        }
    }
}

/// `Host` line: a negated pattern that matches excludes; otherwise any positive match includes.
/// As in OpenSSH, this comparison is case-sensitive (unlike `Match host`).
fn host_matches(host: &str, patterns: &[String]) -> bool {
    let mut matched = false;
    for p in patterns {
        let (neg, pat) = p
            .strip_prefix('!')
            .map_or((false, p.as_str()), |r| (true, r));
        if wildcard(host, pat) {
            if neg {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// A comma-separated pattern list (`Match host a,!b`): true when a positive pattern matches
/// and no negated one does.
fn pattern_list(s: &str, list: &str, fold_case: bool) -> bool {
    let mut matched = false;
    for p in list.split(',') {
        let (neg, pat) = p.strip_prefix('!').map_or((false, p), |r| (true, r));
        let pat = if fold_case {
            pat.to_lowercase()
        } else {
            pat.to_string()
        };
        if wildcard(s, &pat) {
            if neg {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// OpenSSH's `match_pattern`: `*` any run of characters, `?` one character.
fn wildcard(s: &str, pat: &str) -> bool {
    let (s, p): (Vec<char>, Vec<char>) = (s.chars().collect(), pat.chars().collect());
    let (mut si, mut pi) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            si += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// `HostName` accepts `%h` (the name given) and `%%`.
fn expand_hostname(h: &str, original: &str) -> String {
    let mut out = String::new();
    let mut chars = h.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(original),
            Some('%') => out.push('%'),
            Some(o) => {
                out.push('%');
                out.push(o);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Values for the `%` tokens of `IdentityFile` and `UserKnownHostsFile`.
#[derive(Debug, Clone)]
pub struct Tokens<'a> {
    /// `%h`: the host name connected to (after HostName).
    pub hostname: &'a str,
    /// `%n`: the name given (the inventory name).
    pub original: &'a str,
    /// `%p`
    pub port: u16,
    /// `%r`: the remote user.
    pub remote_user: &'a str,
    /// `%j`: the host of the last ProxyJump hop (see [`jump_token`]), empty without one.
    pub jump: &'a str,
    /// `%k`: the `HostKeyAlias`, if any (else `%k` is the name given).
    pub alias: Option<&'a str>,
}

/// Expands `~` / `~/...` and the tokens `%%` `%C` `%d` `%h` `%i` `%j` `%k` `%L` `%l` `%n` `%p`
/// `%r` `%u` as OpenSSH does for file names. An unknown token is an error.
pub fn expand(path: &str, t: &Tokens<'_>) -> Result<PathBuf, String> {
    let home = home();
    let tilde = if path == "~" {
        home.display().to_string()
    } else if let Some(rest) = path.strip_prefix("~/") {
        format!("{}/{rest}", home.display())
    } else if path.starts_with('~') {
        return Err(format!(
            "`{path}`: `~user` paths are not supported; write the full path"
        ));
    } else {
        path.to_string()
    };
    let mut out = String::new();
    let mut chars = tilde.chars();
    let local_host = local_hostname();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('C') => out.push_str(&connection_hash(&local_host, t)),
            Some('d') => out.push_str(&home.display().to_string()),
            Some('h') => out.push_str(t.hostname),
            Some('k') => out.push_str(t.alias.unwrap_or(t.original)),
            // SAFETY: getuid cannot fail.
            Some('i') => out.push_str(&unsafe { libc::getuid() }.to_string()),
            Some('j') => out.push_str(t.jump),
            Some('L') => out.push_str(local_host.split('.').next().unwrap_or("")),
            Some('l') => out.push_str(&local_host),
            Some('n') => out.push_str(t.original),
            Some('p') => out.push_str(&t.port.to_string()),
            Some('r') => out.push_str(t.remote_user),
            Some('u') => out.push_str(&local_user()),
            Some(o) => return Err(format!("`{path}`: unknown token `%{o}`")),
            None => return Err(format!("`{path}`: a lone `%` at the end")),
        }
    }
    Ok(PathBuf::from(out))
}

/// `%C`: SHA-1 of `%l%h%p%r%j`, hex.
fn connection_hash(local_host: &str, t: &Tokens<'_>) -> String {
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    h.update(format!(
        "{local_host}{}{}{}{}",
        t.hostname, t.port, t.remote_user, t.jump
    ));
    hex::encode(h.finalize())
}

/// The local user's home directory as OpenSSH sees it (the password database, not `$HOME`).
pub fn home() -> PathBuf {
    // SAFETY: getpwuid returns a pointer into static storage or null; read at once.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if !pw.is_null() && !(*pw).pw_dir.is_null() {
            let dir = std::ffi::CStr::from_ptr((*pw).pw_dir).to_string_lossy();
            if !dir.is_empty() {
                return PathBuf::from(dir.into_owned());
            }
        }
    }
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// The local user's name (as `%u` and `Match localuser` see it).
pub fn local_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; read at once.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Splits a line into words as OpenSSH's `argv_split` does: whitespace separates, double or
/// single quotes group (no escapes but `\"`, `\'`, `\\` inside), `#` at the start of a word ends
/// the line.
fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&c) = chars.peek() else { break };
        if c == '#' {
            break;
        }
        let mut w = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            match quote {
                None if c.is_whitespace() => break,
                None if c == '"' || c == '\'' => {
                    quote = Some(c);
                    chars.next();
                }
                Some(q) if c == q => {
                    quote = None;
                    chars.next();
                }
                _ if c == '\\' => {
                    chars.next();
                    match chars.peek() {
                        Some(&n)
                            if n == '"'
                                || n == '\''
                                || n == '\\'
                                || (quote.is_none() && n.is_whitespace()) =>
                        {
                            w.push(n);
                            chars.next();
                        }
                        _ => w.push('\\'),
                    }
                }
                _ => {
                    w.push(c);
                    chars.next();
                }
            }
        }
        if quote.is_some() {
            return Err("unbalanced quotes".into());
        }
        words.push(w);
    }
    Ok(words)
}

/// OpenSSH's `convtime`: `90`, `30s`, `1m30s`, `1h`, `2d`, `1w` (units case-insensitive).
fn parse_time(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a time (e.g. 30, 30s, 5m, 1h30m)");
    let too_long = || {
        format!(
            "`{s}` is too long (at most {} s)",
            crate::duration::MAX_SECS
        )
    };
    if s.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            if chars.peek().is_none() {
                total = add_time(total, &num, 1).ok_or_else(too_long)?;
                num.clear();
            }
            continue;
        }
        if num.is_empty() {
            return Err(bad());
        }
        let mult = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            'w' => 604800,
            _ => return Err(bad()),
        };
        total = add_time(total, &num, mult).ok_or_else(too_long)?;
        num.clear();
    }
    Ok(Duration::from_secs(total))
}

/// `total + num * mult`, if within [`crate::duration::MAX_SECS`] (OpenSSH: `INT_MAX`).
fn add_time(total: u64, num: &str, mult: u64) -> Option<u64> {
    num.parse::<u64>()
        .ok()?
        .checked_mul(mult)?
        .checked_add(total)
        .filter(|t| *t <= crate::duration::MAX_SECS)
}

fn yes_no(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("`{key}` must be yes or no, got `{v}`")),
    }
}

fn parse(path: &Path, src: &str, depth: usize, errors: &mut Vec<ConfigError>) -> SshConfig {
    let mut items = Vec::new();
    for (i, raw) in src.lines().enumerate() {
        let line = i + 1;
        let err = |errors: &mut Vec<ConfigError>, msg: String| {
            errors.push(ConfigError::new(path, line, 1, msg));
        };
        let (kw, args) = match split_line(raw) {
            None => continue,
            Some(Ok(l)) => l,
            Some(Err(e)) => {
                err(errors, e);
                continue;
            }
        };
        let keyword = kw.to_ascii_lowercase();
        match keyword.as_str() {
            "host" => items.push(Item::Host(args)),
            "match" => match parse_match(&args) {
                Ok(c) => items.push(Item::Match(c)),
                Err(e) => err(errors, e),
            },
            "include" if depth >= MAX_DEPTH => err(
                errors,
                format!("`Include` nested deeper than {MAX_DEPTH} files"),
            ),
            "include" => include(&args, depth, &mut items, line, path, errors),
            _ => match value(&keyword, kw, &args) {
                Ok(Some(value)) => items.push(Item::Opt(Opt {
                    value,
                    file: path.to_path_buf(),
                    line,
                })),
                Ok(None) => {}
                Err(e) => err(errors, e),
            },
        }
    }
    SshConfig { items }
}

/// A line's keyword (as written) and its arguments (`Keyword value`, `Keyword=value`,
/// `Keyword = value`); `None` for a blank or comment line.
fn split_line(raw: &str) -> Option<Result<(&str, Vec<String>), String>> {
    let t = raw.trim_start();
    if t.is_empty() || t.starts_with('#') {
        return None;
    }
    let kw_end = t
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(t.len());
    let kw = &t[..kw_end];
    let mut rest = t[kw_end..].trim_start();
    if let Some(r) = rest.strip_prefix('=') {
        rest = r.trim_start();
    }
    Some(match split_words(rest.trim_end()) {
        Err(e) => Err(format!("`{kw}`: {e}")),
        Ok(args) if args.is_empty() => Err(format!("no argument after keyword `{kw}`")),
        Ok(args) => Ok((kw, args)),
    })
}

/// `Include`: each file the arguments name, parsed in place; missing files are skipped.
fn include(
    args: &[String],
    depth: usize,
    items: &mut Vec<Item>,
    line: usize,
    path: &Path,
    errors: &mut Vec<ConfigError>,
) {
    for a in args {
        for file in include_files(a) {
            match std::fs::read_to_string(&file) {
                Ok(s) => {
                    let inner = parse(&file, &s, depth + 1, errors);
                    items.push(Item::Include(inner));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => errors.push(ConfigError::new(
                    path,
                    line,
                    1,
                    format!("cannot read included file {}: {e}", file.display()),
                )),
            }
        }
    }
}

/// The setting of one option line (`keyword` lowercased, `kw` as written); `None` for an
/// option claw-provision does not read.
fn value(keyword: &str, kw: &str, args: &[String]) -> Result<Option<Value>, String> {
    let one = || -> Result<String, String> {
        if args.len() > 1 && !matches!(keyword, "proxycommand" | "knownhostscommand") {
            return Err(format!("`{kw}` takes one value, got {}", args.len()));
        }
        Ok(args[0].clone())
    };
    Ok(Some(match keyword {
        "hostname" => Value::HostName(one()?),
        "user" => Value::User(one()?),
        "port" => {
            let v = one()?;
            match v.parse::<u16>() {
                Ok(p) if p > 0 => Value::Port(p),
                _ => return Err(format!("`Port` must be between 1 and 65535, got `{v}`")),
            }
        }
        "identityfile" => Value::IdentityFile(one()?),
        "identitiesonly" => Value::IdentitiesOnly(yes_no("IdentitiesOnly", &one()?)?),
        "proxyjump" => Value::ProxyJump(one()?),
        "proxycommand" => Value::ProxyCommand(args.join(" ")),
        "userknownhostsfile" => Value::UserKnownHostsFile(args.to_vec()),
        "globalknownhostsfile" => Value::GlobalKnownHostsFile(args.to_vec()),
        "hostkeyalias" => Value::HostKeyAlias(one()?.to_lowercase()),
        "hashknownhosts" => Value::HashKnownHosts(yes_no("HashKnownHosts", &one()?)?),
        "knownhostscommand" => Value::Trust("KnownHostsCommand", args.join(" ")),
        "verifyhostkeydns" => Value::Trust("VerifyHostKeyDNS", one()?),
        "checkhostip" => Value::Trust("CheckHostIP", one()?),
        "revokedhostkeys" => Value::Trust("RevokedHostKeys", one()?),
        "nohostauthenticationforlocalhost" => {
            Value::Trust("NoHostAuthenticationForLocalhost", one()?)
        }
        "hostkeyalgorithms" => Value::Trust("HostKeyAlgorithms", one()?),
        "stricthostkeychecking" => Value::StrictHostKeyChecking(strict_host_key_checking(&one()?)?),
        "connecttimeout" => {
            let v = one()?;
            if v.eq_ignore_ascii_case("none") {
                Value::ConnectTimeout(None)
            } else {
                let d = parse_time(&v).map_err(|e| format!("`ConnectTimeout`: {e}"))?;
                Value::ConnectTimeout(Some(d).filter(|d| !d.is_zero()))
            }
        }
        "serveraliveinterval" => Value::ServerAliveInterval(
            parse_time(&one()?).map_err(|e| format!("`ServerAliveInterval`: {e}"))?,
        ),
        _ => return Ok(None),
    }))
}

fn strict_host_key_checking(v: &str) -> Result<StrictHostKeyChecking, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(StrictHostKeyChecking::Yes),
        "no" | "false" | "off" => Ok(StrictHostKeyChecking::No),
        "ask" => Ok(StrictHostKeyChecking::Ask),
        "accept-new" => Ok(StrictHostKeyChecking::AcceptNew),
        _ => Err(format!(
            "`StrictHostKeyChecking` must be yes, no, ask or accept-new, got `{v}`"
        )),
    }
}

fn parse_match(args: &[String]) -> Result<Vec<Criterion>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (negated, word) = a
            .strip_prefix('!')
            .map_or((false, a.as_str()), |w| (true, w));
        let word = word.to_ascii_lowercase();
        let kind = match word.as_str() {
            "all" => {
                if args.len() != 1 {
                    return Err("`Match all` must be alone on its line".into());
                }
                CriterionKind::All
            }
            "host" | "originalhost" | "user" | "localuser" => {
                let Some(v) = it.next() else {
                    return Err(format!("`Match {word}` needs a pattern list"));
                };
                match word.as_str() {
                    "host" => CriterionKind::Host(v.clone()),
                    "originalhost" => CriterionKind::OriginalHost(v.clone()),
                    "user" => CriterionKind::User(v.clone()),
                    _ => CriterionKind::LocalUser(v.clone()),
                }
            }
            "exec" | "canonical" | "final" | "localnetwork" | "tagged" => {
                return Err(format!(
                    "`Match {word}` is not supported (supported: all, host, originalhost, user, \
                     localuser); pass the settings in the inventory or use --ssh-config none"
                ));
            }
            other => return Err(format!("unknown `Match` criterion `{other}`")),
        };
        out.push(Criterion { negated, kind });
    }
    if out.is_empty() {
        return Err("`Match` needs criteria (e.g. `Match host web-*`)".into());
    }
    Ok(out)
}

/// The files an `Include` argument names: `~` expanded, relative to `~/.ssh`, globs sorted.
fn include_files(arg: &str) -> Vec<PathBuf> {
    let p = if let Some(rest) = arg.strip_prefix("~/") {
        home().join(rest)
    } else if arg.starts_with('/') {
        PathBuf::from(arg)
    } else {
        home().join(".ssh").join(arg)
    };
    let s = p.display().to_string();
    if !s.contains(['*', '?', '[']) {
        return vec![p];
    }
    // Expand the glob one component at a time.
    let mut found = vec![PathBuf::from("/")];
    for comp in p.components().skip(1) {
        let comp = comp.as_os_str().to_string_lossy().into_owned();
        let mut next = Vec::new();
        for dir in &found {
            if comp.contains(['*', '?', '[']) {
                let Ok(glob) = globset::Glob::new(&comp) else {
                    continue;
                };
                let m = glob.compile_matcher();
                let Ok(rd) = std::fs::read_dir(dir) else {
                    continue;
                };
                let mut names: Vec<String> = rd
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.') && m.is_match(n))
                    .collect();
                names.sort();
                next.extend(names.into_iter().map(|n| dir.join(n)));
            } else {
                next.push(dir.join(&comp));
            }
        }
        found = next;
    }
    found
}

/// One hop of a `ProxyJump` list: `[user@]host[:port]` or `ssh://[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// `%j` for a ProxyJump value: the host name of its last hop (the one OpenSSH connects to the
/// target through), empty without a jump.
pub fn jump_token(jump: &str) -> String {
    parse_jump(jump)
        .ok()
        .and_then(|hops| hops.last().map(|h| h.host.clone()))
        .unwrap_or_default()
}

/// Parses a `ProxyJump` value (`none` is no jump: an empty list).
pub fn parse_jump(s: &str) -> Result<Vec<Hop>, String> {
    if s.eq_ignore_ascii_case("none") || s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(|h| parse_hop(h.trim())).collect()
}

fn parse_hop(s: &str) -> Result<Hop, String> {
    let bad = |why: &str| format!("jump host `{s}`: {why} (want [user@]host[:port])");
    let body = s.strip_prefix("ssh://").unwrap_or(s);
    let (user, hostport) = match body.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
        Some(_) => return Err(bad("empty user")),
        None => (None, body),
    };
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err(bad("unclosed `[`"));
        };
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad("text after `]`")),
        };
        (h, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad("bad host name"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.trim_end_matches('/').parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(bad("bad port")),
        },
    };
    Ok(Hop {
        user,
        host: host.to_string(),
        port,
    })
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

    #[test]
    fn wildcards() {
        assert!(wildcard("web-1.lan", "web-?.*"));
        assert!(wildcard("abc", "*"));
        assert!(wildcard("", "*"));
        assert!(!wildcard("web-10", "web-?"));
        assert!(wildcard("aXbXc", "a*b*c"));
    }

    #[test]
    fn jumps() {
        assert_eq!(parse_jump("none").unwrap(), vec![]);
        assert_eq!(
            parse_jump("bastion,ops@b2:2200,ssh://u@[::1]:22").unwrap(),
            vec![
                Hop {
                    user: None,
                    host: "bastion".into(),
                    port: None
                },
                Hop {
                    user: Some("ops".into()),
                    host: "b2".into(),
                    port: Some(2200)
                },
                Hop {
                    user: Some("u".into()),
                    host: "::1".into(),
                    port: Some(22)
                },
            ]
        );
        assert!(parse_jump("b:0").is_err());
        assert!(parse_jump("@b").is_err());
        assert!(parse_jump("b:x").is_err());
    }

    #[test]
    fn tokens() {
        let t = Tokens {
            hostname: "h.example",
            original: "h",
            port: 2222,
            remote_user: "deploy",
            jump: "",
            alias: None,
        };
        let home = home().display().to_string();
        assert_eq!(
            expand("~/.ssh/id_%r@%h:%p%%", &t).unwrap(),
            PathBuf::from(format!("{home}/.ssh/id_deploy@h.example:2222%"))
        );
        assert_eq!(expand("/k/%n", &t).unwrap(), PathBuf::from("/k/h"));
        assert_eq!(expand("/k/%k", &t).unwrap(), PathBuf::from("/k/h"));
        let aliased = Tokens {
            alias: Some("web-alias"),
            ..t.clone()
        };
        assert_eq!(
            expand("/k/%k", &aliased).unwrap(),
            PathBuf::from("/k/web-alias")
        );
        assert!(expand("/k/%z", &t).unwrap_err().contains("%z"));
        assert_eq!(
            expand("%d/x", &t).unwrap(),
            PathBuf::from(format!("{home}/x"))
        );
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_time("1h30M").unwrap(), Duration::from_secs(5400));
        assert!(parse_time("m").is_err());
        assert!(parse_time("5x").is_err());
        // Found by the ssh_config fuzzer: an overflow, now an error.
        assert!(
            parse_time("1m6000000000000000w")
                .unwrap_err()
                .contains("too long")
        );
        assert!(parse_time("99999999999999999999").is_err());
        assert_eq!(parse_time("2147483647").unwrap().as_secs(), 2147483647);
        assert!(parse_time("2147483648").is_err());
    }
}
