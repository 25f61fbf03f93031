//! A small certificate authority for operators who have none: `pki init` makes a CA (ECDSA P-256,
//! key stored 0600), `pki issue` makes device (clientAuth) and server (serverAuth) certificates,
//! `pki revoke` rewrites the CRL (atomically, so a running gateway's watcher never reads half a
//! file), `pki crl` re-signs it before it expires, `pki list` shows what was issued.
//!
//! Everything is ordinary PEM that Mosquitto, openssl and the gateway read. Layout of DIR:
//! `ca.pem`, `ca.key`, `ca.crl`, `index.json` (what was issued), and `NAME.pem` / `NAME.key` per
//! certificate; `tokens.json` (hashed one-time enrollment tokens, `crate::enroll`) and `.lock`.
//!
//! Every change of the directory (issue, revoke, CRL, tokens) holds an exclusive `flock` on
//! `DIR/.lock`, so the CLI and a running EST server (many enrollments at once) never interleave
//! their read-modify-write of `index.json`; each file is replaced atomically (temp file, rename).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Days a CRL is valid after each (re-)signing. The gateway refuses every client once the CRL it
/// enforces has expired (fail closed), so re-sign with `pki crl` well before: the alert rules warn
/// 24 h ahead.
pub const CRL_DAYS: i64 = 90;

/// What can go wrong, with the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// rcgen refused (bad name, bad key, ...).
    #[error("{context}: {source}")]
    Cert {
        /// What was being done.
        context: &'static str,
        /// Why.
        #[source]
        source: rcgen::Error,
    },
    /// The index file is not valid.
    #[error("{}: {source}", path.display())]
    Index {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// A usage error: a name already issued, unknown, or invalid.
    #[error("{0}")]
    Usage(String),
}

/// One issued certificate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The name (CN).
    pub name: String,
    /// Serial number, hex.
    pub serial: String,
    /// `device` or `server`.
    pub kind: String,
    /// Expiry, unix seconds.
    pub not_after: i64,
    /// Revocation time, unix seconds, if revoked.
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    entries: Vec<Entry>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn cert_err(context: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError::Cert { context, source }
}

/// Writes `data` to `path` through a temporary file and a rename, with `mode`.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(data).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// The parameters of a leaf certificate for `name` (CN, and OU when given), valid from an hour ago
/// for `days`, with one extended key usage and a fresh random serial (returned too).
fn leaf_params(
    sans: Vec<String>,
    name: &str,
    ou: Option<&str>,
    usage: ExtendedKeyUsagePurpose,
    days: i64,
) -> Result<(CertificateParams, Vec<u8>), PkiError> {
    let mut p = CertificateParams::new(sans).map_err(cert_err("certificate parameters"))?;
    p.distinguished_name.push(DnType::CommonName, name);
    if let Some(ou) = ou {
        p.distinguished_name
            .push(DnType::OrganizationalUnitName, ou);
    }
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    p.use_authority_key_identifier_extension = true;
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(days);
    let serial = random_serial()?;
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok((p, serial))
}

fn random_serial() -> Result<Vec<u8>, PkiError> {
    let mut bytes = [0u8; 16];
    crate::tls::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| PkiError::Usage("no secure random source".into()))?;
    // Positive, and never starting with a zero byte (RFC 5280 §4.1.2.2).
    if let Some(b) = bytes.first_mut() {
        *b = (*b & 0x7f) | 0x40;
    }
    Ok(bytes.to_vec())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

pub(crate) fn check_name(name: &str) -> Result<(), PkiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !name.starts_with('.')
        && name != "ca";
    if ok {
        Ok(())
    } else {
        Err(PkiError::Usage(format!(
            "invalid name {name:?}: use 1-64 of A-Z a-z 0-9 - _ . (not starting with '.', not \"ca\")"
        )))
    }
}

/// The CA directory.
#[derive(Debug)]
pub struct Ca {
    dir: PathBuf,
}

