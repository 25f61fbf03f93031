//! Real TLS handshakes over loopback TCP against `tls::build_server_config`:
//! every refusal reason of the contract, each next to a good certificate that
//! succeeds against the same server config; protocol versions; and session
//! resumption after a CRL reload.
// The PKI and handshake helpers live outside #[test] fns, so the test-only unwrap/expect
// allowance of .clippy.toml does not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use mqtt_gateway::config::{ClientAuth, CrlScope, TlsConfig, TlsVersion};
use mqtt_gateway::identity::ClientIdentity;
use mqtt_gateway::tls::{self, HandshakeFailure};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, RevokedCertParams, SerialNumber, date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, HandshakeKind, RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

// === test PKI ===

/// A client credential: chain (leaf first) and key.
struct Client {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// Root CA, an intermediate under it, a server certificate and one client per case.
struct Pki {
    root: CertifiedIssuer<'static, KeyPair>,
    inter: CertifiedIssuer<'static, KeyPair>,
    server_chain_pem: String,
    server_key_pem: String,
    good: Client,
    server_eku_only: Client,
    expired: Client,
    not_yet_valid: Client,
    revoked: Client,
    unknown_ca: Client,
    inter_good: Client,
    inter_revoked: Client,
}

const SERIAL_REVOKED: u64 = 0x1005;
const SERIAL_INTER: u64 = 0x0002;
const SERIAL_INTER_REVOKED: u64 = 0x2002;

fn key() -> KeyPair {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap()
}

fn ca_params(cn: &str, serial: u64) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.serial_number = Some(SerialNumber::from(serial));
    p
}

/// A leaf certificate valid from `years.0` to `years.1` (1 January of each).
fn leaf(
    issuer: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    serial: u64,
    eku: ExtendedKeyUsagePurpose,
    years: (i32, i32),
) -> Client {
    let key = key();
    let mut p = CertificateParams::new(vec![format!("{cn}.devices.example")]).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![eku];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.serial_number = Some(SerialNumber::from(serial));
    p.not_before = date_time_ymd(years.0, 1, 1);
    p.not_after = date_time_ymd(years.1, 1, 1);
    let cert = p.signed_by(&key, issuer).unwrap();
    Client {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        use ExtendedKeyUsagePurpose::{ClientAuth as Cli, ServerAuth as Srv};
        let root = CertifiedIssuer::self_signed(ca_params("test root", 1), key()).unwrap();
        let inter =
            CertifiedIssuer::signed_by(ca_params("test intermediate", SERIAL_INTER), key(), &root)
                .unwrap();
        let rogue = CertifiedIssuer::self_signed(ca_params("rogue root", 1), key()).unwrap();

        let server_key = key();
        let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        p.extended_key_usages = vec![Srv];
        p.serial_number = Some(SerialNumber::from(0x100));
        let server = p.signed_by(&server_key, &root).unwrap();

        let with_inter = |mut c: Client| {
            c.chain.push(inter.der().clone());
            c
        };
        Pki {
            server_chain_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            good: leaf(&root, "good", 0x1001, Cli, (2020, 2090)),
            server_eku_only: leaf(&root, "server-eku", 0x1002, Srv, (2020, 2090)),
            expired: leaf(&root, "expired", 0x1003, Cli, (2000, 2001)),
            not_yet_valid: leaf(&root, "future", 0x1004, Cli, (2090, 2095)),
            revoked: leaf(&root, "revoked", SERIAL_REVOKED, Cli, (2020, 2090)),
            unknown_ca: leaf(&rogue, "rogue", 0x1006, Cli, (2020, 2090)),
            inter_good: with_inter(leaf(&inter, "inter-good", 0x2001, Cli, (2020, 2090))),
            inter_revoked: with_inter(leaf(
                &inter,
                "inter-revoked",
                SERIAL_INTER_REVOKED,
                Cli,
                (2020, 2090),
            )),
            root,
            inter,
        }
    })
}

/// A CRL of `issuer` revoking `serials`, valid until 1 January `next_update_year`, as PEM.
fn crl_pem(issuer: &Issuer<'_, KeyPair>, serials: &[u64], next_update_year: i32) -> Vec<u8> {
    crl(issuer, serials, next_update_year)
        .pem()
        .unwrap()
        .into_bytes()
}

