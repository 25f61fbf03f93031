//! Stored password hash formats: Mosquitto `$6$` (SHA-512(password ‖ salt)) and `$7$`
//! (PBKDF2-HMAC-SHA512), and argon2id PHC strings: parsing, constant-time verification, and
//! hashing new passwords (`mqtt-gateway passwd`). Messages never quote a hash.

use std::fmt;

use std::sync::{Mutex, PoisonError};

use argon2::password_hash::phc::{PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHasher, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

/// Iterations for new `$7$` hashes: Mosquitto 2.1's default (2.0 accepts it).
pub const MOSQUITTO_PBKDF2_ITERATIONS: u32 = 210_000;

/// `$7$` iterations above this are refused: a typo would make every login a denial of service.
pub const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// Refused above this (KiB): a typo would make the first login exhaust memory.
const MAX_ARGON2_MEMORY_KIB: u32 = 1024 * 1024;

/// Salt length of `$6$` lines and of the `$7$` lines we write (Mosquitto 2.0 accepts only 12).
const MOSQUITTO_SALT_LEN: usize = 12;

/// An argon2id hash with the crate's default parameters (m=19456, t=2, p=1) and a zero salt:
/// what an unknown user is verified against when the file has no entry to model the cost on.
const DEFAULT_DUMMY_ARGON2: &str = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// A password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// A stored hash. Its `Debug` is redacted.
pub(crate) enum Hash {
    /// `$6$`: SHA-512(password ‖ salt), one round.
    Sha512 {
        salt: [u8; MOSQUITTO_SALT_LEN],
        digest: [u8; 64],
    },
    /// `$7$`: PBKDF2-HMAC-SHA512, 64-byte output.
    Pbkdf2 {
        iterations: u32,
        salt: Box<[u8]>,
        digest: [u8; 64],
    },
    /// `$argon2id$` PHC string.
    Argon2id(Box<PasswordHash>),
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Self::Sha512 { .. } => "$6$",
            Self::Pbkdf2 { .. } => "$7$",
            Self::Argon2id(_) => "$argon2id$",
        };
        write!(f, "Hash({kind} <redacted>)")
    }
}

/// What makes two hashes cost the same to verify.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Cost {
    Sha512,
    Pbkdf2(u32),
    Argon2(String),
}

impl Hash {
    pub(crate) fn cost(&self) -> Cost {
        match self {
            Self::Sha512 { .. } => Cost::Sha512,
            Self::Pbkdf2 { iterations, .. } => Cost::Pbkdf2(*iterations),
            Self::Argon2id(h) => Cost::Argon2(h.params.to_string()),
        }
    }

    /// argon2id with the default parameters: the dummy of a file without entries.
    pub(crate) fn default_dummy() -> Self {
        PasswordHash::new(DEFAULT_DUMMY_ARGON2).map_or(
            Self::Sha512 {
                salt: [0; MOSQUITTO_SALT_LEN],
                digest: [0; 64],
            },
            |h| Self::Argon2id(Box::new(h)),
        )
    }

    /// A hash of the same kind and cost that no password verifies against in practice.
    pub(crate) fn dummy_like(&self) -> Self {
        match self {
            Self::Sha512 { .. } => Self::Sha512 {
                salt: [0; MOSQUITTO_SALT_LEN],
                digest: [0; 64],
            },
            Self::Pbkdf2 {
                iterations, salt, ..
            } => Self::Pbkdf2 {
                iterations: *iterations,
                salt: vec![0; salt.len()].into_boxed_slice(),
                digest: [0; 64],
            },
            Self::Argon2id(h) => {
                let mut h = h.clone();
                if let Ok(salt) = Salt::new(&[0; 16]) {
                    h.salt = Some(salt);
                }
                Self::Argon2id(h)
            }
        }
    }

    /// Computes the hash of `password` and compares it in constant time.
    pub(crate) fn verify(&self, password: &[u8]) -> bool {
        match self {
            Self::Sha512 { salt, digest } => {
                let mut h = Sha512::new();
                h.update(password);
                h.update(salt);
                h.finalize().as_slice().ct_eq(digest).into()
            }
            Self::Pbkdf2 {
                iterations,
                salt,
                digest,
            } => {
                let mut out = [0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut out);
                out.ct_eq(digest).into()
            }
            Self::Argon2id(h) => verify_argon2(h, password),
        }
    }
}

