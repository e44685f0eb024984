//! Resolving one host: walking the file's `Host`, `Match` and `Include` blocks in order, the
//! first value of each keyword winning, as `ssh -G HOST` does.

use super::{Criterion, CriterionKind, Item, Opt, Preset, Resolved, SshConfig, Value};

pub(super) struct Query<'a> {
    pub(super) original: &'a str,
    pub(super) preset: &'a Preset,
    pub(super) r: Resolved,
    pub(super) local_user: String,
}

impl Query<'_> {
    pub(super) fn walk(&mut self, cfg: &SshConfig, active: &mut bool, never: bool) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard("web-1.lan", "web-?.*"));
        assert!(wildcard("abc", "*"));
        assert!(wildcard("", "*"));
        assert!(!wildcard("web-10", "web-?"));
        assert!(wildcard("aXbXc", "a*b*c"));
    }
}
