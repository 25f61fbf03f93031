//! The EST listener: TLS (client certificate optional, verified against the pki's CA when
//! given; no session resumption, so every renewal is judged on a full handshake), HTTP/1.1 by
//! hyper, three routes. The decisions run on the blocking pool (they read and replace files of
//! the pki directory under its lock).
//!
//! Bounds: [`MAX_BODY`] per request (a bigger `Content-Length` is refused before reading, a
//! longer body is cut at the bound: 413), [`HEAD_TIMEOUT`] for the request head,
//! [`CONNECTION_TIMEOUT`] for a whole connection, `max_connections` at once (one more is closed
//! when accepted), `requests_per_ip_per_minute` per client address (429), and at most
//! [`MAX_TRACKED_ADDRESSES`] addresses in the rate table (beyond: 429, fail closed).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use x509_parser::prelude::FromDer;

use super::csr::{self, CsrRefusal};
use super::pkcs7;
use super::token::{self, Check, TokenRefusal};
use crate::audit::AuditEvent;
use crate::config::EnrollmentConfig;
use crate::labels::label_enum;
use crate::pki::{Ca, PkiError, hex};
use crate::shared::Gateway;
use crate::tls::{self, TlsError};

/// The largest request body (a base64 CSR; an RSA-8192 one is about 3 KiB).
pub const MAX_BODY: usize = 16 * 1024;
/// Time a client has to send a request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has for the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a connection may last in all (keep-alive included).
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Client addresses the rate table holds at most.
pub const MAX_TRACKED_ADDRESSES: usize = 100_000;
/// The name of the listener in audit lines.
pub const LISTENER: &str = "enrollment";

/// `mqtt_gateway_enrollments_total{kind,result}`.
pub const ENROLLMENTS_TOTAL: &str = "mqtt_gateway_enrollments_total";

label_enum! {
    /// `enrollments_total{kind}`: which EST operation.
    pub enum EnrollKind {
        /// `simpleenroll` with a one-time token.
        Enroll => "enroll",
        /// `simplereenroll` with the current certificate.
        Reenroll => "reenroll",
    }
}

label_enum! {
    /// `enrollments_total{result}`: how it ended.
    pub enum EnrollResult {
        /// A certificate was issued.
        Issued => "issued",
        /// The credential (token or certificate) was refused: 401 / 403.
        Refused => "refused",
        /// The request or its CSR was refused: 400 / 413.
        BadRequest => "bad_request",
        /// Over the per-address rate: 429.
        RateLimited => "rate_limited",
        /// The pki directory failed (fail closed): 500.
        Error => "error",
    }
}

/// Exports every series of `enrollments_total` from start-up (at 0 in a fresh process; a second
/// gateway in the same process, as in tests, does not reset the first's counts).
pub fn init_metrics() {
    metrics::describe_counter!(
        ENROLLMENTS_TOTAL,
        "EST enrollments (kind: enroll | reenroll) by result"
    );
    for kind in EnrollKind::ALL {
        for result in EnrollResult::ALL {
            metrics::counter!(ENROLLMENTS_TOTAL, "kind" => kind.as_str(), "result" => result.as_str())
                .increment(0);
        }
    }
}

fn count(kind: EnrollKind, result: EnrollResult) {
    metrics::counter!(ENROLLMENTS_TOTAL, "kind" => kind.as_str(), "result" => result.as_str())
        .increment(1);
}

/// Why the EST listener cannot start.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The pki directory holds no CA.
    #[error("enrollment.pki_dir: {0}")]
    Pki(#[from] PkiError),
    /// The certificate, key or CA could not be loaded.
    #[error("enrollment.tls: {0}")]
    Tls(#[from] TlsError),
    /// rustls refused the configuration.
    #[error("enrollment.tls: {0}")]
    Rustls(String),
}

/// Everything a request needs, shared by the connections.
pub struct Est {
    ca: Arc<Ca>,
    cert_days: i64,
    tls: TlsAcceptor,
    permits: Arc<Semaphore>,
    rate: DefaultKeyedRateLimiter<IpAddr>,
}

impl std::fmt::Debug for Est {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Est")
            .field("ca", &self.ca)
            .field("cert_days", &self.cert_days)
            .finish_non_exhaustive()
    }
}

