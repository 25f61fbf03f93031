//! Files of one entry a line (the password file, the admin API's token file): reading them, their
//! numbered lines without comments and blank lines, and the one error type that names `file:line`.

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
    let name = path.display().to_string();
    let src = std::fs::read_to_string(path).map_err(|source| LineFileError::Read {
        path: name.clone(),
        source,
    })?;
    parse(&src, &name)
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
