//! The connect phase: read the first packet (it must be a CONNECT, within the one deadline that
//! also covered the TLS handshake), authenticate the client, apply the connect rules and judge the
//! Will, before anything reaches the broker.
//!
//! Who the client is, when it presents a certificate and `principal_from` names the certificate:
//! the certificate wins. A CONNECT username is allowed only when it equals that principal (a
//! device cannot present its own certificate and claim another account); the password is needed
//! only when `cert_is_credential = false`. With `principal_from = "username"` the username names
//! the client and its password is always verified, certificate or not: a certificate alone must
//! not let its holder pick any account.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use mqtt_inspect::{Connect, DecodeError, Peek, ReasonCode, peek_frame};
use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::{Instant, timeout_at};

use crate::auth::VerifyOutcome;
use crate::auth::token::TokenFailure;
use crate::config::{AuthMethod, PrincipalFrom};
use crate::identity::ClientIdentity;
use crate::metrics::{AclAction, AuthFailure, ConnectOutcome, RevocationReason};
use crate::policy::{ClientFacts, ClientPolicy, Decision, RuleRef};
use crate::shared::{Gateway, Snapshot};

pub use super::credential::{
    Credential, ReauthFailure, TokenBinding, TokenInForce, TokenState, judge_reauthentication,
    unix_now,
};

/// Why the first packet could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The deadline passed.
    Timeout,
    /// The client closed the connection.
    Closed,
    /// Bytes that are not an acceptable first frame.
    Malformed(DecodeError),
}

/// Reads exactly one frame from `stream` within `deadline`: the frame, and any bytes that came
/// after it (a client may send packets right behind its CONNECT).
///
/// # Errors
/// See [`ReadError`].
pub async fn read_first_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: Instant,
    max_packet_size: u32,
) -> Result<(BytesMut, BytesMut), ReadError> {
    let mut buf = BytesMut::with_capacity(256);
    loop {
        // Judged as soon as it arrives: a first byte that is not a CONNECT's is closed at once,
        // not held until the deadline waiting for the rest of a packet that cannot be accepted.
        if let Some(&first) = buf.first()
            && let Err(e) = mqtt_inspect::check_connect_first_byte(first)
        {
            return Err(ReadError::Malformed(e));
        }
        match peek_frame(&buf, max_packet_size) {
            Ok(Peek::Complete(h)) => {
                let frame = buf.split_to(h.frame_len());
                return Ok((frame, buf));
            }
            Ok(Peek::Incomplete { needed, .. }) => buf.reserve(needed),
            Err(e) => return Err(ReadError::Malformed(e)),
        }
        match timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_) => return Err(ReadError::Timeout),
            Ok(Ok(0) | Err(_)) => return Err(ReadError::Closed),
            Ok(Ok(_)) => {}
        }
    }
}

/// The client's certificate, as the session keeps it.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// The verified chain, leaf first, through admission; emptied when the relay starts, which
    /// re-verifies the TLS connection's own copy when CRLs change
    /// ([`SessionIdentity::recheck_chain`]).
    pub chain: Vec<CertificateDer<'static>>,
    /// Names and fields read from the leaf.
    pub identity: ClientIdentity,
}

/// For the unit tests of the connect phase: a certificate (no chain) with this CN and nothing
/// else.
#[cfg(test)]
pub(crate) fn cert(cn: Option<&str>) -> CertInfo {
    CertInfo {
        chain: Vec::new(),
        identity: ClientIdentity {
            cn: cn.map(str::to_owned),
            sans: Vec::new(),
            ous: Vec::new(),
            serial_hex: "01".into(),
            fingerprint_sha256_hex: "ab".into(),
            not_after_unix: 0,
        },
    }
}

