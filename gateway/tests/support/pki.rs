//! The test PKI, made in the test with rcgen: a root CA, an intermediate CA, server and client
//! certificates (good ones and ones with a [`Flaw`]), CRLs, and the client-side TLS settings
//! (rustls configs, `mosquitto_*` arguments) that present them.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

/// A certificate and its key, written to files.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Leaf then intermediates, PEM.
    pub chain_path: PathBuf,
    /// The key, PEM (PKCS#8).
    pub key_path: PathBuf,
    /// Serial number bytes.
    pub serial: Vec<u8>,
    /// The leaf and chain, DER.
    pub chain: Vec<CertificateDer<'static>>,
    /// The key, DER.
    pub key_der: Vec<u8>,
}

/// How a client certificate should differ from a good one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flaw {
    /// A good certificate.
    None,
    /// Expired yesterday.
    Expired,
    /// Valid only from tomorrow.
    NotYetValid,
    /// serverAuth only, no clientAuth.
    NoClientAuth,
    /// An extra OU as a TeletexString: verified by TLS, but no name the gateway can read.
    UnreadableOu,
}

/// A test PKI: root → intermediate → leaves, in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
    root: CertifiedIssuer<'static, KeyPair>,
    inter: CertifiedIssuer<'static, KeyPair>,
    /// Root CA certificate file (the gateway's `client_ca`, the clients' `--cafile`).
    pub root_path: PathBuf,
    /// The intermediate's certificate, DER.
    pub inter_der: CertificateDer<'static>,
    pub server: Issued,
    next_serial: std::cell::Cell<u64>,
}