impl Est {
    /// Opens the pki directory and builds the TLS server (fail closed: no CA, no start).
    ///
    /// # Errors
    /// See [`EnrollError`].
    pub fn new(config: &EnrollmentConfig) -> Result<Self, EnrollError> {
        let ca = Ca::open(&config.pki_dir)?;
        ca.check_signing()?;
        let roots = Arc::new(tls::load_roots(&ca.path("ca.pem"))?);
        let provider = tls::provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
            .allow_unauthenticated()
            .build()
            .map_err(|e| EnrollError::Rustls(e.to_string()))?;
        let chain = tls::load_certs(&config.tls.cert)?;
        let key = tls::load_private_key(&config.tls.key)?;
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| EnrollError::Rustls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| EnrollError::Rustls(e.to_string()))?;
        // A resumed session would skip the client certificate's verification: none.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let max = usize::try_from(config.max_connections.get()).unwrap_or(usize::MAX);
        Ok(Self {
            ca: Arc::new(ca),
            cert_days: i64::from(config.cert_days.get()),
            tls: TlsAcceptor::from(Arc::new(server)),
            permits: Arc::new(Semaphore::new(max)),
            rate: RateLimiter::keyed(Quota::per_minute(config.requests_per_ip_per_minute)),
        })
    }
}

/// Accepts EST connections until the gateway shuts down.
pub async fn serve(listener: TcpListener, est: Arc<Est>, gateway: Arc<Gateway>) {
    let mut sweep = tokio::time::interval(Duration::from_secs(60));
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "enrollment: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = sweep.tick() => {
                est.rate.retain_recent();
                continue;
            }
            () = gateway.shutdown.cancelled() => return,
        };
        let Ok(permit) = Arc::clone(&est.permits).try_acquire_owned() else {
            tracing::debug!(%peer, "enrollment: connection limit reached, closed");
            continue;
        };
        let est = Arc::clone(&est);
        let gw = Arc::clone(&gateway);
        gateway.tracker.spawn(async move {
            let _permit = permit;
            let shutdown = gw.shutdown.clone();
            // A shutdown ends an EST exchange at once (the device retries later); a slow one ends
            // at CONNECTION_TIMEOUT.
            tokio::select! {
                _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection(stream, peer, est, gw)) => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    est: Arc<Est>,
    gateway: Arc<Gateway>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, est.tls.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            gateway.audit.record_refusal(&AuditEvent {
                event: "enrollment_refused",
                listener: Some(LISTENER),
                peer: Some(peer),
                reason: "tls_failed",
                detail: Some(&e.to_string()),
                ..AuditEvent::default()
            });
            return;
        }
        Err(_) => return,
    };
    let client_cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.clone().into_owned());
    let conn = Arc::new(Conn {
        peer,
        client_cert,
        est,
        gateway,
    });
    let service = hyper::service::service_fn(move |req| {
        let conn = Arc::clone(&conn);
        async move { Ok::<_, Infallible>(handle(req, &conn).await) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(16 * 1024);
    if let Err(e) = http.serve_connection(TokioIo::new(tls), service).await {
        tracing::debug!(%peer, error = %e, "enrollment: connection ended");
    }
}

/// One TLS connection.
struct Conn {
    peer: SocketAddr,
    client_cert: Option<CertificateDer<'static>>,
    est: Arc<Est>,
    gateway: Arc<Gateway>,
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, text: &str) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn unauthorized(text: &str) -> Answer {
    let mut r = answer(StatusCode::UNAUTHORIZED, text);
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"est\""),
    );
    r
}

fn pkcs7_answer(der: &[u8]) -> Answer {
    let mut r = Response::new(Full::new(Bytes::from(pkcs7::base64_lines(der))));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/pkcs7-mime; smime-type=certs-only"),
    );
    h.insert(
        "content-transfer-encoding",
        HeaderValue::from_static("base64"),
    );
    r
}

