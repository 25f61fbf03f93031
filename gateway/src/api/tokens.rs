//! The admin API's token file (`[admin] api_tokens_file`): lines `NAME:ROLE:HASH`, ROLE `read` or
//! `operate`, HASH any format of the password file (`$6$`, `$7$`, argon2id; see `auth/hash.rs`).
//! Parsed strictly like the password file: a bad line refuses the whole file with `file:line`, and
//! no message quotes a hash or a secret.
//!
//! A token is presented as `Authorization: Bearer NAME:SECRET`. The NAME picks the line (names are
//! not secrets: an unknown NAME is refused without hashing); the SECRET is verified against the
//! line's hash. `mqtt-gateway admin-token` writes argon2id lines for 256-bit random secrets, so a
//! stolen file does not give a usable token; verifying one costs tens of milliseconds, so a
//! verified token is remembered by the SHA-256 of the whole header value (a bounded map, dropped
//! with this snapshot of the file on reload) and later requests cost one SHA-256. A wrong secret is
//! never remembered: each costs a verification, one at a time (see `api::authorize`).

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

use crate::auth::hash::{Hash, parse_hash};

/// At most this many verified tokens are remembered per file snapshot.
const MAX_CACHED: usize = 1024;
/// At most this many lines (tokens are for people and scripts, not devices).
pub const MAX_TOKENS: usize = 10_000;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `GET` endpoints.
    Read,
    /// Every endpoint.
    Operate,
}

impl Role {
    /// As written in the file.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Operate => "operate",
        }
    }

    /// Parses `read` or `operate`.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "read" => Some(Self::Read),
            "operate" => Some(Self::Operate),
            _ => None,
        }
    }
}

/// Why a token file was refused (no message quotes a hash or a secret).
pub type TokenFileError = crate::line_file::LineFileError;

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's NAME (audit lines name it).
    pub name: String,
    /// Its role.
    pub role: Role,
}

struct Entry {
    role: Role,
    hash: Hash,
}

/// The result of checking a presented token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Known from an earlier verification.
    Cached(Caller),
    /// A known NAME: verify the secret (slow) with [`AdminTokens::verify`].
    Verify,
    /// No such NAME, or no `NAME:` at all.
    Unknown,
}

/// One snapshot of the token file. `Debug` shows only the number of tokens.
pub struct AdminTokens {
    entries: HashMap<Box<str>, Entry>,
    /// SHA-256 of verified header values → caller.
    verified: Mutex<HashMap<[u8; 32], Caller>>,
}

impl fmt::Debug for AdminTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminTokens")
            .field("tokens", &self.entries.len())
            .finish_non_exhaustive()
    }
}

impl crate::line_file::Entries for AdminTokens {
    /// Number of tokens.
    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Whether `name` can be a token NAME: 1 to 64 of `A-Za-z0-9._-`.
#[must_use]
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl AdminTokens {
    /// Reads and parses a token file.
    ///
    /// # Errors
    /// An unreadable file or a bad line.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        crate::line_file::load(path, Self::parse)
    }

