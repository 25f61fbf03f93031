//! The credential a session runs on: the token that authenticated it (replaced by each MQTT 5
//! re-authentication, and waking the session's expiry watch when it is), which credential ends the
//! session, and the pure verdict on a re-authentication.

use std::sync::Arc;

use super::connect::SessionIdentity;
use crate::auth::token::TokenFailure;

/// What a session keeps of the token that authenticated it.
#[derive(Debug, Clone)]
pub struct TokenBinding {
    /// Presented as MQTT 5 Authentication Data (`auth_method`): the client may re-authenticate.
    pub via_auth_method: bool,
    /// The groups it claimed (`groups_claim`), for the policy; a re-authentication must claim the
    /// same ones.
    pub groups: Vec<String>,
    /// The token in force, replaced by each re-authentication.
    pub state: Arc<TokenState>,
}

/// The token a session runs on now (replaced by each re-authentication; the session then moves
/// its watch's alarm, `registry::signal::CREDENTIAL`).
#[derive(Debug)]
pub struct TokenState {
    current: std::sync::Mutex<TokenInForce>,
}

/// The token a session runs on now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInForce {
    /// The key that signed it.
    pub kid: String,
    /// That key's fingerprint: a JWKS reload that removes or changes the key ends the session.
    pub fingerprint: [u8; 32],
    /// When it stops being valid: `exp + leeway`, unix seconds (invalid from that second on).
    pub valid_until: u64,
}

impl TokenBinding {
    /// A binding to the token `t`, verified under `config`.
    #[must_use]
    pub fn new(
        t: crate::auth::token::VerifiedToken,
        config: &crate::config::TokenConfig,
        via_auth_method: bool,
    ) -> Self {
        Self {
            via_auth_method,
            groups: t.groups,
            state: Arc::new(TokenState {
                current: std::sync::Mutex::new(TokenInForce {
                    kid: t.kid,
                    fingerprint: t.key_fingerprint,
                    valid_until: t.expires_at.saturating_add(config.leeway.as_secs()),
                }),
            }),
        }
    }

    /// The token in force (a copy).
    #[must_use]
    pub fn now(&self) -> TokenInForce {
        self.state
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts a re-authentication's token in force.
    pub fn replace(&self, new: TokenInForce) {
        *self
            .state
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new;
    }
}

/// The current time as unix seconds (0 before 1970).
#[must_use]
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Which credential ends a session ([`SessionIdentity::credential_end`]): the reason of its
/// `credential_expired` audit line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The client certificate's notAfter.
    Certificate,
    /// The token's `exp`.
    Token,
}

impl Credential {
    /// The audit `reason`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Certificate => "certificate",
            Self::Token => "token",
        }
    }
}

/// Why an MQTT 5 re-authentication was refused (the session then ends with 0x87).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReauthFailure {
    /// The token itself is refused.
    Token(TokenFailure),
    /// A good token for another principal than the session's.
    OtherPrincipal,
    /// A good token claiming other groups than the session's: its policy was resolved for those
    /// (a device whose groups changed reconnects).
    OtherGroups,
}

impl ReauthFailure {
    /// The audit `reason`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Token(f) => f.auth_failure().as_str(),
            Self::OtherPrincipal => "principal_changed",
            Self::OtherGroups => "groups_changed",
        }
    }

    /// The audit `detail`.
    #[must_use]
    pub const fn detail(self) -> &'static str {
        match self {
            Self::Token(f) => f.as_str(),
            Self::OtherPrincipal => "the fresh token names another principal",
            Self::OtherGroups => "the fresh token claims other groups",
        }
    }
}

