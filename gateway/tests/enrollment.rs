//! Device enrollment over EST (RFC 7030) with clients nobody here wrote: `openssl req` makes the
//! key and the CSR, `curl` speaks EST (HTTP Basic with a one-time token from `mqtt-gateway pki
//! token`, or TLS client authentication for renewal), `openssl pkcs7 -print_certs` reads the
//! answer, as RFC 7030's own examples do; then `mosquitto_pub` connects with the issued
//! certificate through the gateway to a real Mosquitto. Every refusal sits next to the case that
//! works, with its status, audit line and metric. Needs `openssl`, `curl`, `mosquitto`,
//! `mosquitto_pub`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use e2e::{Mosquitto, MqttVersion};
use mqtt_gateway::config::Config;
use mqtt_gateway::pki::Ca;
use x509_parser::prelude::FromDer;

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-gateway");

/// The tests of this file share one process-wide metrics recorder: they run one at a time and
/// assert on differences of `enrollments_total`.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `enrollments_total` by (kind, result).
type Counts = std::collections::HashMap<(String, String), f64>;

fn delta(now: &Counts, before: &Counts, kind: &str, result: &str) -> f64 {
    let k = (kind.to_owned(), result.to_owned());
    now.get(&k).copied().unwrap_or_else(|| panic!("no {k:?}"))
        - before.get(&k).copied().unwrap_or(0.0)
}

struct Est {
    running: mqtt_gateway::Running,
    _broker: Mosquitto,
    dir: tempfile::TempDir,
    audit: PathBuf,
}

impl Est {
    fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    fn est(&self) -> SocketAddr {
        self.running.enrollment.unwrap()
    }

