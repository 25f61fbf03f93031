//! JWT device tokens (`[auth.token]`): the key set they are checked against (an RFC 7517 JWKS
//! file, loaded and refused whole like every other file) and the verdict on one token at a given
//! time. Pure: the clock is an argument, so every claim rule is tested as a table.
//!
//! The signature is checked by `jsonwebtoken` on aws-lc-rs; everything about time and claims is
//! decided here, with `now` passed in. What is refused, whatever the configuration says: `none`,
//! `HS*` (a shared secret in a key set anyone may read), a key whose family or curve does not fit
//! the header's algorithm, a `crit` header (no extension is understood), a key set holding a
//! private key or a symmetric key.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{TokenAlgorithm, TokenConfig};
use crate::labels::AuthFailure;

/// Longest token accepted (bytes). Real device tokens are well under 2 KiB; the cap bounds the
/// base64 and JSON work a client can ask for per CONNECT or AUTH.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Largest JWKS file read.
pub const MAX_JWKS_FILE: u64 = 1024 * 1024;
/// Most keys in one JWKS.
pub const MAX_KEYS: usize = 1000;
/// Most groups a token may claim, and the longest group or principal name (bytes).
pub const MAX_GROUPS: usize = 64;
/// See [`MAX_GROUPS`].
pub const MAX_NAME_LEN: usize = 1024;
/// Smallest RSA modulus accepted in a JWKS (bits).
pub const MIN_RSA_BITS: usize = 2048;

/// One public key of the set.
struct TokenKey {
    key: DecodingKey,
    /// What the key can verify.
    kind: KeyKind,
    /// The key's own `alg`, when the JWKS names one: the header must then say the same.
    alg: Option<Algorithm>,
    /// SHA-256 of the key's public parameters: a reload that changes the key behind a `kid`
    /// ends the sessions it authenticated, as one that removes it does.
    fingerprint: [u8; 32],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (Self::P256, Algorithm::ES256)
                | (Self::P384, Algorithm::ES384)
                | (Self::Ed25519, Algorithm::EdDSA)
                | (
                    Self::Rsa,
                    Algorithm::RS256
                        | Algorithm::RS384
                        | Algorithm::RS512
                        | Algorithm::PS256
                        | Algorithm::PS384
                        | Algorithm::PS512
                )
        )
    }
}

/// The key set of `auth.token.jwks_file`, by `kid`.
pub struct TokenKeys {
    keys: HashMap<String, TokenKey>,
}

impl fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("TokenKeys").field("kids", &kids).finish()
    }
}

/// Why a JWKS file was refused (whole: the last good set stays in force).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The file cannot be read, or is larger than [`MAX_JWKS_FILE`].
    #[error("{file}: {reason}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file, or one key of it, is not acceptable.
    #[error("{file}: {what}: {reason}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// `keys[3] (kid "k1")`, or `the file`.
        what: String,
        /// Why.
        reason: String,
    },
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<Value>,
}

impl TokenKeys {
    /// Reads and checks `path`.
    ///
    /// # Errors
    /// See [`JwksError`].
    pub fn load(path: &Path) -> Result<Self, JwksError> {
        let read = |reason: String| JwksError::Read {
            file: path.to_owned(),
            reason,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| read(e.to_string()))?
            .len();
        if len > MAX_JWKS_FILE {
            return Err(read(format!(
                "{len} bytes; a key set is at most {MAX_JWKS_FILE}"
            )));
        }
        let text = std::fs::read(path).map_err(|e| read(e.to_string()))?;
        Self::parse(path, &text)
    }

