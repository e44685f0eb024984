//! `ProxyJump` values: the hops of a jump list and the `%j` token.

/// One hop of a `ProxyJump` list: `[user@]host[:port]` or `ssh://[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// A `ProxyJump` hop that does not parse (`hop` as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("jump host `{hop}`: {why} (want [user@]host[:port])")]
pub struct BadHop {
    pub hop: String,
    pub why: HopProblem,
}

/// What is wrong with a [`BadHop`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HopProblem {
    #[error("empty user")]
    EmptyUser,
    #[error("unclosed `[`")]
    UnclosedBracket,
    #[error("text after `]`")]
    TextAfterBracket,
    #[error("no host")]
    NoHost,
    #[error("bad host name")]
    BadHostName,
    #[error("bad port")]
    BadPort,
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
pub fn parse_jump(s: &str) -> Result<Vec<Hop>, BadHop> {
    if s.eq_ignore_ascii_case("none") || s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(|h| parse_hop(h.trim())).collect()
}

fn parse_hop(s: &str) -> Result<Hop, BadHop> {
    let bad = |why| BadHop {
        hop: s.to_string(),
        why,
    };
    let body = s.strip_prefix("ssh://").unwrap_or(s);
    let (user, hostport) = match body.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
        Some(_) => return Err(bad(HopProblem::EmptyUser)),
        None => (None, body),
    };
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let Some((h, after)) = rest.split_once(']') else {
            return Err(bad(HopProblem::UnclosedBracket));
        };
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(bad(HopProblem::TextAfterBracket)),
        };
        (h, port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (hostport, None),
        }
    };
    if host.is_empty() {
        return Err(bad(HopProblem::NoHost));
    }
    if host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad(HopProblem::BadHostName));
    }
    let port = match port {
        None => None,
        Some(p) => match p.trim_end_matches('/').parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(bad(HopProblem::BadPort)),
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
}
