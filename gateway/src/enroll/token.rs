//! One-time enrollment tokens (`mqtt-gateway pki token DIR NAME [--ttl 24h]`): 32 random bytes,
//! shown once, stored only as their SHA-256 in `DIR/tokens.json` with the NAME they are bound
//! to, their expiry and, once spent, when. A token buys one certificate for one name, once.
//!
//! The decision ([`judge`]) is a pure function of the stored entries, the presented name and
//! token and the time; the file is read and replaced (atomically, under the directory's lock) at
//! the edges. The file is bounded: expired entries are dropped at every write, and no more than
//! [`MAX_TOKENS`] live entries are kept (minting one more is refused).

use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::pki::{Ca, PkiError, check_name, hex, write_atomic};

/// Live (unexpired) tokens a pki directory holds at most.
pub const MAX_TOKENS: usize = 10_000;

/// The longest `--ttl`: a token is a bearer secret; it should not outlive the rollout it is for.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The file of the pki directory that holds the hashed tokens.
pub const TOKENS_FILE: &str = "tokens.json";

/// One stored token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    /// The name (CN) the token may enroll.
    pub name: String,
    /// SHA-256 of the token, hex.
    pub sha256: String,
    /// Expiry, unix seconds.
    pub expires_at: i64,
    /// When it was spent, unix seconds.
    pub used_at: Option<i64>,
    /// The organizational unit the certificate gets (the policy's `cert_ou`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ou: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenEntry>,
}

/// Why a token was not accepted (each is answered 401; the audit line says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No token with that hash.
    Unknown,
    /// The token is bound to another name.
    Foreign,
    /// Spent already.
    Used,
    /// Past its expiry.
    Expired,
}

impl TokenRefusal {
    /// The audit reason.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "token_unknown",
            Self::Foreign => "token_foreign",
            Self::Used => "token_used",
            Self::Expired => "token_expired",
        }
    }
}

/// SHA-256 of a token, hex.
#[must_use]
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Which stored entry the token `hash` presented for `name` at `now` (unix seconds) is, or why
/// it is refused. Pure.
///
/// # Errors
/// The refusal.
pub fn judge(
    entries: &[TokenEntry],
    name: &str,
    hash: &str,
    now: i64,
) -> Result<usize, TokenRefusal> {
    let Some(i) = entries.iter().position(|e| e.sha256 == hash) else {
        return Err(TokenRefusal::Unknown);
    };
    let e = entries.get(i).ok_or(TokenRefusal::Unknown)?;
    if e.name != name {
        return Err(TokenRefusal::Foreign);
    }
    if e.used_at.is_some() {
        return Err(TokenRefusal::Used);
    }
    if now >= e.expires_at {
        return Err(TokenRefusal::Expired);
    }
    Ok(i)
}

fn load(ca: &Ca) -> Result<TokenFile, PkiError> {
    let path = ca.path(TOKENS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|source| PkiError::Index { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
        Err(source) => Err(PkiError::Io { path, source }),
    }
}

fn save(ca: &Ca, file: &TokenFile) -> Result<(), PkiError> {
    let path = ca.path(TOKENS_FILE);
    let text = serde_json::to_string_pretty(file).map_err(|source| PkiError::Index {
        path: path.clone(),
        source,
    })?;
    write_atomic(&path, text.as_bytes(), 0o600)
}

/// Mints a token for `name` (and the certificate's OU `ou`), valid `ttl` from `now` (unix
/// seconds); returns the token (shown once, never stored).
///
/// # Errors
/// An invalid name, OU or TTL, [`MAX_TOKENS`] live tokens already, or a file error.
pub fn mint_with_ou(
    ca: &Ca,
    name: &str,
    ou: Option<&str>,
    ttl: Duration,
    now: i64,
) -> Result<String, PkiError> {
    check_name(name)?;
    if let Some(ou) = ou
        && (ou.is_empty() || ou.len() > 64 || ou.chars().any(char::is_control))
    {
        return Err(PkiError::Usage(format!(
            "invalid OU {ou:?}: 1-64 characters, no control characters"
        )));
    }
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(PkiError::Usage(format!(
            "--ttl must be more than 0 and at most {}",
            humantime::format_duration(MAX_TTL)
        )));
    }
    let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
    let mut bytes = [0u8; 32];
    crate::tls::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| PkiError::Usage("no secure random source".into()))?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let _lock = ca.lock()?;
    let mut file = load(ca)?;
    file.tokens.retain(|e| e.expires_at > now);
    if file.tokens.len() >= MAX_TOKENS {
        return Err(PkiError::Usage(format!(
            "{MAX_TOKENS} unexpired tokens already: wait for some to expire"
        )));
    }
    file.tokens.push(TokenEntry {
        name: name.to_owned(),
        sha256: token_hash(&token),
        expires_at: now.saturating_add(ttl),
        used_at: None,
        ou: ou.map(str::to_owned),
    });
    save(ca, &file)?;
    Ok(token)
}

/// [`mint_with_ou`] without an OU.
///
/// # Errors
/// As [`mint_with_ou`].
pub fn mint(ca: &Ca, name: &str, ttl: Duration, now: i64) -> Result<String, PkiError> {
    mint_with_ou(ca, name, None, ttl, now)
}