fn crl(
    issuer: &Issuer<'_, KeyPair>,
    serials: &[u64],
    next_update_year: i32,
) -> rcgen::CertificateRevocationList {
    CertificateRevocationListParams {
        this_update: date_time_ymd(2000, 1, 1),
        next_update: date_time_ymd(next_update_year, 1, 1),
        crl_number: SerialNumber::from(1),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|&s| RevokedCertParams {
                serial_number: SerialNumber::from(s),
                revocation_time: date_time_ymd(2020, 1, 1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(issuer)
    .unwrap()
}

// === files and server configs ===

/// Writes `bytes` to `dir/name`.
fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A `[listener.tls]` table whose files live in a temp dir.
struct Listener {
    dir: tempfile::TempDir,
    tls: TlsConfig,
}

impl Listener {
    /// `client_auth = "required"`, the root as `client_ca`, no CRL, leaf scope, TLS 1.2+.
    fn new() -> Self {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let tls = TlsConfig {
            cert: write(&dir, "server-chain.pem", pki.server_chain_pem.as_bytes()),
            key: write(&dir, "server.key", pki.server_key_pem.as_bytes()),
            client_ca: Some(write(&dir, "ca.pem", pki.root.pem().as_bytes())),
            client_auth: ClientAuth::Required,
            crl: Vec::new(),
            crl_scope: CrlScope::Leaf,
            min_version: TlsVersion::Tls12,
            crl_urls: Vec::new(),
            crl_cache_dir: None,
            crl_refresh_interval: mqtt_gateway::config::DEFAULT_CRL_REFRESH_INTERVAL,
            ocsp: mqtt_gateway::config::OcspMode::Off,
            ocsp_responder: None,
            ocsp_refresh_interval: std::time::Duration::from_secs(300),
            ocsp_timeout: std::time::Duration::from_secs(5),
            staple_ocsp: false,
        };
        Self { dir, tls }
    }

    fn crl(mut self, name: &str, bytes: &[u8]) -> Self {
        let path = write(&self.dir, name, bytes);
        self.tls.crl.push(path);
        self
    }

    fn scope(mut self, scope: CrlScope) -> Self {
        self.tls.crl_scope = scope;
        self
    }

    fn auth(mut self, auth: ClientAuth) -> Self {
        self.tls.client_auth = auth;
        if auth == ClientAuth::None {
            self.tls.client_ca = None;
        }
        self
    }

    fn min(mut self, version: TlsVersion) -> Self {
        self.tls.min_version = version;
        self
    }

    fn build(&self) -> Arc<ServerConfig> {
        tls::build_server_config(&self.tls).unwrap()
    }
}

fn client_config(
    client: Option<&Client>,
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(pki().root.der().clone()).unwrap();
    let builder = ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client {
        Some(c) => builder
            .with_client_auth_cert(c.chain.clone(), c.key.clone_key())
            .unwrap(),
        None => builder.with_no_client_auth(),
    })
}

fn client(c: &Client) -> Arc<ClientConfig> {
    client_config(Some(c), rustls::ALL_VERSIONS)
}

// === handshakes ===

/// What the server saw after a successful handshake.
#[derive(Debug)]
struct Accepted {
    kind: HandshakeKind,
    version: rustls::ProtocolVersion,
    peer_chain: Vec<CertificateDer<'static>>,
}

/// Both sides of one connection attempt.
struct Outcome {
    server: io::Result<Accepted>,
    /// The client's handshake kind once it has read the server's first bytes.
    client: io::Result<HandshakeKind>,
}

/// One connection over loopback TCP. The server sends "ok" after its handshake; the
/// client reads it, because in TLS 1.3 the client's `connect()` succeeds even when the
/// server then refuses its certificate: the refusal only shows on the first read.
async fn connect(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::clone(server));
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let (_, conn) = tls.get_ref();
        let accepted = Accepted {
            kind: conn.handshake_kind().unwrap(),
            version: conn.protocol_version().unwrap(),
            peer_chain: conn.peer_certificates().unwrap_or_default().to_vec(),
        };
        tls.write_all(b"ok").await?;
        tls.shutdown().await?;
        Ok(accepted)
    });
    let connector = TlsConnector::from(Arc::clone(client));
    let client_side = async move {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await?;
        let mut buf = [0u8; 2];
        tls.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ok");
        Ok(tls.get_ref().1.handshake_kind().unwrap())
    };
    // A hang guard, not a timing assertion.
    tokio::time::timeout(Duration::from_secs(60), async move {
        let client = client_side.await;
        let server = server_side.await.unwrap();
        Outcome { server, client }
    })
    .await
    .expect("handshake hung")
}

/// The handshake succeeds on both sides; returns what the server saw.
async fn accepted(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>) -> Accepted {
    let outcome = connect(server, client).await;
    let client_kind = outcome.client.expect("client side failed");
    let accepted = outcome.server.expect("server side failed");
    assert_eq!(client_kind, accepted.kind);
    accepted
}