/// Argon2 work buffers kept for reuse: at most one per verification slot
/// ([`super::AUTH_CONCURRENCY`]). Allocating a fresh buffer (19 MiB with the default
/// parameters) per check let the allocator keep each one after it was freed: unauthenticated
/// clients grew the process by hundreds of MiB with a few dozen wrong passwords. With the
/// verifications capped at `AUTH_CONCURRENCY` at a time, the buffers in use and kept together
/// never exceed `AUTH_CONCURRENCY` × the largest `m` of the password file.
static ARGON2_BUFFERS: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Buffers kept at most (more, checked out at once, are freed when returned).
const ARGON2_BUFFERS_KEPT: usize = super::AUTH_CONCURRENCY;

/// A buffer of at least `blocks` blocks: a kept one, grown if needed, or a new one. `None` when
/// the memory cannot be had (the check then fails closed).
fn checkout_argon2_buffer(blocks: usize) -> Option<Vec<Block>> {
    let kept = ARGON2_BUFFERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop();
    let mut buf = kept.unwrap_or_default();
    if buf.len() < blocks {
        buf.try_reserve_exact(blocks - buf.len()).ok()?;
        buf.resize(blocks, Block::new());
    }
    Some(buf)
}

fn return_argon2_buffer(buf: Vec<Block>) {
    let mut kept = ARGON2_BUFFERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if kept.len() < ARGON2_BUFFERS_KEPT {
        kept.push(buf);
    }
}

/// Buffers kept now and their bytes (for tests).
#[cfg(test)]
fn argon2_buffers_kept() -> (usize, usize) {
    let kept = ARGON2_BUFFERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let bytes = kept.iter().map(|b| b.len() * Block::SIZE).sum();
    (kept.len(), bytes)
}

/// What `PasswordVerifier::verify_password` does for a PHC string (the algorithm, version and
/// parameters of the hash, its salt, an output of its length), in a kept work buffer.
fn verify_argon2(h: &PasswordHash, password: &[u8]) -> bool {
    let (Some(salt), Some(expected)) = (&h.salt, &h.hash) else {
        return false;
    };
    let Ok(params) = Params::try_from(h) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(h.algorithm.as_str()) else {
        return false;
    };
    let version = match h.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let blocks = params.block_count();
    let mut out = [0u8; argon2::password_hash::phc::Output::MAX_LENGTH];
    let Some(out) = out.get_mut(..expected.len()) else {
        return false;
    };
    let Some(mut buf) = checkout_argon2_buffer(blocks) else {
        return false;
    };
    let hashed = buf.get_mut(..blocks).is_some_and(|memory| {
        Argon2::new(algorithm, version, params)
            .hash_password_into_with_memory(password, salt, out, memory)
            .is_ok()
    });
    return_argon2_buffer(buf);
    hashed && bool::from(out.ct_eq(expected.as_bytes()))
}

fn decode_b64(s: &str, what: &str) -> Result<Vec<u8>, String> {
    B64.decode(s)
        .map_err(|_| format!("{what} is not valid base64"))
}

fn digest64(s: &str) -> Result<[u8; 64], String> {
    <[u8; 64]>::try_from(decode_b64(s, "hash")?.as_slice())
        .map_err(|_| "hash must decode to 64 bytes".to_string())
}

/// Parses the hash field; messages never quote it.
pub(crate) fn parse_hash(stored: &str) -> Result<Hash, String> {
    if let Some(rest) = stored.strip_prefix("$6$") {
        let Some((salt, digest)) = rest.split_once('$') else {
            return Err("$6$ hash needs $6$<salt>$<hash>".into());
        };
        let salt = <[u8; MOSQUITTO_SALT_LEN]>::try_from(decode_b64(salt, "salt")?.as_slice())
            .map_err(|_| "$6$ salt must decode to 12 bytes".to_string())?;
        return Ok(Hash::Sha512 {
            salt,
            digest: digest64(digest)?,
        });
    }
    if let Some(rest) = stored.strip_prefix("$7$") {
        let mut parts = rest.split('$');
        let (Some(iterations), Some(salt), Some(digest), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("$7$ hash needs $7$<iterations>$<salt>$<hash>".into());
        };
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .filter(|n| *n >= 1 && iterations.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| "$7$ iterations must be a number of at least 1".to_string())?;
        if iterations > MAX_PBKDF2_ITERATIONS {
            return Err(format!(
                "$7$ iterations above {MAX_PBKDF2_ITERATIONS} would make each login a denial of service"
            ));
        }
        let salt = decode_b64(salt, "salt")?;
        if salt.len() != MOSQUITTO_SALT_LEN && salt.len() != 64 {
            return Err("$7$ salt must decode to 12 (or, Mosquitto 2.1, 64) bytes".into());
        }
        return Ok(Hash::Pbkdf2 {
            iterations,
            salt: salt.into_boxed_slice(),
            digest: digest64(digest)?,
        });
    }
    if stored.starts_with("$argon2id$") {
        let h = PasswordHash::new(stored).map_err(|e| format!("malformed argon2id hash: {e}"))?;
        let params = Params::try_from(&h).map_err(|e| format!("bad argon2id parameters: {e}"))?;
        if params.m_cost() > MAX_ARGON2_MEMORY_KIB {
            return Err(format!(
                "argon2id memory cost above {MAX_ARGON2_MEMORY_KIB} KiB would exhaust memory"
            ));
        }
        if h.salt.is_none() || h.hash.is_none() {
            return Err("argon2id hash without salt or output".into());
        }
        return Ok(Hash::Argon2id(Box::new(h)));
    }
    if stored.starts_with("$argon2") {
        return Err("only argon2id is supported among the argon2 variants".into());
    }
    Err("unsupported hash (expected $6$, $7$ or $argon2id$)".into())
}

