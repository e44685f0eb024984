//! Durations in input files: an integer number of seconds, or a string like `"90s"`, `"5m"`, `"1h"`.

use serde::Deserialize;
use std::time::Duration;

/// A duration read from TOML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secs(pub Duration);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected a duration: seconds as an integer, or a string like \"30s\", \"5m\"",
            )
        })? {
            Raw::Int(n) if n > 0 && n as u64 <= MAX_SECS => Ok(Secs(Duration::from_secs(n as u64))),
            Raw::Int(n) if n > 0 => Err(serde::de::Error::custom(format!(
                "duration {n} s is too long (at most {MAX_SECS} s)"
            ))),
            Raw::Int(n) => Err(serde::de::Error::custom(format!(
                "duration must be positive, got {n}"
            ))),
            Raw::Str(s) => parse(&s).map(Secs).map_err(serde::de::Error::custom),
        }
    }
}

/// Longest duration accepted (as OpenSSH's `convtime`: `INT_MAX` seconds, about 68 years);
/// longer ones are errors, not overflows (a deadline `now + d` must stay representable).
pub(crate) const MAX_SECS: u64 = i32::MAX as u64;

/// Why a duration text is refused; `text` is the duration as written (trimmed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    #[error("invalid duration `{text}` (examples: \"30s\", \"5m\", \"1h\")")]
    Invalid { text: String },
    #[error("duration `{text}` is too long (at most {MAX_SECS} s)")]
    TooLong { text: String },
    #[error("invalid duration unit in `{text}` (use ms, s, m or h)")]
    Unit { text: String },
    #[error("duration `{text}` must be positive")]
    NotPositive { text: String },
}

/// Parses `"30"`, `"30s"`, `"5m"`, `"1h"`, `"500ms"`.
pub(crate) fn parse(s: &str) -> Result<Duration, DurationError> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| DurationError::Invalid { text: s.into() })?;
    let too_long = || DurationError::TooLong { text: s.into() };
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .filter(|t| *t <= MAX_SECS)
            .map(Duration::from_secs)
            .ok_or_else(too_long)
    };
    let d = match unit {
        "" | "s" => secs(1)?,
        "ms" => Some(Duration::from_millis(n))
            .filter(|d| d.as_secs() <= MAX_SECS)
            .ok_or_else(too_long)?,
        "m" => secs(60)?,
        "h" => secs(3600)?,
        _ => {
            return Err(DurationError::Unit { text: s.into() });
        }
    };
    if d.is_zero() {
        return Err(DurationError::NotPositive { text: s.into() });
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse("5 parsecs").is_err());
        assert!(parse("0s").is_err());
        assert!(parse("").is_err());
        // Overflows (`n * 3600`) and deadlines past what an Instant holds are errors.
        assert!(
            parse("5124095576030432h")
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
        assert!(
            parse("99999999999m")
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
        assert!(
            parse("18446744073709551615ms")
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
        assert_eq!(parse("2147483647").unwrap().as_secs(), 2147483647);
        #[derive(serde::Deserialize)]
        struct T {
            t: Secs,
        }
        let big = toml::from_str::<T>("t = 9223372036854775807")
            .err()
            .unwrap();
        assert!(big.to_string().contains("too long"), "{big}");
        assert_eq!(toml::from_str::<T>("t = 90").unwrap().t.0.as_secs(), 90);
    }
}
