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
    /// Its subject as encoded in the certificate (compared with a leaf's issuer).
    pub subject: Vec<u8>,
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
        let raw_subject = {
            use x509_parser::prelude::{FromDer, X509Certificate};
            let (_, parsed) = X509Certificate::from_der(der.as_ref())
                .map_err(|e| format!("not a certificate: {e}"))?;
            parsed.subject().as_raw().to_vec()
        };
        Ok(Self {
            name_hash: Sha1::digest(&subject).into(),
            key_hash: Sha1::digest(key).into(),
            subject: raw_subject,
            der,
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use der::asn1::{BitString, GeneralizedTime};
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair, SigningKey,
    };
    use x509_ocsp::{
        OcspGeneralizedTime, OcspResponseStatus, ResponderId, ResponseBytes, ResponseData,
        RevokedInfo, SingleResponse,
    };

    use super::*;

    const NOW: i64 = 1_800_000_000;
    const SERIAL: &[u8] = &[0x10, 0x01];

    fn make_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    }

    /// A responder certificate issued by `by` with `eku`, and its key.
    fn responder(
        by: &CertifiedIssuer<'static, KeyPair>,
        eku: ExtendedKeyUsagePurpose,
    ) -> (Vec<u8>, KeyPair) {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, "ocsp");
        p.extended_key_usages = vec![eku];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, by).unwrap();
        (cert.der().to_vec(), key)
    }

    fn time(t: i64) -> OcspGeneralizedTime {
        OcspGeneralizedTime(
            GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(
                u64::try_from(t).unwrap(),
            ))
            .unwrap(),
        )
    }

    struct Answer {
        cert_id: CertId,
        status: CertStatus,
        this_update: i64,
        next_update: Option<i64>,
    }

    /// An OCSP response signed by `key`, carrying `certs`.
    fn signed(a: &Answer, key: &KeyPair, certs: &[Vec<u8>]) -> Vec<u8> {
        let tbs = ResponseData {
            version: x509_ocsp::Version::V1,
            responder_id: ResponderId::ByKey(OctetString::new(vec![0u8; 20]).unwrap()),
            produced_at: time(a.this_update),
            responses: vec![SingleResponse {
                cert_id: a.cert_id.clone(),
                cert_status: a.status,
                this_update: time(a.this_update),
                next_update: a.next_update.map(time),
                single_extensions: None,
            }],
            response_extensions: None,
        };
        let signature = key.sign(&tbs.to_der().unwrap()).unwrap();
        let basic = BasicOcspResponse {
            tbs_response_data: tbs,
            signature_algorithm: AlgorithmIdentifierOwned {
                oid: ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2"),
                parameters: None,
            },
            signature: BitString::from_bytes(&signature).unwrap(),
            certs: (!certs.is_empty()).then(|| {
                certs
                    .iter()
                    .map(|c| x509_cert::Certificate::from_der(c).unwrap())
                    .collect()
            }),
        };
        OcspResponse {
            response_status: OcspResponseStatus::Successful,
            response_bytes: Some(ResponseBytes {
                response_type: OCSP_BASIC,
                response: OctetString::new(basic.to_der().unwrap()).unwrap(),
            }),
        }
        .to_der()
        .unwrap()
    }

    /// RFC 6960 §3.2 and §4.2.2.2: the answers a client may and may not rely on.
    #[test]
    fn judge_table() {
        let ca = make_ca("Device CA");
        let issuer = Issuer::new(ca.der().clone()).unwrap();
        let id = issuer.cert_id(SERIAL).unwrap();
        let other_id = issuer.cert_id(&[0x10, 0x02]).unwrap();
        let (delegate, delegate_key) = responder(&ca, ExtendedKeyUsagePurpose::OcspSigning);
        let (not_delegated, not_delegated_key) =
            responder(&ca, ExtendedKeyUsagePurpose::ClientAuth);
        let foreign = make_ca("Other CA");
        let (foreign_responder, foreign_key) =
            responder(&foreign, ExtendedKeyUsagePurpose::OcspSigning);
        let good = |this_update, next_update| Answer {
            cert_id: id.clone(),
            status: CertStatus::good(),
            this_update,
            next_update,
        };
        let revoked = Answer {
            cert_id: id.clone(),
            status: CertStatus::revoked(RevokedInfo {
                revocation_time: time(NOW - 60),
                revocation_reason: None,
            }),
            this_update: NOW - 10,
            next_update: Some(NOW + 600),
        };
        let unknown = Answer {
            status: CertStatus::unknown(),
            ..good(NOW - 10, Some(NOW + 600))
        };
        let for_other = Answer {
            cert_id: other_id,
            ..good(NOW - 10, Some(NOW + 600))
        };
        let unsuccessful = OcspResponse {
            response_status: OcspResponseStatus::TryLater,
            response_bytes: None,
        }
        .to_der()
        .unwrap();
        let mut tampered = signed(&good(NOW - 10, Some(NOW + 600)), ca.key(), &[]);
        let at = tampered.len() - 80;
        tampered[at] ^= 1;

        type Row = (&'static str, Vec<u8>, Result<Status, &'static str>);
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("good, signed by the issuer", signed(&good(NOW - 10, Some(NOW + 600)), ca.key(), &[]), Ok(Status::Good)),
            ("revoked, signed by the issuer", signed(&revoked, ca.key(), &[]), Ok(Status::Revoked(NOW - 60))),
            ("unknown", signed(&unknown, ca.key(), &[]), Ok(Status::Unknown)),
            ("good, signed by a delegated responder", signed(&good(NOW - 10, Some(NOW + 600)), &delegate_key, std::slice::from_ref(&delegate)), Ok(Status::Good)),
            ("delegated key, but its certificate is not included", signed(&good(NOW - 10, Some(NOW + 600)), &delegate_key, &[]), Err("signature")),
            ("a responder of the issuer without id-kp-OCSPSigning", signed(&revoked, &not_delegated_key, &[not_delegated]), Err("signature")),
            ("a responder delegated by another CA", signed(&good(NOW - 10, Some(NOW + 600)), &foreign_key, &[foreign_responder]), Err("signature")),
            ("signed by another CA's key", signed(&good(NOW - 10, Some(NOW + 600)), foreign.key(), &[]), Err("signature")),
            ("a delegated certificate beside another key's signature", signed(&good(NOW - 10, Some(NOW + 600)), foreign.key(), &[delegate]), Err("signature")),
            ("tampered after signing", tampered, Err("")),
            ("for another serial", signed(&for_other, ca.key(), &[]), Err("other_certificate")),
            ("stale: nextUpdate passed", signed(&good(NOW - 7200, Some(NOW - 3600)), ca.key(), &[]), Err("stale")),
            ("nextUpdate passed within the leeway", signed(&good(NOW - 7200, Some(NOW - 60)), ca.key(), &[]), Ok(Status::Good)),
            ("no nextUpdate, thisUpdate 2 days old", signed(&good(NOW - 2 * 86_400, None), ca.key(), &[]), Err("stale")),
            ("no nextUpdate, recent", signed(&good(NOW - 60, None), ca.key(), &[]), Ok(Status::Good)),
            ("thisUpdate in the future", signed(&good(NOW + 3600, Some(NOW + 7200)), ca.key(), &[]), Err("future")),
            ("thisUpdate ahead within the leeway", signed(&good(NOW + 60, Some(NOW + 7200)), ca.key(), &[]), Ok(Status::Good)),
            ("responder says tryLater", unsuccessful, Err("responder_status")),
            ("garbage", b"<html>hello</html>".to_vec(), Err("malformed")),
            ("empty", Vec::new(), Err("malformed")),
        ];
        for (name, body, want) in table {
            let got = judge(&body, &issuer, &id, NOW);
            match (&got, want) {
                (Ok(a), Ok(status)) => assert_eq!(a.status, status, "{name}"),
                // A tampered body fails to parse or to verify, depending on the byte.
                (Err(e), Err("")) => {
                    assert!(matches!(e.kind, "signature" | "malformed"), "{name}: {e}")
                }
                (Err(e), Err(kind)) => assert_eq!(e.kind, kind, "{name}: {e}"),
                _ => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    /// One issuer, the CertID of [`SERIAL`] and a good answer for it, made once for the
    /// property tests.
    struct Fixture {
        issuer: Issuer,
        id: CertId,
        good: Vec<u8>,
    }

    static FIXTURE: std::sync::LazyLock<Fixture> = std::sync::LazyLock::new(|| {
        let ca = make_ca("Device CA");
        let issuer = Issuer::new(ca.der().clone()).unwrap();
        let id = issuer.cert_id(SERIAL).unwrap();
        let good = signed(
            &Answer {
                cert_id: id.clone(),
                status: CertStatus::good(),
                this_update: NOW - 10,
                next_update: Some(NOW + 600),
            },
            ca.key(),
            &[],
        );
        Fixture { issuer, id, good }
    });

    proptest::proptest! {
        /// The parse path on hostile input: arbitrary bytes never panic and are never taken.
        #[test]
        fn arbitrary_bytes_are_refused_without_panicking(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)
        ) {
            let f = &*FIXTURE;
            proptest::prop_assert!(judge(&body, &f.issuer, &f.id, NOW).is_err());
        }

        /// Any one flipped bit of a good answer: refused, or (a bit outside what is signed and
        /// read) the same good answer; never another status or time.
        #[test]
        fn a_flipped_bit_never_changes_what_is_taken(
            at in proptest::prelude::any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let f = &*FIXTURE;
            let mut body = f.good.clone();
            let i = at.index(body.len());
            body[i] ^= 1 << bit;
            if let Ok(a) = judge(&body, &f.issuer, &f.id, NOW) {
                let want = judge(&f.good, &f.issuer, &f.id, NOW).unwrap();
                proptest::prop_assert_eq!(a, want);
            }
        }
    }

    #[test]
    fn a_request_names_the_certificate_by_sha1_hashes_and_serial() {
        let ca = make_ca("Device CA");
        let issuer = Issuer::new(ca.der().clone()).unwrap();
        let id = issuer.cert_id(SERIAL).unwrap();
        let der = request(&id).unwrap();
        let back = OcspRequest::from_der(&der).unwrap();
        assert_eq!(back.tbs_request.request_list.len(), 1);
        let got = &back.tbs_request.request_list[0].req_cert;
        assert_eq!(got, &id);
        assert_eq!(got.hash_algorithm.oid, SHA1);
        assert_eq!(got.serial_number.as_bytes(), SERIAL);
        assert_ne!(issuer.cert_id(&[0x10, 0x02]).unwrap(), id);
    }
}