    /// Checks a JWKS document (`file` names it in errors).
    ///
    /// # Errors
    /// See [`JwksError`].
    pub fn parse(file: &Path, text: &[u8]) -> Result<Self, JwksError> {
        let invalid = |what: String, reason: String| JwksError::Invalid {
            file: file.to_owned(),
            what,
            reason,
        };
        let set: RawSet = serde_json::from_slice(text).map_err(|e| {
            invalid(
                "the file".to_owned(),
                format!("not a JWK set ({{\"keys\": [...]}}): {e}"),
            )
        })?;
        if set.keys.len() > MAX_KEYS {
            return Err(invalid(
                "the file".to_owned(),
                format!("{} keys; at most {MAX_KEYS}", set.keys.len()),
            ));
        }
        let mut keys = HashMap::with_capacity(set.keys.len());
        for (i, raw) in set.keys.iter().enumerate() {
            let kid = raw.get("kid").and_then(Value::as_str).unwrap_or_default();
            let what = if kid.is_empty() {
                format!("keys[{i}]")
            } else {
                format!("keys[{i}] (kid {kid:?})")
            };
            let key = parse_key(raw).map_err(|reason| invalid(what.clone(), reason))?;
            if kid.is_empty() {
                return Err(invalid(
                    what,
                    "no `kid`: tokens choose their key by kid".to_owned(),
                ));
            }
            if keys.insert(kid.to_owned(), key).is_some() {
                return Err(invalid(what, "the same kid twice".to_owned()));
            }
        }
        Ok(Self { keys })
    }

    /// The fingerprint of the key behind `kid`, if the set has one.
    #[must_use]
    pub fn fingerprint(&self, kid: &str) -> Option<[u8; 32]> {
        self.keys.get(kid).map(|k| k.fingerprint)
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set is empty (every token is then refused).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// One key of a JWKS, checked: public, asymmetric, for signatures, of a size and curve that is
/// accepted.
fn parse_key(raw: &Value) -> Result<TokenKey, String> {
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        if raw.get(private).is_some() {
            return Err(format!(
                "holds the private or secret member {private:?}: publish public keys only (and replace this one: it has been exposed)"
            ));
        }
    }
    if let Some(usage) = raw.get("use")
        && usage.as_str() != Some("sig")
    {
        return Err(format!(
            "\"use\": {usage} (only \"sig\" keys verify tokens)"
        ));
    }
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|e| e.to_string())?;
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p.n.trim_end_matches('='))
                .map_err(|e| format!("modulus: {e}"))?;
            let leading = n.iter().take_while(|&&b| b == 0).count();
            let bits = n.len().saturating_sub(leading).saturating_mul(8);
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "an RSA key of about {bits} bits; at least {MIN_RSA_BITS}"
                ));
            }
            KeyKind::Rsa
        }
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::P256,
            EllipticCurve::P384 => KeyKind::P384,
            ref other => return Err(format!("curve {other:?} is not accepted (P-256, P-384)")),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => KeyKind::Ed25519,
            ref other => return Err(format!("curve {other:?} is not accepted (Ed25519)")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err(
                "a symmetric (\"oct\") key: anyone who can read it could mint tokens".to_owned(),
            );
        }
        _ => return Err("unknown key type".to_owned()),
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => {
            let alg = key_algorithm(a).ok_or_else(|| format!("\"alg\" {a:?} is not accepted"))?;
            if !kind.fits(alg) {
                return Err(format!("\"alg\" {a:?} does not fit the key"));
            }
            Some(alg)
        }
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
    Ok(TokenKey {
        key,
        kind,
        alg,
        fingerprint: public_fingerprint(&jwk),
    })
}

fn key_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

fn public_fingerprint(jwk: &Jwk) -> [u8; 32] {
    let mut h = Sha256::new();
    match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            for part in ["RSA", &p.n, &p.e] {
                h.update(part.as_bytes());
                h.update([0]);
            }
        }
        AlgorithmParameters::EllipticCurve(p) => {
            for part in ["EC", &p.x, &p.y] {
                h.update(part.as_bytes());
                h.update([0]);
            }
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            for part in ["OKP", &p.x] {
                h.update(part.as_bytes());
                h.update([0]);
            }
        }
        _ => {}
    }
    h.update(format!("{:?}", jwk.common.key_algorithm).as_bytes());
    h.finalize().into()
}

