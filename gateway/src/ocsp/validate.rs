//! The pure part of OCSP (RFC 6960): the request for one certificate, and the judgement of a
//! responder's answer (bytes, the issuer, the time in; a verdict out). No I/O.
//!
//! An answer is taken only when, in this order:
//! 1. it is an `OCSPResponse` with status `successful` and a `BasicOCSPResponse` (no more than
//!    [`MAX_RESPONDER_CERTS`] certificates beside it);
//! 2. its signature verifies with the issuer's key, or with the key of a certificate in the
//!    response that the issuer delegated: issued (signed) by the issuer, valid now, with the
//!    `id-kp-OCSPSigning` extended key usage (§4.2.2.2), checked by rustls-webpki on aws-lc-rs;
//! 3. it has a `SingleResponse` for our `CertID` (hash algorithm, issuer name and key hashes,
//!    serial);
//! 4. its `thisUpdate` is not in the future and its `nextUpdate` not in the past, both within
//!    [`LEEWAY`]; an answer without `nextUpdate` is taken for [`MAX_AGE_WITHOUT_NEXT_UPDATE`]
//!    after its `thisUpdate`.
//!
//! No nonce is sent: answers are cached and shared by every session of a certificate (RFC 5019
//! §2.1.2); freshness comes from the times of step 4.

use der::asn1::{Null, ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use rustls_pki_types::{CertificateDer, UnixTime};
use sha1::{Digest, Sha1};
use spki::AlgorithmIdentifierOwned;
use x509_cert::serial_number::SerialNumber;
use x509_ocsp::{BasicOcspResponse, CertId, CertStatus, OcspRequest, OcspResponse, Request};

/// `id-pkix-ocsp-basic`.
const OCSP_BASIC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// `id-sha1`, the CertID hash (RFC 5019 §2.1.1).
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
/// `id-kp-OCSPSigning` (1.3.6.1.5.5.7.3.9), DER contents, as rustls-webpki takes it.
const EKU_OCSP_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09];

/// Clock skew allowed on `thisUpdate` and `nextUpdate`.
pub const LEEWAY: i64 = 5 * 60;
/// How long an answer without `nextUpdate` is taken after its `thisUpdate`.
pub const MAX_AGE_WITHOUT_NEXT_UPDATE: i64 = 24 * 3600;
/// The most certificates a response may carry to name its signer.
pub const MAX_RESPONDER_CERTS: usize = 4;

/// What a validated answer says of the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Not revoked.
    Good,
    /// Revoked at this time (unix seconds).
    Revoked(i64),
    /// The responder does not know the certificate.
    Unknown,
}

impl Status {
    /// The `status` label of `ocsp_responses_total`.
    #[must_use]
    pub const fn label(self) -> crate::labels::OcspStatus {
        match self {
            Self::Good => crate::labels::OcspStatus::Good,
            Self::Revoked(_) => crate::labels::OcspStatus::Revoked,
            Self::Unknown => crate::labels::OcspStatus::Unknown,
        }
    }
}

/// A validated answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The certificate's status.
    pub status: Status,
    /// `thisUpdate`, unix seconds.
    pub this_update: i64,
    /// Until when it may be used (unix seconds): `nextUpdate`, or `thisUpdate` plus
    /// [`MAX_AGE_WITHOUT_NEXT_UPDATE`] without one.
    pub valid_until: i64,
    /// Whether the responder gave a `nextUpdate`.
    pub has_next_update: bool,
}

/// Why an answer is refused (the `reason` of the log line).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct Rejected {
    /// A short name: `malformed`, `responder_status`, `signature`, `other_certificate`,
    /// `stale`, `future`.
    pub kind: &'static str,
    /// What exactly.
    pub detail: String,
}

fn rejected(kind: &'static str, detail: impl Into<String>) -> Rejected {
    Rejected {
        kind,
        detail: detail.into(),
    }
}

/// The issuer of a certificate, as OCSP names it.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// The issuer's certificate (DER).
    pub der: CertificateDer<'static>,
    /// SHA-1 of its subject (DER).
    pub name_hash: [u8; 20],
    /// SHA-1 of its public key (the BIT STRING's contents).
    pub key_hash: [u8; 20],
}

