//! Test support: a PKI made in the test (rcgen: root CA, intermediate CA, server and client
//! certificates, CRLs), a real Mosquitto started from `upstream-broker/`, the gateway started
//! in-process on free loopback ports, and clients: `mosquitto_pub`/`mosquitto_sub` with client
//! certificates, and a raw MQTT client over real TLS for the byte-level cases.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod reload;
pub mod shim;
pub mod wire;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use e2e::{Mosquitto, MqttVersion};
use mqtt_gateway::Running;
use mqtt_gateway::config::Config;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

// === PKI ===

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

    fn crl_until(
        issuer: &Issuer<'_, KeyPair>,
        revoked: &[&[u8]],
        next_update: OffsetDateTime,
    ) -> String {
        let now = OffsetDateTime::now_utc();
        CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(5),
            next_update,
            crl_number: SerialNumber::from_slice(&now.unix_timestamp().to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        }
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

// === Gateway ===

/// A gateway in front of its own Mosquitto.
pub struct TestGateway {
    pub running: Running,
    pub broker: Mosquitto,
    pub dir: tempfile::TempDir,
    pub audit_path: PathBuf,
    /// The config file the gateway was started from.
    pub config_path: PathBuf,
}

/// A gateway configuration, written by the test.
pub struct Setup<'a> {
    pub pki: &'a Pki,
    /// Body of the `[listener.tls]` table beyond cert/key/client_ca (e.g. `crl = [...]`).
    pub tls_extra: String,
    /// Extra TOML appended to the config (e.g. `[auth]` overrides).
    pub auth: String,
    /// The policy file's text.
    pub policy: String,
    /// Password file lines.
    pub passwords: String,
    /// Extra `[limits]` keys.
    pub limits: String,
    /// `upstream.credentials`.
    pub credentials: &'static str,
    /// Extra keys of the `[policy]` table (e.g. `on_publish_deny = "disconnect"`).
    pub policy_extra: String,
    /// More brokers after the test's own: `upstream.addresses` instead of `address`.
    pub more_upstreams: Vec<SocketAddr>,
    /// Extra keys of both `[[listener]]` tables (e.g. `proxy_protocol = true`).
    pub listener_extra: String,
    /// Replaces the broker address line of `[upstream]` (e.g. another address and
    /// `proxy_protocol = true`).
    pub upstream_keys: Option<String>,
    /// Runtimes that accept and carry the connections (`start_on`); empty: the test's own.
    pub workers: Vec<tokio::runtime::Handle>,
    /// Extra keys of the `[admin]` table (e.g. `max_connections = 4`).
    pub admin_extra: String,
}

/// A policy that lets every authenticated client connect with any client id and do anything
/// outside `$SYS`.
pub const OPEN_POLICY: &str = r##"
version = 1
[[connect]]
who = { any = true }
client_ids = ["*"]
[[rule]]
who = { any = true }
allow = ["publish", "subscribe", "receive"]
topics = ["#"]
"##;

impl<'a> Setup<'a> {
    pub fn new(pki: &'a Pki) -> Self {
        Self {
            pki,
            tls_extra: String::new(),
            auth: String::new(),
            policy: OPEN_POLICY.to_owned(),
            passwords: String::new(),
            limits: String::new(),
            credentials: "principal",
            policy_extra: String::new(),
            more_upstreams: Vec::new(),
            listener_extra: String::new(),
            upstream_keys: None,
            workers: Vec::new(),
            admin_extra: String::new(),
        }
    }

    pub async fn start(self) -> TestGateway {
        let broker = tokio::task::spawn_blocking(Mosquitto::start)
            .await
            .unwrap()
            .unwrap();
        self.start_with(broker).await
    }

    pub async fn start_with(self, broker: Mosquitto) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("policy.toml"), &self.policy).unwrap();
        std::fs::write(d.join("passwords"), &self.passwords).unwrap();
        let audit_path = d.join("audit.jsonl");
        let pki = self.pki;
        let auth = if self.auth.is_empty() {
            "[auth]\nallow_anonymous = false\nprincipal_from = \"cert_cn\"\ncert_is_credential = true\npassword_file = \"passwords\"\n".to_owned()
        } else {
            self.auth.clone()
        };
        let toml = format!(
            r#"
[admin]
listen = "127.0.0.1:0"
{admin_extra}

[upstream]
{upstream}
connect_timeout = "2s"
credentials = "{credentials}"

[[listener]]
name = "mqtts"
bind = "127.0.0.1:0"
{listener_extra}
[listener.tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
client_auth = "required"
{tls_extra}

[[listener]]
name = "plain"
bind = "127.0.0.1:0"
{listener_extra}

{auth}

[policy]
file = "policy.toml"
{policy_extra}

[limits]
connect_timeout = "3s"
{limits}

[log]
audit_file = "{audit}"
"#,
            upstream = if let Some(keys) = &self.upstream_keys {
                keys.clone()
            } else if self.more_upstreams.is_empty() {
                format!("address = \"{}\"", broker.addr())
            } else {
                let all: Vec<String> = std::iter::once(broker.addr())
                    .chain(self.more_upstreams.iter().copied())
                    .map(|a| format!("\"{a}\""))
                    .collect();
                format!("addresses = [{}]", all.join(", "))
            },
            admin_extra = self.admin_extra,
            credentials = self.credentials,
            listener_extra = self.listener_extra,
            cert = pki.server.chain_path.display(),
            key = pki.server.key_path.display(),
            ca = pki.root_path.display(),
            tls_extra = self.tls_extra,
            auth = auth,
            limits = self.limits,
            policy_extra = self.policy_extra,
            audit = audit_path.display(),
        );
        let cfg_path = d.join("gateway.toml");
        std::fs::write(&cfg_path, &toml).unwrap();
        let config = Config::load(&cfg_path).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let running = mqtt_gateway::start_on(config, &self.workers).await.unwrap();
        TestGateway {
            config_path: cfg_path,
            running,
            broker,
            dir,
            audit_path,
        }
    }
}

