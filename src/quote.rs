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

/// Why a remote path is refused (`path` as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RemotePathError {
    #[error("remote path `{path}` must be absolute")]
    Relative { path: String },
    #[error("remote path contains a NUL byte")]
    Nul,
    #[error("remote path `{path}` must not contain `..`")]
    DotDot { path: String },
}

/// Checks that a remote path is absolute, has no `..` component and no NUL byte.
pub fn check_remote_path(path: &str) -> Result<(), RemotePathError> {
    if !path.starts_with('/') {
        return Err(RemotePathError::Relative { path: path.into() });
    }
    if path.contains('\0') {
        return Err(RemotePathError::Nul);
    }
    if path.split('/').any(|c| c == "..") {
        return Err(RemotePathError::DotDot { path: path.into() });
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

    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngSeed};

    /// Text a shell would love to interpret: quotes, substitutions, separators, globs, line
    /// breaks, escapes, control and non-ASCII characters, mixed with arbitrary characters.
    fn hostile() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            prop::sample::select(vec![
                "'",
                "\"",
                "$(",
                ")",
                "`",
                ";",
                "\n",
                "\r",
                "\\",
                "$",
                "${",
                "}",
                "*",
                "?",
                "[",
                "]",
                "~",
                "#",
                "&",
                "|",
                "<",
                ">",
                " ",
                "\t",
                "!",
                "%",
                "'\\''",
                "-",
                "--",
                "é",
                "\u{202e}",
                "\x01",
                "\x7f",
                "$IFS",
                "touch /tmp/pwned",
            ])
            .prop_map(String::from),
            any::<char>().prop_map(|c| c.to_string()),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|v| v.concat().replace('\0', ""))
    }

    fn seeded(cases: u32) -> Config {
        Config {
            cases,
            rng_seed: RngSeed::Fixed(0x5eed_0001),
            failure_persistence: None,
            ..Config::default()
        }
    }

    proptest! {
        #![proptest_config(seeded(64))]

        /// 64 batches of 16 values, each batch through one `sh -c 'printf ...'`: every value
        /// comes back byte for byte, and nothing ran.
        #[test]
        fn any_value_round_trips_through_sh(values in prop::collection::vec(hostile(), 16)) {
            let args: Vec<String> = values.iter().map(|v| quote(v)).collect();
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s\\000' {}", args.join(" ")))
                .output()
                .unwrap();
            prop_assert!(out.status.success());
            prop_assert_eq!(out.stderr, b"");
            let want: Vec<u8> = values.iter().flat_map(|v| v.bytes().chain([0])).collect();
            prop_assert_eq!(out.stdout, want);
        }

        /// What the path check lets through is absolute, NUL-free and has no `..` component.
        #[test]
        fn accepted_paths_are_safe(p in prop_oneof![hostile(), hostile().prop_map(|s| format!("/{s}")),
                                                     "(/(\\.\\.|[a-z]{1,3}|\\.)){1,5}/?"]) {
            if check_remote_path(&p).is_ok() {
                prop_assert!(p.starts_with('/'));
                prop_assert!(!p.contains('\0'));
                prop_assert!(!p.split('/').any(|c| c == ".."));
            } else {
                prop_assert!(!p.starts_with('/') || p.split('/').any(|c| c == ".."));
            }
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