impl Issuer {
    /// The issuer in `der`.
    ///
    /// # Errors
    /// Not a certificate.
    pub fn new(der: CertificateDer<'static>) -> Result<Self, String> {
        let cert = x509_cert::Certificate::from_der(der.as_ref())
            .map_err(|e| format!("not a certificate: {e}"))?;
        let subject = cert
            .tbs_certificate
            .subject
            .to_der()
            .map_err(|e| e.to_string())?;
        let key = cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        Ok(Self {
            der,
            name_hash: Sha1::digest(&subject).into(),
            key_hash: Sha1::digest(key).into(),
        })
    }

    /// The `CertID` of the certificate with `serial` (its DER contents, big-endian) issued by
    /// this issuer.
    ///
    /// # Errors
    /// A serial that is not a valid X.509 serial.
    pub fn cert_id(&self, serial: &[u8]) -> Result<CertId, String> {
        let octets = |b: &[u8]| OctetString::new(b.to_vec()).map_err(|e| e.to_string());
        Ok(CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: SHA1,
                parameters: Some(Null.into()),
            },
            issuer_name_hash: octets(&self.name_hash)?,
            issuer_key_hash: octets(&self.key_hash)?,
            serial_number: SerialNumber::new(serial).map_err(|e| e.to_string())?,
        })
    }
}