    fn mqtts(&self) -> SocketAddr {
        self.running.addr("mqtts").unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The first audit line matching `pred` (polled until it is written).
    async fn audit_line(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        for _ in 0..200 {
            if let Ok(text) = std::fs::read_to_string(&self.audit) {
                for l in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    if pred(&v) {
                        return v;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "no such audit line in:\n{}",
            std::fs::read_to_string(&self.audit).unwrap_or_default()
        );
    }

    async fn refused_line(&self, reason: &str) -> serde_json::Value {
        let reason = reason.to_owned();
        self.audit_line(move |v| v["event"] == "enrollment_refused" && v["reason"] == *reason)
            .await
    }

    /// Every series of `mqtt_gateway_enrollments_total` on `/metrics`.
    fn counts(&self) -> Counts {
        let mut s = std::net::TcpStream::connect(self.running.admin.unwrap()).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let mut counts = Counts::new();
        for l in out.lines() {
            let Some(rest) = l.strip_prefix("mqtt_gateway_enrollments_total{kind=\"") else {
                continue;
            };
            let (kind, rest) = rest.split_once("\",result=\"").unwrap();
            let (result, value) = rest.split_once("\"}").unwrap();
            counts.insert((kind.into(), result.into()), value.trim().parse().unwrap());
        }
        counts
    }

    /// `mosquitto_pub` through the gateway with the certificate and key files `cert`, `key`.
    fn publish(&self, cert: &Path, key: &Path) -> bool {
        let ca = self.pki().join("ca.pem");
        let args = [
            "--cafile",
            s(&ca),
            "--cert",
            s(cert),
            "--key",
            s(key),
            "-t",
            "devices/x",
            "-m",
            "hello",
            "-q",
            "1",
        ];
        e2e::mosquitto_pub(self.mqtts(), MqttVersion::V5, &args)
            .unwrap()
            .success()
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn gw(args: &[&str]) -> String {
    ok(&run(Command::new(BIN).args(args)))
}

/// A pki directory made by the CLI, a Mosquitto, and a gateway with an `[enrollment]` listener
/// whose MQTT listener trusts the pki's CA and enforces its CRL.
async fn start() -> Est {
    start_with(1000, 64).await
}

/// As [`start`], with `requests_per_ip_per_minute` and `max_connections` of `[enrollment]`.
async fn start_with(rate: u32, max_connections: u32) -> Est {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    gw(&["pki", "init", s(&pki)]);
    gw(&[
        "pki",
        "issue",
        s(&pki),
        "gateway",
        "--server",
        "--san",
        "127.0.0.1",
        "--san",
        "localhost",
    ]);
    let broker = tokio::task::spawn_blocking(Mosquitto::start)
        .await
        .unwrap()
        .unwrap();
    let audit = dir.path().join("audit.jsonl");
    std::fs::write(
        dir.path().join("policy.toml"),
        "version = 1\n[[connect]]\nwho = { any = true }\nclient_ids = [\"*\"]\n\
         [[rule]]\nwho = { any = true }\nallow = [\"publish\", \"subscribe\", \"receive\"]\ntopics = [\"devices/#\"]\n",
    )
    .unwrap();
    let toml = format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[upstream]
address = "{broker}"

[[listener]]
name = "mqtts"
bind = "127.0.0.1:0"
[listener.tls]
cert = "pki/gateway.pem"
key = "pki/gateway.key"
client_ca = "pki/ca.pem"
crl = ["pki/ca.crl"]

[auth]
allow_anonymous = false
principal_from = "cert_cn"
cert_is_credential = true

[policy]
file = "policy.toml"

[limits]
connections_per_ip_per_second = 10000
auth_failures_before_ban = 10000

[log]
audit_file = "{audit}"

[enrollment]
bind = "127.0.0.1:0"
pki_dir = "pki"
cert_days = 7
requests_per_ip_per_minute = {rate}
max_connections = {max_connections}
[enrollment.tls]
cert = "pki/gateway.pem"
key = "pki/gateway.key"
"#,
        broker = broker.addr(),
        audit = audit.display(),
    );
    let cfg = dir.path().join("gateway.toml");
    std::fs::write(&cfg, &toml).unwrap();
    let config = Config::load(&cfg).unwrap();
    let running = mqtt_gateway::start(config).await.unwrap();
    Est {
        running,
        _broker: broker,
        dir,
        audit,
    }
}

/// `openssl req`: a new key (`newkey`, e.g. `ec -pkeyopt ec_paramgen_curve:P-256` or
/// `rsa:2048`) and a base64 DER CSR for `/CN=cn`, written to `stem.key` and `stem.csr`.
fn csr(e: &Est, stem: &str, cn: &str, newkey: &[&str]) -> (PathBuf, PathBuf) {
    let key = e.path(&format!("{stem}.key"));
    let der = e.path(&format!("{stem}.der"));
    let b64 = e.path(&format!("{stem}.csr"));
    let mut cmd = Command::new("openssl");
    cmd.args(["req", "-new", "-nodes", "-newkey"])
        .args(newkey)
        .args(["-keyout", s(&key), "-subj", &format!("/CN={cn}")])
        .args(["-outform", "DER", "-out", s(&der)]);
    ok(&run(&mut cmd));
    ok(&run(Command::new("openssl").args([
        "base64",
        "-in",
        s(&der),
        "-out",
        s(&b64),
    ])));
    (key, b64)
}

const P256: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

/// `curl` to an EST path: the status, and the answer's body saved to `out`.
fn curl(e: &Est, path: &str, auth: &[&str], body: Option<&Path>, out: &Path) -> u16 {
    let url = format!(
        "https://127.0.0.1:{}/.well-known/est/{path}",
        e.est().port()
    );
    let ca = e.pki().join("ca.pem");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert", s(&ca)])
        .args(["-o", s(out), "-w", "%{http_code}"])
        .args(auth);
    if let Some(b) = body {
        cmd.args([
            "-H",
            "Content-Type: application/pkcs10",
            "-H",
            "Content-Transfer-Encoding: base64",
            "--data-binary",
            &format!("@{}", s(b)),
        ]);
    }
    let out = run(cmd.arg(url));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl: {}", String::from_utf8_lossy(&out.stderr)))
}

/// `simpleenroll` with NAME:TOKEN; the status.
fn enroll(e: &Est, user: &str, token: &str, csr: &Path, out: &Path) -> u16 {
    let creds = format!("{user}:{token}");
    curl(e, "simpleenroll", &["--user", &creds], Some(csr), out)
}

/// The certificates of a base64 PKCS#7 answer, as `openssl pkcs7 -print_certs` writes them
/// (PEM), saved to `pem`; their DER.
fn read_pkcs7(answer: &Path, pem: &Path) -> Vec<Vec<u8>> {
    let der = answer.with_extension("p7b");
    ok(&run(Command::new("openssl").args([
        "base64",
        "-d",
        "-in",
        s(answer),
        "-out",
        s(&der),
    ])));
    ok(&run(Command::new("openssl").args([
        "pkcs7",
        "-inform",
        "DER",
        "-in",
        s(&der),
        "-print_certs",
        "-out",
        s(pem),
    ])));
    let text = std::fs::read(pem).unwrap();
    rustls_pki_types::CertificateDer::pem_slice_iter(&text)
        .map(|c| c.unwrap().to_vec())
        .collect()
}

use rustls_pki_types::pem::PemObject as _;

fn mint(e: &Est, name: &str) -> String {
    gw(&["pki", "token", s(&e.pki()), name, "--ttl", "1h"])
        .trim()
        .to_owned()
}

fn serial_of(der: &[u8]) -> String {
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(der).unwrap();
    c.raw_serial().iter().map(|b| format!("{b:02x}")).collect()
}

/// Issue 25: "a device enrolls with a token using a client nobody here wrote (`openssl req`,
/// `curl`, `openssl` to read the PKCS#7), then connects through the gateway to real Mosquitto
/// with the new certificate and publishes"; the token is spent (RFC 7030 §3.2.3 HTTP Basic;
/// spec lifecycle.md "a used ... token: 401, audited").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_enrolls_with_a_token_and_connects_and_the_token_is_spent() {
    let _one = SERIAL.lock().await;
    let e = start().await;
    let c0 = e.counts();
    // cacerts: the CA, certs-only PKCS#7, readable by openssl.
    let ans = e.path("cacerts.b64");
    assert_eq!(curl(&e, "cacerts", &[], None, &ans), 200);
    let cas = read_pkcs7(&ans, &e.path("cacerts.pem"));
    let ca_pem = std::fs::read(e.pki().join("ca.pem")).unwrap();
    let ca_der = rustls_pki_types::CertificateDer::from_pem_slice(&ca_pem).unwrap();
    assert_eq!(cas, [ca_der.to_vec()]);

    let token = mint(&e, "dev-1");
    let (key, req) = csr(&e, "dev-1", "dev-1", P256);
    // Without the certificate the device cannot connect (the good case is below).
    let ans = e.path("dev-1.b64");
    assert_eq!(enroll(&e, "dev-1", &token, &req, &ans), 200);
    let pem = e.path("dev-1.pem");
    let certs = read_pkcs7(&ans, &pem);
    assert_eq!(certs.len(), 1);
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&certs[0]).unwrap();
    assert_eq!(
        cert.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "dev-1"
    );
    let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(life, 7 * 86_400 + 3600, "cert_days = 7 (+1 h back-dating)");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let serial = serial_of(&certs[0]);

    assert!(e.publish(&pem, &key), "the enrolled device publishes");
    let line = e
        .audit_line(|v| v["event"] == "enrolled" && v["principal"] == "dev-1")
        .await;
    assert_eq!(line["cert_serial"], serial.as_str());
    assert_eq!(line["reason"], "token");
    assert_eq!(delta(&e.counts(), &c0, "enroll", "issued"), 1.0);
    // `pki list` sees it.
    let list = gw(&["pki", "list", s(&e.pki())]);
    assert!(list.contains(&serial), "{list}");

    // The same token again: 401, audited, counted; nothing issued.
    let (_, req2) = csr(&e, "dev-1b", "dev-1", P256);
    assert_eq!(
        enroll(&e, "dev-1", &token, &req2, &e.path("again.b64")),
        401
    );
    let line = e.refused_line("token_used").await;
    assert_eq!(line["principal"], "dev-1");
    assert_eq!(delta(&e.counts(), &c0, "enroll", "refused"), 1.0);
    assert_eq!(delta(&e.counts(), &c0, "enroll", "issued"), 1.0);
    e.running.shutdown().await;
}

/// Issue 25: "Refusals with the good case beside each: a spent token (above), an expired token, a
/// token for NAME A with a CSR for B, a CSR whose signature does not match its key, an RSA-1024
/// key, a 10 MB body".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_each_beside_the_good_case() {
    let _one = SERIAL.lock().await;
    let e = start().await;
    let c0 = e.counts();
    let out = e.path("out.b64");
    // No credentials: 401 with a Basic challenge.
    let (_, a_req) = csr(&e, "a", "dev-a", P256);
    assert_eq!(curl(&e, "simpleenroll", &[], Some(&a_req), &out), 401);
    e.refused_line("no_credentials").await;

    // A token for dev-a with a CSR for dev-b: 400, and the token is not spent by it.
    let token_a = mint(&e, "dev-a");
    let (_, b_req) = csr(&e, "b", "dev-b", P256);
    assert_eq!(enroll(&e, "dev-a", &token_a, &b_req, &out), 400);
    let line = e.refused_line("csr_name_mismatch").await;
    assert_eq!(line["principal"], "dev-a");
    // The dev-a token presented as dev-b's: 401 (a foreign token).
    assert_eq!(enroll(&e, "dev-b", &token_a, &b_req, &out), 401);
    e.refused_line("token_foreign").await;
    // An unknown token: 401.
    assert_eq!(enroll(&e, "dev-a", "not-a-token", &a_req, &out), 401);
    e.refused_line("token_unknown").await;
    // Beside them, the good case: the same token with dev-a's own CSR.
    assert_eq!(enroll(&e, "dev-a", &token_a, &a_req, &out), 200);

    // An expired token (minted an hour in the past, valid one minute): 401.
    let ca = Ca::open(&e.pki()).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let old = mqtt_gateway::enroll::token::mint(&ca, "dev-c", Duration::from_secs(60), now - 3600)
        .unwrap();
    let (_, c_req) = csr(&e, "c", "dev-c", P256);
    assert_eq!(enroll(&e, "dev-c", &old, &c_req, &out), 401);
    e.refused_line("token_expired").await;
    let fresh = mint(&e, "dev-c");

    // A CSR whose signature does not match its key: one byte of the signed part changed.
    let der = std::fs::read(e.path("c.der")).unwrap();
    let at = der.windows(5).position(|w| w == b"dev-c").unwrap();
    let mut forged = der.clone();
    forged[at + 4] = b'C';
    let forged_b64 = e.path("forged.csr");
    std::fs::write(
        &forged_b64,
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &forged),
    )
    .unwrap();
    // (now CN=dev-C: presented as dev-C's token it would be foreign; use a dev-C token)
    let token_upper = mint(&e, "dev-C");
    assert_eq!(enroll(&e, "dev-C", &token_upper, &forged_b64, &out), 400);
    e.refused_line("csr_signature").await;