/// Who the client is, established at CONNECT and kept for the life of the session.
#[derive(Debug, Clone)]
pub struct SessionIdentity {
    /// Listener name.
    pub listener: Arc<str>,
    /// Client address.
    pub peer: SocketAddr,
    /// The authenticated principal (`None` for an anonymous client).
    pub principal: Option<String>,
    /// The MQTT client id.
    pub client_id: String,
    /// Let in by `allow_anonymous`.
    pub anonymous: bool,
    /// The client certificate, when one was presented.
    pub cert: Option<CertInfo>,
    /// The user whose password was verified, when one was.
    pub password_user: Option<String>,
    /// Fingerprint of that user's password-file entry at CONNECT: a reload that changes or
    /// removes it ends the session.
    pub password_fingerprint: Option<[u8; 32]>,
    /// The topics of the client's Will: the broker publishes a Will long after CONNECT, so it is
    /// judged again under every new policy (boxed: most clients have none).
    pub will: Option<Box<WillTopics>>,
    /// The JWT device token that authenticated the client, when one did (boxed: most have none).
    pub token: Option<Box<TokenBinding>>,
    /// The OCSP answer for the client certificate, kept fresh while the session lives
    /// (`[listener.tls] ocsp`); a `revoked` answer ends the session.
    pub ocsp: Option<Arc<crate::ocsp::Lease>>,
}

/// The topics of a Will, as judged at CONNECT and on every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillTopics {
    /// The Will Topic (a publish by the client).
    pub topic: String,
    /// The Will's MQTT 5 Response Topic (the client must be allowed to receive the answer).
    pub response: Option<String>,
}

impl WillTopics {
    /// The first refusal of the Will under `policy`: the topic it was refused for and the decision.
    fn refused(&self, policy: &ClientPolicy) -> Option<(&str, Decision)> {
        let d = policy.publish(&self.topic);
        if !d.allowed {
            return Some((&self.topic, d));
        }
        let response = self.response.as_deref()?;
        let d = policy.receive(response);
        (!d.allowed).then_some((response, d))
    }
}