    /// Parses a token file given as text; `file_name` is used in errors.
    ///
    /// # Errors
    /// [`TokenFileError::Invalid`] with `file:line`: a line that is not `NAME:ROLE:HASH`, a bad
    /// NAME, an unknown ROLE, a bad hash, a NAME already defined, more than [`MAX_TOKENS`].
    pub fn parse(src: &str, file_name: &str) -> Result<Self, TokenFileError> {
        let mut entries = crate::line_file::Named::new("token", MAX_TOKENS);
        for (line_no, line, error) in crate::line_file::entries(src, file_name) {
            let mut parts = line.splitn(3, ':');
            let (Some(name), Some(role), Some(stored)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(error("expected NAME:ROLE:HASH".into()));
            };
            let (name, role, stored) = (name.trim(), role.trim(), stored.trim());
            if !valid_name(name) {
                return Err(error(
                    "NAME must be 1 to 64 of A-Z a-z 0-9 . _ -".to_owned(),
                ));
            }
            let Some(role) = Role::parse(role) else {
                return Err(error(format!(
                    "token {name:?}: ROLE must be read or operate"
                )));
            };
            if stored.contains(':') {
                return Err(error(format!("token {name:?}: a ':' after the hash")));
            }
            let hash = parse_hash(stored).map_err(|m| error(format!("token {name:?}: {m}")))?;
            entries
                .insert(name, line_no, Entry { role, hash })
                .map_err(error)?;
        }
        Ok(Self {
            entries: entries.into_map(),
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// The fast part of a check: a remembered token, a NAME to verify, or an unknown one.
    #[must_use]
    pub fn check(&self, presented: &str) -> Check {
        let key: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        if let Some(c) = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
        {
            return Check::Cached(c.clone());
        }
        match presented.split_once(':') {
            Some((name, _)) if self.entries.contains_key(name) => Check::Verify,
            _ => Check::Unknown,
        }
    }

    /// Verifies `NAME:SECRET` against NAME's hash. BLOCKING and CPU-heavy for argon2id lines:
    /// run it off the async workers, one at a time. A success is remembered.
    #[must_use]
    pub fn verify(&self, presented: &str) -> Option<Caller> {
        let (name, secret) = presented.split_once(':')?;
        let entry = self.entries.get(name)?;
        if !entry.hash.verify(secret.as_bytes()) {
            return None;
        }
        let caller = Caller {
            name: name.to_owned(),
            role: entry.role,
        };
        let mut cache = self
            .verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(Sha256::digest(presented.as_bytes()).into(), caller.clone());
        Some(caller)
    }
}

/// A new random secret: 32 bytes from the system RNG, hex.
///
/// # Errors
/// The system RNG failed.
pub fn new_secret() -> std::io::Result<String> {
    let mut out = String::with_capacity(64);
    for _ in 0..2 {
        let bytes = argon2::password_hash::try_generate_salt()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        for b in bytes {
            out.push_str(&format!("{b:02x}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::line_file::Entries as _;

    const ARGON: &str = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn bad_lines_refuse_the_whole_file_with_file_and_line() {
        for (text, line, msg) in [
            ("a:read\n", 1, "expected NAME:ROLE:HASH"),
            (&*format!("# c\n\nops:admin:{ARGON}\n"), 3, "ROLE must be"),
            (&*format!("o p:read:{ARGON}\n"), 1, "NAME must be"),
            ("ops:read:plain\n", 1, "unsupported hash"),
            (
                &*format!("ops:read:{ARGON}\nops:operate:{ARGON}\n"),
                2,
                "already defined on line 1",
            ),
        ] {
            let e = AdminTokens::parse(text, "tokens").unwrap_err().to_string();
            assert!(e.starts_with(&format!("tokens:{line}: ")), "{e}");
            assert!(e.contains(msg), "{e}");
            assert!(!e.contains("AAAA"), "a hash is never quoted: {e}");
        }
        let ok = AdminTokens::parse(&format!("ops:operate:{ARGON}\r\nro:read:{ARGON}\n"), "t");
        assert_eq!(ok.unwrap().len(), 2);
    }

    #[test]
    fn a_verified_token_is_remembered_a_wrong_one_is_not() {
        let secret = new_secret().unwrap();
        assert_eq!(secret.len(), 64);
        let hash = crate::auth::hash_argon2id(secret.as_bytes()).unwrap();
        let t = AdminTokens::parse(&format!("ops:operate:{hash}\n"), "t").unwrap();
        let good = format!("ops:{secret}");
        let bad = format!("ops:{}", "0".repeat(64));
        assert_eq!(t.check("nobody:x"), Check::Unknown);
        assert_eq!(t.check(&secret), Check::Unknown, "NAME: is required");
        assert_eq!(t.check(&bad), Check::Verify);
        assert_eq!(t.verify(&bad), None);
        assert_eq!(t.check(&bad), Check::Verify, "a failure is not remembered");
        assert_eq!(t.check(&good), Check::Verify);
        let caller = t.verify(&good).unwrap();
        assert_eq!(caller.role, Role::Operate);
        assert_eq!(caller.name, "ops");
        assert_eq!(t.check(&good), Check::Cached(caller));
    }
}