    // RSA-1024: 400; RSA-2048 beside it: issued.
    let (_, weak) = csr(&e, "weak", "dev-c", &["rsa:1024"]);
    assert_eq!(enroll(&e, "dev-c", &fresh, &weak, &out), 400);
    e.refused_line("csr_key_too_small").await;
    let (rsa_key, strong) = csr(&e, "strong", "dev-c", &["rsa:2048"]);
    assert_eq!(enroll(&e, "dev-c", &fresh, &strong, &out), 200);
    let pem = e.path("dev-c.pem");
    read_pkcs7(&out, &pem);
    assert!(e.publish(&pem, &rsa_key), "an RSA-2048 device publishes");

    // A 10 MB body: 413 before it is read.
    let big = e.path("big.csr");
    std::fs::write(&big, vec![b'A'; 10 * 1024 * 1024]).unwrap();
    let token_d = mint(&e, "dev-d");
    assert_eq!(enroll(&e, "dev-d", &token_d, &big, &out), 413);
    e.refused_line("body_too_large").await;
    let (_, d_req) = csr(&e, "d", "dev-d", P256);
    assert_eq!(enroll(&e, "dev-d", &token_d, &d_req, &out), 200);

    assert_eq!(delta(&e.counts(), &c0, "enroll", "issued"), 3.0);
    assert_eq!(delta(&e.counts(), &c0, "enroll", "bad_request"), 4.0);
    assert_eq!(delta(&e.counts(), &c0, "enroll", "refused"), 4.0);
    e.running.shutdown().await;
}