impl SessionIdentity {
    /// The facts the policy is resolved with.
    #[must_use]
    pub fn facts(&self) -> ClientFacts<'_> {
        ClientFacts {
            principal: self.principal.as_deref(),
            client_id: &self.client_id,
            cert_ous: self
                .cert
                .as_ref()
                .map_or(&[][..], |c| c.identity.ous.as_slice()),
            listener: &self.listener,
            source: self.peer.ip().to_canonical(),
            anonymous: self.anonymous,
            groups: self.token.as_ref().map_or(&[][..], |t| t.groups.as_slice()),
        }
    }

    /// When the session's credential ends (unix seconds): the earliest of the client
    /// certificate's notAfter and the token's `exp` (plus `leeway`). `None`: nothing expires.
    #[must_use]
    pub fn credential_end(&self) -> Option<(u64, Credential)> {
        let cert = self.cert.as_ref().map(|c| {
            (
                // Valid through its notAfter second (RFC 5280 §4.1.2.5), invalid from the next.
                u64::try_from(c.identity.not_after_unix)
                    .unwrap_or(0)
                    .saturating_add(1),
                Credential::Certificate,
            )
        });
        let token = self
            .token
            .as_ref()
            .map(|t| (t.now().valid_until, Credential::Token));
        match (cert, token) {
            (Some(c), Some(t)) => Some(if t.0 < c.0 { t } else { c }),
            (c, t) => c.or(t),
        }
    }

    /// Re-checks this session against a new snapshot: its certificate chain against the listener's
    /// new verifier (a new CRL or CA), its password entry, `allow_anonymous` for an anonymous
    /// client, its connect rule and its Will. `Some(reason)` when it may no longer stay
    /// ([`RevocationReason::Policy`] for the last three).
    #[must_use]
    pub fn recheck(&self, snap: &Snapshot) -> Option<RevocationReason> {
        self.recheck_chain(snap, self.cert.as_ref().map_or(&[], |c| &c.chain))
    }

    /// [`Self::recheck`] with the certificate chain as the TLS connection holds it (a relayed
    /// session keeps no copy of its own: [`CertInfo::chain`] is emptied when its relay starts).
    /// A session with a certificate and no chain is refused (fail closed).
    #[must_use]
    pub fn recheck_chain(
        &self,
        snap: &Snapshot,
        chain: &[CertificateDer<'static>],
    ) -> Option<RevocationReason> {
        if self.cert.is_some()
            && let Some(verifier) = snap.verifiers.get(&*self.listener)
            && crate::tls::reverify(verifier.as_ref(), chain, rustls_pki_types::UnixTime::now())
                .is_err()
        {
            return Some(RevocationReason::Crl);
        }
        if let Some(user) = &self.password_user {
            let now = snap.passwords.as_ref().and_then(|p| p.fingerprint(user));
            if now.is_none() || now != self.password_fingerprint {
                return Some(RevocationReason::Password);
            }
        }
        if let Some(token) = &self.token {
            let held = token.now();
            let now = snap.tokens.as_ref().and_then(|k| k.fingerprint(&held.kid));
            if now != Some(held.fingerprint) {
                return Some(RevocationReason::Token);
            }
        }
        if self.anonymous && !snap.config.auth.allow_anonymous {
            return Some(RevocationReason::Policy);
        }
        let policy = snap.policy.resolve(&self.facts());
        if !policy.connect().allowed {
            return Some(RevocationReason::Policy);
        }
        if self
            .will
            .as_ref()
            .is_some_and(|w| w.refused(&policy).is_some())
        {
            return Some(RevocationReason::Policy);
        }
        None
    }

    /// Whether `snap`'s policy refuses this session's Will (its topic, or its Response Topic).
    #[must_use]
    pub fn will_refused(&self, snap: &Snapshot) -> bool {
        self.will
            .as_ref()
            .is_some_and(|w| w.refused(&snap.policy.resolve(&self.facts())).is_some())
    }

    /// Certificate fingerprint, for audit lines.
    #[must_use]
    pub fn fingerprint(&self) -> Option<&str> {
        self.cert
            .as_ref()
            .map(|c| c.identity.fingerprint_sha256_hex.as_str())
    }

    /// Certificate serial, for audit lines.
    #[must_use]
    pub fn serial(&self) -> Option<&str> {
        self.cert.as_ref().map(|c| c.identity.serial_hex.as_str())
    }
}

/// A refused CONNECT: what the client is told and what is counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// MQTT 5 reason (mapped down for 3.x clients).
    pub reason: ReasonCode,
    /// `connections_total` outcome.
    pub outcome: ConnectOutcome,
    /// `auth_failures_total` reason, when authentication failed.
    pub auth_reason: Option<AuthFailure>,
    /// `acl_denied_total` action, when the policy refused.
    pub acl_action: Option<AclAction>,
    /// The topic of a refused Will.
    pub topic: Option<String>,
    /// The rule that decided.
    pub rule: Option<RuleRef>,
    /// The principal the client was established as before it was refused (a device refused for
    /// another device's client id is logged under its own name, not only the victim's id).
    pub principal: Option<String>,
    /// More about why, for the audit line (a token's failure, the method a listener refused).
    pub detail: Option<&'static str>,
}

impl Refusal {
    /// This refusal, known to come from `principal` (for its audit line).
    #[must_use]
    pub fn by(mut self, principal: Option<&str>) -> Self {
        self.principal = principal.map(str::to_owned);
        self
    }

    /// A refusal that is neither an authentication failure nor a policy decision of its own
    /// (a ban, an unreachable broker).
    #[must_use]
    pub const fn other(
        reason: ReasonCode,
        outcome: ConnectOutcome,
        auth_reason: Option<AuthFailure>,
    ) -> Self {
        Self {
            reason,
            outcome,
            auth_reason,
            acl_action: None,
            topic: None,
            rule: None,
            principal: None,
            detail: None,
        }
    }

