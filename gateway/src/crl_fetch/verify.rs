//! Is a fetched body a CRL signed by a CA of the listener's `client_ca`? Parsed by rustls-webpki
//! (the parser the verifier will use) and x509-parser (dates, number, names), the signature
//! checked with the gateway's crypto provider (aws-lc-rs) the way rustls-webpki checks it: the
//! signature algorithm and the issuer's key algorithm must both match one supported algorithm.
//!
//! This runs before a CRL is stored or swapped in. The verifier would check the signature again
//! at each handshake; a CRL it cannot verify would make it refuse every certificate of that
//! issuer, so a forged or broken CRL must never get that far.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer};
use sha2::{Digest, Sha256};
use x509_parser::asn1_rs::{Any, FromDer, Tag};

use super::decide::CrlFacts;
use crate::labels::CrlFetchResult;

/// Why a body is not a usable CRL: the metric result and a detail for the audit line.
pub type Refusal = (CrlFetchResult, String);

/// The DER of a body that holds one CRL, PEM (`X509 CRL`) or DER.
///
/// # Errors
/// [`CrlFetchResult::NotACrl`]: bad PEM, or no CRL in it.
pub fn to_der(body: Vec<u8>) -> Result<Vec<u8>, Refusal> {
    if body.starts_with(b"-----BEGIN") || body.windows(10).any(|w| w == b"-----BEGIN") {
        CertificateRevocationListDer::from_pem_slice(&body)
            .map(|crl| crl.as_ref().to_vec())
            .map_err(|e| (CrlFetchResult::NotACrl, format!("PEM: {e}")))
    } else {
        Ok(body)
    }
}

/// The facts of `der` if it is a CRL signed by one of `issuers` (the `client_ca` certificates).
///
/// # Errors
/// [`CrlFetchResult::NotACrl`], [`CrlFetchResult::UnknownIssuer`] (no CA of that name that may
/// sign CRLs) or [`CrlFetchResult::BadSignature`], with a detail.
pub fn verify(der: &[u8], issuers: &[CertificateDer<'_>]) -> Result<CrlFacts, Refusal> {
    let not_a_crl = |what: String| (CrlFetchResult::NotACrl, what);
    webpki::OwnedCertRevocationList::from_der(der).map_err(|e| not_a_crl(format!("{e:?}")))?;
    let (rest, crl) = x509_parser::parse_x509_crl(der).map_err(|e| not_a_crl(e.to_string()))?;
    if !rest.is_empty() {
        return Err(not_a_crl("trailing bytes after the CRL".to_owned()));
    }
    let signed = signed_parts(der).ok_or_else(|| not_a_crl("malformed signature".to_owned()))?;
    let issuer_name = crl.issuer().as_raw();
    let mut named = 0usize;
    let mut last_error = String::new();
    for issuer in issuers {
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(issuer.as_ref()) else {
            continue;
        };
        if cert.subject().as_raw() != issuer_name {
            continue;
        }
        let may_sign_crls = match cert.key_usage() {
            Ok(Some(ku)) => ku.value.crl_sign(),
            Ok(None) => true,
            Err(_) => false,
        };
        if !may_sign_crls {
            continue;
        }
        named += 1;
        match check_signature(&signed, cert.public_key().raw) {
            Ok(()) => {
                return Ok(CrlFacts {
                    this_update: crl.last_update().timestamp(),
                    next_update: crl.next_update().map(|t| t.timestamp()),
                    number: crl.crl_number().map(|n| n.to_bytes_be()),
                    digest: Sha256::digest(der).into(),
                });
            }
            Err(e) => last_error = e,
        }
    }
    if named == 0 {
        return Err((
            CrlFetchResult::UnknownIssuer,
            format!("no CA of client_ca named {} may sign CRLs", crl.issuer()),
        ));
    }
    Err((CrlFetchResult::BadSignature, last_error))
}

/// The three parts of a signed X.509 structure.
struct Signed<'a> {
    /// The whole `tbsCertList` (tag and length included): what was signed.
    tbs: &'a [u8],
    /// The contents of the outer `signatureAlgorithm` SEQUENCE.
    algorithm: &'a [u8],
    /// The signature bits.
    signature: &'a [u8],
}

/// SEQUENCE { tbs SEQUENCE, algorithm SEQUENCE, signature BIT STRING } with no unused bits.
fn signed_parts(der: &[u8]) -> Option<Signed<'_>> {
    let (rest, outer) = Any::from_der(der).ok()?;
    if !rest.is_empty() || outer.tag() != Tag::Sequence {
        return None;
    }
    let content = outer.data;
    let (after_tbs, tbs) = Any::from_der(content).ok()?;
    let tbs_len = content.len().checked_sub(after_tbs.len())?;
    if tbs.tag() != Tag::Sequence {
        return None;
    }
    let (after_alg, algorithm) = Any::from_der(after_tbs).ok()?;
    let (end, signature) = Any::from_der(after_alg).ok()?;
    if !end.is_empty() || algorithm.tag() != Tag::Sequence || signature.tag() != Tag::BitString {
        return None;
    }
    let (&unused, bits) = signature.data.split_first()?;
    if unused != 0 {
        return None;
    }
    Some(Signed {
        tbs: content.get(..tbs_len)?,
        algorithm: algorithm.data,
        signature: bits,
    })
}