/// Issue 25: "Renewal before expiry gives a new certificate with the same subject; the old one
/// keeps working until it expires (or is revoked); renewal with a revoked certificate is
/// refused" (spec lifecycle.md: simplereenroll with "the current, valid, unrevoked
/// certificate; same subject").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_with_the_current_certificate_and_not_after_revocation() {
    let _one = SERIAL.lock().await;
    let e = start().await;
    let c0 = e.counts();
    let out = e.path("out.b64");
    let token = mint(&e, "dev-r");
    let (key1, req1) = csr(&e, "r1", "dev-r", P256);
    assert_eq!(enroll(&e, "dev-r", &token, &req1, &out), 200);
    let pem1 = e.path("r1.pem");
    let first = read_pkcs7(&out, &pem1);

    // Renewal without a client certificate: 401.
    let (key2, req2) = csr(&e, "r2", "dev-r", P256);
    assert_eq!(curl(&e, "simplereenroll", &[], Some(&req2), &out), 401);
    e.refused_line("no_certificate").await;
    // With the current certificate, a new key, the same subject: a new certificate.
    let with_cert = ["--cert", s(&pem1), "--key", s(&key1)];
    // A CSR for another name is refused even with a good certificate.
    let (_, other) = csr(&e, "other", "dev-other", P256);
    assert_eq!(
        curl(&e, "simplereenroll", &with_cert, Some(&other), &out),
        400
    );
    assert_eq!(
        curl(&e, "simplereenroll", &with_cert, Some(&req2), &out),
        200
    );
    let pem2 = e.path("r2.pem");
    let second = read_pkcs7(&out, &pem2);
    assert_ne!(serial_of(&first[0]), serial_of(&second[0]));
    let (_, c2) = x509_parser::certificate::X509Certificate::from_der(&second[0]).unwrap();
    assert_eq!(
        c2.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "dev-r"
    );
    let line = e
        .audit_line(|v| v["event"] == "enrolled" && v["reason"] == "certificate")
        .await;
    assert_eq!(line["cert_serial"], serial_of(&second[0]).as_str());
    assert_eq!(delta(&e.counts(), &c0, "reenroll", "issued"), 1.0);
    // Both certificates work: the new one, and the old one until it expires or is revoked.
    assert!(e.publish(&pem2, &key2), "the renewed certificate connects");
    assert!(e.publish(&pem1, &key1), "the old one still works");

    // Revoked (pki revoke NAME cuts every certificate of the device): renewal refused.
    gw(&["pki", "revoke", s(&e.pki()), "dev-r"]);
    let (_, req3) = csr(&e, "r3", "dev-r", P256);
    let with_new = ["--cert", s(&pem2), "--key", s(&key2)];
    assert_eq!(
        curl(&e, "simplereenroll", &with_new, Some(&req3), &out),
        403
    );
    let line = e.refused_line("certificate_revoked").await;
    assert_eq!(line["listener"], "enrollment");
    assert_eq!(line["principal"], "dev-r");
    assert_eq!(delta(&e.counts(), &c0, "reenroll", "refused"), 2.0);
    assert_eq!(delta(&e.counts(), &c0, "reenroll", "issued"), 1.0);
    e.running.shutdown().await;
}

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../docs/examples/est-enroll.sh"
);