fn ca_params(cn: &str, serial: u64) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
    p.not_before = OffsetDateTime::now_utc() - time::Duration::days(1);
    p.not_after = OffsetDateTime::now_utc() + time::Duration::days(365);
    p
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = CertifiedIssuer::self_signed(
            ca_params("Test Root CA", 1),
            KeyPair::generate().unwrap(),
        )
        .unwrap();
        let inter = CertifiedIssuer::signed_by(
            ca_params("Test Intermediate CA", 2),
            KeyPair::generate().unwrap(),
            &root,
        )
        .unwrap();
        let root_path = dir.path().join("root.pem");
        std::fs::write(&root_path, root.pem()).unwrap();
        let inter_der = inter.der().clone();
        let mut pki = Self {
            dir,
            root,
            inter,
            root_path,
            inter_der,
            server: Issued {
                chain_path: PathBuf::new(),
                key_path: PathBuf::new(),
                serial: vec![],
                chain: vec![],
                key_der: vec![],
            },
            next_serial: std::cell::Cell::new(1000),
        };
        let mut p =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "gateway.test");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        pki.server = pki.issue("server", p);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn issue(&self, file: &str, mut p: CertificateParams) -> Issued {
        let serial = self.next_serial.get();
        self.next_serial.set(serial + 1);
        p.serial_number = Some(SerialNumber::from_slice(&serial.to_be_bytes()));
        if p.not_before == CertificateParams::default().not_before {
            p.not_before = OffsetDateTime::now_utc() - time::Duration::hours(1);
            p.not_after = OffsetDateTime::now_utc() + time::Duration::days(30);
        }
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.inter).unwrap();
        let chain_path = self.path(&format!("{file}-chain.pem"));
        let key_path = self.path(&format!("{file}.key"));
        std::fs::write(&chain_path, format!("{}{}", cert.pem(), self.inter.pem())).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            chain_path,
            key_path,
            serial: serial.to_be_bytes().to_vec(),
            chain: vec![cert.der().clone(), self.inter_der.clone()],
            key_der: key.serialize_der(),
        }
    }

    /// Another server certificate for the same names (for rotation tests), in files `file-*`.
    pub fn server_cert(&self, file: &str) -> Issued {
        let mut p =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        p.distinguished_name
            .push(DnType::CommonName, "gateway.test");
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(file, p)
    }

    /// A client certificate with CN `cn` (and OU `ou`), issued by the intermediate.
    pub fn client(&self, cn: &str, ou: Option<&str>, flaw: Flaw) -> Issued {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        if let Some(ou) = ou {
            p.distinguished_name
                .push(DnType::OrganizationalUnitName, ou);
        }
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = OffsetDateTime::now_utc();
        match flaw {
            Flaw::None => {}
            Flaw::Expired => {
                p.not_before = now - time::Duration::days(10);
                p.not_after = now - time::Duration::days(1);
            }
            Flaw::NotYetValid => {
                p.not_before = now + time::Duration::days(1);
                p.not_after = now + time::Duration::days(10);
            }
            Flaw::NoClientAuth => p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth],
            Flaw::UnreadableOu => p.distinguished_name.push(
                DnType::OrganizationalUnitName,
                rcgen::DnValue::TeletexString(
                    rcgen::string::TeletexString::try_from("plant").unwrap(),
                ),
            ),
        }
        self.issue(&format!("client-{cn}-{}", self.next_serial.get()), p)
    }

    /// A client certificate with CN `cn` whose Authority Information Access extension names the
    /// OCSP responder `url` (RFC 5280 §4.2.2.1).
    pub fn client_with_ocsp_url(&self, cn: &str, url: &str) -> Issued {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 5, 5, 7, 1, 1],
            aia_ocsp(url),
        )];
        self.issue(&format!("client-{cn}-{}", self.next_serial.get()), p)
    }

    /// A client certificate with CN `cn`, valid from an hour ago until `not_after`.
    pub fn client_until(&self, cn: &str, not_after: OffsetDateTime) -> Issued {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = OffsetDateTime::now_utc() - time::Duration::hours(1);
        p.not_after = not_after;
        self.issue(&format!("client-{cn}-{}", self.next_serial.get()), p)
    }

    /// A client certificate from a CA the gateway does not trust.
    pub fn foreign_client(&self, cn: &str) -> Issued {
        let other =
            CertifiedIssuer::self_signed(ca_params("Foreign CA", 77), KeyPair::generate().unwrap())
                .unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = OffsetDateTime::now_utc() - time::Duration::hours(1);
        p.not_after = OffsetDateTime::now_utc() + time::Duration::days(30);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &other).unwrap();
        let chain_path = self.path(&format!("foreign-{cn}-chain.pem"));
        let key_path = self.path(&format!("foreign-{cn}.key"));
        std::fs::write(&chain_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            chain_path,
            key_path,
            serial: vec![1],
            chain: vec![cert.der().clone()],
            key_der: key.serialize_der(),
        }
    }

    fn crl_for(issuer: &Issuer<'_, KeyPair>, revoked: &[&[u8]]) -> String {
        Self::crl_until(
            issuer,
            revoked,
            OffsetDateTime::now_utc() + time::Duration::days(7),
        )
    }

    /// A CRL of the serials `revoked` (revoked at `revoked_at`), valid from `this_update` to
    /// `next_update`, numbered `number` (big-endian).
    fn crl_params(
        revoked: &[&[u8]],
        revoked_at: OffsetDateTime,
        (this_update, next_update): (OffsetDateTime, OffsetDateTime),
        number: &[u8],
    ) -> CertificateRevocationListParams {
        CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from_slice(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: revoked_at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
    }

    fn crl_until(
        issuer: &Issuer<'_, KeyPair>,
        revoked: &[&[u8]],
        next_update: OffsetDateTime,
    ) -> String {
        let now = OffsetDateTime::now_utc();
        Self::crl_params(
            revoked,
            now - time::Duration::minutes(1),
            (now - time::Duration::minutes(5), next_update),
            &now.unix_timestamp().to_be_bytes(),
        )
        .signed_by(issuer)
        .unwrap()
        .pem()
        .unwrap()
    }

    /// Writes the intermediate's CRL (revoking `revoked` leaf serials) to `inter.crl`.
    pub fn write_leaf_crl(&self, revoked: &[&[u8]]) -> PathBuf {
        let path = self.path("inter.crl");
        std::fs::write(&path, Self::crl_for(&self.inter, revoked)).unwrap();
        path
    }

    /// [`Pki::write_leaf_crl`] with its `nextUpdate` at `next_update`.
    pub fn write_leaf_crl_until(&self, revoked: &[&[u8]], next_update: OffsetDateTime) -> PathBuf {
        let path = self.path("inter.crl");
        std::fs::write(&path, Self::crl_until(&self.inter, revoked, next_update)).unwrap();
        path
    }

    /// Writes the root's CRL (revoking intermediates by serial) to `root.crl`.
    pub fn write_root_crl(&self, revoked: &[&[u8]]) -> PathBuf {
        let path = self.path("root.crl");
        std::fs::write(&path, Self::crl_for(&self.root, revoked)).unwrap();
        path
    }

    /// The intermediate's CRL (DER) revoking `revoked`, with its `thisUpdate` and CRL number
    /// given (for the rollback cases of fetched CRLs), valid for 7 days from `this_update`.
    pub fn leaf_crl_der(
        &self,
        revoked: &[&[u8]],
        this_update: OffsetDateTime,
        number: u64,
    ) -> Vec<u8> {
        Self::crl_signed_der(&self.inter, revoked, this_update, number)
    }

    /// A CRL (DER) naming the intermediate as its issuer but signed by another key: a forgery.
    pub fn forged_leaf_crl_der(&self, revoked: &[&[u8]], number: u64) -> Vec<u8> {
        let forger = CertifiedIssuer::self_signed(
            ca_params("Test Intermediate CA", 2),
            KeyPair::generate().unwrap(),
        )
        .unwrap();
        Self::crl_signed_der(&forger, revoked, OffsetDateTime::now_utc(), number)
    }

    fn crl_signed_der(
        issuer: &Issuer<'_, KeyPair>,
        revoked: &[&[u8]],
        this_update: OffsetDateTime,
        number: u64,
    ) -> Vec<u8> {
        Self::crl_params(
            revoked,
            this_update,
            (this_update, this_update + time::Duration::days(7)),
            &number.to_be_bytes(),
        )
        .signed_by(issuer)
        .unwrap()
        .der()
        .to_vec()
    }

    /// Writes the intermediate CA's certificate and private key (PEM) to `inter.pem` and
    /// `inter.key`, for tests where an external tool (`openssl ca`) signs its CRLs.
    pub fn write_inter_ca(&self) -> (PathBuf, PathBuf) {
        let cert = self.path("inter.pem");
        let key = self.path("inter.key");
        std::fs::write(&cert, self.inter.pem()).unwrap();
        std::fs::write(&key, self.inter.key().serialize_pem()).unwrap();
        (cert, key)
    }

    /// The intermediate's serial number bytes.
    pub fn inter_serial() -> Vec<u8> {
        2u64.to_be_bytes().to_vec()
    }
}

