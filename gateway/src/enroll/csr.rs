//! The EST request body, judged without I/O: base64 (RFC 7030 §4.2.1, whitespace allowed) of a
//! DER PKCS#10 CSR whose signature is verified with its own key (proof of possession, by
//! aws-lc-rs through rustls-webpki's algorithms), whose key is of an allowed type (P-256, P-384,
//! Ed25519, RSA 2048 to 8192 bits) and whose subject has exactly one CN, the expected name. Only
//! the public key is taken from it: any extension or other subject attribute the CSR asks for
//! is ignored (the CA decides what the certificate says).

use base64::Engine as _;
use rustls::pki_types::SignatureVerificationAlgorithm;
use webpki::aws_lc_rs as alg;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_PKCS1_SHA256WITHRSA, OID_PKCS1_SHA384WITHRSA, OID_PKCS1_SHA512WITHRSA,
    OID_SIG_ECDSA_WITH_SHA256, OID_SIG_ECDSA_WITH_SHA384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

/// The smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

/// Why a CSR was refused (answered 400; the audit line says which).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrRefusal {
    /// The body is not base64.
    Base64,
    /// Not a DER PKCS#10 request (or trailing bytes).
    Der,
    /// A key or signature algorithm outside the allowed set.
    KeyType,
    /// An RSA key below [`MIN_RSA_BITS`].
    KeyTooSmall,
    /// The signature does not verify with the request's own key.
    Signature,
    /// The subject has no CN, or several.
    Subject,
    /// The CN is not the authenticated name.
    NameMismatch,
}

impl CsrRefusal {
    /// The audit reason.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Base64 => "csr_base64",
            Self::Der => "csr_malformed",
            Self::KeyType => "csr_key_type",
            Self::KeyTooSmall => "csr_key_too_small",
            Self::Signature => "csr_signature",
            Self::Subject => "csr_subject",
            Self::NameMismatch => "csr_name_mismatch",
        }
    }
}

/// What is taken from an accepted CSR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The subject's CN.
    pub cn: String,
    /// The SubjectPublicKeyInfo, DER.
    pub spki_der: Vec<u8>,
}

/// Decodes an EST body: base64 with any ASCII whitespace (line breaks) in it.
///
/// # Errors
/// [`CsrRefusal::Base64`].
pub fn decode_body(body: &[u8]) -> Result<Vec<u8>, CsrRefusal> {
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let engine = &base64::engine::general_purpose::STANDARD;
    engine
        .decode(&compact)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact))
        .map_err(|_| CsrRefusal::Base64)
}

/// The verification algorithm for a key and a signature algorithm, if allowed.
fn algorithm(
    csr: &X509CertificationRequest<'_>,
) -> Result<&'static dyn SignatureVerificationAlgorithm, CsrRefusal> {
    let spki = &csr.certification_request_info.subject_pki;
    let key_oid = &spki.algorithm.algorithm;
    let sig_oid = &csr.signature_algorithm.algorithm;
    if *key_oid == OID_KEY_TYPE_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .ok_or(CsrRefusal::KeyType)?;
        return match (curve, sig_oid) {
            (c, s) if c == OID_EC_P256 && *s == OID_SIG_ECDSA_WITH_SHA256 => {
                Ok(alg::ECDSA_P256_SHA256)
            }
            (c, s) if c == OID_EC_P256 && *s == OID_SIG_ECDSA_WITH_SHA384 => {
                Ok(alg::ECDSA_P256_SHA384)
            }
            (c, s) if c == OID_NIST_EC_P384 && *s == OID_SIG_ECDSA_WITH_SHA384 => {
                Ok(alg::ECDSA_P384_SHA384)
            }
            (c, s) if c == OID_NIST_EC_P384 && *s == OID_SIG_ECDSA_WITH_SHA256 => {
                Ok(alg::ECDSA_P384_SHA256)
            }
            _ => Err(CsrRefusal::KeyType),
        };
    }
    if *key_oid == OID_SIG_ED25519 && *sig_oid == OID_SIG_ED25519 {
        return Ok(alg::ED25519);
    }
    if *key_oid == OID_PKCS1_RSAENCRYPTION {
        let bits = match spki.parsed() {
            Ok(PublicKey::RSA(k)) => k.key_size(),
            _ => return Err(CsrRefusal::Der),
        };
        if bits < MIN_RSA_BITS {
            return Err(CsrRefusal::KeyTooSmall);
        }
        return match sig_oid {
            s if *s == OID_PKCS1_SHA256WITHRSA => Ok(alg::RSA_PKCS1_2048_8192_SHA256),
            s if *s == OID_PKCS1_SHA384WITHRSA => Ok(alg::RSA_PKCS1_2048_8192_SHA384),
            s if *s == OID_PKCS1_SHA512WITHRSA => Ok(alg::RSA_PKCS1_2048_8192_SHA512),
            _ => Err(CsrRefusal::KeyType),
        };
    }
    Err(CsrRefusal::KeyType)
}