/// docs/guide-device-enrollment.md works as written: `est-enroll.sh cacerts`, `enroll` with a
/// token from `pki token`, `renew` with the certificate it got; each certificate connects
/// through the gateway; a second `enroll` with the spent token fails and keeps the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_script_enrolls_and_renews() {
    let _one = SERIAL.lock().await;
    let e = start().await;
    let url = format!("https://127.0.0.1:{}", e.est().port());
    let ca = e.pki().join("ca.pem");
    let stem = e.path("sensor-7");
    let fetched = e.path("fetched-ca.pem");
    ok(&run(Command::new(SCRIPT).args([
        "cacerts",
        &url,
        s(&ca),
        s(&fetched),
    ])));
    let fetched = std::fs::read(&fetched).unwrap();
    let ca_der = rustls_pki_types::CertificateDer::from_pem_file(&ca).unwrap();
    assert_eq!(
        rustls_pki_types::CertificateDer::from_pem_slice(&fetched).unwrap(),
        ca_der
    );

    let token = mint(&e, "sensor-7");
    let enroll = ["enroll", &url, s(&ca), "sensor-7", &token, s(&stem)];
    ok(&run(Command::new(SCRIPT).args(enroll)));
    let pem = stem.with_extension("pem");
    let key = stem.with_extension("key");
    let first = std::fs::read(&pem).unwrap();
    assert!(e.publish(&pem, &key), "the enrolled certificate connects");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "the key is the owner's only");

    // The spent token: the script fails, and the device's files stay as they were.
    let again = run(Command::new(SCRIPT).args(enroll));
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("401"),
        "{again:?}"
    );
    assert_eq!(std::fs::read(&pem).unwrap(), first);

    ok(&run(Command::new(SCRIPT).args([
        "renew",
        &url,
        s(&ca),
        "sensor-7",
        s(&stem),
    ])));
    let renewed = std::fs::read(&pem).unwrap();
    assert_ne!(renewed, first);
    assert!(e.publish(&pem, &key), "the renewed certificate connects");
    e.running.shutdown().await;
}

