//! Reading an ssh_config file: lines split into keyword and words, option values checked,
//! `Match` criteria and `Include`s read.

use super::{Criterion, CriterionKind, Item, Opt, SshConfig, StrictHostKeyChecking, Value, home};
use crate::error::ConfigError;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Deepest `Include` nesting (OpenSSH's READCONF_MAX_DEPTH).
const MAX_DEPTH: usize = 16;

/// What is wrong with one line of an ssh_config (the file and line are added by [`parse`]).
#[derive(Debug, thiserror::Error)]
enum LineError {
    /// `kw`: the keyword as written.
    #[error("`{kw}`: {source}")]
    Words {
        kw: String,
        source: UnbalancedQuotes,
    },
    #[error("no argument after keyword `{kw}`")]
    NoArgument { kw: String },
    #[error("`{kw}` takes one value, got {got}")]
    TooManyValues { kw: String, got: usize },
    #[error("`Port` must be between 1 and 65535, got `{value}`")]
    BadPort { value: String },
    #[error("`{key}` must be yes or no, got `{value}`")]
    NotYesNo { key: &'static str, value: String },
    #[error("`StrictHostKeyChecking` must be yes, no, ask or accept-new, got `{value}`")]
    BadStrictHostKeyChecking { value: String },
    #[error("`{key}`: {source}")]
    Time {
        key: &'static str,
        source: TimeError,
    },
    #[error("`Match all` must be alone on its line")]
    MatchAllNotAlone,
    #[error("`Match {word}` needs a pattern list")]
    MatchNeedsPatterns { word: String },
    #[error(
        "`Match {word}` is not supported (supported: all, host, originalhost, user, \
         localuser); pass the settings in the inventory or use --ssh-config none"
    )]
    MatchUnsupported { word: String },
    #[error("unknown `Match` criterion `{criterion}`")]
    MatchUnknown { criterion: String },
    #[error("`Match` needs criteria (e.g. `Match host web-*`)")]
    MatchEmpty,
    #[error("`Include` nested deeper than {MAX_DEPTH} files")]
    IncludeTooDeep,
    #[error("cannot read included file {}: {source}", .file.display())]
    ReadInclude {
        file: PathBuf,
        source: std::io::Error,
    },
}

/// A quote left open on a line.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("unbalanced quotes")]
struct UnbalancedQuotes;

/// A time value OpenSSH's `convtime` would refuse (`text` as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum TimeError {
    #[error("`{text}` is not a time (e.g. 30, 30s, 5m, 1h30m)")]
    NotATime { text: String },
    #[error("`{text}` is too long (at most {} s)", crate::duration::MAX_SECS)]
    TooLong { text: String },
}

/// Splits a line into words as OpenSSH's `argv_split` does: whitespace separates, double or
/// single quotes group (no escapes but `\"`, `\'`, `\\` inside), `#` at the start of a word ends
/// the line.
fn split_words(s: &str) -> Result<Vec<String>, UnbalancedQuotes> {
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
            return Err(UnbalancedQuotes);
        }
        words.push(w);
    }
    Ok(words)
}

/// OpenSSH's `convtime`: `90`, `30s`, `1m30s`, `1h`, `2d`, `1w` (units case-insensitive).
fn parse_time(s: &str) -> Result<Duration, TimeError> {
    let bad = || TimeError::NotATime { text: s.into() };
    let too_long = || TimeError::TooLong { text: s.into() };
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

fn yes_no(key: &'static str, v: &str) -> Result<bool, LineError> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(LineError::NotYesNo {
            key,
            value: v.into(),
        }),
    }
}

pub(super) fn parse(
    path: &Path,
    src: &str,
    depth: usize,
    errors: &mut Vec<ConfigError>,
) -> SshConfig {
    let mut items = Vec::new();
    for (i, raw) in src.lines().enumerate() {
        let line = i + 1;
        let err = |errors: &mut Vec<ConfigError>, e: LineError| {
            errors.push(ConfigError::new(path, line, 1, e.to_string()));
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
            "include" if depth >= MAX_DEPTH => err(errors, LineError::IncludeTooDeep),
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
fn split_line(raw: &str) -> Option<Result<(&str, Vec<String>), LineError>> {
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
        Err(source) => Err(LineError::Words {
            kw: kw.into(),
            source,
        }),
        Ok(args) if args.is_empty() => Err(LineError::NoArgument { kw: kw.into() }),
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
                Err(source) => errors.push(ConfigError::new(
                    path,
                    line,
                    1,
                    LineError::ReadInclude { file, source }.to_string(),
                )),
            }
        }
    }
}

/// The setting of one option line (`keyword` lowercased, `kw` as written); `None` for an
/// option claw-provision does not read.
fn value(keyword: &str, kw: &str, args: &[String]) -> Result<Option<Value>, LineError> {
    let one = || -> Result<String, LineError> {
        if args.len() > 1 && !matches!(keyword, "proxycommand" | "knownhostscommand") {
            return Err(LineError::TooManyValues {
                kw: kw.into(),
                got: args.len(),
            });
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
                _ => return Err(LineError::BadPort { value: v }),
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
                let d = parse_time(&v).map_err(|source| LineError::Time {
                    key: "ConnectTimeout",
                    source,
                })?;
                Value::ConnectTimeout(Some(d).filter(|d| !d.is_zero()))
            }
        }
        "serveraliveinterval" => {
            Value::ServerAliveInterval(parse_time(&one()?).map_err(|source| LineError::Time {
                key: "ServerAliveInterval",
                source,
            })?)
        }
        _ => return Ok(None),
    }))
}

fn strict_host_key_checking(v: &str) -> Result<StrictHostKeyChecking, LineError> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(StrictHostKeyChecking::Yes),
        "no" | "false" | "off" => Ok(StrictHostKeyChecking::No),
        "ask" => Ok(StrictHostKeyChecking::Ask),
        "accept-new" => Ok(StrictHostKeyChecking::AcceptNew),
        _ => Err(LineError::BadStrictHostKeyChecking { value: v.into() }),
    }
}

fn parse_match(args: &[String]) -> Result<Vec<Criterion>, LineError> {
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
                    return Err(LineError::MatchAllNotAlone);
                }
                CriterionKind::All
            }
            "host" | "originalhost" | "user" | "localuser" => {
                let Some(v) = it.next() else {
                    return Err(LineError::MatchNeedsPatterns { word: word.clone() });
                };
                match word.as_str() {
                    "host" => CriterionKind::Host(v.clone()),
                    "originalhost" => CriterionKind::OriginalHost(v.clone()),
                    "user" => CriterionKind::User(v.clone()),
                    _ => CriterionKind::LocalUser(v.clone()),
                }
            }
            "exec" | "canonical" | "final" | "localnetwork" | "tagged" => {
                return Err(LineError::MatchUnsupported { word: word.clone() });
            }
            other => {
                return Err(LineError::MatchUnknown {
                    criterion: other.into(),
                });
            }
        };
        out.push(Criterion { negated, kind });
    }
    if out.is_empty() {
        return Err(LineError::MatchEmpty);
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

#[cfg(test)]
mod tests {
    use super::*;

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
                .to_string()
                .contains("too long")
        );
        assert!(parse_time("99999999999999999999").is_err());
        assert_eq!(parse_time("2147483647").unwrap().as_secs(), 2147483647);
        assert!(parse_time("2147483648").is_err());
    }
}