const CACERTS: &str = "/.well-known/est/cacerts";
const SIMPLEENROLL: &str = "/.well-known/est/simpleenroll";
const SIMPLEREENROLL: &str = "/.well-known/est/simplereenroll";

async fn handle(req: Request<Incoming>, conn: &Conn) -> Answer {
    let kind = match req.uri().path() {
        SIMPLEENROLL => Some(EnrollKind::Enroll),
        SIMPLEREENROLL => Some(EnrollKind::Reenroll),
        _ => None,
    };
    if !conn.rate_ok() {
        if let Some(kind) = kind {
            count(kind, EnrollResult::RateLimited);
        }
        conn.refused(None, "rate_limited", None);
        return answer(StatusCode::TOO_MANY_REQUESTS, "too many requests");
    }
    match (req.method(), req.uri().path(), kind) {
        (&Method::GET, CACERTS, _) => conn.cacerts().await,
        (&Method::POST, _, Some(kind)) => conn.enroll(req, kind).await,
        (_, CACERTS, _) | (_, _, Some(_)) => answer(StatusCode::METHOD_NOT_ALLOWED, "method"),
        _ => answer(StatusCode::NOT_FOUND, "not an EST path"),
    }
}

/// The credential of a request.
enum Credential {
    /// HTTP Basic: the name and the one-time token.
    Token { name: String, token: String },
    /// The TLS client certificate.
    Certificate(CertificateDer<'static>),
}

/// What the blocking decision came to.
enum Outcome {
    Issued {
        name: String,
        serial: String,
        der: Vec<u8>,
    },
    Token(TokenRefusal),
    Cert(&'static str),
    Csr(CsrRefusal),
    Error(PkiError),
}

impl Conn {
    fn rate_ok(&self) -> bool {
        let key = crate::limits::address_key(self.peer.ip());
        if self.est.rate.len() >= MAX_TRACKED_ADDRESSES {
            self.est.rate.retain_recent();
            if self.est.rate.len() >= MAX_TRACKED_ADDRESSES {
                return false;
            }
        }
        self.est.rate.check_key(&key).is_ok()
    }

    fn refused(&self, principal: Option<&str>, reason: &str, detail: Option<&str>) {
        self.gateway.audit.record_refusal(&AuditEvent {
            event: "enrollment_refused",
            listener: Some(LISTENER),
            peer: Some(self.peer),
            principal,
            reason,
            detail,
            ..AuditEvent::default()
        });
    }