/// `requests_per_ip_per_minute` (429, audited, counted) and `max_connections` (one more is
/// closed at once), each beside the request that is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_connection_bounds() {
    let _one = SERIAL.lock().await;
    let e = start_with(2, 1).await;
    let c0 = e.counts();
    let out = e.path("out.b64");
    assert_eq!(curl(&e, "cacerts", &[], None, &out), 200);
    let token = mint(&e, "dev-rate");
    let (_, req) = csr(&e, "rate", "dev-rate", P256);
    assert_eq!(enroll(&e, "dev-rate", &token, &req, &out), 200);
    // The third request of the minute from this address.
    let token2 = mint(&e, "dev-rate2");
    let (_, req2) = csr(&e, "rate2", "dev-rate2", P256);
    assert_eq!(enroll(&e, "dev-rate2", &token2, &req2, &out), 429);
    e.refused_line("rate_limited").await;
    assert_eq!(delta(&e.counts(), &c0, "enroll", "rate_limited"), 1.0);
    assert_eq!(delta(&e.counts(), &c0, "enroll", "issued"), 1.0);
    e.running.shutdown().await;

    // One connection at a time: a second is closed while the first is held.
    let e = start_with(1000, 1).await;
    let held = std::net::TcpStream::connect(e.est()).unwrap();
    let url = format!(
        "https://127.0.0.1:{}/.well-known/est/cacerts",
        e.est().port()
    );
    let ca = e.pki().join("ca.pem");
    let refused =
        run(Command::new("curl").args(["-sS", "--max-time", "5", "--cacert", s(&ca), &url]));
    assert!(!refused.status.success(), "{refused:?}");
    drop(held);
    // Once the held connection is gone, its slot is free again (waited for, not timed).
    let served = (0..100).any(|_| {
        let ok = run(Command::new("curl").args([
            "-sS",
            "--fail",
            "--max-time",
            "5",
            "--cacert",
            s(&ca),
            &url,
        ]))
        .status
        .success();
        if !ok {
            std::thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    assert!(served);
    e.running.shutdown().await;
}

/// Issue 25: "Concurrent enrollments (hundreds) do not corrupt the CA's index or CRL (serial
/// numbers unique, files replaced atomically)". 200 enrollments by curl, 50 at a time
/// (`--parallel`), each with its own token: every one is issued, the index holds each once with
/// a unique serial, every token is spent. Prints the rate (`BENCHMARKS.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_concurrent_enrollments_keep_the_index_whole() {
    const N: usize = 200;
    let _one = SERIAL.lock().await;
    let e = start().await;
    let ca = Ca::open(&e.pki()).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let url = format!(
        "https://127.0.0.1:{}/.well-known/est/simpleenroll",
        e.est().port()
    );
    let mut config = String::new();
    for i in 0..N {
        let name = format!("fleet-{i}");
        let token =
            mqtt_gateway::enroll::token::mint(&ca, &name, Duration::from_secs(600), now).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, name.as_str());
        let der = p.serialize_request(&key).unwrap().der().to_vec();
        let csr = e.path(&format!("{name}.csr"));
        std::fs::write(
            &csr,
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, der),
        )
        .unwrap();
        if i > 0 {
            config.push_str("next\n");
        }
        config.push_str(&format!(
            "url = \"{url}\"\ncacert = \"{}\"\nuser = \"{name}:{token}\"\n\
             header = \"Content-Type: application/pkcs10\"\ndata-binary = \"@{}\"\n\
             output = \"{}\"\nwrite-out = \"%{{http_code}}\\n\"\nsilent\nshow-error\n",
            s(&e.pki().join("ca.pem")),
            s(&csr),
            s(&e.path(&format!("{name}.p7"))),
        ));
    }
    let cfg = e.path("parallel.curl");
    std::fs::write(&cfg, config).unwrap();
    let started = std::time::Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        run(Command::new("curl").args(["--parallel", "--parallel-max", "50", "-K", s(&cfg)]))
    })
    .await
    .unwrap();
    let took = started.elapsed();
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        codes.lines().filter(|c| *c == "200").count(),
        N,
        "{codes}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = ca.list().unwrap();
    assert_eq!(
        list.len(),
        N + 1,
        "the server certificate and each enrollment once"
    );
    let serials: std::collections::HashSet<_> = list.iter().map(|e| e.serial.clone()).collect();
    assert_eq!(serials.len(), N + 1, "serials unique");
    for i in 0..N {
        let name = format!("fleet-{i}");
        assert_eq!(list.iter().filter(|e| e.name == name).count(), 1, "{name}");
        let certs = read_pkcs7(
            &e.path(&format!("{name}.p7")),
            &e.path(&format!("{name}.pem")),
        );
        assert!(serials.contains(&serial_of(&certs[0])));
    }
    let tokens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(e.pki().join("tokens.json")).unwrap())
            .unwrap();
    let tokens = tokens["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), N);
    assert!(tokens.iter().all(|t| t["used_at"].is_i64()));
    println!(
        "{N} enrollments, 50 concurrent, in {:.2} s: {:.0} enrollments/s",
        took.as_secs_f64(),
        f64::from(u32::try_from(N).unwrap()) / took.as_secs_f64()
    );
    e.running.shutdown().await;
}

/// `mqtt-gateway check` loads `[enrollment]` as `run` does: a pki directory without a CA is a
/// problem on the line of `pki_dir` (exit 1); the working config passes and names the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_an_enrollment_without_a_ca() {
    let _one = SERIAL.lock().await;
    let e = start().await;
    let good = e.path("gateway.toml");
    let out = gw(&["check", "--config", s(&good)]);
    assert!(out.contains("enrollment 127.0.0.1:0"), "{out}");
    let text = std::fs::read_to_string(&good).unwrap();
    let bad = e.path("bad.toml");
    std::fs::write(
        &bad,
        text.replace("pki_dir = \"pki\"", "pki_dir = \"nopki\""),
    )
    .unwrap();
    let refused = run(Command::new(BIN).args(["check", "--config", s(&bad)]));
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    let line = text.lines().position(|l| l.starts_with("pki_dir")).unwrap() + 1;
    assert!(
        err.contains(&format!("bad.toml:{line}: enrollment.pki_dir: ")),
        "{err}"
    );
    e.running.shutdown().await;
}