impl Ca {
    /// Creates a CA in `dir` (created if needed; refused if a CA is there already).
    ///
    /// # Errors
    /// A CA exists, or a file cannot be written.
    pub fn init(dir: &Path, common_name: &str, days: i64) -> Result<Self, PkiError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let ca = Self {
            dir: dir.to_owned(),
        };
        if ca.path("ca.key").exists() {
            return Err(PkiError::Usage(format!(
                "{} already holds a CA",
                dir.display()
            )));
        }
        let mut p =
            CertificateParams::new(Vec::<String>::new()).map_err(cert_err("CA parameters"))?;
        p.distinguished_name.push(DnType::CommonName, common_name);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(days);
        p.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err("CA key"))?;
        let cert = p.self_signed(&key).map_err(cert_err("CA certificate"))?;
        write_atomic(&ca.path("ca.key"), key.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&ca.path("ca.pem"), cert.pem().as_bytes(), 0o644)?;
        ca.save_index(&Index::default())?;
        ca.write_crl(&[])?;
        Ok(ca)
    }

    /// Opens an existing CA directory.
    ///
    /// # Errors
    /// No CA there.
    pub fn open(dir: &Path) -> Result<Self, PkiError> {
        let ca = Self {
            dir: dir.to_owned(),
        };
        if !ca.path("ca.key").exists() || !ca.path("ca.pem").exists() {
            return Err(PkiError::Usage(format!(
                "{} holds no CA (run `mqtt-gateway pki init {}`)",
                dir.display(),
                dir.display()
            )));
        }
        Ok(ca)
    }

    /// A file of the CA directory.
    #[must_use]
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Takes the directory's exclusive lock (`flock` on `DIR/.lock`, blocking), released when
    /// the returned file is dropped. Not re-entrant: the public methods take it, the private
    /// helpers they call do not.
    ///
    /// # Errors
    /// The lock file cannot be opened or locked.
    pub fn lock(&self) -> Result<fs::File, PkiError> {
        let path = self.path(".lock");
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        f.lock().map_err(io_err(&path))?;
        Ok(f)
    }

    /// Whether the CA can sign: `ca.key` and `ca.pem` read and match (an EST server checks this
    /// at start rather than at its first enrollment).
    ///
    /// # Errors
    /// Either file cannot be read or parsed.
    pub fn check_signing(&self) -> Result<(), PkiError> {
        self.issuer().map(drop)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key_path = self.path("ca.key");
        let pem_path = self.path("ca.pem");
        let key_pem = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let cert_pem = fs::read_to_string(&pem_path).map_err(io_err(&pem_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(cert_err("reading ca.key"))?;
        Issuer::from_ca_cert_pem(&cert_pem, key).map_err(cert_err("reading ca.pem"))
    }

    fn load_index(&self) -> Result<Index, PkiError> {
        let path = self.path("index.json");
        match fs::read_to_string(&path) {
            Ok(text) => {
                serde_json::from_str(&text).map_err(|source| PkiError::Index { path, source })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn save_index(&self, index: &Index) -> Result<(), PkiError> {
        let path = self.path("index.json");
        let text = serde_json::to_string_pretty(index).map_err(|source| PkiError::Index {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, text.as_bytes(), 0o644)
    }

    /// Issues a certificate: a device certificate (clientAuth, CN = `name`, OU = `ou`), or with
    /// `server` a server certificate (serverAuth) for `sans` (default: `name`).
    ///
    /// # Errors
    /// An invalid or already issued name, or a file error.
    pub fn issue(
        &self,
        name: &str,
        ou: Option<&str>,
        days: i64,
        server: bool,
        sans: &[String],
    ) -> Result<Entry, PkiError> {
        check_name(name)?;
        let _lock = self.lock()?;
        let mut index = self.load_index()?;
        if index
            .entries
            .iter()
            .any(|e| e.name == name && e.revoked_at.is_none())
        {
            return Err(PkiError::Usage(format!(
                "{name} is already issued (revoke it first)"
            )));
        }
        let names: Vec<String> = if server {
            if sans.is_empty() {
                vec![name.to_owned()]
            } else {
                sans.to_vec()
            }
        } else {
            Vec::new()
        };
        let usage = if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        };
        let (p, serial) = leaf_params(names, name, ou, usage, days)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_err("key"))?;
        let cert = p
            .signed_by(&key, &self.issuer()?)
            .map_err(cert_err("signing"))?;
        write_atomic(
            &self.path(&format!("{name}.key")),
            key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_atomic(
            &self.path(&format!("{name}.pem")),
            cert.pem().as_bytes(),
            0o644,
        )?;
        let entry = Entry {
            name: name.to_owned(),
            serial: hex(&serial),
            kind: if server { "server" } else { "device" }.to_owned(),
            not_after: p.not_after.unix_timestamp(),
            revoked_at: None,
        };
        index.entries.push(entry.clone());
        self.save_index(&index)?;
        Ok(entry)
    }

    /// Revokes the certificate issued as `name` and rewrites the CRL. A device that renewed over
    /// EST may hold several unexpired certificates of its name (the old one stays valid until it
    /// expires): all of them are revoked; the newest is returned.
    ///
    /// # Errors
    /// No valid certificate of that name, or a file error.
    pub fn revoke(&self, name: &str) -> Result<Entry, PkiError> {
        let _lock = self.lock()?;
        let mut index = self.load_index()?;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut revoked = None;
        for entry in index
            .entries
            .iter_mut()
            .filter(|e| e.name == name && e.revoked_at.is_none())
        {
            entry.revoked_at = Some(now);
            revoked = Some(entry.clone());
        }
        let Some(revoked) = revoked else {
            return Err(PkiError::Usage(format!(
                "no valid certificate named {name}"
            )));
        };
        self.save_index(&index)?;
        self.write_crl(&index.entries)?;
        Ok(revoked)
    }

    /// Issues a device certificate (clientAuth, CN = `name`, OU = `ou`, `days` long) for a public key that
    /// is not ours (an EST client's CSR: `spki_der` is its SubjectPublicKeyInfo; nothing else of
    /// the CSR is taken), and records it in the index. Unlike [`Ca::issue`], a name that already
    /// holds a valid certificate may get another one (renewal: the old one keeps working until it
    /// expires or is revoked). The caller holds [`Ca::lock`].
    ///
    /// Returns the entry and the certificate (DER).
    ///
    /// # Errors
    /// An invalid name, a key type rcgen cannot carry, or a file error.
    pub fn issue_for_key_locked(
        &self,
        name: &str,
        ou: Option<&str>,
        spki_der: &[u8],
        days: i64,
    ) -> Result<(Entry, Vec<u8>), PkiError> {
        check_name(name)?;
        let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki_der)
            .map_err(cert_err("the request's public key"))?;
        let mut index = self.load_index()?;
        let (p, serial) = leaf_params(
            Vec::new(),
            name,
            ou,
            ExtendedKeyUsagePurpose::ClientAuth,
            days,
        )?;
        let cert = p
            .signed_by(&public_key, &self.issuer()?)
            .map_err(cert_err("signing"))?;
        let entry = Entry {
            name: name.to_owned(),
            serial: hex(&serial),
            kind: "device".to_owned(),
            not_after: p.not_after.unix_timestamp(),
            revoked_at: None,
        };
        index.entries.push(entry.clone());
        self.save_index(&index)?;
        Ok((entry, cert.der().to_vec()))
    }

    /// The index entry of the certificate with serial `serial_hex` (lower-case hex), if this CA
    /// issued it.
    ///
    /// # Errors
    /// The index cannot be read.
    pub fn entry_by_serial(&self, serial_hex: &str) -> Result<Option<Entry>, PkiError> {
        Ok(self
            .load_index()?
            .entries
            .into_iter()
            .find(|e| e.serial == serial_hex))
    }

    /// Re-signs the CRL with a fresh validity period.
    ///
    /// # Errors
    /// A file error.
    pub fn refresh_crl(&self) -> Result<(), PkiError> {
        let _lock = self.lock()?;
        let index = self.load_index()?;
        self.write_crl(&index.entries)
    }

    /// Everything issued.
    ///
    /// # Errors
    /// The index cannot be read.
    pub fn list(&self) -> Result<Vec<Entry>, PkiError> {
        Ok(self.load_index()?.entries)
    }

    fn write_crl(&self, entries: &[Entry]) -> Result<(), PkiError> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = entries
            .iter()
            .filter_map(|e| {
                let at = e.revoked_at?;
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&unhex(&e.serial)?),
                    revocation_time: OffsetDateTime::from_unix_timestamp(at).unwrap_or(now),
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::days(CRL_DAYS),
            crl_number: SerialNumber::from_slice(&now.unix_timestamp().to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer()?)
            .map_err(cert_err("signing the CRL"))?;
        let pem = crl.pem().map_err(cert_err("encoding the CRL"))?;
        write_atomic(&self.path("ca.crl"), pem.as_bytes(), 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use rcgen::PublicKeyData;
    use x509_parser::prelude::FromDer;

    #[test]
    fn init_issue_revoke_list() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init(dir.path(), "test CA", 3650).unwrap();
        assert!(
            Ca::init(dir.path(), "again", 1).is_err(),
            "a second init must not overwrite the CA"
        );
        let mode = fs::metadata(ca.path("ca.key")).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let dev = ca
            .issue("sensor-1", Some("devices"), 30, false, &[])
            .unwrap();
        assert!(ca.issue("sensor-1", None, 30, false, &[]).is_err());
        assert!(ca.issue("../x", None, 30, false, &[]).is_err());
        ca.issue("gw", None, 30, true, &["localhost".into()])
            .unwrap();
        let revoked = ca.revoke("sensor-1").unwrap();
        assert_eq!(revoked.serial, dev.serial);
        assert!(ca.revoke("sensor-1").is_err());
        let list = ca.list().unwrap();
        assert_eq!(list.len(), 2);
        assert!(
            list.iter()
                .any(|e| e.name == "sensor-1" && e.revoked_at.is_some())
        );
        // The CRL parses and lists the revoked serial.
        let crl = crate::tls::load_crls(&ca.path("ca.crl")).unwrap();
        let (_, parsed) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(crl[0].as_ref())
                .unwrap();
        let serials: Vec<String> = parsed
            .iter_revoked_certificates()
            .map(|r| hex(r.raw_serial()))
            .collect();
        assert_eq!(serials, [dev.serial]);
    }

    /// Renewal (EST) gives a name a second valid certificate; `revoke NAME` must cut both.
    #[test]
    fn issue_for_key_allows_renewal_and_revoke_cuts_every_one() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init(dir.path(), "test CA", 3650).unwrap();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let spki = key.subject_public_key_info();
        let (first, der) = {
            let _l = ca.lock().unwrap();
            ca.issue_for_key_locked("dev-1", None, &spki, 7).unwrap()
        };
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(hex(cert.raw_serial()), first.serial);
        assert!(cert.validity().time_to_expiration().unwrap().whole_days() <= 7);
        let second = {
            let _l = ca.lock().unwrap();
            ca.issue_for_key_locked("dev-1", None, &spki, 7).unwrap().0
        };
        assert_ne!(first.serial, second.serial);
        assert_eq!(ca.entry_by_serial(&first.serial).unwrap(), Some(first));
        ca.revoke("dev-1").unwrap();
        assert!(ca.list().unwrap().iter().all(|e| e.revoked_at.is_some()));
        assert!(ca.revoke("dev-1").is_err());
    }
}
