//! The one function that quotes values for a remote POSIX shell.
//!
//! **Invariant:** every value that reaches a remote shell goes through [`quote`]; script
//! builders never paste a variable into a command line unescaped.

/// Quotes `value` as one word for POSIX `sh`: wrapped in single quotes, with each embedded
/// single quote written as `'\''`. The empty string becomes `''`. NUL bytes cannot be passed
/// through a shell at all, so callers validate them away before (see [`check_remote_path`]).
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Checks that a remote path is absolute, has no `..` component and no NUL byte.
pub fn check_remote_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("remote path `{path}` must be absolute"));
    }
    if path.contains('\0') {
        return Err("remote path contains a NUL byte".to_string());
    }
    if path.split('/').any(|c| c == "..") {
        return Err(format!("remote path `{path}` must not contain `..`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("abc"), "'abc'");
        assert_eq!(quote("a'b"), "'a'\\''b'");
        assert_eq!(quote("$(touch /tmp/x)"), "'$(touch /tmp/x)'");
        assert_eq!(quote("'; echo"), "''\\''; echo'");
    }

    #[test]
    fn quoted_values_round_trip_through_sh() {
        for v in [
            "plain",
            "with space",
            "$(id)",
            "`id`",
            "a'b\"c",
            "line1\nline2",
            "'; echo pwned",
            "\\",
            "*",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", quote(v)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), v);
        }
    }

    #[test]
    fn remote_paths() {
        assert!(check_remote_path("/opt/claw-ai").is_ok());
        assert!(check_remote_path("opt").is_err());
        assert!(check_remote_path("/opt/../etc").is_err());
        assert!(check_remote_path("/opt/a\0b").is_err());
    }
}
