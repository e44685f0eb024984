//! Expanding the `%` tokens and `~` of ssh_config file names (`IdentityFile`,
//! `UserKnownHostsFile`) as OpenSSH does, and the local names they use.

use std::path::PathBuf;

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

/// A file name whose `~` or `%` token cannot be expanded (`path` as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    #[error("`{path}`: `~user` paths are not supported; write the full path")]
    TildeUser { path: String },
    #[error("`{path}`: unknown token `%{token}`")]
    UnknownToken { path: String, token: char },
    #[error("`{path}`: a lone `%` at the end")]
    LonePercent { path: String },
}

/// Expands `~` / `~/...` and the tokens `%%` `%C` `%d` `%h` `%i` `%j` `%k` `%L` `%l` `%n` `%p`
/// `%r` `%u` as OpenSSH does for file names. An unknown token is an error.
pub fn expand(path: &str, t: &Tokens<'_>) -> Result<PathBuf, ExpandError> {
    let home = home();
    let tilde = if path == "~" {
        home.display().to_string()
    } else if let Some(rest) = path.strip_prefix("~/") {
        format!("{}/{rest}", home.display())
    } else if path.starts_with('~') {
        return Err(ExpandError::TildeUser { path: path.into() });
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
            Some(token) => {
                return Err(ExpandError::UnknownToken {
                    path: path.into(),
                    token,
                });
            }
            None => return Err(ExpandError::LonePercent { path: path.into() }),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(expand("/k/%z", &t).unwrap_err().to_string().contains("%z"));
        assert_eq!(
            expand("%d/x", &t).unwrap(),
            PathBuf::from(format!("{home}/x"))
        );
    }
}