    const fn auth(reason: ReasonCode, auth_reason: AuthFailure) -> Self {
        Self {
            reason,
            outcome: ConnectOutcome::AuthFailed,
            auth_reason: Some(auth_reason),
            acl_action: None,
            topic: None,
            rule: None,
            principal: None,
            detail: None,
        }
    }

    /// A verified certificate whose subject names cannot be read (`IdentityError::UnreadableName`):
    /// it names nobody, as a certificate without the configured name does.
    #[must_use]
    pub const fn unreadable_certificate() -> Self {
        Self::auth(
            ReasonCode::BadUserNameOrPassword,
            AuthFailure::BadCredentials,
        )
    }

    /// A client admitted under a snapshot that a reload replaced before its session began, and
    /// that the new one refuses ([`SessionIdentity::recheck`]'s `why`).
    #[must_use]
    pub const fn revoked(why: RevocationReason) -> Self {
        match why {
            RevocationReason::Crl | RevocationReason::Password | RevocationReason::Token => {
                Self::auth(ReasonCode::NotAuthorized, AuthFailure::BadCredentials)
            }
            RevocationReason::Ocsp => {
                Self::auth(ReasonCode::NotAuthorized, AuthFailure::CertificateRevoked)
            }
            // The connect rule, the Will or `allow_anonymous`: a policy refusal, not a bad login.
            RevocationReason::Policy => Self {
                reason: ReasonCode::NotAuthorized,
                outcome: ConnectOutcome::Denied,
                auth_reason: None,
                acl_action: Some(AclAction::Connect),
                topic: None,
                rule: None,
                principal: None,
                detail: None,
            },
        }
    }

    fn policy(action: AclAction, rule: Option<RuleRef>, topic: Option<String>) -> Self {
        Self {
            reason: ReasonCode::NotAuthorized,
            outcome: ConnectOutcome::Denied,
            auth_reason: if matches!(action, AclAction::Connect) {
                Some(AuthFailure::ClientId)
            } else {
                None
            },
            acl_action: Some(action),
            topic,
            rule,
            principal: None,
            detail: None,
        }
    }

    /// A refused token: the answer of a wrong password ([`ReasonCode::BadUserNameOrPassword`],
    /// 3.1.1 code 4), its own `auth_failures_total` reason.
    #[must_use]
    pub const fn token(failure: TokenFailure) -> Self {
        let mut r = Self::auth(ReasonCode::BadUserNameOrPassword, failure.auth_failure());
        r.detail = Some(failure.as_str());
        r
    }

    /// A credential of a kind the listener does not accept: refused like a bad credential.
    #[must_use]
    pub const fn method_not_allowed(method: AuthMethod) -> Self {
        let mut r = Self::auth(
            ReasonCode::BadUserNameOrPassword,
            AuthFailure::MethodNotAllowed,
        );
        r.detail = Some(method.as_str());
        r
    }
}

/// A CONNECT that passed authentication and the connect policy.
#[derive(Debug)]
pub struct Admitted {
    /// Who the client is.
    pub identity: SessionIdentity,
    /// Its policy, resolved once.
    pub policy: ClientPolicy,
}

/// The account whose password judges this CONNECT, if any (the decision [`admit`] makes): what a
/// per-account ban guards and what a failure counts against. `None` when a verified certificate
/// is the credential (`cert_is_credential = true` and the certificate names the principal), or
/// when no account is named: a stranger guessing passwords for a device's name must not lock
/// out the device that proves who it is with its certificate.
#[must_use]
pub fn password_account<'a>(
    auth: &crate::config::AuthConfig,
    cert: Option<&'a CertInfo>,
    username: Option<&'a str>,
) -> Option<&'a str> {
    match (auth.principal_from, cert) {
        (PrincipalFrom::CertCn | PrincipalFrom::CertSan, Some(c)) => {
            if auth.cert_is_credential {
                None
            } else {
                c.identity.principal(auth.principal_from)
            }
        }
        _ => username,
    }
}