/// The server refuses and the failure classifies as `want`; the client fails too.
async fn refused(server: &Arc<ServerConfig>, client: &Arc<ClientConfig>, want: HandshakeFailure) {
    let outcome = connect(server, client).await;
    let err = match outcome.server {
        Ok(a) => panic!("server accepted {a:?}, expected {}", want.as_str()),
        Err(e) => e,
    };
    assert_eq!(
        tls::classify(&err).as_str(),
        want.as_str(),
        "server error: {err:?}"
    );
    assert!(outcome.client.is_err(), "client did not notice the refusal");
}

// === tests ===

/// The good case of the TLS refusals (contract "Audit log": "TLS failure" is a refusal).
#[tokio::test]
async fn good_certificate_is_accepted_and_names_its_principal() {
    let server = Listener::new().build();
    let accepted = accepted(&server, &client(&pki().good)).await;
    assert_eq!(accepted.peer_chain.len(), 1);
    let identity = ClientIdentity::from_chain(&accepted.peer_chain).unwrap();
    assert_eq!(identity.cn.as_deref(), Some("good"));
    assert_eq!(identity.sans, ["good.devices.example"]);
}

/// gateway.example.toml: `client_auth = "required"  # required | optional | none`; contract
/// ("Metrics"): `tls_handshake_failures_total` reason `no_certificate`.
#[tokio::test]
async fn missing_certificate_per_client_auth_mode() {
    let anonymous = client_config(None, rustls::ALL_VERSIONS);
    let required = Listener::new().build();
    refused(&required, &anonymous, HandshakeFailure::NoCertificate).await;
    accepted(&required, &client(&pki().good)).await;

    let optional = Listener::new().auth(ClientAuth::Optional).build();
    assert!(accepted(&optional, &anonymous).await.peer_chain.is_empty());
    // Optional still verifies a certificate that is presented.
    refused(
        &optional,
        &client(&pki().unknown_ca),
        HandshakeFailure::UnknownCa,
    )
    .await;

    let none = Listener::new().auth(ClientAuth::None).build();
    assert!(accepted(&none, &anonymous).await.peer_chain.is_empty());
}

/// Contract ("Metrics"): `mqtt_gateway_tls_handshake_failures_total` | reason = no_certificate,
/// unknown_ca, expired, not_yet_valid, revoked, bad_usage, protocol, other.
#[tokio::test]
async fn certificate_problems_get_their_labels() {
    let pki = pki();
    let server = Listener::new().build();
    refused(
        &server,
        &client(&pki.unknown_ca),
        HandshakeFailure::UnknownCa,
    )
    .await;
    refused(&server, &client(&pki.expired), HandshakeFailure::Expired).await;
    refused(
        &server,
        &client(&pki.not_yet_valid),
        HandshakeFailure::NotYetValid,
    )
    .await;
    refused(
        &server,
        &client(&pki.server_eku_only),
        HandshakeFailure::BadUsage,
    )
    .await;
    accepted(&server, &client(&pki.good)).await;
}

/// gateway.example.toml: `crl_scope = "leaf"`: "check the client certificate itself".
#[tokio::test]
async fn leaf_revoked_by_crl() {
    let pki = pki();
    let crl = crl_pem(&pki.root, &[SERIAL_REVOKED], 2090);
    let server = Listener::new().crl("root.crl", &crl).build();
    refused(&server, &client(&pki.revoked), HandshakeFailure::Revoked).await;
    accepted(&server, &client(&pki.good)).await;

    // The same CRL in DER form.
    let der = self::crl(&pki.root, &[SERIAL_REVOKED], 2090).der().to_vec();
    let server = Listener::new().crl("root.der", &der).build();
    refused(&server, &client(&pki.revoked), HandshakeFailure::Revoked).await;
    accepted(&server, &client(&pki.good)).await;
}

/// gateway.example.toml: `crl_scope` "chain": "every certificate up to the trust anchor".
#[tokio::test]
async fn chain_scope_checks_the_intermediate() {
    let pki = pki();
    let root_crl = crl_pem(&pki.root, &[SERIAL_INTER], 2090);
    let inter_crl = crl_pem(&pki.inter, &[], 2090);
    let chain = Listener::new()
        .scope(CrlScope::Chain)
        .crl("root.crl", &root_crl)
        .crl("inter.crl", &inter_crl)
        .build();
    refused(&chain, &client(&pki.inter_good), HandshakeFailure::Revoked).await;
    accepted(&chain, &client(&pki.good)).await;

    // With the leaf scope the revoked intermediate is not looked at.
    let leaf = Listener::new()
        .crl("root.crl", &root_crl)
        .crl("inter.crl", &inter_crl)
        .build();
    accepted(&leaf, &client(&pki.inter_good)).await;
}

