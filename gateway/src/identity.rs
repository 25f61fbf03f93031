//! Extracts the identity of a TLS client from its (already verified)
//! certificate chain: names (CN, DNS/URI SANs, OUs), serial, fingerprint and
//! expiry, and names the principal per `auth.principal_from`. Pure: no I/O and
//! no trust decisions (x509-parser only reads; rustls-webpki has verified).

use std::fmt::Write as _;

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::asn1_rs::Tag;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::AttributeTypeAndValue;

use crate::config::PrincipalFrom;

/// What the gateway knows about a client from its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The subject common name. `None` when the subject has no CN **or more than
    /// one**: with several CNs there is no single name to trust, so `cert_cn`
    /// naming refuses such a certificate (see [`ClientIdentity::principal`]).
    pub cn: Option<String>,
    /// DNS and URI subject alternative names, in certificate order (other SAN
    /// kinds, e.g. IP addresses and e-mail, are not names for a principal).
    pub sans: Vec<String>,
    /// Subject organizational units, in certificate order (for `cert_ou` rules).
    pub ous: Vec<String>,
    /// Serial number, lowercase hex without sign padding or separators.
    pub serial_hex: String,
    /// SHA-256 of the leaf certificate DER, lowercase hex (64 characters).
    pub fingerprint_sha256_hex: String,
    /// `notAfter` of the leaf, unix seconds.
    pub not_after_unix: i64,
}

/// Why a client identity could not be read from a certificate chain.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The chain is empty: the client presented no certificate.
    #[error("no client certificate")]
    NoCertificate,
    /// The leaf certificate does not parse.
    #[error("client certificate cannot be parsed")]
    Parse(#[source] x509_parser::error::X509Error),
    /// A CN or OU is not a readable string (e.g. TeletexString, or invalid UTF-8).
    /// Refused rather than skipped: a skipped OU could dodge a deny rule.
    #[error("client certificate subject {attribute} is not a readable string")]
    UnreadableName {
        /// `"CN"` or `"OU"`.
        attribute: &'static str,
    },
    /// The subjectAltName extension is malformed or duplicated.
    #[error("client certificate subjectAltName cannot be parsed")]
    SubjectAltName(#[source] x509_parser::error::X509Error),
}

impl ClientIdentity {
    /// Reads the identity of the leaf (`chain[0]`); the rest of the chain is ignored.
    ///
    /// # Errors
    /// See [`IdentityError`].
    pub fn from_chain(chain: &[CertificateDer<'_>]) -> Result<Self, IdentityError> {
        let leaf = chain.first().ok_or(IdentityError::NoCertificate)?;
        let (_, cert) =
            X509Certificate::from_der(leaf.as_ref()).map_err(|e| IdentityError::Parse(e.into()))?;
        let subject = cert.subject();
        let cns = subject
            .iter_common_name()
            .map(attribute_string)
            .collect::<Option<Vec<_>>>()
            .ok_or(IdentityError::UnreadableName { attribute: "CN" })?;
        let ous = subject
            .iter_organizational_unit()
            .map(attribute_string)
            .collect::<Option<Vec<_>>>()
            .ok_or(IdentityError::UnreadableName { attribute: "OU" })?;
        let mut sans = Vec::new();
        if let Some(ext) = cert
            .subject_alternative_name()
            .map_err(IdentityError::SubjectAltName)?
        {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(s) | GeneralName::URI(s) => sans.push((*s).to_owned()),
                    _ => {}
                }
            }
        }
        let cn = match <[String; 1]>::try_from(cns) {
            Ok([cn]) => Some(cn),
            Err(_) => None,
        };
        Ok(Self {
            cn,
            sans,
            ous,
            serial_hex: serial_hex(cert.raw_serial()),
            fingerprint_sha256_hex: hex(&Sha256::digest(leaf.as_ref())),
            not_after_unix: cert.validity().not_after.timestamp(),
        })
    }

    /// The principal name per `auth.principal_from`: `cert_cn` → the single CN,
    /// `cert_san` → the first DNS/URI SAN, `username` → `None` (the name comes from
    /// CONNECT, not from here). `None` also when the certificate has no usable
    /// (non-empty, single) name of that kind: the caller must then refuse.
    #[must_use]
    pub fn principal(&self, from: PrincipalFrom) -> Option<&str> {
        let name = match from {
            PrincipalFrom::CertCn => self.cn.as_deref(),
            PrincipalFrom::CertSan => self.sans.first().map(String::as_str),
            PrincipalFrom::Username => None,
        };
        name.filter(|n| !n.is_empty())
    }
}