impl TestGateway {
    pub fn tls_addr(&self) -> SocketAddr {
        self.running.addr("mqtts").unwrap()
    }

    pub fn plain_addr(&self) -> SocketAddr {
        self.running.addr("plain").unwrap()
    }

    /// The audit log lines written so far, parsed.
    pub async fn audit(&self) -> Vec<serde_json::Value> {
        // The writer thread flushes after each batch; give it a moment.
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Ok(text) = std::fs::read_to_string(&self.audit_path)
                && !text.is_empty()
            {
                return text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
            }
        }
        Vec::new()
    }

    /// Waits until the audit log has a line matching `pred`, and returns it.
    pub async fn audit_line(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        for _ in 0..100 {
            if let Ok(text) = std::fs::read_to_string(&self.audit_path) {
                for l in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    if pred(&v) {
                        return Some(v);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        None
    }

    /// GET on the admin listener, returning the body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.running.admin.unwrap())
            .await
            .unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    }

    /// The value of one sample of `/metrics`, e.g. `metric("mqtt_gateway_acl_denied_total{action=\"publish\"}")`.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics").await;
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("no series {series} in /metrics"))
    }
}

// === Clients ===

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

/// A raw MQTT connection over TLS, for byte-level tests.
pub struct Raw {
    pub stream: TlsStream<TcpStream>,
    buf: Vec<u8>,
}

impl Raw {
    pub async fn connect(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        let stream = TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        Ok(Self {
            stream,
            buf: Vec::new(),
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Reads one MQTT frame, or `None` at EOF / error / 5 s without one.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some((frame, _))) =
                mqtt_inspect::split_frame(&self.buf, mqtt_inspect::MAX_PACKET_SIZE)
            {
                let f = frame.to_vec();
                self.buf.drain(..f.len());
                return Some(f);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// A CONNECT frame.
pub fn connect_frame(
    version: mqtt_inspect::ProtocolVersion,
    client_id: &str,
    user: Option<&str>,
    password: Option<&[u8]>,
) -> Vec<u8> {
    let c = mqtt_inspect::Connect {
        version,
        clean_start: true,
        keep_alive: 30,
        properties: mqtt_inspect::Properties::EMPTY,
        client_id,
        will: None,
        username: user,
        password,
        bridge: false,
    };
    let mut out = Vec::new();
    c.encode(&mut out).unwrap();
    out
}

/// `mosquitto_pub` through the gateway's TLS listener with `cert`.
pub fn tls_pub(
    gw: &TestGateway,
    pki: &Pki,
    cert: Option<&Issued>,
    version: MqttVersion,
    args: &[&str],
) -> e2e::CliOutput {
    let tls = tls_args(pki, cert);
    let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    e2e::mosquitto_pub(gw.tls_addr(), version, &all).unwrap()
}

/// Path helper for tests.
pub fn display(p: &Path) -> String {
    p.display().to_string()
}

// === A plain TCP client from a chosen source address ===

/// A plain-TCP MQTT client bound to a chosen loopback source address.
pub struct Plain {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Plain {
    pub async fn connect(to: SocketAddr, from: &str) -> std::io::Result<Self> {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
        Ok(Self {
            s: sock.connect(to).await?,
            buf: Vec::new(),
        })
    }

    pub async fn send(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.s.write_all(b).await
    }

    /// One frame, or `None` at EOF/error/5 s.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(Some((f, _))) =
                mqtt_inspect::split_frame(&self.buf, mqtt_inspect::MAX_PACKET_SIZE)
            {
                let f = f.to_vec();
                self.buf.drain(..f.len());
                return Some(f);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.s.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

/// Tasks alive on all the worker runtimes together.
pub fn alive_tasks(workers: &mqtt_gateway::workers::Workers) -> usize {
    workers
        .handles()
        .iter()
        .map(|h| h.metrics().num_alive_tasks())
        .sum()
}