    async fn cacerts(&self) -> Answer {
        let ca = Arc::clone(&self.est.ca);
        let built = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
            let certs = tls::load_certs(&ca.path("ca.pem")).map_err(|e| e.to_string())?;
            let ders: Vec<&[u8]> = certs.iter().map(AsRef::as_ref).collect();
            pkcs7::certs_only(&ders).map_err(|e| e.to_string())
        })
        .await;
        match built {
            Ok(Ok(der)) => pkcs7_answer(&der),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "enrollment: cannot answer cacerts");
                answer(StatusCode::INTERNAL_SERVER_ERROR, "CA unavailable")
            }
            Err(_) => answer(StatusCode::INTERNAL_SERVER_ERROR, "CA unavailable"),
        }
    }

    async fn enroll(&self, req: Request<Incoming>, kind: EnrollKind) -> Answer {
        let credential = match kind {
            EnrollKind::Enroll => match basic_auth(&req) {
                Some((name, token)) => Credential::Token { name, token },
                None => {
                    count(kind, EnrollResult::Refused);
                    self.refused(None, "no_credentials", None);
                    return unauthorized("HTTP Basic with NAME and a one-time token required");
                }
            },
            EnrollKind::Reenroll => match &self.client_cert {
                Some(c) => Credential::Certificate(c.clone()),
                None => {
                    count(kind, EnrollResult::Refused);
                    self.refused(None, "no_certificate", None);
                    return answer(
                        StatusCode::UNAUTHORIZED,
                        "a TLS client certificate is required",
                    );
                }
            },
        };
        let claimed = match &credential {
            Credential::Token { name, .. } => Some(name.clone()),
            Credential::Certificate(c) => common_name(c),
        };
        let body = match read_body(req).await {
            Ok(b) => b,
            Err((status, reason)) => {
                count(kind, EnrollResult::BadRequest);
                self.refused(claimed.as_deref(), reason, None);
                return answer(status, reason);
            }
        };
        let ca = Arc::clone(&self.est.ca);
        let days = self.est.cert_days;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let outcome =
            tokio::task::spawn_blocking(move || decide(&ca, &credential, &body, days, now))
                .await
                .unwrap_or_else(|_| Outcome::Error(PkiError::Usage("decision task failed".into())));
        self.finish(kind, claimed.as_deref(), outcome)
    }

    fn finish(&self, kind: EnrollKind, claimed: Option<&str>, outcome: Outcome) -> Answer {
        match outcome {
            Outcome::Issued { name, serial, der } => match pkcs7::certs_only(&[&der]) {
                Ok(p7) => {
                    count(kind, EnrollResult::Issued);
                    self.gateway.audit.record(&AuditEvent {
                        event: "enrolled",
                        listener: Some(LISTENER),
                        peer: Some(self.peer),
                        principal: Some(&name),
                        cert_serial: Some(&serial),
                        reason: match kind {
                            EnrollKind::Enroll => "token",
                            EnrollKind::Reenroll => "certificate",
                        },
                        ..AuditEvent::default()
                    });
                    tracing::info!(peer = %self.peer, name, serial, kind = kind.as_str(), "enrolled");
                    pkcs7_answer(&p7)
                }
                Err(e) => self.failed(kind, claimed, &e.to_string()),
            },
            Outcome::Token(r) => {
                count(kind, EnrollResult::Refused);
                self.refused(claimed, r.as_str(), None);
                unauthorized("token refused")
            }
            Outcome::Cert(reason) => {
                count(kind, EnrollResult::Refused);
                self.refused(claimed, reason, None);
                answer(StatusCode::FORBIDDEN, "certificate refused")
            }
            Outcome::Csr(r) => {
                count(kind, EnrollResult::BadRequest);
                self.refused(claimed, r.as_str(), None);
                answer(StatusCode::BAD_REQUEST, r.as_str())
            }
            Outcome::Error(e) => self.failed(kind, claimed, &e.to_string()),
        }
    }

    fn failed(&self, kind: EnrollKind, claimed: Option<&str>, error: &str) -> Answer {
        tracing::error!(peer = %self.peer, error, "enrollment failed");
        count(kind, EnrollResult::Error);
        self.refused(claimed, "error", Some(error));
        answer(StatusCode::INTERNAL_SERVER_ERROR, "enrollment failed")
    }
}

/// The first OU of a certificate (kept on renewal: the policy's `cert_ou` groups).
fn organizational_unit(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref()).ok()?;
    let ou = parsed.subject().iter_organizational_unit().next()?;
    ou.as_str().ok().map(str::to_owned)
}

/// The CN of a certificate, for audit lines.
fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// `Authorization: Basic base64(NAME:TOKEN)`.
fn basic_auth<B>(req: &Request<B>) -> Option<(String, String)> {
    let value = req.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (name, token) = text.split_once(':')?;
    Some((name.to_owned(), token.to_owned()))
}