// === Client-side TLS ===

/// `mosquitto_pub`/`mosquitto_sub` arguments for TLS with a client certificate.
pub fn tls_args<'a>(pki: &'a Pki, cert: Option<&'a Issued>) -> Vec<String> {
    let mut v = vec!["--cafile".to_owned(), pki.root_path.display().to_string()];
    if let Some(c) = cert {
        v.extend([
            "--cert".to_owned(),
            c.chain_path.display().to_string(),
            "--key".to_owned(),
            c.key_path.display().to_string(),
        ]);
    }
    v
}

/// A rustls client config trusting the test root, presenting `cert` if given.
pub fn client_tls(
    pki: &Pki,
    cert: Option<&Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let suites = rustls::crypto::aws_lc_rs::default_provider().cipher_suites;
    client_tls_offering(pki, cert, versions, suites)
}

/// [`client_tls`] offering `suites`, in this order of preference.
pub fn client_tls_offering(
    pki: &Pki,
    cert: Option<&Issued>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    suites: Vec<rustls::SupportedCipherSuite>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(&pki.root_path).unwrap();
    let root = {
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(&pem).unwrap().into_owned()
    };
    roots.add(root).unwrap();
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = suites;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        Some(c) => builder
            .with_client_auth_cert(
                c.chain.clone(),
                PrivateKeyDer::try_from(c.key_der.clone()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// The DER of an AuthorityInfoAccessSyntax with one `id-ad-ocsp` access description for `url`
/// (short-form lengths: `url` under 100 bytes).
pub fn aia_ocsp(url: &str) -> Vec<u8> {
    let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01];
    let len = |n: usize| u8::try_from(n).unwrap();
    let mut location = vec![0x86, len(url.len())];
    location.extend_from_slice(url.as_bytes());
    let mut description = vec![0x30, len(oid.len() + location.len())];
    description.extend_from_slice(&oid);
    description.extend_from_slice(&location);
    let mut aia = vec![0x30, len(description.len())];
    aia.extend_from_slice(&description);
    aia
}
