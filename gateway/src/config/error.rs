//! `ConfigError`: every way loading `gateway.toml` can fail, each naming the
//! file, the 1-based line (when the file has one for it) and the dotted key.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use super::locate::line_at;

/// Why a configuration file was refused.
///
/// `Display` is complete on its own (`gateway.toml:12: limits.max_packet_size:
/// invalid size "12 apples": expected ...`), which is what `mqtt-gateway check`
/// prints. I/O failures keep the `io::Error` as `source()`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the config file", .path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// TOML syntax error, unknown key, wrong type or bad value.
    #[error("{}", located(.file, *.line, .key.as_deref(), .message))]
    Parse {
        /// The config file.
        file: PathBuf,
        /// 1-based line of the offending text, when the parser reported a span.
        line: Option<usize>,
        /// Dotted key path (`listener[0].tls.client_auth`); `None` for syntax errors.
        key: Option<String>,
        /// The parser's message (without its own line/column rendering).
        message: String,
        /// The parser's error, kept whole (span, message). Not exposed as
        /// `source()` because its text is already part of this error's `Display`.
        toml: Box<toml::de::Error>,
    },
    /// The file parsed, but a value or a combination of values is not acceptable.
    #[error("{}", located(.file, *.line, Some(.key), .reason))]
    Invalid {
        /// The config file.
        file: PathBuf,
        /// 1-based line of the key (or of its closest enclosing table when the key is absent).
        line: Option<usize>,
        /// Dotted key path.
        key: String,
        /// What is wrong and what is expected.
        reason: String,
    },
    /// The config file's directory could not be made absolute (needed to resolve
    /// relative paths in the file).
    #[error("{}: cannot resolve the directory of the config file", .file.display())]
    Resolve {
        /// The config file.
        file: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
}

impl ConfigError {
    /// Wraps a TOML/serde error of `src` (the content of `file`).
    pub(super) fn parse(
        file: &Path,
        src: &str,
        key: Option<String>,
        error: toml::de::Error,
    ) -> Self {
        Self::Parse {
            file: file.to_owned(),
            line: error.span().map(|span| line_at(src, span.start)),
            // serde_path_to_error renders the root path as ".".
            key: key.filter(|k| k != "."),
            message: error.message().to_owned(),
            toml: Box::new(error),
        }
    }

    /// 1-based line the error points at, if any.
    #[must_use]
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Parse { line, .. } | Self::Invalid { line, .. } => *line,
            Self::Read { .. } | Self::Resolve { .. } => None,
        }
    }

    /// Dotted key path the error is about, if any.
    #[must_use]
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::Parse { key, .. } => key.as_deref(),
            Self::Invalid { key, .. } => Some(key),
            Self::Read { .. } | Self::Resolve { .. } => None,
        }
    }
}

/// `file:line: key: message`, leaving out what is unknown.
fn located(file: &Path, line: Option<usize>, key: Option<&str>, message: &str) -> String {
    let mut out = file.display().to_string();
    if let Some(line) = line {
        let _ = write!(out, ":{line}");
    }
    if let Some(key) = key {
        let _ = write!(out, ": {key}");
    }
    let _ = write!(out, ": {message}");
    out
}