/// Verifies `signed` with the key of the SubjectPublicKeyInfo `spki` (DER).
fn check_signature(signed: &Signed<'_>, spki: &[u8]) -> Result<(), String> {
    let (_, outer) = Any::from_der(spki).map_err(|_| "issuer key: malformed".to_owned())?;
    let (after, key_algorithm) =
        Any::from_der(outer.data).map_err(|_| "issuer key: malformed".to_owned())?;
    let (_, key) = Any::from_der(after).map_err(|_| "issuer key: malformed".to_owned())?;
    let key_bits = match key.data.split_first() {
        Some((0, bits)) => bits,
        _ => return Err("issuer key: malformed".to_owned()),
    };
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let mut algorithm_known = false;
    for alg in provider.signature_verification_algorithms.all {
        if alg.signature_alg_id().as_ref() != signed.algorithm {
            continue;
        }
        algorithm_known = true;
        if alg.public_key_alg_id().as_ref() != key_algorithm.data {
            continue;
        }
        return alg
            .verify_signature(key_bits, signed.tbs, signed.signature)
            .map_err(|_| "the signature does not verify with the issuer's key".to_owned());
    }
    Err(if algorithm_known {
        "the signature algorithm does not fit the issuer's key".to_owned()
    } else {
        "unsupported signature algorithm".to_owned()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
        DnType, IsCa, KeyPair, KeyUsagePurpose, SerialNumber,
    };
    use time::OffsetDateTime;

    use super::*;

    fn ca(name: &str, usages: Vec<KeyUsagePurpose>) -> CertifiedIssuer<'static, KeyPair> {
        ca_with(name, usages, KeyPair::generate().unwrap())
    }

    fn ca_with(
        name: &str,
        usages: Vec<KeyUsagePurpose>,
        key: KeyPair,
    ) -> CertifiedIssuer<'static, KeyPair> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = usages;
        CertifiedIssuer::self_signed(p, key).unwrap()
    }

    fn crl(issuer: &CertifiedIssuer<'static, KeyPair>, number: u64) -> Vec<u8> {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now,
            next_update: now + time::Duration::days(7),
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: Vec::new(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
        .signed_by(issuer)
        .unwrap()
        .der()
        .to_vec()
    }

    #[test]
    fn only_a_crl_signed_by_a_client_ca_that_may_sign_crls_passes() {
        let usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let trusted = ca("Devices CA", usages.clone());
        // Same name, another key: what a forger would publish.
        let forger = ca("Devices CA", usages.clone());
        let stranger = ca("Other CA", usages.clone());
        // The client_ca certificate says its key may not sign CRLs; rcgen signs one with the same
        // key and name anyway (through a certificate that says it may).
        let key = KeyPair::generate().unwrap();
        let same_key = KeyPair::from_pem(&key.serialize_pem()).unwrap();
        let no_crl_sign = ca_with("Certs Only CA", vec![KeyUsagePurpose::KeyCertSign], key);
        let crl_signer = ca_with("Certs Only CA", usages.clone(), same_key);
        let anchors = [trusted.der().clone(), no_crl_sign.der().clone()];

        let good = crl(&trusted, 7);
        let facts = verify(&good, &anchors).expect("signed by a client CA");
        assert_eq!(facts.number.as_deref(), Some(&[7u8][..]));
        assert_eq!(
            facts.digest,
            <[u8; 32]>::from(Sha256::digest(&good)),
            "the CRL's digest"
        );
        assert!(facts.next_update.is_some_and(|n| n > facts.this_update));

        let pem = rustls::pki_types::CertificateRevocationListDer::from(good.clone());
        let pem_text = format!(
            "-----BEGIN X509 CRL-----\n{}\n-----END X509 CRL-----\n",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pem.as_ref())
        );
        assert_eq!(to_der(pem_text.into_bytes()).unwrap(), good, "PEM body");

        let mut flipped = good.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        #[rustfmt::skip]
        let table: [(&str, Vec<u8>, CrlFetchResult); 6] = [
            ("same name, other key", crl(&forger, 8), CrlFetchResult::BadSignature),
            ("a tampered signature", flipped, CrlFetchResult::BadSignature),
            ("an issuer not in client_ca", crl(&stranger, 8), CrlFetchResult::UnknownIssuer),
            ("an issuer without cRLSign", crl(&crl_signer, 8), CrlFetchResult::UnknownIssuer),
            ("an HTML error page", b"<html>502 Bad Gateway</html>".to_vec(), CrlFetchResult::NotACrl),
            ("a certificate", trusted.der().to_vec(), CrlFetchResult::NotACrl),
        ];
        for (name, der, want) in table {
            let got = verify(&der, &anchors).map(|_| ()).map_err(|(r, _)| r);
            assert_eq!(got, Err(want), "{name}");
        }
        assert!(to_der(b"-----BEGIN X509 CRL-----\nnot base64!\n".to_vec()).is_err());
    }
}