/// The verdict on a re-authentication with `token` at `now` (unix seconds), under the key set and
/// rules in force: the token that takes over, or why not. Pure.
///
/// # Errors
/// See [`ReauthFailure`].
pub fn judge_reauthentication(
    identity: &SessionIdentity,
    keys: Option<&crate::auth::token::TokenKeys>,
    config: Option<&crate::config::TokenConfig>,
    token: &[u8],
    now: u64,
) -> Result<TokenInForce, ReauthFailure> {
    let (Some(keys), Some(config)) = (keys, config) else {
        return Err(ReauthFailure::Token(TokenFailure::UnknownKey));
    };
    let t = crate::auth::token::verify(keys, config, token, now).map_err(ReauthFailure::Token)?;
    if identity.principal.as_deref() != Some(t.principal.as_str()) {
        return Err(ReauthFailure::OtherPrincipal);
    }
    let held = identity
        .token
        .as_ref()
        .map_or(&[][..], |b| b.groups.as_slice());
    let mut a: Vec<&str> = held.iter().map(String::as_str).collect();
    let mut b: Vec<&str> = t.groups.iter().map(String::as_str).collect();
    a.sort_unstable();
    a.dedup();
    b.sort_unstable();
    b.dedup();
    if a != b {
        return Err(ReauthFailure::OtherGroups);
    }
    Ok(TokenInForce {
        kid: t.kid,
        fingerprint: t.key_fingerprint,
        valid_until: t.expires_at.saturating_add(config.leeway.as_secs()),
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::session::connect::{CertInfo, cert};

    fn token_config() -> crate::config::TokenConfig {
        crate::config::TokenConfig {
            jwks_file: "jwks.json".into(),
            algorithms: vec![crate::config::TokenAlgorithm::ES256],
            issuer: None,
            audience: None,
            principal_claim: "sub".into(),
            groups_claim: Some("groups".into()),
            max_lifetime: std::time::Duration::from_secs(3600),
            leeway: std::time::Duration::from_secs(5),
            auth_method: "JWT".into(),
        }
    }

    fn identity(
        principal: &str,
        token: Option<TokenBinding>,
        cert: Option<CertInfo>,
    ) -> SessionIdentity {
        SessionIdentity {
            listener: Arc::from("mqtts"),
            peer: SocketAddr::from(([10, 0, 0, 7], 1883)),
            principal: Some(principal.to_owned()),
            client_id: principal.to_owned(),
            anonymous: false,
            cert,
            password_user: None,
            password_fingerprint: None,
            will: None,
            token: token.map(Box::new),
            ocsp: None,
        }
    }

    /// lifecycle.md: a re-authentication must bring a good token for the same principal (and, here,
    /// the same groups); the session's end then moves to the new `exp` (+ leeway).
    #[test]
    fn reauthentication_table() {
        use crate::auth::token::{TokenKeys, verify};
        use crate::auth::token_issuer::Issuer;
        use jsonwebtoken::Algorithm;
        use serde_json::json;
        const NOW: u64 = 1_800_000_000;
        let key = Issuer::new("k1", Algorithm::ES256).unwrap();
        let stranger = Issuer::new("k1", Algorithm::ES256).unwrap();
        let keys =
            TokenKeys::parse(std::path::Path::new("j"), Issuer::jwks(&[&key]).as_bytes()).unwrap();
        let cfg = token_config();
        let claims = |sub: &str, exp: u64, groups: &[&str]| json!({"sub": sub, "iat": NOW - 10, "exp": exp, "groups": groups});
        let first = key.mint(&claims("dev-1", NOW + 60, &["a", "b"])).unwrap();
        let binding = TokenBinding::new(
            verify(&keys, &cfg, first.as_bytes(), NOW).unwrap(),
            &cfg,
            true,
        );
        let id = identity("dev-1", Some(binding), None);
        assert_eq!(id.credential_end(), Some((NOW + 65, Credential::Token)));
        let rows: Vec<(&str, String, Result<u64, ReauthFailure>)> = vec![
            (
                "a fresh token",
                key.mint(&claims("dev-1", NOW + 600, &["b", "a"])).unwrap(),
                Ok(NOW + 605),
            ),
            (
                "a shorter one moves the end earlier",
                key.mint(&claims("dev-1", NOW + 20, &["a", "b"])).unwrap(),
                Ok(NOW + 25),
            ),
            (
                "another principal",
                key.mint(&claims("dev-2", NOW + 600, &["a", "b"])).unwrap(),
                Err(ReauthFailure::OtherPrincipal),
            ),
            (
                "other groups",
                key.mint(&claims("dev-1", NOW + 600, &["a"])).unwrap(),
                Err(ReauthFailure::OtherGroups),
            ),
            (
                "expired",
                key.mint(&claims("dev-1", NOW - 5, &["a", "b"])).unwrap(),
                Err(ReauthFailure::Token(TokenFailure::Expired)),
            ),
            (
                "another key under the kid",
                stranger
                    .mint(&claims("dev-1", NOW + 600, &["a", "b"]))
                    .unwrap(),
                Err(ReauthFailure::Token(TokenFailure::Signature)),
            ),
            (
                "not a token",
                "hunter2".to_owned(),
                Err(ReauthFailure::Token(TokenFailure::Malformed)),
            ),
        ];
        for (name, token, want) in rows {
            let got = judge_reauthentication(&id, Some(&keys), Some(&cfg), token.as_bytes(), NOW)
                .map(|t| t.valid_until);
            assert_eq!(got, want, "{name}");
        }
        // Tokens switched off by a reload: nothing verifies any more.
        let fresh = key.mint(&claims("dev-1", NOW + 600, &["a", "b"])).unwrap();
        assert_eq!(
            judge_reauthentication(&id, None, None, fresh.as_bytes(), NOW),
            Err(ReauthFailure::Token(TokenFailure::UnknownKey))
        );
        // A re-authentication's token takes over: the end moves, and a certificate that ends
        // sooner still wins.
        let binding = id.token.as_ref().unwrap();
        binding.replace(
            judge_reauthentication(&id, Some(&keys), Some(&cfg), fresh.as_bytes(), NOW).unwrap(),
        );
        assert_eq!(id.credential_end(), Some((NOW + 605, Credential::Token)));
        let mut short_cert = cert(Some("dev-1"));
        short_cert.identity.not_after_unix = i64::try_from(NOW + 100).unwrap();
        let both = identity("dev-1", Some((**binding).clone()), Some(short_cert));
        assert_eq!(
            both.credential_end(),
            Some((NOW + 101, Credential::Certificate))
        );
        assert_eq!(identity("dev-1", None, None).credential_end(), None);
    }
}
