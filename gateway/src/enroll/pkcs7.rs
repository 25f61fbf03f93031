//! EST answers: a degenerate CMS SignedData holding only certificates ("certs-only", RFC 5652
//! §5, RFC 7030 §4.1.3 and §4.2.3), DER, sent base64 in lines of 64 characters (which
//! `openssl base64 -d` and every EST client read).

use base64::Engine as _;
use cms::cert::x509::Certificate;
use cms::cert::x509::der::{Decode, Encode};
use cms::content_info::ContentInfo;

/// A certs-only SignedData with `certs` (each DER), DER.
///
/// # Errors
/// A certificate that does not parse, or an encoding failure.
pub fn certs_only(certs: &[&[u8]]) -> Result<Vec<u8>, cms::cert::x509::der::Error> {
    let parsed = certs
        .iter()
        .map(|der| Certificate::from_der(der))
        .collect::<Result<Vec<_>, _>>()?;
    ContentInfo::try_from(parsed)?.to_der()
}

/// `der` in base64, in lines of 64 characters, each ending with CRLF.
#[must_use]
pub fn base64_lines(der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(text.len() + text.len() / 32 + 2);
    for chunk in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::FromDer;

    #[test]
    fn holds_the_certificates_and_parses_back() {
        let key = rcgen::KeyPair::generate().unwrap();
        let a = rcgen::CertificateParams::new(vec!["a".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let b = rcgen::CertificateParams::new(vec!["b".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = certs_only(&[a.der(), b.der()]).unwrap();
        let ci = ContentInfo::from_der(&der).unwrap();
        assert_eq!(ci.content_type.to_string(), "1.2.840.113549.1.7.2");
        let sd: cms::signed_data::SignedData = ci.content.decode_as().unwrap();
        let certs = sd.certificates.unwrap();
        assert_eq!(certs.0.len(), 2);
        assert!(sd.signer_infos.0.is_empty(), "certs-only: no signer");
        assert!(certs_only(&[b"junk"]).is_err());
        let text = base64_lines(&der);
        assert!(text.lines().all(|l| l.len() <= 64));
        let back = crate::enroll::csr::decode_body(text.as_bytes()).unwrap();
        assert_eq!(back, der);
        let _ = x509_parser::certificate::X509Certificate::from_der(a.der()).unwrap();
    }
}