/// A token presented in a CONNECT: as MQTT 5 Authentication Data with `auth_method`, or as the
/// password when it has a token's shape and the listener accepts tokens. `Err`: an Authentication
/// Method the gateway does not speak (0x8C).
fn presented_token<'a>(
    connect: &Connect<'a>,
    token: Option<&crate::config::TokenConfig>,
    accepts: impl Fn(AuthMethod) -> bool,
) -> Result<Option<(&'a [u8], bool)>, Refusal> {
    match connect.properties.authentication_method() {
        Some(m) if token.is_some_and(|t| t.auth_method == m) => Ok(Some((
            connect.properties.authentication_data().unwrap_or_default(),
            true,
        ))),
        // MQTT 5 enhanced authentication with another method: none is implemented, so none may
        // be started (and none can later change the identity bound here).
        Some(_) => Err(Refusal::auth(
            ReasonCode::BadAuthenticationMethod,
            AuthFailure::BadCredentials,
        )),
        None => Ok(connect
            .password
            .filter(|p| {
                token.is_some()
                    && accepts(AuthMethod::Token)
                    && crate::auth::token::looks_like_token(p)
            })
            .map(|p| (p, false))),
    }
}

/// Authenticates `connect` and applies the connect rules and the Will check.
///
/// # Errors
/// A [`Refusal`] saying what the client is told and what is counted.
pub async fn admit(
    connect: &Connect<'_>,
    listener: &Arc<str>,
    peer: SocketAddr,
    cert: Option<CertInfo>,
    snap: &Snapshot,
    gateway: &Gateway,
) -> Result<Admitted, Refusal> {
    let ocsp = match (&cert, crate::ocsp::listener_tls(&snap.config, listener)) {
        (Some(c), Some(tls)) => {
            check_ocsp(gateway, listener, peer, c, tls, snap.generation).await?
        }
        _ => None,
    };
    let auth = &snap.config.auth;
    let methods = snap
        .config
        .listeners
        .iter()
        .find(|l| *l.name == **listener)
        .and_then(|l| l.auth.as_deref());
    let accepts = |m: AuthMethod| methods.is_none_or(|list| list.contains(&m));
    let cert_name = cert
        .as_ref()
        .and_then(|c| c.identity.principal(auth.principal_from).map(str::to_owned));
    let named_by_cert = matches!(
        auth.principal_from,
        PrincipalFrom::CertCn | PrincipalFrom::CertSan
    ) && cert.is_some();
    let mut token = None;
    let (principal, anonymous, password_user) = if let Some((raw, via_auth_method)) =
        presented_token(connect, auth.token.as_ref(), accepts)?
    {
        if !accepts(AuthMethod::Token) {
            return Err(Refusal::method_not_allowed(AuthMethod::Token));
        }
        let (Some(config), Some(keys)) = (auth.token.as_ref(), snap.tokens.as_deref()) else {
            return Err(Refusal::token(TokenFailure::UnknownKey));
        };
        let t =
            crate::auth::token::verify(keys, config, raw, unix_now()).map_err(Refusal::token)?;
        let who = Some(t.principal.as_str());
        if connect.username.is_some_and(|u| u != t.principal) {
            // A user name, when sent, must be the token's principal.
            return Err(Refusal::token(TokenFailure::Principal).by(who));
        }
        if named_by_cert && cert_name.as_deref().is_some_and(|n| n != t.principal) {
            // The certificate names another client than the token.
            return Err(
                Refusal::auth(ReasonCode::NotAuthorized, AuthFailure::BadCredentials).by(who),
            );
        }
        let principal = t.principal.clone();
        token = Some(Box::new(TokenBinding::new(t, config, via_auth_method)));
        (Some(principal), false, None)
    } else {
        match (named_by_cert, cert_name) {
            (true, None) => {
                // A certificate without the configured name cannot be anyone.
                return Err(Refusal::auth(
                    ReasonCode::BadUserNameOrPassword,
                    AuthFailure::BadCredentials,
                ));
            }
            (true, Some(name)) => {
                if connect.username.is_some_and(|u| u != name) {
                    // The certificate names the client; it claimed another account.
                    return Err(Refusal::auth(
                        ReasonCode::NotAuthorized,
                        AuthFailure::BadCredentials,
                    )
                    .by(Some(&name)));
                }
                if !accepts(AuthMethod::Certificate) {
                    return Err(
                        Refusal::method_not_allowed(AuthMethod::Certificate).by(Some(&name))
                    );
                }
                if auth.cert_is_credential {
                    (Some(name), false, None)
                } else {
                    if !accepts(AuthMethod::Password) {
                        return Err(
                            Refusal::method_not_allowed(AuthMethod::Password).by(Some(&name))
                        );
                    }
                    verify_password(&name, connect.password, snap, gateway).await?;
                    (Some(name.clone()), false, Some(name))
                }
            }
            (false, _) => match connect.username {
                Some(user) => {
                    if !accepts(AuthMethod::Password) {
                        return Err(Refusal::method_not_allowed(AuthMethod::Password));
                    }
                    verify_password(user, connect.password, snap, gateway).await?;
                    (Some(user.to_owned()), false, Some(user.to_owned()))
                }
                None if auth.allow_anonymous => {
                    if !accepts(AuthMethod::Anonymous) {
                        return Err(Refusal::method_not_allowed(AuthMethod::Anonymous));
                    }
                    (None, true, None)
                }
                None => {
                    return Err(Refusal::auth(
                        ReasonCode::NotAuthorized,
                        AuthFailure::Anonymous,
                    ));
                }
            },
        }
    };
    let password_fingerprint = password_user
        .as_deref()
        .and_then(|u| snap.passwords.as_ref().and_then(|p| p.fingerprint(u)));
    let identity = SessionIdentity {
        listener: Arc::clone(listener),
        peer,
        principal,
        client_id: connect.client_id.to_owned(),
        anonymous,
        cert,
        password_user,
        password_fingerprint,
        will: connect.will.as_ref().map(|w| {
            Box::new(WillTopics {
                topic: w.topic.to_owned(),
                response: w.properties.response_topic().map(str::to_owned),
            })
        }),
        token,
        ocsp,
    };
    let policy = snap.policy.resolve(&identity.facts());
    let d = policy.connect();
    let who = identity.principal.as_deref();
    if !d.allowed {
        return Err(Refusal::policy(AclAction::Connect, d.rule, None).by(who));
    }
    if let Some((topic, d)) = identity.will.as_ref().and_then(|w| w.refused(&policy)) {
        return Err(Refusal::policy(AclAction::Will, d.rule, Some(topic.to_owned())).by(who));
    }
    Ok(Admitted { identity, policy })
}

