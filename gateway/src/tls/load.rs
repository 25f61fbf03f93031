//! Reading TLS material from files: certificate chains, private keys, trust
//! anchors and CRLs. Every failure names the file (and the item in it).

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

use super::TlsError;

/// Reads a file whole; the error names it.
fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The PEM error of `path`, or [`TlsError::Empty`] when no item of the wanted kind was found.
fn pem_error(path: &Path, what: &'static str, source: pem::Error) -> TlsError {
    match source {
        pem::Error::NoItemsFound => TlsError::Empty {
            path: path.to_owned(),
            what,
        },
        source => TlsError::Pem {
            path: path.to_owned(),
            source,
        },
    }
}

/// Loads every `CERTIFICATE` block of a PEM file, in file order (leaf first for a chain).
///
/// # Errors
/// Unreadable file, bad PEM, or no certificate in it.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, "certificate", e))?;
    if certs.is_empty() {
        return Err(pem_error(path, "certificate", pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// Loads the first private key of a PEM file: PKCS#8 (`PRIVATE KEY`),
/// PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
///
/// # Errors
/// Unreadable file, bad PEM, or no key in it.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| pem_error(path, "private key", e))
}

/// Loads the trust anchors for client certificates: every certificate of a PEM file.
///
/// # Errors
/// As [`load_certs`], or [`TlsError::Anchor`] naming the certificate that is not a
/// usable trust anchor.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for (index, cert) in load_certs(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| TlsError::Anchor {
            path: path.to_owned(),
            index,
            source: Box::new(e),
        })?;
    }
    Ok(roots)
}

/// Loads the CRLs of one file: PEM (`X509 CRL` blocks, detected by a
/// `-----BEGIN` marker) or a single DER CRL. Each CRL is parsed by
/// rustls-webpki here, so a broken file is reported by name before it can
/// reach a verifier.
///
/// # Errors
/// Unreadable file, bad PEM, no CRL in a PEM file, or a CRL that does not parse.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let crls = if bytes.windows(10).any(|w| w == b"-----BEGIN") {
        let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(path, "CRL", e))?;
        if crls.is_empty() {
            return Err(pem_error(path, "CRL", pem::Error::NoItemsFound));
        }
        crls
    } else {
        vec![CertificateRevocationListDer::from(bytes)]
    };
    for (index, crl) in crls.iter().enumerate() {
        webpki::OwnedCertRevocationList::from_der(crl.as_ref()).map_err(|e| TlsError::Crl {
            path: path.to_owned(),
            index,
            source: Box::new(e),
        })?;
    }
    Ok(crls)
}

/// Dates of one CRL, for the CRL-expiry metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlInfo {
    /// The file it came from.
    pub path: PathBuf,
    /// Its position in that file (0 for a DER file).
    pub index: usize,
    /// `thisUpdate`, unix seconds.
    pub this_update_unix: i64,
    /// `nextUpdate`, unix seconds (optional in X.509; a CRL without it never expires).
    pub next_update_unix: Option<i64>,
}

/// `thisUpdate`/`nextUpdate` of every CRL in `paths` (several per file are possible).
///
/// # Errors
/// As [`load_crls`], or [`TlsError::CrlDates`] if x509-parser cannot read a CRL
/// that rustls-webpki accepted.
pub fn crl_metadata(paths: &[PathBuf]) -> Result<Vec<CrlInfo>, TlsError> {
    let mut out = Vec::new();
    for path in paths {
        for (index, der) in load_crls(path)?.iter().enumerate() {
            let (_, crl) =
                x509_parser::parse_x509_crl(der.as_ref()).map_err(|e| TlsError::CrlDates {
                    path: path.clone(),
                    index,
                    source: e.into(),
                })?;
            out.push(CrlInfo {
                path: path.clone(),
                index,
                this_update_unix: crl.last_update().timestamp(),
                next_update_unix: crl.next_update().map(|t| t.timestamp()),
            });
        }
    }
    Ok(out)
}
