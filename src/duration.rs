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
            Raw::Int(n) if n > 0 => Ok(Secs(Duration::from_secs(n as u64))),
            Raw::Int(n) => Err(serde::de::Error::custom(format!(
                "duration must be positive, got {n}"
            ))),
            Raw::Str(s) => parse(&s).map(Secs).map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `"30"`, `"30s"`, `"5m"`, `"1h"`, `"500ms"`.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{s}` (examples: \"30s\", \"5m\", \"1h\")"))?;
    let d = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => {
            return Err(format!(
                "invalid duration unit in `{s}` (use ms, s, m or h)"
            ));
        }
    };
    if d.is_zero() {
        return Err(format!("duration `{s}` must be positive"));
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
    }
}