/// The OCSP decision for `cert` on `listener` (whose `ocsp` is on): a lease on the answer, or
/// the refusal (a revoked certificate is audited `ocsp_revoked`).
async fn check_ocsp(
    gateway: &Gateway,
    listener: &Arc<str>,
    peer: SocketAddr,
    cert: &CertInfo,
    tls: &crate::config::TlsConfig,
    generation: u64,
) -> Result<Option<Arc<crate::ocsp::Lease>>, Refusal> {
    match gateway
        .ocsp
        .admit(listener, tls, generation, &cert.chain)
        .await
    {
        Ok(lease) => Ok(lease),
        Err(crate::ocsp::Refused::Revoked) => {
            tracing::info!(%listener, %peer, serial = %cert.identity.serial_hex, "client certificate refused: OCSP says revoked");
            gateway.audit.record(&crate::audit::AuditEvent {
                event: "ocsp_revoked",
                listener: Some(listener),
                peer: Some(peer),
                cert_fingerprint: Some(&cert.identity.fingerprint_sha256_hex),
                cert_serial: Some(&cert.identity.serial_hex),
                reason: "revoked",
                detail: Some("at CONNECT"),
                ..crate::audit::AuditEvent::default()
            });
            Err(Refusal {
                detail: Some("ocsp: revoked"),
                ..Refusal::revoked(RevocationReason::Ocsp)
            })
        }
        Err(crate::ocsp::Refused::NoGoodAnswer(why)) => {
            tracing::info!(%listener, %peer, serial = %cert.identity.serial_hex, why, "client certificate refused: ocsp = \"hard\" and no good OCSP answer");
            Err(Refusal {
                detail: Some(why),
                ..Refusal::auth(ReasonCode::NotAuthorized, AuthFailure::OcspNoAnswer)
            })
        }
    }
}