/// Whether `token` would be accepted for `name` at `now` (reads the file; changes nothing).
#[must_use]
pub fn check(ca: &Ca, name: &str, token: &str, now: i64) -> Check {
    match load(ca) {
        Ok(file) => match judge(&file.tokens, name, &token_hash(token), now) {
            Ok(i) => Check::Good(file.tokens.get(i).and_then(|e| e.ou.clone())),
            Err(r) => Check::Refused(r),
        },
        Err(e) => Check::Error(e),
    }
}

/// The answer of [`check`] and [`spend_locked`].
#[derive(Debug)]
pub enum Check {
    /// Accepted (and, by [`spend_locked`], spent); the OU the token was minted with.
    Good(Option<String>),
    /// Refused.
    Refused(TokenRefusal),
    /// The file could not be read or written (fail closed: refused).
    Error(PkiError),
}

/// Spends `token` for `name` at `now`: judged again and marked used, the file replaced. The
/// caller holds [`Ca::lock`] (and issues the certificate under the same lock).
#[must_use]
pub fn spend_locked(ca: &Ca, name: &str, token: &str, now: i64) -> Check {
    let mut file = match load(ca) {
        Ok(f) => f,
        Err(e) => return Check::Error(e),
    };
    let i = match judge(&file.tokens, name, &token_hash(token), now) {
        Ok(i) => i,
        Err(r) => return Check::Refused(r),
    };
    let mut ou = None;
    if let Some(e) = file.tokens.get_mut(i) {
        e.used_at = Some(now);
        ou.clone_from(&e.ou);
    }
    file.tokens.retain(|e| e.expires_at > now);
    match save(ca, &file) {
        Ok(()) => Check::Good(ou),
        Err(e) => Check::Error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, hash: &str, expires_at: i64, used_at: Option<i64>) -> TokenEntry {
        TokenEntry {
            name: name.into(),
            sha256: hash.into(),
            expires_at,
            used_at,
            ou: None,
        }
    }

    #[test]
    fn judge_table() {
        let entries = [
            entry("a", "h1", 100, None),
            entry("b", "h2", 100, Some(10)),
            entry("c", "h3", 50, None),
        ];
        let cases: &[(&str, &str, i64, Result<usize, TokenRefusal>)] = &[
            ("a", "h1", 99, Ok(0)),
            ("a", "h1", 100, Err(TokenRefusal::Expired)),
            ("b", "h1", 10, Err(TokenRefusal::Foreign)),
            ("b", "h2", 10, Err(TokenRefusal::Used)),
            ("c", "h3", 49, Ok(2)),
            ("c", "h3", 51, Err(TokenRefusal::Expired)),
            ("a", "nope", 1, Err(TokenRefusal::Unknown)),
        ];
        for (name, hash, now, want) in cases {
            assert_eq!(
                judge(&entries, name, hash, *now),
                *want,
                "{name} {hash} {now}"
            );
        }
    }

    #[test]
    fn mint_check_spend_once() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init(dir.path(), "t", 10).unwrap();
        let t = mint(&ca, "dev-1", Duration::from_secs(60), 1000).unwrap();
        let stored = std::fs::read_to_string(ca.path(TOKENS_FILE)).unwrap();
        assert!(!stored.contains(&t), "the token itself is never stored");
        assert!(matches!(check(&ca, "dev-1", &t, 1001), Check::Good(None)));
        assert!(matches!(
            check(&ca, "dev-2", &t, 1001),
            Check::Refused(TokenRefusal::Foreign)
        ));
        assert!(matches!(
            check(&ca, "dev-1", &t, 1060),
            Check::Refused(TokenRefusal::Expired)
        ));
        {
            let _l = ca.lock().unwrap();
            assert!(matches!(
                spend_locked(&ca, "dev-1", &t, 1002),
                Check::Good(None)
            ));
            assert!(matches!(
                spend_locked(&ca, "dev-1", &t, 1003),
                Check::Refused(TokenRefusal::Used)
            ));
        }
        assert!(mint(&ca, "dev-1", Duration::ZERO, 1000).is_err());
        assert!(mint(&ca, "dev-1", MAX_TTL + Duration::from_secs(1), 1000).is_err());
        assert!(mint(&ca, "../x", Duration::from_secs(60), 1000).is_err());
        let t = mint_with_ou(&ca, "dev-2", Some("devices"), Duration::from_secs(60), 1000).unwrap();
        assert!(matches!(check(&ca, "dev-2", &t, 1001), Check::Good(Some(ou)) if ou == "devices"));
        assert!(mint_with_ou(&ca, "dev-2", Some("a\nb"), Duration::from_secs(60), 1000).is_err());
        assert!(mint_with_ou(&ca, "dev-2", Some(""), Duration::from_secs(60), 1000).is_err());
    }

    #[test]
    fn the_file_is_bounded_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init(dir.path(), "t", 10).unwrap();
        let file = TokenFile {
            tokens: (0..MAX_TOKENS)
                .map(|i| entry("d", &format!("h{i}"), 2000, None))
                .collect(),
        };
        save(&ca, &file).unwrap();
        assert!(
            mint(&ca, "d", Duration::from_secs(60), 1000).is_err(),
            "full: refused"
        );
        // Once they have expired they are dropped, and minting works again.
        mint(&ca, "d", Duration::from_secs(60), 2000).unwrap();
        assert_eq!(load(&ca).unwrap().tokens.len(), 1);
    }
}