/// What a good token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The principal (`principal_claim`).
    pub principal: String,
    /// The groups (`groups_claim`), when configured and present.
    pub groups: Vec<String>,
    /// `exp`, unix seconds: the session ends then.
    pub expires_at: u64,
    /// The key that signed it.
    pub kid: String,
    /// That key's fingerprint when it was used.
    pub key_fingerprint: [u8; 32],
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFailure {
    /// Not a compact JWS (three base64url parts, a JSON header and payload), or too long.
    Malformed,
    /// The header's algorithm is not on the allow-list (`none`, `HS256`, ...) or does not fit its
    /// key; or a `crit` header.
    Algorithm,
    /// No `kid`, or one the key set does not hold.
    UnknownKey,
    /// The signature does not verify.
    Signature,
    /// `exp` has passed (beyond `leeway`).
    Expired,
    /// `nbf` or `iat` lies in the future (beyond `leeway`).
    NotYetValid,
    /// No `exp`, or a claim of the wrong type.
    MissingClaim,
    /// `exp - iat` (or `exp - now`) above `max_lifetime`.
    Lifetime,
    /// `iss` is not the configured issuer.
    Issuer,
    /// `aud` does not contain the configured audience.
    Audience,
    /// The principal claim is missing, empty, too long or not a usable name.
    Principal,
    /// The groups claim is not an array of usable names, or has too many.
    Groups,
}

impl TokenFailure {
    /// The `auth_failures_total` reason.
    #[must_use]
    pub const fn auth_failure(self) -> AuthFailure {
        match self {
            Self::Expired => AuthFailure::TokenExpired,
            Self::Malformed | Self::Algorithm | Self::Signature => AuthFailure::TokenSignature,
            Self::UnknownKey => AuthFailure::TokenUnknownKey,
            Self::NotYetValid
            | Self::MissingClaim
            | Self::Lifetime
            | Self::Issuer
            | Self::Audience
            | Self::Principal
            | Self::Groups => AuthFailure::TokenClaims,
        }
    }

    /// A short description for logs and the audit line's `detail`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "not a compact JWS",
            Self::Algorithm => "algorithm not accepted",
            Self::UnknownKey => "unknown key id",
            Self::Signature => "bad signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not yet valid (nbf or iat in the future)",
            Self::MissingClaim => "exp missing or a claim of the wrong type",
            Self::Lifetime => "lifetime above max_lifetime",
            Self::Issuer => "wrong issuer",
            Self::Audience => "wrong audience",
            Self::Principal => "no usable principal claim",
            Self::Groups => "unusable groups claim",
        }
    }
}

/// The header members read before the signature is checked.
#[derive(Deserialize)]
struct HeaderPeek {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

fn allowed(config: &TokenConfig) -> impl Iterator<Item = Algorithm> + '_ {
    config.algorithms.iter().map(|a| match a {
        TokenAlgorithm::ES256 => Algorithm::ES256,
        TokenAlgorithm::ES384 => Algorithm::ES384,
        TokenAlgorithm::RS256 => Algorithm::RS256,
        TokenAlgorithm::RS384 => Algorithm::RS384,
        TokenAlgorithm::RS512 => Algorithm::RS512,
        TokenAlgorithm::PS256 => Algorithm::PS256,
        TokenAlgorithm::PS384 => Algorithm::PS384,
        TokenAlgorithm::PS512 => Algorithm::PS512,
        TokenAlgorithm::EdDSA => Algorithm::EdDSA,
    })
}

/// Whether `bytes` has the shape of a compact JWS (`xxx.yyy.zzz`, base64url): a CONNECT password
/// of that shape is read as a token when the listener accepts tokens.
#[must_use]
pub fn looks_like_token(bytes: &[u8]) -> bool {
    bytes.len() <= MAX_TOKEN_LEN
        && bytes.iter().filter(|&&b| b == b'.').count() == 2
        && bytes.starts_with(b"eyJ")
        && bytes
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
}