/// Verifies a password off the async workers, behind the concurrency cap.
async fn verify_password(
    user: &str,
    password: Option<&[u8]>,
    snap: &Snapshot,
    gateway: &Gateway,
) -> Result<(), Refusal> {
    let Some(file) = snap.passwords.clone() else {
        // No password file: nobody can be verified (fail closed).
        return Err(Refusal::auth(
            ReasonCode::BadUserNameOrPassword,
            AuthFailure::UnknownUser,
        ));
    };
    let Some(password) = password else {
        return Err(Refusal::auth(
            ReasonCode::BadUserNameOrPassword,
            AuthFailure::BadCredentials,
        ));
    };
    let Ok(permit) = Arc::clone(&gateway.auth_permits).acquire_owned().await else {
        return Err(Refusal::auth(
            ReasonCode::ServerUnavailable,
            AuthFailure::BadCredentials,
        ));
    };
    let user = user.to_owned();
    let password = password.to_vec();
    // The permit goes with the check: it is held until the hashing ends, even when this
    // connection gives up waiting (the cap bounds the argon2 work buffers in use, see
    // `auth::hash`).
    let outcome = tokio::task::spawn_blocking(move || {
        let outcome = file.verify(&user, &password);
        drop(permit);
        outcome
    })
    .await;
    match outcome {
        Ok(VerifyOutcome::Ok) => Ok(()),
        Ok(VerifyOutcome::UnknownUser) => Err(Refusal::auth(
            ReasonCode::BadUserNameOrPassword,
            AuthFailure::UnknownUser,
        )),
        Ok(VerifyOutcome::BadPassword) | Err(_) => Err(Refusal::auth(
            ReasonCode::BadUserNameOrPassword,
            AuthFailure::BadCredentials,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AuthConfig;

    /// The account a ban guards: the one whose password is checked, never the user name a
    /// certificate-authenticated client also sends.
    #[test]
    fn password_account_follows_the_credential() {
        let dev = cert(Some("dev-7"));
        let nameless = cert(None);
        let auth = |principal_from, cert_is_credential| AuthConfig {
            principal_from,
            cert_is_credential,
            ..AuthConfig::default()
        };
        let cn = PrincipalFrom::CertCn;
        let user = PrincipalFrom::Username;
        type Row<'a> = (
            AuthConfig,
            Option<&'a CertInfo>,
            Option<&'a str>,
            Option<&'a str>,
        );
        let table: [Row<'_>; 8] = [
            // The certificate is the credential: no password, no account to guard.
            (auth(cn, true), Some(&dev), Some("dev-7"), None),
            (auth(cn, true), Some(&dev), Some("other"), None),
            (auth(cn, true), Some(&nameless), Some("dev-7"), None),
            // A certificate that also needs its password: the certificate's name.
            (auth(cn, false), Some(&dev), Some("dev-7"), Some("dev-7")),
            (auth(cn, false), Some(&dev), None, Some("dev-7")),
            // No certificate: the password of the user name (the guesser's case).
            (auth(cn, true), None, Some("dev-7"), Some("dev-7")),
            // principal_from = "username": the password is always checked.
            (auth(user, true), Some(&dev), Some("dev-7"), Some("dev-7")),
            (auth(user, true), None, None, None),
        ];
        for (i, (auth, cert, username, want)) in table.iter().enumerate() {
            assert_eq!(password_account(auth, *cert, *username), *want, "row {i}");
        }
    }
}
