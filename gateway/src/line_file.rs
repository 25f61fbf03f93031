//! Files of one entry a line (the password file, the admin API's token file): reading them, their
//! numbered lines without comments and blank lines, and the one error type that names `file:line`
//! (the policy files' too).

use std::collections::HashMap;
use std::path::Path;

/// Why a line file was refused (whole: the last good one stays in force).
#[derive(Debug, thiserror::Error)]
pub enum LineFileError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is wrong (the message never quotes a hash or a secret).
    #[error("{file}:{line}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// 1-based line.
        line: u32,
        /// What is wrong.
        message: String,
    },
}

/// Reads `path` and parses its text with `parse(text, name)`, `name` being how errors name it.
///
/// # Errors
/// The file cannot be read, or what `parse` says.
pub fn load<T>(
    path: &Path,
    parse: impl FnOnce(&str, &str) -> Result<T, LineFileError>,
) -> Result<T, LineFileError> {
    let (src, name) = read(path)?;
    parse(&src, &name)
}

/// The text of `path`, and its name as errors give it.
///
/// # Errors
/// [`LineFileError::Read`]: the file cannot be read.
pub fn read(path: &Path) -> Result<(String, String), LineFileError> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(src) => Ok((src, name)),
        Err(source) => Err(LineFileError::Read { path: name, source }),
    }
}

/// The entry lines of `src` (not comments, not blank; a trailing `\r` taken off), each with its
/// 1-based number and a maker of its [`LineFileError::Invalid`].
pub fn entries<'a>(
    src: &'a str,
    file: &'a str,
) -> impl Iterator<Item = (u32, &'a str, impl Fn(String) -> LineFileError + 'a)> + 'a {
    src.split('\n')
        .zip(1u32..)
        .map(|(line, n)| (n, line.strip_suffix('\r').unwrap_or(line)))
        .filter(|(_, line)| !line.starts_with('#') && !line.trim().is_empty())
        .map(move |(n, line)| {
            let error = move |message: String| LineFileError::Invalid {
                file: file.to_owned(),
                line: n,
                message,
            };
            (n, line, error)
        })
}

/// A parsed file of entries (users, tokens): how many it has.
pub trait Entries {
    /// Number of entries.
    fn len(&self) -> usize;

    /// True when the file has no entry.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A file's entries by name, each with the line that defined it: a name defined twice, or one
/// entry more than the limit, is refused.
pub struct Named<E> {
    /// What an entry is, as errors name it ("user", "token").
    what: &'static str,
    limit: usize,
    entries: HashMap<Box<str>, E>,
    lines: HashMap<Box<str>, u32>,
}

impl<E> Named<E> {
    /// No entries yet; at most `limit` of them.
    #[must_use]
    pub fn new(what: &'static str, limit: usize) -> Self {
        Self {
            what,
            limit,
            entries: HashMap::new(),
            lines: HashMap::new(),
        }
    }

    /// Adds `entry` as `name`, defined on line `line`; or the message saying why not: `name` is
    /// already defined (and on which line), or there are already `limit` entries.
    ///
    /// # Errors
    /// The message, for the [`LineFileError::Invalid`] of line `line`.
    pub fn insert(&mut self, name: &str, line: u32, entry: E) -> Result<(), String> {
        let what = self.what;
        if let Some(first) = self.lines.get(name) {
            return Err(format!(
                "{what} {name:?} is already defined on line {first}"
            ));
        }
        if self.entries.len() >= self.limit {
            return Err(format!("more than {} {what}s", self.limit));
        }
        self.lines.insert(name.into(), line);
        self.entries.insert(name.into(), entry);
        Ok(())
    }

    /// The entries by name.
    #[must_use]
    pub fn into_map(self) -> HashMap<Box<str>, E> {
        self.entries
    }
}