/// Judges a DER CSR for the authenticated name `want`. Pure.
///
/// # Errors
/// The first reason to refuse it.
pub fn check(der: &[u8], want: &str) -> Result<Accepted, CsrRefusal> {
    let (rest, csr) = X509CertificationRequest::from_der(der).map_err(|_| CsrRefusal::Der)?;
    if !rest.is_empty() {
        return Err(CsrRefusal::Der);
    }
    let info = &csr.certification_request_info;
    let verifier = algorithm(&csr)?;
    verifier
        .verify_signature(
            &info.subject_pki.subject_public_key.data,
            info.raw,
            &csr.signature_value.data,
        )
        .map_err(|_| CsrRefusal::Signature)?;
    let mut cns = info.subject.iter_common_name();
    let cn = match (cns.next(), cns.next()) {
        (Some(cn), None) => cn.as_str().map_err(|_| CsrRefusal::Subject)?,
        _ => return Err(CsrRefusal::Subject),
    };
    if cn != want {
        return Err(CsrRefusal::NameMismatch);
    }
    Ok(Accepted {
        cn: cn.to_owned(),
        spki_der: info.subject_pki.raw.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, KeyPair};

    fn csr(cn: Option<&str>, alg: &'static rcgen::SignatureAlgorithm) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
        let der = p.serialize_request(&key).unwrap().der().to_vec();
        (der, key)
    }

    #[test]
    fn key_types_names_and_signatures() {
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let (der, _) = csr(Some("dev-1"), alg);
            let ok = check(&der, "dev-1").unwrap();
            assert_eq!(ok.cn, "dev-1");
            assert_eq!(check(&der, "dev-2"), Err(CsrRefusal::NameMismatch));
        }
        let (der, _) = csr(None, &rcgen::PKCS_ECDSA_P256_SHA256);
        assert_eq!(check(&der, "dev-1"), Err(CsrRefusal::Subject));
        // A flipped bit in the signed part: the signature no longer matches the key.
        let (mut der, _) = csr(Some("dev-1"), &rcgen::PKCS_ECDSA_P256_SHA256);
        let at = der.windows(5).position(|w| w == b"dev-1").unwrap();
        der[at + 4] = b'2';
        assert_eq!(check(&der, "dev-2"), Err(CsrRefusal::Signature));
        assert_eq!(check(b"\x30\x03\x02\x01\x00", "x"), Err(CsrRefusal::Der));
        assert_eq!(check(b"", "x"), Err(CsrRefusal::Der));
    }

    #[test]
    fn bodies_with_line_breaks_decode() {
        assert_eq!(decode_body(b"AAEC\r\nAw==\n").unwrap(), [0, 1, 2, 3]);
        assert_eq!(decode_body(b"AAECAw").unwrap(), [0, 1, 2, 3]);
        assert_eq!(decode_body(b"%%%"), Err(CsrRefusal::Base64));
    }
}