/// gateway.example.toml: `crl_scope` "chain": "every certificate up to the trust anchor".
#[tokio::test]
async fn chain_scope_uses_the_intermediate_crl_for_its_leaves() {
    let pki = pki();
    let root_crl = crl_pem(&pki.root, &[], 2090);
    let inter_crl = crl_pem(&pki.inter, &[SERIAL_INTER_REVOKED], 2090);
    let server = Listener::new()
        .scope(CrlScope::Chain)
        .crl("root.crl", &root_crl)
        .crl("inter.crl", &inter_crl)
        .build();
    refused(
        &server,
        &client(&pki.inter_revoked),
        HandshakeFailure::Revoked,
    )
    .await;
    accepted(&server, &client(&pki.inter_good)).await;
}

/// gateway.example.toml: "a certificate that must be checked but whose issuer has no CRL here is
/// refused"; DESIGN §3: "Fail closed."
#[tokio::test]
async fn missing_issuer_crl_fails_closed() {
    // Only the root's CRL: the status of a leaf issued by the intermediate is unknown.
    let pki = pki();
    let root_crl = crl_pem(&pki.root, &[], 2090);
    let server = Listener::new().crl("root.crl", &root_crl).build();
    refused(&server, &client(&pki.inter_good), HandshakeFailure::Other).await;
    accepted(&server, &client(&pki.good)).await;
}

/// DESIGN §3: "Fail closed."
#[tokio::test]
async fn expired_crl_fails_closed() {
    let pki = pki();
    let stale = crl_pem(&pki.root, &[], 2001);
    let server = Listener::new().crl("stale.crl", &stale).build();
    refused(&server, &client(&pki.good), HandshakeFailure::Other).await;
    let fresh = crl_pem(&pki.root, &[], 2090);
    accepted(
        &Listener::new().crl("fresh.crl", &fresh).build(),
        &client(&pki.good),
    )
    .await;
}

/// gateway.example.toml: `min_version = "1.2"  # "1.2" or "1.3"`.
#[tokio::test]
async fn min_version_13_refuses_tls12() {
    let good = &pki().good;
    let tls12_client = client_config(Some(good), &[&rustls::version::TLS12]);
    let only13 = Listener::new().min(TlsVersion::Tls13).build();
    refused(&only13, &tls12_client, HandshakeFailure::Protocol).await;
    assert_eq!(
        accepted(&only13, &client(good)).await.version,
        rustls::ProtocolVersion::TLSv1_3
    );
    let from12 = Listener::new().build();
    assert_eq!(
        accepted(&from12, &tls12_client).await.version,
        rustls::ProtocolVersion::TLSv1_2
    );
}

/// A TLS 1.1 ClientHello (no supported_versions extension), written by hand because
/// rustls cannot speak TLS 1.1.
const TLS11_CLIENT_HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0x2f, // record: handshake, TLS 1.0 record version, 47 bytes
    0x01, 0x00, 0x00, 0x2b, // ClientHello, 43 bytes
    0x03, 0x02, // client_version TLS 1.1
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    26, 27, 28, 29, 30, 31,   // random
    0x00, // session id
    0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f, // cipher suites
    0x01, 0x00, // compression: null
];

/// gateway.example.toml: `min_version` is "1.2" or "1.3"; nothing older is ever offered.
#[tokio::test]
async fn tls11_is_refused_at_any_min_version() {
    for min in [TlsVersion::Tls12, TlsVersion::Tls13] {
        let server = Listener::new().min(min).build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = TlsAcceptor::from(Arc::clone(&server));
        let server_side = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            acceptor.accept(tcp).await.map(drop)
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(TLS11_CLIENT_HELLO).await.unwrap();
        let mut reply = Vec::new();
        let _ = tcp.read_to_end(&mut reply).await; // the alert, then EOF
        let err = server_side.await.unwrap().expect_err("TLS 1.1 accepted");
        assert_eq!(tls::classify(&err), HandshakeFailure::Protocol, "{err:?}");
        assert_eq!(reply.first(), Some(&0x15), "expected an alert record");
        accepted(&server, &client(&pki().good)).await;
    }
}