/// Issue 25: "renewal with an expired ... certificate is refused". A certificate of this CA whose
/// notAfter has passed fails the EST handshake itself (audited `tls_failed`); a current one of the
/// same CA renews beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_cannot_renew() {
    let _one = SERIAL.lock().await;
    let e = start().await;
    let out = e.path("out.b64");
    // An expired certificate for dev-x, signed by the pki's own CA key.
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(e.pki().join("ca.key")).unwrap())
            .unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(e.pki().join("ca.pem")).unwrap(),
        ca_key,
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "dev-x");
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(10);
    p.not_after = now - time::Duration::days(1);
    let cert = p.signed_by(&key, &issuer).unwrap();
    let (old_pem, old_key) = (e.path("old.pem"), e.path("old.key"));
    std::fs::write(&old_pem, cert.pem()).unwrap();
    std::fs::write(&old_key, key.serialize_pem()).unwrap();
    let (_, req) = csr(&e, "x", "dev-x", P256);
    let url = format!(
        "https://127.0.0.1:{}/.well-known/est/simplereenroll",
        e.est().port()
    );
    let ca = e.pki().join("ca.pem");
    let refused = run(Command::new("curl").args([
        "-sS",
        "--max-time",
        "20",
        "--cacert",
        s(&ca),
        "--cert",
        s(&old_pem),
        "--key",
        s(&old_key),
        "--data-binary",
        &format!("@{}", s(&req)),
        "-o",
        s(&out),
        "-w",
        "%{http_code}",
        &url,
    ]));
    assert!(
        !String::from_utf8_lossy(&refused.stdout).starts_with('2'),
        "{refused:?}"
    );
    let line = e.refused_line("tls_failed").await;
    assert!(
        line["detail"]
            .as_str()
            .unwrap()
            .contains("certificate expired"),
        "{line}"
    );
    // Beside it: a current certificate of the same CA renews.
    let token = mint(&e, "dev-x");
    let (key1, req1) = csr(&e, "x1", "dev-x", P256);
    assert_eq!(enroll(&e, "dev-x", &token, &req1, &out), 200);
    let pem1 = e.path("x1.pem");
    read_pkcs7(&out, &pem1);
    let with_cert = ["--cert", s(&pem1), "--key", s(&key1)];
    assert_eq!(
        curl(&e, "simplereenroll", &with_cert, Some(&req), &out),
        200
    );
    e.running.shutdown().await;
}

/// Issue 25 item 2, "the same with `mqtt-gateway enroll`": the agent enrolls with a token file,
/// the certificate connects; run again it does nothing (not due); with `--renew-below 100` it
/// renews with the certificate it holds (a new serial, same name) which connects; with its files
/// gone, the spent token is refused (401) and it exits 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_enroll_agent_enrolls_renews_when_due_and_refuses_a_spent_token() {
    let _one = SERIAL.lock().await;
    let e = start().await;
    let server = format!("https://127.0.0.1:{}", e.est().port());
    let ca = e.pki().join("ca.pem");
    let token_file = e.path("token");
    // Minted with an OU (the policy's `cert_ou`): the certificate carries it, and renewals keep it.
    let token = gw(&["pki", "token", s(&e.pki()), "agent-1", "--ou", "devices"]);
    std::fs::write(&token_file, token).unwrap();
    let stem = e.path("agent-1");
    let agent = |extra: &[&str]| {
        let mut args = vec![
            "enroll",
            "--server",
            &server,
            "--ca",
            s(&ca),
            "--name",
            "agent-1",
            "--out",
            s(&stem),
            "--token-file",
            s(&token_file),
        ];
        args.extend_from_slice(extra);
        run(Command::new(BIN).args(&args))
    };
    let first = ok(&agent(&[]));
    assert!(first.starts_with("enrolled agent-1"), "{first}");
    let (pem, key) = (stem.with_extension("pem"), stem.with_extension("key"));
    assert!(e.publish(&pem, &key), "the agent's certificate connects");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let enrolled = std::fs::read(&pem).unwrap();
    let ou_of = |pem: &[u8]| {
        let der = rustls_pki_types::CertificateDer::from_pem_slice(pem).unwrap();
        let (_, c) = x509_parser::certificate::X509Certificate::from_der(&der).unwrap();
        c.subject()
            .iter_organizational_unit()
            .next()
            .map(|o| o.as_str().unwrap().to_owned())
    };
    assert_eq!(ou_of(&enrolled).as_deref(), Some("devices"));

    let again = ok(&agent(&[]));
    assert!(again.contains("not due"), "{again}");
    assert_eq!(std::fs::read(&pem).unwrap(), enrolled);

    let renewed = ok(&agent(&["--renew-below", "100"]));
    assert!(renewed.starts_with("renewed agent-1"), "{renewed}");
    let new_pem = std::fs::read(&pem).unwrap();
    assert_ne!(new_pem, enrolled);
    let new_der = rustls_pki_types::CertificateDer::from_pem_slice(&new_pem).unwrap();
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(&new_der).unwrap();
    assert_eq!(
        c.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "agent-1"
    );
    assert_eq!(
        ou_of(&new_pem).as_deref(),
        Some("devices"),
        "kept on renewal"
    );
    assert!(e.publish(&pem, &key), "the renewed certificate connects");
    e.audit_line(|v| {
        v["event"] == "enrolled" && v["principal"] == "agent-1" && v["reason"] == "certificate"
    })
    .await;

    std::fs::remove_file(&pem).unwrap();
    let spent = agent(&[]);
    assert_eq!(spent.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&spent.stderr).contains("401"),
        "{spent:?}"
    );
    assert!(!pem.exists());
    e.running.shutdown().await;
}