/// The verdict on `token` at `now` (unix seconds).
///
/// # Errors
/// Why it is refused ([`TokenFailure`]).
pub fn verify(
    keys: &TokenKeys,
    config: &TokenConfig,
    token: &[u8],
    now: u64,
) -> Result<VerifiedToken, TokenFailure> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenFailure::Malformed);
    }
    let mut parts = token.split(|&b| b == b'.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenFailure::Malformed);
    };
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenFailure::Malformed)?;
    let header: HeaderPeek =
        serde_json::from_slice(&header).map_err(|_| TokenFailure::Malformed)?;
    if header.crit.is_some() {
        return Err(TokenFailure::Algorithm);
    }
    let alg: Algorithm = header.alg.parse().map_err(|_| TokenFailure::Algorithm)?;
    if !allowed(config).any(|a| a == alg) {
        return Err(TokenFailure::Algorithm);
    }
    let kid = header.kid.ok_or(TokenFailure::UnknownKey)?;
    let key = keys.keys.get(&kid).ok_or(TokenFailure::UnknownKey)?;
    if !key.kind.fits(alg) || key.alg.is_some_and(|a| a != alg) {
        return Err(TokenFailure::Algorithm);
    }
    let mut validation = Validation::new(alg);
    // Time and claims are judged below, with `now` given; the library checks the signature only.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims =
        jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature
                | jsonwebtoken::errors::ErrorKind::InvalidEcdsaKey
                | jsonwebtoken::errors::ErrorKind::InvalidRsaKey(_) => TokenFailure::Signature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenFailure::Algorithm,
                _ => TokenFailure::Malformed,
            })?
            .claims;
    judge_claims(&claims, config, now).map(|(principal, groups, expires_at)| VerifiedToken {
        principal,
        groups,
        expires_at,
        kid,
        key_fingerprint: key.fingerprint,
    })
}

/// A NumericDate claim (RFC 7519 §2: seconds, possibly fractional), floored; `Err` when present
/// but not a non-negative number.
fn numeric_date(
    claims: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<u64>, TokenFailure> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| {
                v.as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1e15)
                    .map(|f| {
                        // Floored and bounded above, so the conversion is exact.
                        #[allow(
                            clippy::as_conversions,
                            clippy::cast_possible_truncation,
                            clippy::cast_sign_loss
                        )]
                        let secs = f.floor() as u64;
                        secs
                    })
            })
            .map(Some)
            .ok_or(TokenFailure::MissingClaim),
    }
}

/// A name from a claim: a valid MQTT string (it becomes the user name the broker sees), not empty,
/// at most [`MAX_NAME_LEN`] bytes, no wildcard (`+`, `#`: `%u` in a filter must stay one level).
fn usable_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && !s.contains(['+', '#'])
        && mqtt_inspect::check_utf8(s.as_bytes(), "token claim").is_ok()
}

type Judged = (String, Vec<String>, u64);

/// The time and claim rules, at `now`.
fn judge_claims(
    claims: &serde_json::Map<String, Value>,
    config: &TokenConfig,
    now: u64,
) -> Result<Judged, TokenFailure> {
    let leeway = config.leeway.as_secs();
    let exp = numeric_date(claims, "exp")?.ok_or(TokenFailure::MissingClaim)?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    // RFC 7519 §4.1.4: not accepted "on or after" exp.
    if now >= exp.saturating_add(leeway) {
        return Err(TokenFailure::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway))
        || iat.is_some_and(|iat| iat > now.saturating_add(leeway))
    {
        return Err(TokenFailure::NotYetValid);
    }
    let from = iat.unwrap_or(now);
    if Duration::from_secs(exp.saturating_sub(from)) > config.max_lifetime {
        return Err(TokenFailure::Lifetime);
    }
    if let Some(issuer) = &config.issuer
        && claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str())
    {
        return Err(TokenFailure::Issuer);
    }
    if let Some(audience) = &config.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == audience,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !ok {
            return Err(TokenFailure::Audience);
        }
    }
    let principal = claims
        .get(&config.principal_claim)
        .and_then(Value::as_str)
        .filter(|p| usable_name(p))
        .ok_or(TokenFailure::Principal)?
        .to_owned();
    let groups = match config.groups_claim.as_ref().and_then(|c| claims.get(c)) {
        None => Vec::new(),
        Some(Value::Array(list)) if list.len() <= MAX_GROUPS => list
            .iter()
            .map(|g| {
                g.as_str()
                    .filter(|g| usable_name(g))
                    .map(str::to_owned)
                    .ok_or(TokenFailure::Groups)
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(TokenFailure::Groups),
    };
    Ok((principal, groups, exp))
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
