//! The password file: `user:hash` lines (DEPENDENCIES.md §6.1) with Mosquitto `$6$`/`$7$` or
//! argon2id hashes (see `hash.rs`), parsed strictly and verified in constant time, with unknown
//! users costing what a wrong password costs.
//!
//! A line whose first character is `#` is a comment; empty lines are skipped. Unlike Mosquitto,
//! a line without `:`, a bad hash or a duplicate user fails the whole file (with `file:line`)
//! instead of being dropped with a log line. Neither a password nor a hash is ever printed:
//! errors name the user and the line only.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::hash::{Cost, Hash, parse_hash};

/// The result of a password check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The user exists and the password is right.
    Ok,
    /// No such user (verified against a dummy hash, so it costs what a wrong password costs).
    UnknownUser,
    /// The user exists and the password is wrong.
    BadPassword,
}

/// Why a password file was refused (the message never contains the hash).
pub type PasswordFileError = crate::line_file::LineFileError;

struct Entry {
    hash: Hash,
    /// SHA-256 of the hash text as stored, to notice a change on reload.
    fingerprint: [u8; 32],
}

/// An immutable password file snapshot. Its `Debug` shows only the number of users.
pub struct PasswordFile {
    entries: HashMap<Box<str>, Entry>,
    /// Verified for unknown users: the kind and cost most entries have (on a tie, the first
    /// entry's).
    dummy: Hash,
}

impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordFile")
            .field("users", &self.entries.len())
            .finish_non_exhaustive()
    }
}

// === impl PasswordFile ===

impl PasswordFile {
    /// Reads and parses a password file.
    ///
    /// # Errors
    /// An unreadable file, or any bad line (see [`PasswordFile::parse`]).
    pub fn load(path: &Path) -> Result<Self, PasswordFileError> {
        crate::line_file::load(path, Self::parse)
    }

    /// Parses a password file given as text; `file_name` is used in errors.
    ///
    /// # Errors
    /// [`PasswordFileError::Invalid`] with `file:line` for a line without `:`, an empty user or
    /// hash, an unsupported or malformed hash, or a user already defined.
    pub fn parse(src: &str, file_name: &str) -> Result<Self, PasswordFileError> {
        let mut entries = crate::line_file::Named::new("user", usize::MAX);
        // Per cost: how many entries have it, and the line of the first one (ties go to it).
        let mut costs: HashMap<Cost, (usize, std::cmp::Reverse<u32>)> = HashMap::new();
        for (line_no, line, error) in crate::line_file::entries(src, file_name) {
            let Some((user, rest)) = line.split_once(':') else {
                return Err(error(
                    "no ':' between user and hash (Mosquitto would skip this line silently)".into(),
                ));
            };
            let user = user.trim();
            let stored = rest.trim();
            if user.is_empty() {
                return Err(error("empty user name".into()));
            }
            if user.len() > usize::from(u16::MAX) {
                return Err(error("user name longer than 65535 bytes".into()));
            }
            if stored.is_empty() {
                return Err(error(format!("user {user:?}: empty hash")));
            }
            if stored.contains(':') {
                return Err(error(format!("user {user:?}: a second ':' after the hash")));
            }
            let hash = parse_hash(stored).map_err(|m| error(format!("user {user:?}: {m}")))?;
            costs
                .entry(hash.cost())
                .or_insert((0, std::cmp::Reverse(line_no)))
                .0 += 1;
            let entry = Entry {
                fingerprint: Sha256::digest(stored.as_bytes()).into(),
                hash,
            };
            entries.insert(user, line_no, entry).map_err(error)?;
        }
        let entries = entries.into_map();
        let common = costs.into_iter().max_by_key(|(_, n)| *n).map(|(c, _)| c);
        let dummy = entries
            .values()
            .find(|e| Some(e.hash.cost()) == common)
            .map_or_else(Hash::default_dummy, |e| e.hash.dummy_like());
        Ok(Self { entries, dummy })
    }

    /// Checks a password. BLOCKING and CPU-heavy (up to tens of milliseconds): run it on a
    /// blocking thread behind a concurrency cap. An unknown user costs the same as a wrong
    /// password of the most common kind of entry in the file.
    #[must_use]
    pub fn verify(&self, username: &str, password: &[u8]) -> VerifyOutcome {
        match self.entries.get(username) {
            Some(e) if e.hash.verify(password) => VerifyOutcome::Ok,
            Some(_) => VerifyOutcome::BadPassword,
            None => {
                std::hint::black_box(self.dummy.verify(password));
                VerifyOutcome::UnknownUser
            }
        }
    }

    /// Whether the user has an entry.
    #[must_use]
    pub fn contains(&self, username: &str) -> bool {
        self.entries.contains_key(username)
    }

    /// SHA-256 of the user's stored hash text: a live session compares it after a reload to
    /// notice that its password was changed or removed.
    #[must_use]
    pub fn fingerprint(&self, username: &str) -> Option<[u8; 32]> {
        self.entries.get(username).map(|e| e.fingerprint)
    }
}

impl crate::line_file::Entries for PasswordFile {
    /// Number of users.
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let f = PasswordFile::parse(
            "bob:$6$H4x6GM0Ll3QUI3lK$aWg4EQj5OjylX0mHYp8Uh57JDgHjMpinQFTb/NupASYJEe8mFctWDdFsHZ3lK7vmFV/vjfg1GQM5tgqv2jTFCw==\n",
            "p",
        )
        .unwrap();
        let shown = format!("{f:?} {:?}", f.entries.get("bob").map(|e| &e.hash));
        assert!(!shown.contains("H4x6"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }

    #[test]
    fn empty_file_uses_the_default_dummy() {
        let empty = PasswordFile::parse("# nothing\n", "p").unwrap();
        assert!(matches!(empty.dummy, Hash::Argon2id(_)));
        assert_eq!(empty.verify("x", b"y"), VerifyOutcome::UnknownUser);
    }

    #[test]
    fn dummy_follows_the_common_kind() {
        let line = super::super::hash_mosquitto_pbkdf2(b"pw", 7).unwrap();
        let f = PasswordFile::parse(&format!("a:{line}\nb:{line}\n"), "p").unwrap();
        assert!(matches!(f.dummy, Hash::Pbkdf2 { iterations: 7, .. }));
    }
}