/// The device's units in deploy/systemd (`mqtt-gateway-enroll.service` and `.timer`) pass
/// `systemd-analyze verify`, and the service's exposure is at most 2.0 ("OK"); a misspelt
/// directive is reported, so the check is not blind.
#[test]
fn the_enroll_units_verify() {
    let dir = tempfile::tempdir().unwrap();
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let service = std::fs::read_to_string(deploy.join("mqtt-gateway-enroll.service"))
        .unwrap()
        .replace("/usr/local/bin/mqtt-gateway", BIN);
    let timer = std::fs::read_to_string(deploy.join("mqtt-gateway-enroll.timer")).unwrap();
    let (s_path, t_path) = (
        dir.path().join("mqtt-gateway-enroll.service"),
        dir.path().join("mqtt-gateway-enroll.timer"),
    );
    std::fs::write(&t_path, &timer).unwrap();
    let verify = |text: &str| {
        std::fs::write(&s_path, text).unwrap();
        run(Command::new("systemd-analyze").args(["verify", s(&s_path), s(&t_path)]))
    };
    let out = verify(&service);
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let broken = verify(&service.replace("ProtectHome=yes", "ProtectHome=yess"));
    assert!(
        String::from_utf8_lossy(&broken.stderr).contains("yess"),
        "{broken:?}"
    );
    std::fs::write(&s_path, &service).unwrap();
    let security = run(Command::new("systemd-analyze").args([
        "security",
        "--offline=true",
        "--threshold=20",
        s(&s_path),
    ]));
    assert!(security.status.success(), "{security:?}");
}

/// Issue 25: "key types allowed: P-256, P-384, Ed25519, RSA ≥ 2048; any extension a CSR asks for
/// beyond the subject is ignored". openssl's keys of each allowed type enroll; a CSR asking for
/// serverAuth and a SAN gets a clientAuth certificate without a SAN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_allowed_key_type_enrolls_and_requested_extensions_are_ignored() {
    let _one = SERIAL.lock().await;
    let e = start().await;
    let out = e.path("out.b64");
    let kinds: [(&str, &[&str]); 3] = [
        ("p384", &["ec", "-pkeyopt", "ec_paramgen_curve:P-384"]),
        ("ed25519", &["ed25519"]),
        ("p256", P256),
    ];
    for (stem, newkey) in kinds {
        let name = format!("dev-{stem}");
        let token = mint(&e, &name);
        let (key, req) = csr(&e, stem, &name, newkey);
        assert_eq!(enroll(&e, &name, &token, &req, &out), 200, "{stem}");
        let pem = e.path(&format!("{stem}.pem"));
        read_pkcs7(&out, &pem);
        assert!(e.publish(&pem, &key), "{stem} connects");
    }
    // A CSR that asks for more than a device certificate.
    let key = e.path("greedy.key");
    let der = e.path("greedy.der");
    ok(&run(Command::new("openssl").args([
        "req",
        "-new",
        "-nodes",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-keyout",
        s(&key),
        "-subj",
        "/CN=dev-greedy/O=Evil Corp",
        "-addext",
        "extendedKeyUsage=serverAuth",
        "-addext",
        "subjectAltName=DNS:broker.example",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-outform",
        "DER",
        "-out",
        s(&der),
    ])));
    let b64 = e.path("greedy.csr");
    std::fs::write(
        &b64,
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            std::fs::read(&der).unwrap(),
        ),
    )
    .unwrap();
    let token = mint(&e, "dev-greedy");
    assert_eq!(enroll(&e, "dev-greedy", &token, &b64, &out), 200);
    let certs = read_pkcs7(&out, &e.path("greedy.pem"));
    let (_, c) = x509_parser::certificate::X509Certificate::from_der(&certs[0]).unwrap();
    let eku = c.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert!(c.subject_alternative_name().unwrap().is_none(), "no SAN");
    assert!(!c.is_ca());
    assert_eq!(c.subject().iter_organization().count(), 0, "only the CN");
    e.running.shutdown().await;
}