/// DESIGN §3: "Resumption is not a back door. ... every CA/CRL reload builds a fresh
/// `ServerConfig` without the old session cache".
#[tokio::test]
async fn resumption_does_not_survive_a_crl_reload() {
    let pki = pki();
    let listener = Listener::new().min(TlsVersion::Tls13);
    let before = listener.build();
    let revoked_client = client(&pki.revoked);

    let first = accepted(&before, &revoked_client).await;
    assert_ne!(first.kind, HandshakeKind::Resumed);
    let second = accepted(&before, &revoked_client).await;
    assert_eq!(
        second.kind,
        HandshakeKind::Resumed,
        "the test needs resumption to work"
    );

    // The operator revokes the client: a new ServerConfig is built from the new CRL.
    let crl = crl_pem(&pki.root, &[SERIAL_REVOKED], 2090);
    let listener = listener.crl("root.crl", &crl);
    let after = listener.build();
    refused(&after, &revoked_client, HandshakeFailure::Revoked).await;
    // A good client still gets in, and can resume against the new config.
    let good_client = client(&pki.good);
    accepted(&after, &good_client).await;
    assert_eq!(
        accepted(&after, &good_client).await.kind,
        HandshakeKind::Resumed
    );

    // Live sessions are re-checked with the new verifier.
    let old = tls::client_verifier(&Listener::new().tls).unwrap().unwrap();
    let new = tls::client_verifier(&listener.tls).unwrap().unwrap();
    let now = UnixTime::now();
    assert_eq!(tls::reverify(old.as_ref(), &first.peer_chain, now), Ok(()));
    let err = tls::reverify(new.as_ref(), &first.peer_chain, now).unwrap_err();
    assert_eq!(tls::classify_rustls(&err), HandshakeFailure::Revoked);
    assert_eq!(tls::reverify(new.as_ref(), &pki.good.chain, now), Ok(()));
    assert_eq!(
        tls::reverify(new.as_ref(), &[], now),
        Err(rustls::Error::NoCertificatesPresented)
    );
}

/// The suite one client negotiates with the listener's [`tls::ServerTls`] through the
/// gateway's own accept (the ClientHello is peeked to pick the config).
async fn negotiated_suite(
    server: &Arc<tls::ServerTls>,
    suites: Vec<rustls::SupportedCipherSuite>,
    versions: &[&'static SupportedProtocolVersion],
) -> rustls::CipherSuite {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::clone(server);
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let stream = tls::TlsStream::accept_choosing(tcp, &server).await.unwrap();
        stream.common().negotiated_cipher_suite().unwrap().suite()
    });
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = suites;
    let mut roots = RootCertStore::empty();
    roots.add(pki().root.der().clone()).unwrap();
    let good = &pki().good;
    let config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(good.chain.clone(), good.key.clone_key())
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let client_tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let suite = client_tls
        .get_ref()
        .1
        .negotiated_cipher_suite()
        .unwrap()
        .suite();
    // A hang guard, not a timing assertion.
    let server_suite = tokio::time::timeout(Duration::from_secs(60), server_side)
        .await
        .expect("handshake hung")
        .unwrap();
    assert_eq!(suite, server_suite);
    suite
}

/// The server picks the suite: AES-128-GCM for a client that lists an AES suite first (rustls
/// and OpenSSL clients list AES-256 first by default), ChaCha20-Poly1305 for a client that
/// lists it first (a device without AES instructions), and a client that offers only AES-256
/// still gets it; the same for TLS 1.2 suites.
///
/// Not a refusal and no contract line: the suite order is the gateway's own choice.
#[tokio::test]
async fn the_server_prefers_aes128_unless_the_client_puts_chacha20_first() {
    use rustls::CipherSuite as C;
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let server = tls::build_server_tls(&Listener::new().tls).unwrap();
    let v13: &[&'static SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let v12: &[&'static SupportedProtocolVersion] = &[&rustls::version::TLS12];
    let default = rustls::crypto::aws_lc_rs::default_provider().cipher_suites;
    assert_eq!(default[0].suite(), C::TLS13_AES_256_GCM_SHA384);
    let cases = [
        (default, v13, C::TLS13_AES_128_GCM_SHA256),
        (
            vec![
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS13_AES_128_GCM_SHA256,
            ],
            v13,
            C::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            vec![cs::TLS13_AES_256_GCM_SHA384],
            v13,
            C::TLS13_AES_256_GCM_SHA384,
        ),
        (
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ],
            v12,
            C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            vec![
                cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ],
            v12,
            C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
    ];
    for (offered, versions, want) in cases {
        let names: Vec<C> = offered.iter().map(|s| s.suite()).collect();
        assert_eq!(
            negotiated_suite(&server, offered, versions).await,
            want,
            "client offered {names:?}"
        );
    }
}