/// A subject attribute as text: the ASCII/UTF-8 string types, and BMPString
/// (UTF-16BE, still issued by some older CAs). `None` for anything else.
fn attribute_string(attr: &AttributeTypeAndValue<'_>) -> Option<String> {
    if let Ok(s) = attr.as_str() {
        return Some(s.to_owned());
    }
    if attr.attr_value().tag() != Tag::BmpString {
        return None;
    }
    let bytes = attr.as_slice();
    let chunks = bytes.chunks_exact(2);
    if !chunks.remainder().is_empty() {
        return None;
    }
    let units = chunks
        .map(|c| <[u8; 2]>::try_from(c).ok().map(u16::from_be_bytes))
        .collect::<Option<Vec<u16>>>()?;
    String::from_utf16(&units).ok()
}

/// Lowercase hex of a DER INTEGER's bytes without leading zero (sign) bytes.
fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
    let trimmed = raw.get(start..).unwrap_or_default();
    if trimmed.is_empty() {
        return "0".to_owned();
    }
    hex(trimmed)
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().saturating_mul(2));
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::string::{BmpString, TeletexString};
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, DnValue, KeyPair, PKCS_ECDSA_P256_SHA256,
        SanType, SerialNumber, date_time_ymd,
    };

    fn cert(f: impl FnOnce(&mut CertificateParams)) -> CertificateDer<'static> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        f(&mut params);
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn reads_every_field() {
        let der = cert(|p| {
            p.distinguished_name.push(DnType::CommonName, "sensor-1");
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, "sensors");
            // rcgen keeps one value per type: this O becomes a second OU below.
            p.distinguished_name
                .push(DnType::OrganizationName, "hall-3");
            p.subject_alt_names = vec![
                SanType::DnsName("sensor-1.devices.example".try_into().unwrap()),
                SanType::IpAddress("10.0.0.1".parse().unwrap()),
                SanType::URI("spiffe://example/sensor-1".try_into().unwrap()),
                SanType::Rfc822Name("a@example".try_into().unwrap()),
            ];
            p.serial_number = Some(SerialNumber::from_slice(&[0x00, 0x9a, 0x01]));
            p.not_after = date_time_ymd(2031, 2, 3);
        });
        let der = patched(&der, OID_O, OID_OU);
        let id = ClientIdentity::from_chain(std::slice::from_ref(&der)).unwrap();
        assert_eq!(id.cn.as_deref(), Some("sensor-1"));
        assert_eq!(id.ous, ["sensors", "hall-3"]);
        assert_eq!(
            id.sans,
            ["sensor-1.devices.example", "spiffe://example/sensor-1"]
        );
        assert_eq!(id.serial_hex, "9a01");
        assert_eq!(id.not_after_unix, 1_927_843_200); // date -u -d 2031-02-03 +%s
        let expected_fp = hex(&Sha256::digest(der.as_ref()));
        assert_eq!(id.fingerprint_sha256_hex, expected_fp);
        assert_eq!(id.fingerprint_sha256_hex.len(), 64);
        assert_eq!(id.principal(PrincipalFrom::CertCn), Some("sensor-1"));
        assert_eq!(
            id.principal(PrincipalFrom::CertSan),
            Some("sensor-1.devices.example")
        );
        assert_eq!(id.principal(PrincipalFrom::Username), None);
    }

    #[test]
    fn only_the_leaf_counts() {
        let leaf = cert(|p| p.distinguished_name.push(DnType::CommonName, "leaf"));
        let ca = cert(|p| p.distinguished_name.push(DnType::CommonName, "ca"));
        let id = ClientIdentity::from_chain(&[leaf, ca]).unwrap();
        assert_eq!(id.cn.as_deref(), Some("leaf"));
    }

    /// Replaces every `needle` in `der` (signature is broken, which parsing ignores).
    fn patched(der: &CertificateDer<'_>, needle: &[u8], with: &[u8]) -> CertificateDer<'static> {
        let mut bytes = der.as_ref().to_vec();
        let mut count = 0;
        for i in 0..=bytes.len() - needle.len() {
            if bytes[i..i + needle.len()] == *needle {
                bytes[i..i + needle.len()].copy_from_slice(with);
                count += 1;
            }
        }
        assert!(count > 0, "needle not found");
        CertificateDer::from(bytes)
    }

    /// DER of the OID 2.5.4.11 (OU) and 2.5.4.3 (CN).
    const OID_OU: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x0b];
    const OID_CN: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
    /// DER of the OID 2.5.4.10 (O).
    const OID_O: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x0a];

    #[test]
    fn several_cns_give_no_cert_cn_principal() {
        // rcgen keeps one value per attribute type, so turn the OU into a second CN.
        let der = cert(|p| {
            p.distinguished_name.push(DnType::CommonName, "alice");
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, "admin");
        });
        let two_cns = patched(&der, OID_OU, OID_CN);
        let (_, parsed) = X509Certificate::from_der(two_cns.as_ref()).unwrap();
        assert_eq!(parsed.subject().iter_common_name().count(), 2);
        let id = ClientIdentity::from_chain(&[two_cns]).unwrap();
        assert_eq!(id.cn, None);
        assert_eq!(id.principal(PrincipalFrom::CertCn), None);
        // The good case beside it: the unpatched certificate names alice.
        let id = ClientIdentity::from_chain(&[der]).unwrap();
        assert_eq!(id.principal(PrincipalFrom::CertCn), Some("alice"));
    }

    #[test]
    fn bmpstring_names_are_decoded_and_unreadable_ones_refused() {
        let bmp = BmpString::try_from("größe-7").unwrap();
        let der = cert(|p| {
            p.distinguished_name
                .push(DnType::CommonName, DnValue::BmpString(bmp));
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, "ok");
        });
        let id = ClientIdentity::from_chain(std::slice::from_ref(&der)).unwrap();
        assert_eq!(id.principal(PrincipalFrom::CertCn), Some("größe-7"));

        let teletex = TeletexString::try_from("plant").unwrap();
        let der = cert(|p| {
            p.distinguished_name.push(DnType::CommonName, "c");
            p.distinguished_name.push(
                DnType::OrganizationalUnitName,
                DnValue::TeletexString(teletex),
            );
        });
        assert!(matches!(
            ClientIdentity::from_chain(&[der]),
            Err(IdentityError::UnreadableName { attribute: "OU" })
        ));
    }

    #[test]
    fn missing_names_give_no_principal() {
        let der = cert(|_| {});
        let id = ClientIdentity::from_chain(&[der]).unwrap();
        assert_eq!(id.cn, None);
        assert!(id.sans.is_empty() && id.ous.is_empty());
        assert_eq!(id.principal(PrincipalFrom::CertCn), None);
        assert_eq!(id.principal(PrincipalFrom::CertSan), None);

        let empty_cn = cert(|p| p.distinguished_name.push(DnType::CommonName, ""));
        let id = ClientIdentity::from_chain(&[empty_cn]).unwrap();
        assert_eq!(id.cn.as_deref(), Some(""));
        assert_eq!(id.principal(PrincipalFrom::CertCn), None);
    }

    #[test]
    fn refuses_empty_and_garbage_chains() {
        assert!(matches!(
            ClientIdentity::from_chain(&[]),
            Err(IdentityError::NoCertificate)
        ));
        let garbage = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x01]);
        assert!(matches!(
            ClientIdentity::from_chain(&[garbage]),
            Err(IdentityError::Parse(_))
        ));
    }

    #[test]
    fn serial_hex_strips_sign_padding() {
        assert_eq!(serial_hex(&[0x00, 0x80, 0x01]), "8001");
        assert_eq!(serial_hex(&[0x01]), "01");
        assert_eq!(serial_hex(&[0x00]), "0");
        assert_eq!(serial_hex(&[]), "0");
    }
}
