//! `mqtt-gateway enroll`: the device side of EST, for Linux devices, run from a systemd timer or
//! cron. With no certificate yet (or one that has expired), a first enrollment with a one-time
//! token (`simpleenroll`, HTTP Basic); with a certificate that has less than
//! `renew_below_percent` of its life left, a renewal with it (`simplereenroll`, TLS client authentication); otherwise nothing.
//! Each time a new P-256 key, made here, never sent. The new key and certificate replace
//! `STEM.key` and `STEM.pem` only once the certificate is in hand, each by a rename (the key
//! first: a crash between the two renames leaves a key without its certificate, which the next
//! run repairs only with a new token, so the window is two renames long).
//!
//! The deciding part ([`due`]) is pure; the exchange is one HTTP/1.1 request over rustls (the
//! EST server authenticated against `ca`), bounded in time and size.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use cms::cert::x509::der::{Decode, Encode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::Uri;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use x509_parser::prelude::FromDer;

use crate::pki::write_atomic;

/// The longest answer read (one certificate in a PKCS#7, base64).
pub const MAX_ANSWER: usize = 64 * 1024;

/// Time the whole exchange may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// What to do.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// The EST server, `https://host[:port]`.
    pub server: String,
    /// The CA certificate(s) the server's certificate must chain to (PEM).
    pub ca: PathBuf,
    /// The device's name (the CN of its certificate).
    pub name: String,
    /// `STEM.pem` and `STEM.key` are the device's certificate and key.
    pub stem: PathBuf,
    /// The one-time token, for a first enrollment.
    pub token: Option<String>,
    /// Renew when less than this percentage of the certificate's life is left (0 to 100).
    pub renew_below_percent: u8,
}

/// What [`run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// A first enrollment; the new certificate's serial (hex).
    Enrolled(String),
    /// A renewal; the new certificate's serial (hex).
    Renewed(String),
    /// The certificate has enough life left; its notAfter (unix seconds).
    NotDue(i64),
}

/// What [`due`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// No usable certificate: a first enrollment (a token is needed).
    Enroll,
    /// Renew with the current certificate.
    Renew,
    /// Nothing to do before then.
    NotYet,
}

/// Whether a certificate valid from `not_before` to `not_after` (unix seconds) is due at `now`,
/// renewing when less than `percent` of its life is left. Pure.
#[must_use]
pub fn due(not_before: i64, not_after: i64, now: i64, percent: u8) -> Due {
    if now >= not_after {
        return Due::Enroll;
    }
    let life = i128::from(not_after.saturating_sub(not_before).max(1));
    let left = i128::from(not_after.saturating_sub(now));
    if left * 100 < life * i128::from(percent.min(100)) {
        Due::Renew
    } else {
        Due::NotYet
    }
}

/// Enrolls, renews or does nothing, as [`due`] says for `STEM.pem`.
///
/// # Errors
/// A message for the operator: what failed, and the server's answer when it refused.
pub async fn run(opts: &EnrollOptions) -> Result<Done, String> {
    let pem_path = with_ext(&opts.stem, "pem");
    let key_path = with_ext(&opts.stem, "key");
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let current = std::fs::read(&pem_path).ok().and_then(|pem| {
        let der = CertificateDer::pem_slice_iter(&pem).next()?.ok()?;
        let (_, c) = x509_parser::certificate::X509Certificate::from_der(der.as_ref()).ok()?;
        let v = c.validity();
        Some((v.not_before.timestamp(), v.not_after.timestamp()))
    });
    let decision = current.map_or(Due::Enroll, |(nb, na)| {
        due(nb, na, now, opts.renew_below_percent)
    });
    let client_auth = match decision {
        Due::NotYet => return Ok(Done::NotDue(current.map_or(0, |(_, na)| na))),
        Due::Enroll => None,
        Due::Renew => {
            let chain = CertificateDer::pem_file_iter(&pem_path)
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| format!("{}: {e}", pem_path.display()))?;
            let key = PrivateKeyDer::from_pem_file(&key_path)
                .map_err(|e| format!("{}: {e}", key_path.display()))?;
            Some((chain, key))
        }
    };
    let basic = match (decision, &opts.token) {
        (Due::Enroll, Some(t)) => Some(format!("{}:{t}", opts.name)),
        (Due::Enroll, None) => {
            return Err(format!(
                "{} holds no valid certificate: a first enrollment needs a token (--token-file)",
                pem_path.display()
            ));
        }
        _ => None,
    };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("new key: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| format!("CSR: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, opts.name.as_str());
    let csr = params
        .serialize_request(&key)
        .map_err(|e| format!("CSR: {e}"))?;
    let path = if basic.is_some() {
        "/.well-known/est/simpleenroll"
    } else {
        "/.well-known/est/simplereenroll"
    };
    let body = base64::engine::general_purpose::STANDARD.encode(csr.der());
    let answer = tokio::time::timeout(
        DEADLINE,
        post(opts, path, basic.as_deref(), client_auth, body),
    )
    .await
    .map_err(|_| format!("no answer within {DEADLINE:?}"))??;
    let cert = first_certificate(&answer)?;
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&cert)
        .map_err(|e| format!("the issued certificate: {e}"))?;
    let serial = crate::pki::hex(parsed.raw_serial());
    write_atomic(&key_path, key.serialize_pem().as_bytes(), 0o600).map_err(|e| e.to_string())?;
    write_atomic(&pem_path, pem(&cert).as_bytes(), 0o644).map_err(|e| e.to_string())?;
    Ok(if basic.is_some() {
        Done::Enrolled(serial)
    } else {
        Done::Renewed(serial)
    })
}

fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// One EST POST; the decoded (DER) answer.
async fn post(
    opts: &EnrollOptions,
    path: &str,
    basic: Option<&str>,
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    body: String,
) -> Result<Vec<u8>, String> {
    let uri: Uri = opts.server.parse().map_err(|e| format!("--server: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err("--server must be https://host[:port]".into());
    }
    let host = uri.host().unwrap_or_default().to_owned();
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let roots = crate::tls::load_roots(&opts.ca).map_err(|e| e.to_string())?;
    let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match client_auth {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the current certificate: {e}"))?,
        None => builder.with_no_client_auth(),
    };
    let name = ServerName::try_from(bare.clone()).map_err(|e| format!("--server: {e}"))?;
    let tcp = TcpStream::connect((bare.as_str(), port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut request = hyper::Request::post(path)
        .header(HOST, uri.authority().map_or(host.as_str(), |a| a.as_str()))
        .header(
            USER_AGENT,
            concat!("mqtt-gateway/", env!("CARGO_PKG_VERSION")),
        )
        .header(CONTENT_TYPE, "application/pkcs10")
        .header("content-transfer-encoding", "base64");
    if let Some(b) = basic {
        let encoded = base64::engine::general_purpose::STANDARD.encode(b);
        request = request.header(AUTHORIZATION, format!("Basic {encoded}"));
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("request: {e}"))?;
    let result = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("the answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes);
            return Err(format!("{path}: HTTP {status}: {}", text.trim()));
        }
        crate::enroll::csr::decode_body(&bytes).map_err(|_| "the answer is not base64".to_owned())
    }
    .await;
    driver.abort();
    result
}

/// The first certificate of a certs-only PKCS#7 (DER).
fn first_certificate(der: &[u8]) -> Result<Vec<u8>, String> {
    let bad = |e: &dyn std::fmt::Display| format!("the answer is not a PKCS#7 certs-only: {e}");
    let ci = cms::content_info::ContentInfo::from_der(der).map_err(|e| bad(&e))?;
    let sd: cms::signed_data::SignedData = ci.content.decode_as().map_err(|e| bad(&e))?;
    let certs = sd.certificates.ok_or_else(|| bad(&"no certificates"))?;
    for choice in certs.0.iter() {
        if let cms::cert::CertificateChoices::Certificate(c) = choice {
            return c.to_der().map_err(|e| bad(&e));
        }
    }
    Err(bad(&"no certificate"))
}

/// DER certificate to PEM.
fn pem(der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_table() {
        // A certificate valid from 0 to 700, renewal below a third of its life left.
        let cases: &[(i64, u8, Due)] = &[
            (0, 33, Due::NotYet),
            (400, 33, Due::NotYet),
            (469, 33, Due::NotYet),
            (470, 33, Due::Renew),
            (699, 33, Due::Renew),
            (700, 33, Due::Enroll),
            (5000, 33, Due::Enroll),
            (1, 100, Due::Renew),
            (699, 0, Due::NotYet),
            (699, 255, Due::Renew),
        ];
        for (now, at, want) in cases {
            assert_eq!(due(0, 700, *now, *at), *want, "now {now} at {at}");
        }
    }

    #[test]
    fn pem_round_trips() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let text = pem(cert.der());
        assert_eq!(
            CertificateDer::from_pem_slice(text.as_bytes()).unwrap(),
            *cert.der()
        );
        let p7 = crate::enroll::pkcs7::certs_only(&[cert.der()]).unwrap();
        assert_eq!(first_certificate(&p7).unwrap(), cert.der().to_vec());
        assert!(first_certificate(b"\x30\x00").is_err());
    }
}