/// The body, at most [`MAX_BODY`] bytes, within [`HEAD_TIMEOUT`].
async fn read_body(req: Request<Incoming>) -> Result<Vec<u8>, (StatusCode, &'static str)> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u128>().ok());
    if declared.is_some_and(|n| n > MAX_BODY.try_into().unwrap_or(u128::MAX)) {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
    }
    let limited = Limited::new(req.into_body(), MAX_BODY);
    match tokio::time::timeout(HEAD_TIMEOUT, limited.collect()).await {
        Ok(Ok(b)) => Ok(b.to_bytes().to_vec()),
        Ok(Err(_)) => Err((StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")),
        Err(_) => Err((StatusCode::REQUEST_TIMEOUT, "body_timeout")),
    }
}

/// The decision on one enrollment: the credential, then the CSR, then (under the directory's
/// lock, with the credential judged again there) the token spent and the certificate issued.
fn decide(ca: &Ca, credential: &Credential, body: &[u8], days: i64, now: i64) -> Outcome {
    // The credential first: who has none learns nothing about CSRs.
    let want = match credential {
        Credential::Token { name, token } => match token::check(ca, name, token, now) {
            Check::Good(_) => name.clone(),
            Check::Refused(r) => return Outcome::Token(r),
            Check::Error(e) => return Outcome::Error(e),
        },
        Credential::Certificate(cert) => match current_certificate(ca, cert, now) {
            Ok(name) => name,
            Err(Ok(reason)) => return Outcome::Cert(reason),
            Err(Err(e)) => return Outcome::Error(e),
        },
    };
    let accepted = match csr::decode_body(body).and_then(|der| csr::check(&der, &want)) {
        Ok(a) => a,
        Err(r) => return Outcome::Csr(r),
    };
    let lock = match ca.lock() {
        Ok(l) => l,
        Err(e) => return Outcome::Error(e),
    };
    // The OU: the token's (chosen by whoever minted it), or the current certificate's.
    let ou = match credential {
        Credential::Token { name, token } => match token::spend_locked(ca, name, token, now) {
            Check::Good(ou) => ou,
            Check::Refused(r) => return Outcome::Token(r),
            Check::Error(e) => return Outcome::Error(e),
        },
        Credential::Certificate(cert) => match current_certificate(ca, cert, now) {
            Ok(_) => organizational_unit(cert),
            Err(Ok(reason)) => return Outcome::Cert(reason),
            Err(Err(e)) => return Outcome::Error(e),
        },
    };
    let issued = ca.issue_for_key_locked(&accepted.cn, ou.as_deref(), &accepted.spki_der, days);
    drop(lock);
    match issued {
        Ok((entry, der)) => Outcome::Issued {
            name: entry.name,
            serial: entry.serial,
            der,
        },
        Err(e) => Outcome::Error(e),
    }
}

/// The name of a renewing device's certificate (the TLS handshake verified its chain to the
/// CA): one this CA issued (in its index), not revoked (index and `ca.crl`), not expired, its CN
/// the indexed name. `Err(Ok(reason))` refuses it; `Err(Err(_))` is a pki failure.
fn current_certificate(
    ca: &Ca,
    cert: &CertificateDer<'_>,
    now: i64,
) -> Result<String, Result<&'static str, PkiError>> {
    let Ok((_, parsed)) = x509_parser::certificate::X509Certificate::from_der(cert.as_ref()) else {
        return Err(Ok("certificate_malformed"));
    };
    let serial = hex(parsed.raw_serial());
    let Some(entry) = ca.entry_by_serial(&serial).map_err(Err)? else {
        return Err(Ok("certificate_unknown"));
    };
    if entry.revoked_at.is_some() || crl_lists(ca, parsed.raw_serial()).map_err(Err)? {
        return Err(Ok("certificate_revoked"));
    }
    if parsed.validity().not_after.timestamp() <= now || entry.not_after <= now {
        return Err(Ok("certificate_expired"));
    }
    let mut cns = parsed.subject().iter_common_name();
    match (cns.next().and_then(|c| c.as_str().ok()), cns.next()) {
        (Some(cn), None) if cn == entry.name => Ok(entry.name),
        _ => Err(Ok("certificate_subject")),
    }
}

/// Whether the pki's `ca.crl` lists `serial` (read now: a `pki revoke` a moment ago counts).
fn crl_lists(ca: &Ca, serial: &[u8]) -> Result<bool, PkiError> {
    let path = ca.path("ca.crl");
    let crls = tls::load_crls(&path).map_err(|e| PkiError::Usage(e.to_string()))?;
    for crl in &crls {
        let Ok((_, parsed)) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(crl.as_ref())
        else {
            return Err(PkiError::Usage(format!(
                "{}: unreadable CRL",
                path.display()
            )));
        };
        if parsed
            .iter_revoked_certificates()
            .any(|r| r.raw_serial() == serial)
        {
            return Ok(true);
        }
    }
    Ok(false)
}