/// Hashes a password as argon2id with the argon2 crate's defaults (m=19456 KiB, t=2, p=1) and a
/// random 16-byte salt; returns the PHC string.
///
/// # Errors
/// The system RNG failed.
pub fn hash_argon2id(password: &[u8]) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Hashes a password in the `$7$` format that Mosquitto 2.0 accepts:
/// `$7$<iterations>$<base64 12-byte salt>$<base64 64-byte PBKDF2-HMAC-SHA512>`.
///
/// # Errors
/// `iterations` is 0, or the system RNG failed.
pub fn hash_mosquitto_pbkdf2(password: &[u8], iterations: u32) -> Result<String, HashError> {
    if iterations == 0 {
        return Err(HashError("iterations must be at least 1".into()));
    }
    let random =
        argon2::password_hash::try_generate_salt().map_err(|e| HashError(e.to_string()))?;
    let salt = random
        .get(..MOSQUITTO_SALT_LEN)
        .ok_or_else(|| HashError("salt too short".into()))?;
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
    Ok(format!(
        "$7${iterations}${}${}",
        B64.encode(salt),
        B64.encode(out)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dummy_has_the_default_cost() {
        let h = PasswordHash::new(DEFAULT_DUMMY_ARGON2).unwrap();
        let p = Params::try_from(&h).unwrap();
        let d = Params::default();
        assert_eq!(
            (p.m_cost(), p.t_cost(), p.p_cost()),
            (d.m_cost(), d.t_cost(), d.p_cost())
        );
        assert!(matches!(Hash::default_dummy(), Hash::Argon2id(_)));
    }

    /// The pooled verifier agrees with the crate's own (`PasswordVerifier`), for the default
    /// parameters and for others (two lanes, a larger and a smaller `m`), and keeps at most
    /// `AUTH_CONCURRENCY` buffers however many checks run.
    #[test]
    fn pooled_argon2_agrees_with_the_crate_and_keeps_at_most_the_cap() {
        use argon2::PasswordVerifier as _;
        let mut lines = vec![hash_argon2id(b"secret").unwrap()];
        for (m, t, p) in [(8192, 1, 2), (32768, 1, 1), (64, 3, 1)] {
            let a = Argon2::new(
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(m, t, p, Some(32)).unwrap(),
            );
            lines.push(a.hash_password(b"secret").unwrap().to_string());
        }
        for line in &lines {
            let Hash::Argon2id(h) = parse_hash(line).unwrap() else {
                panic!("{line}")
            };
            for (pw, want) in [(&b"secret"[..], true), (b"Secret", false), (b"", false)] {
                assert_eq!(verify_argon2(&h, pw), want, "{line}");
                assert_eq!(Argon2::default().verify_password(pw, &*h).is_ok(), want);
            }
        }
        std::thread::scope(|s| {
            for _ in 0..3 * crate::auth::AUTH_CONCURRENCY {
                s.spawn(|| assert!(!Hash::default_dummy().verify(b"x")));
            }
        });
        let (kept, bytes) = argon2_buffers_kept();
        assert!(kept <= crate::auth::AUTH_CONCURRENCY, "{kept}");
        assert!(bytes <= kept * 32768 * 1024, "{bytes}");
    }

    #[test]
    fn debug_is_redacted() {
        let h = parse_hash("$6$H4x6GM0Ll3QUI3lK$aWg4EQj5OjylX0mHYp8Uh57JDgHjMpinQFTb/NupASYJEe8mFctWDdFsHZ3lK7vmFV/vjfg1GQM5tgqv2jTFCw==").unwrap();
        assert_eq!(format!("{h:?}"), "Hash($6$ <redacted>)");
    }
}