/// The DER `OCSPRequest` for `cert_id` (unsigned, no nonce).
///
/// # Errors
/// Encoding failed (not for a `CertID` built by [`Issuer::cert_id`]).
pub fn request(cert_id: &CertId) -> Result<Vec<u8>, String> {
    OcspRequest {
        tbs_request: x509_ocsp::TbsRequest {
            version: x509_ocsp::Version::V1,
            requestor_name: None,
            request_list: vec![Request {
                req_cert: cert_id.clone(),
                single_request_extensions: None,
            }],
            request_extensions: None,
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(|e| e.to_string())
}

/// The contents of a DER TLV (without tag and length).
fn contents(tlv: &[u8]) -> Option<&[u8]> {
    let len_byte = *tlv.get(1)?;
    let start = if len_byte < 0x80 {
        2
    } else {
        2 + usize::from(len_byte & 0x7f)
    };
    tlv.get(start..)
}

/// Whether `signature` over `message` with algorithm `alg` (an `AlgorithmIdentifier`, DER)
/// verifies with the key of `signer`.
fn verifies(signer: &[u8], alg: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Some(alg) = contents(alg) else {
        return false;
    };
    let signer = CertificateDer::from(signer);
    let Ok(cert) = webpki::EndEntityCert::try_from(&signer) else {
        return false;
    };
    webpki::ALL_VERIFICATION_ALGS
        .iter()
        .filter(|a| a.signature_alg_id().as_ref() == alg)
        .any(|a| cert.verify_signature(*a, message, signature).is_ok())
}

/// Whether `delegate` is a responder certificate that `issuer` delegated, valid at `now`.
fn delegated(issuer: &[u8], delegate: &[u8], now: UnixTime) -> Result<(), String> {
    let issuer = CertificateDer::from(issuer);
    let anchor = webpki::anchor_from_trusted_cert(&issuer).map_err(|e| e.to_string())?;
    let delegate = CertificateDer::from(delegate);
    let cert = webpki::EndEntityCert::try_from(&delegate).map_err(|e| e.to_string())?;
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        now,
        webpki::KeyUsage::required(EKU_OCSP_SIGNING),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn unix(t: x509_ocsp::OcspGeneralizedTime) -> i64 {
    i64::try_from(t.0.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Judges the responder's answer `body` for `cert_id` (issued by `issuer`) at `now` (unix
/// seconds).
///
/// # Errors
/// The [`Rejected`] reason: the answer is not used.
pub fn judge(body: &[u8], issuer: &Issuer, cert_id: &CertId, now: i64) -> Result<Answer, Rejected> {
    let response = OcspResponse::from_der(body)
        .map_err(|e| rejected("malformed", format!("not an OCSP response: {e}")))?;
    if response.response_status != x509_ocsp::OcspResponseStatus::Successful {
        return Err(rejected(
            "responder_status",
            format!("the responder answered {:?}", response.response_status),
        ));
    }
    let Some(bytes) = response.response_bytes else {
        return Err(rejected(
            "malformed",
            "a successful response without a body",
        ));
    };
    if bytes.response_type != OCSP_BASIC {
        return Err(rejected(
            "malformed",
            format!(
                "response type {} is not id-pkix-ocsp-basic",
                bytes.response_type
            ),
        ));
    }
    let basic = BasicOcspResponse::from_der(bytes.response.as_bytes())
        .map_err(|e| rejected("malformed", format!("not a BasicOCSPResponse: {e}")))?;
    let certs = basic.certs.as_deref().unwrap_or_default();
    if certs.len() > MAX_RESPONDER_CERTS {
        return Err(rejected(
            "malformed",
            format!("{} certificates in the response", certs.len()),
        ));
    }
    let malformed = |e: der::Error| rejected("malformed", e.to_string());
    let tbs = basic.tbs_response_data.to_der().map_err(malformed)?;
    let alg = basic.signature_algorithm.to_der().map_err(malformed)?;
    let Some(signature) = basic.signature.as_bytes() else {
        return Err(rejected("malformed", "the signature has unused bits"));
    };
    if !verifies(issuer.der.as_ref(), &alg, &tbs, signature) {
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            u64::try_from(now).unwrap_or(0),
        ));
        let mut why = Vec::new();
        let mut signed = false;
        for c in certs {
            let der = c.to_der().map_err(malformed)?;
            match delegated(issuer.der.as_ref(), &der, at) {
                Ok(()) if verifies(&der, &alg, &tbs, signature) => {
                    signed = true;
                    break;
                }
                Ok(()) => why.push("a delegated responder's signature does not verify".to_owned()),
                Err(e) => why.push(format!(
                    "a responder certificate not delegated by the issuer ({e})"
                )),
            }
        }
        if !signed {
            let detail = if why.is_empty() {
                "the signature does not verify with the issuer's key, and no responder certificate is included".to_owned()
            } else {
                format!(
                    "the signature does not verify with the issuer's key; {}",
                    why.join("; ")
                )
            };
            return Err(rejected("signature", detail));
        }
    }
    let responses = &basic.tbs_response_data.responses;
    let Some(single) = responses.iter().find(|r| r.cert_id == *cert_id) else {
        let others: Vec<String> = responses
            .iter()
            .take(4)
            .map(|r| hex(r.cert_id.serial_number.as_bytes()))
            .collect();
        return Err(rejected(
            "other_certificate",
            format!(
                "no answer for serial {} (the response is for serial {})",
                hex(cert_id.serial_number.as_bytes()),
                others.join(", ")
            ),
        ));
    };
    let this_update = unix(single.this_update);
    if this_update > now.saturating_add(LEEWAY) {
        return Err(rejected(
            "future",
            format!("thisUpdate is {}s ahead of this clock", this_update - now),
        ));
    }
    let (valid_until, has_next_update) = match single.next_update {
        Some(t) => (unix(t), true),
        None => (
            this_update.saturating_add(MAX_AGE_WITHOUT_NEXT_UPDATE),
            false,
        ),
    };
    if valid_until.saturating_add(LEEWAY) < now {
        return Err(rejected(
            "stale",
            format!(
                "{} {}s ago",
                if has_next_update {
                    "its nextUpdate passed"
                } else {
                    "no nextUpdate, and its thisUpdate is older than 24h: it ended"
                },
                now - valid_until
            ),
        ));
    }
    let status = match single.cert_status {
        CertStatus::Good(_) => Status::Good,
        CertStatus::Revoked(info) => Status::Revoked(unix(info.revocation_time)),
        CertStatus::Unknown(_) => Status::Unknown,
    };
    Ok(Answer {
        status,
        this_update,
        valid_until,
        has_next_update,
    })
}
