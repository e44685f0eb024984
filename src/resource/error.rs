//! [`StepError`]: why a step cannot be turned into a desired state, or cannot proceed against
//! what its probe found. The one error type of the resource layer; its text is what the plan
//! and the run report for the step.

use std::path::PathBuf;
use std::sync::Arc;

/// Why a step cannot proceed: its arguments, its local inputs, its template, or what is on the
/// host. Displayed as the message the step's failure shows. `Clone` (the io errors behind an
/// `Arc`): a run keeps the error of a local image it could not read for every host's step.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    /// The arguments do not have the kind's shape (an unknown key, a wrong type, a missing key):
    /// the deserializer's message.
    #[error("{message}")]
    Args { message: String },

    /// An argument the step cannot use, alone or together with the others (or a change it
    /// refuses, such as removing `root`): `why` names the argument as the playbook writes it.
    #[error("{why}")]
    Arg { why: String },

    /// The problem of the argument named `arg` (a path argument that is not absolute, ...).
    #[error("`{arg}`: {source}")]
    InArg {
        arg: &'static str,
        #[source]
        source: Box<StepError>,
    },

    /// A remote path argument that is refused (not absolute, a `..` component, a NUL byte).
    #[error("{0}")]
    RemotePath(#[from] crate::quote::RemotePathError),

    /// A secret name that is refused.
    #[error("{0}")]
    SecretName(#[from] crate::secret::BadSecretName),

    /// A duration argument that is not one (or is longer than a day).
    #[error(
        "`{arg} = \"{value}\"`: expected a duration such as \"90s\", \"3m\" or \"1h\" (at most 24h)"
    )]
    Duration { arg: &'static str, value: String },

    /// A rendered argument that would reach a remote shell holds a NUL byte; `key` is its
    /// dotted place (`packages.1`).
    #[error("`{key}` contains a NUL byte, which cannot be passed to a remote shell")]
    Nul { key: String },

    /// A templated argument or a template file that does not render: the renderer's message.
    #[error("{message}")]
    Template { message: String },

    /// The local file an argument (`src`, `key`, `cert`) names cannot be read.
    #[error("cannot read `{arg}` file {}: {source}", .path.display())]
    ReadArgFile {
        arg: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },

    /// A `template` step's template file cannot be read.
    #[error("cannot read template {}: {source}", .path.display())]
    ReadTemplate {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },

    /// A file on this machine the step compares with (a fetched file's earlier copy) cannot
    /// be read.
    #[error("cannot read {}: {source}", .path.display())]
    ReadLocal {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },

    /// A local input that was read but cannot be used (a certificate or key that does not
    /// parse or does not match, an image this machine does not have).
    #[error("{why}")]
    Input { why: String },

    /// The `what` (certificate, private key) in the local file `file` cannot be used.
    #[error("the {what} in {file} cannot be used: {source}")]
    Unusable {
        what: &'static str,
        file: String,
        #[source]
        source: Box<StepError>,
    },

    /// This machine cannot do its part (run `docker`, draw random bytes).
    #[error("{why}")]
    Local { why: String },

    /// What is on the host blocks the step (a directory where a file is wanted, no `dpkg`, a
    /// file larger than allowed, ...).
    #[error("{why}")]
    Host { why: String },

    /// A bug: what the layers promised each other does not hold (probe answers of the wrong
    /// type, a script without the line it should have).
    #[error("internal error: {what}")]
    Internal { what: &'static str },
}

impl StepError {
    /// [`StepError::Arg`].
    pub(crate) fn arg(why: impl Into<String>) -> Self {
        StepError::Arg { why: why.into() }
    }

    /// [`StepError::InArg`]: `e` is about the argument `arg`.
    pub(crate) fn in_arg(arg: &'static str, e: StepError) -> Self {
        StepError::InArg {
            arg,
            source: Box::new(e),
        }
    }

    /// [`StepError::Input`].
    pub(crate) fn input(why: impl Into<String>) -> Self {
        StepError::Input { why: why.into() }
    }

    /// [`StepError::Unusable`]: `e` says why the `what` in the local file `file` cannot be used.
    pub(crate) fn unusable(what: &'static str, file: &str, e: StepError) -> Self {
        StepError::Unusable {
            what,
            file: file.to_string(),
            source: Box::new(e),
        }
    }

    /// [`StepError::Local`].
    pub(crate) fn local(why: impl Into<String>) -> Self {
        StepError::Local { why: why.into() }
    }

    /// [`StepError::Host`].
    pub(crate) fn host(why: impl Into<String>) -> Self {
        StepError::Host { why: why.into() }
    }

    /// [`StepError::Template`]: the one place a renderer's error enters the resource layer.
    pub(crate) fn template(e: impl std::fmt::Display) -> Self {
        StepError::Template {
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts are the messages the steps showed when they were strings.
    #[test]
    fn messages_read_as_before() {
        let io = || Arc::new(std::io::Error::from(std::io::ErrorKind::NotFound));
        let nf = std::io::Error::from(std::io::ErrorKind::NotFound).to_string();
        let cases = [
            (
                StepError::in_arg("cwd", StepError::arg("remote path `x` must be absolute")),
                "`cwd`: remote path `x` must be absolute".to_string(),
            ),
            (
                StepError::Duration {
                    arg: "confirm_timeout",
                    value: "5x".into(),
                },
                "`confirm_timeout = \"5x\"`: expected a duration such as \"90s\", \"3m\" or \"1h\" (at most 24h)".into(),
            ),
            (
                StepError::Nul {
                    key: "packages.1".into(),
                },
                "`packages.1` contains a NUL byte, which cannot be passed to a remote shell".into(),
            ),
            (
                StepError::ReadArgFile {
                    arg: "src",
                    path: "files/a".into(),
                    source: io(),
                },
                format!("cannot read `src` file files/a: {nf}"),
            ),
            (
                StepError::ReadTemplate {
                    path: "t/a.j2".into(),
                    source: io(),
                },
                format!("cannot read template t/a.j2: {nf}"),
            ),
            (
                StepError::ReadLocal {
                    path: "out/a".into(),
                    source: io(),
                },
                format!("cannot read out/a: {nf}"),
            ),
            (
                StepError::Unusable {
                    what: "private key",
                    file: "k.pem".into(),
                    source: Box::new(StepError::input("it holds several private keys; give one")),
                },
                "the private key in k.pem cannot be used: it holds several private keys; give one"
                    .into(),
            ),
            (
                StepError::Internal {
                    what: "probe answers of the wrong type (bug, please report)",
                },
                "internal error: probe answers of the wrong type (bug, please report)".into(),
            ),
            (StepError::template("x.j2: bad"), "x.j2: bad".into()),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
    }
}
