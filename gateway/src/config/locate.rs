//! Maps a dotted key path (`listener[1].tls.client_auth`) back to its line in
//! the config source, so semantic errors found after deserialisation still
//! name `file:line: key`, without `Spanned` wrappers in the public types.

use std::fmt;
use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::ConfigError;

/// The text being loaded and the file it came from.
pub(super) struct Source<'a> {
    /// The config file (for messages).
    pub(super) path: &'a Path,
    /// Its content.
    pub(super) src: &'a str,
}

impl Source<'_> {
    /// An [`ConfigError::Invalid`] for `key`, located in the source.
    pub(super) fn invalid(&self, key: &KeyPath, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.path.to_owned(),
            line: self.line_of(key),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// Line of `key`'s value; if the key is absent, of its deepest present ancestor
    /// (the root itself has no line).
    fn line_of(&self, key: &KeyPath) -> Option<usize> {
        let root = DeTable::parse(self.src).ok()?;
        let root = DeValue::Table(root.into_inner());
        deepest_span(&root, &key.0).map(|span| line_at(self.src, span.start))
    }
}

/// Span of the value at `segs` below `node`, or of its deepest present ancestor.
fn deepest_span(node: &DeValue<'_>, segs: &[Seg]) -> Option<Range<usize>> {
    let (first, rest) = segs.split_first()?;
    let child = match first {
        Seg::Key(k) => node.get(*k),
        Seg::Index(i) => node.get(*i),
    }?;
    deepest_span(child.get_ref(), rest).or_else(|| Some(child.span()))
}

/// 1-based line number of byte `offset` in `src`.
pub(super) fn line_at(src: &str, offset: usize) -> usize {
    let before = src.as_bytes().get(..offset).unwrap_or(src.as_bytes());
    before
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        .saturating_add(1)
}

/// One step of a key path.
#[derive(Debug, Clone, Copy)]
pub(super) enum Seg {
    /// A table key.
    Key(&'static str),
    /// An index into an array (of tables).
    Index(usize),
}

/// A dotted key path, displayed like serde_path_to_error does (`a.b[0].c`).
#[derive(Debug, Clone, Default)]
pub(super) struct KeyPath(Vec<Seg>);

impl KeyPath {
    /// The path `key`.
    pub(super) fn new(key: &'static str) -> Self {
        Self(vec![Seg::Key(key)])
    }

    /// This path followed by `.key`.
    pub(super) fn key(&self, key: &'static str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key));
        Self(segs)
    }

    /// This path followed by `[index]`.
    pub(super) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}
