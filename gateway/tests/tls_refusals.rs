//! TLS refusals through the gateway's listener (issue 3): real Mosquitto behind the gateway, real
//! TLS, certificates and CRLs made here. Each refused client is shown next to a good client of the
//! same gateway that still gets in, and each refusal must be visible three ways: the alert the
//! client receives, `mqtt_gateway_tls_handshake_failures_total{listener="mqtts",reason=...}`
//! (process-global, so only increases are asserted), and a `tls_failed` audit line with that reason.
//!
//! DEPENDENCIES.md §1: in TLS 1.3 a client's `connect()` returns Ok even when the server then
//! refuses its certificate; the refusal arrives as an alert on the first read. [`refused`] therefore
//! always writes a CONNECT and reads before it decides.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use e2e::MqttVersion;
use mqtt_inspect::{Packet, ProtocolVersion, decode};
use rustls::pki_types::ServerName;
use rustls::{AlertDescription, ClientConfig, HandshakeKind};
use support::wire::TlsWire;
use support::{Flaw, Issued, Pki, Setup, TestGateway, client_tls, connect_frame, tls_pub};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

fn failures(reason: &str) -> String {
    format!("mqtt_gateway_tls_handshake_failures_total{{listener=\"mqtts\",reason=\"{reason}\"}}")
}

const TLS_FAILED: &str =
    "mqtt_gateway_connections_total{listener=\"mqtts\",outcome=\"tls_failed\"}";

/// Both counters a TLS refusal must move.
async fn counters(gw: &TestGateway, reason: &str) -> (f64, f64) {
    (
        gw.metric(&failures(reason)).await,
        gw.metric(TLS_FAILED).await,
    )
}

/// Connects with `config`, sends a CONNECT and reads: the handshake must fail. Returns the
/// client's local address (the audit line's `peer`) and the TLS error the client saw.
async fn refused(addr: SocketAddr, config: Arc<ClientConfig>) -> (SocketAddr, rustls::Error) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let err = match TlsConnector::from(config).connect(name, tcp).await {
        Err(e) => e,
        Ok(mut tls) => {
            // TLS 1.3: the client's side of the handshake is complete before the server has
            // judged its certificate. The verdict comes with the first read.
            let _ = tls
                .write_all(&connect_frame(ProtocolVersion::V5, "refused", None, None))
                .await;
            let _ = tls.flush().await;
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
                Err(_) => panic!("no verdict from the gateway within 10 s"),
                Ok(Ok(0)) => panic!("the gateway closed the connection without a TLS alert"),
                Ok(Ok(n)) => panic!("the client was admitted: {:02x?}", &buf[..n]),
                Ok(Err(e)) => e,
            }
        }
    };
    let tls_err = err
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .cloned()
        .unwrap_or_else(|| panic!("not a TLS error: {err:?}"));
    (local, tls_err)
}

/// A full MQTT 5 CONNECT/CONNACK through the gateway with `config`; returns the connection.
async fn admitted(gw: &TestGateway, config: Arc<ClientConfig>, client_id: &str) -> TlsWire {
    let mut c = TlsWire::try_tls(gw.tls_addr(), config, ProtocolVersion::V5)
        .await
        .expect("TLS handshake of the good client");
    c.try_send(&connect_frame(ProtocolVersion::V5, client_id, None, None))
        .await
        .unwrap();
    let connack = c.recv().await.expect("CONNACK for the good client");
    assert!(
        matches!(decode(&connack, ProtocolVersion::V5), Ok(Packet::Connack(ack)) if ack.code.is_success()),
        "good client {client_id}: {connack:02x?}"
    );
    // The connection is live end to end: PINGREQ answered (by the broker, through the gateway).
    c.try_send(&[0xc0, 0x00]).await.unwrap();
    assert_eq!(c.recv().await.expect("PINGRESP"), [0xd0, 0x00]);
    c
}

/// The gateway recorded this refusal: a `tls_failed` audit line with `reason` on listener `mqtts`
/// (from `peer` when known, with `detail` in its detail when given), and both counters above
/// `before`. Returns the audit line.
async fn assert_recorded(
    gw: &TestGateway,
    peer: Option<SocketAddr>,
    reason: &str,
    detail: Option<&str>,
    before: (f64, f64),
) -> serde_json::Value {
    let line = gw
        .audit_line(|v| {
            v["event"] == "tls_failed"
                && v["reason"] == reason
                && peer.is_none_or(|p| v["peer"] == p.to_string())
                && detail.is_none_or(|d| v["detail"].as_str().is_some_and(|t| t.contains(d)))
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no tls_failed/{reason} audit line for {peer:?} {detail:?}; audit: {:#?}",
                std::fs::read_to_string(&gw.audit_path).unwrap_or_default()
            )
        });
    assert_eq!(line["listener"], "mqtts", "{line}");
    assert!(line["time"].is_string(), "{line}");
    // The audit line is written after the counters, so they are already up to date here.
    let after = counters(gw, reason).await;
    assert!(
        after.0 >= before.0 + 1.0,
        "{} did not increase: {} -> {}",
        failures(reason),
        before.0,
        after.0
    );
    assert!(
        after.1 >= before.1 + 1.0,
        "{TLS_FAILED} did not increase: {} -> {}",
        before.1,
        after.1
    );
    line
}

/// The CRL and scope lines of `[listener.tls]`.
fn crl_extra(crls: &[&std::path::Path], scope: &str) -> String {
    let list: Vec<String> = crls
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    format!("crl = [{}]\ncrl_scope = \"{scope}\"\n", list.join(", "))
}

/// Contract ("Metrics"): `tls_handshake_failures_total` reasons; contract ("Audit log"): a TLS
/// failure is one JSON line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_without_a_valid_client_chain_are_refused_next_to_a_good_one() {
    let pki = Pki::new();
    let gw = Setup::new(&pki).start().await;
    let good = pki.client("good-1", None, Flaw::None);
    let good_tls = client_tls(&pki, Some(&good), TLS13);

    // The good client, with the real Mosquitto client first.
    let out = tls_pub(
        &gw,
        &pki,
        Some(&good),
        MqttVersion::V311,
        &["-t", "tls/ok", "-m", "hello", "-q", "1"],
    );
    assert!(out.success(), "good client via mosquitto_pub: {out:?}");
    // mosquitto_pub without a certificate is refused by the same gateway.
    let before = counters(&gw, "no_certificate").await;
    let out = tls_pub(
        &gw,
        &pki,
        None,
        MqttVersion::V311,
        &["-t", "tls/ok", "-m", "hello", "-q", "1"],
    );
    assert!(
        !out.success(),
        "mosquitto_pub without a certificate: {out:?}"
    );
    assert_recorded(&gw, None, "no_certificate", None, before).await;

    let expired = pki.client("expired-1", None, Flaw::Expired);
    let early = pki.client("early-1", None, Flaw::NotYetValid);
    let server_only = pki.client("server-eku-1", None, Flaw::NoClientAuth);
    let foreign = pki.foreign_client("foreign-1");
    let cases: [(&str, Option<&Issued>, AlertDescription); 5] = [
        (
            "no_certificate",
            None,
            AlertDescription::CertificateRequired,
        ),
        ("unknown_ca", Some(&foreign), AlertDescription::UnknownCA),
        (
            "expired",
            Some(&expired),
            AlertDescription::CertificateExpired,
        ),
        // RFC 8446 §6.2: certificate_expired also means "not currently valid".
        (
            "not_yet_valid",
            Some(&early),
            AlertDescription::CertificateExpired,
        ),
        // serverAuth only: no clientAuth extended key usage.
        (
            "bad_usage",
            Some(&server_only),
            AlertDescription::UnsupportedCertificate,
        ),
    ];
    for (i, (reason, cert, alert)) in cases.into_iter().enumerate() {
        let before = counters(&gw, reason).await;
        let (local, err) = refused(gw.tls_addr(), client_tls(&pki, cert, TLS13)).await;
        assert_eq!(err, rustls::Error::AlertReceived(alert), "{reason}");
        assert_recorded(&gw, Some(local), reason, None, before).await;
        // Next to it, the good client still gets in.
        admitted(&gw, Arc::clone(&good_tls), &format!("good-1-{i}")).await;
    }
}

/// gateway.example.toml: `crl_scope = "leaf"`: "check the client certificate itself".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_revoked_by_the_intermediate_crl_is_refused_with_leaf_scope() {
    let pki = Pki::new();
    let revoked = pki.client("revoked-1", None, Flaw::None);
    let good = pki.client("good-2", None, Flaw::None);
    let inter_crl = pki.write_leaf_crl(&[&revoked.serial]);
    let mut setup = Setup::new(&pki);
    setup.tls_extra = crl_extra(&[&inter_crl], "leaf");
    let gw = setup.start().await;

    let before = counters(&gw, "revoked").await;
    let (local, err) = refused(gw.tls_addr(), client_tls(&pki, Some(&revoked), TLS13)).await;
    assert_eq!(
        err,
        rustls::Error::AlertReceived(AlertDescription::CertificateRevoked)
    );
    assert_recorded(&gw, Some(local), "revoked", None, before).await;

    // A certificate of the same intermediate that the CRL does not list: served, by the real
    // Mosquitto client and by the raw one.
    let out = tls_pub(
        &gw,
        &pki,
        Some(&good),
        MqttVersion::V5,
        &["-t", "crl/ok", "-m", "x", "-q", "1"],
    );
    assert!(out.success(), "{out:?}");
    admitted(&gw, client_tls(&pki, Some(&good), TLS13), "good-2").await;
}

/// gateway.example.toml: `crl_scope` "chain": "every certificate up to the trust anchor".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_intermediate_refuses_its_leaves_with_chain_scope_only() {
    let pki = Pki::new();
    let client = pki.client("device-3", None, Flaw::None);
    // Both CRLs configured: the intermediate's (revokes nothing) and the root's, which revokes the
    // intermediate itself.
    let inter_crl = pki.write_leaf_crl(&[]);
    let root_crl = pki.write_root_crl(&[&Pki::inter_serial()]);
    let broker = tokio::task::spawn_blocking(e2e::Mosquitto::start)
        .await
        .unwrap()
        .unwrap();

    // crl_scope = "chain": every certificate below the anchor is checked, the intermediate too.
    let mut setup = Setup::new(&pki);
    setup.tls_extra = crl_extra(&[&inter_crl, &root_crl], "chain");
    let chain_gw = setup.start().await;
    let before = counters(&chain_gw, "revoked").await;
    let (local, err) = refused(chain_gw.tls_addr(), client_tls(&pki, Some(&client), TLS13)).await;
    assert_eq!(
        err,
        rustls::Error::AlertReceived(AlertDescription::CertificateRevoked)
    );
    assert_recorded(&chain_gw, Some(local), "revoked", None, before).await;

    // The same certificate and the same two CRL files with crl_scope = "leaf": only the leaf is
    // checked, and it is not listed, so the client gets in.
    let mut setup = Setup::new(&pki);
    setup.tls_extra = crl_extra(&[&inter_crl, &root_crl], "leaf");
    let leaf_gw = setup.start_with(broker).await;
    admitted(&leaf_gw, client_tls(&pki, Some(&client), TLS13), "device-3").await;
    let out = tls_pub(
        &leaf_gw,
        &pki,
        Some(&client),
        MqttVersion::V311,
        &["-t", "crl/chain", "-m", "x", "-q", "1"],
    );
    assert!(out.success(), "{out:?}");
}

/// `openssl s_client` offering TLS 1.1 at most (security level 0, so OpenSSL 3 still sends it).
async fn openssl_tls11(gw: &TestGateway, pki: &Pki, cert: &Issued) -> e2e::CliOutput {
    let mut cmd = Command::new("openssl");
    cmd.args(["s_client", "-connect"])
        .arg(gw.tls_addr().to_string())
        .args([
            "-servername",
            "localhost",
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ])
        .arg("-CAfile")
        .arg(&pki.root_path)
        .arg("-cert")
        .arg(&cert.chain_path)
        .arg("-key")
        .arg(&cert.key_path);
    tokio::task::spawn_blocking(move || e2e::run_with_timeout(&mut cmd, Duration::from_secs(10)))
        .await
        .unwrap()
        .unwrap()
}

/// `openssl s_client` offered TLS 1.1 and the gateway answered its ClientHello with an alert (not a
/// client that gave up before sending anything).
fn assert_tls11_refused(out: &e2e::CliOutput) {
    assert!(
        !out.success(),
        "openssl s_client -tls1_1 got through: {out:?}"
    );
    assert!(
        out.stdout.contains("Protocol  : TLSv1.1"),
        "openssl did not try TLS 1.1: {out:?}"
    );
    assert!(
        out.stderr.contains("SSL alert number"),
        "the gateway did not answer with a TLS alert: {out:?}"
    );
}

/// In the audit detail when the ClientHello itself was refused (a TLS 1.1 hello lacks what TLS 1.2
/// requires), as opposed to a peer that went away.
const HELLO_REFUSED: &str = "peer is incompatible";

/// gateway.example.toml: `min_version = "1.2"  # "1.2" or "1.3"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_1_is_always_refused_and_tls_1_2_only_above_min_version() {
    let pki = Pki::new();
    let cert = pki.client("dev-4", None, Flaw::None);
    let broker = tokio::task::spawn_blocking(e2e::Mosquitto::start)
        .await
        .unwrap()
        .unwrap();

    // Default min_version = "1.2": TLS 1.1 refused, TLS 1.2 and 1.3 served.
    let gw12 = Setup::new(&pki).start().await;
    let before = counters(&gw12, "protocol").await;
    let out = openssl_tls11(&gw12, &pki, &cert).await;
    assert_tls11_refused(&out);
    assert_recorded(&gw12, None, "protocol", Some(HELLO_REFUSED), before).await;
    let c = admitted(&gw12, client_tls(&pki, Some(&cert), TLS12), "dev-4-tls12").await;
    assert_eq!(
        c.stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    admitted(&gw12, client_tls(&pki, Some(&cert), TLS13), "dev-4-tls13").await;

    // min_version = "1.3": TLS 1.1 still refused, and a rustls client limited to TLS 1.2 too.
    // (openssl first: its audit line is then the only `protocol` one of this gateway.)
    let mut setup = Setup::new(&pki);
    setup.tls_extra = "min_version = \"1.3\"\n".to_owned();
    let gw13 = setup.start_with(broker).await;
    let before = counters(&gw13, "protocol").await;
    let out = openssl_tls11(&gw13, &pki, &cert).await;
    assert_tls11_refused(&out);
    assert_recorded(&gw13, None, "protocol", Some(HELLO_REFUSED), before).await;
    let before = counters(&gw13, "protocol").await;
    let (local, err) = refused(gw13.tls_addr(), client_tls(&pki, Some(&cert), TLS12)).await;
    assert_eq!(
        err,
        rustls::Error::AlertReceived(AlertDescription::ProtocolVersion)
    );
    assert_recorded(&gw13, Some(local), "protocol", None, before).await;
    let c = admitted(&gw13, client_tls(&pki, Some(&cert), TLS13), "dev-4-tls13").await;
    assert_eq!(
        c.stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

/// Connects with `config`, does CONNECT/CONNACK, disconnects cleanly and reads to the end (so the
/// session tickets are stored in `config`); returns how the handshake went.
async fn session(gw: &TestGateway, config: &Arc<ClientConfig>, client_id: &str) -> HandshakeKind {
    let mut c = admitted(gw, Arc::clone(config), client_id).await;
    let kind = c
        .stream
        .get_ref()
        .1
        .handshake_kind()
        .expect("handshake done");
    c.try_send(&[0xe0, 0x00]).await.unwrap();
    let after = c.recv().await;
    assert!(after.is_none(), "closed after DISCONNECT, got {after:02x?}");
    kind
}

/// DESIGN §3: "Resumption is not a back door."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_client_cannot_come_back_by_tls_session_resumption() {
    let pki = Pki::new();
    let device = pki.client("device-5", None, Flaw::None);
    let other = pki.client("device-6", None, Flaw::None);
    let crl = pki.write_leaf_crl(&[]);
    let mut setup = Setup::new(&pki);
    setup.tls_extra = crl_extra(&[&crl], "leaf");
    let gw = setup.start().await;

    // One ClientConfig for all of device-5's connections: it keeps the session tickets.
    let device_tls = client_tls(&pki, Some(&device), TLS13);
    assert_eq!(
        session(&gw, &device_tls, "device-5").await,
        HandshakeKind::Full
    );
    // The listener's verifier is one instance in its ServerConfig and in the snapshot: the full
    // handshake's acceptance (one chain verified, and remembered) is what the resumption below is
    // judged from, without verifying the chain again.
    let verifier = || {
        let v = &gw.running.gateway.current().verifiers["mqtts"];
        (v.verified_in_full(), v.remembered())
    };
    assert_eq!(verifier(), (1, 1));
    // The client does resume (so the refusal below is not a client that never tried).
    assert_eq!(
        session(&gw, &device_tls, "device-5").await,
        HandshakeKind::Resumed
    );
    assert_eq!(verifier(), (1, 1));

    // Revoke device-5 and rebuild the listener's TLS config, as a CRL reload does.
    pki.write_leaf_crl(&[&device.serial]);
    let tls_config = gw
        .running
        .gateway
        .current()
        .config
        .listeners
        .iter()
        .find(|l| l.name == "mqtts")
        .and_then(|l| l.tls.clone())
        .expect("mqtts has a [listener.tls]");
    let rebuilt = mqtt_gateway::tls::build_server_tls(&tls_config).unwrap();
    gw.running.tls["mqtts"].store(rebuilt);

    // The same ClientConfig offers its ticket again: the gateway must not resume it, and the full
    // handshake refuses the revoked certificate.
    let before = counters(&gw, "revoked").await;
    let (local, err) = refused(gw.tls_addr(), Arc::clone(&device_tls)).await;
    assert_eq!(
        err,
        rustls::Error::AlertReceived(AlertDescription::CertificateRevoked)
    );
    assert_recorded(&gw, Some(local), "revoked", None, before).await;

    // Another device is served by the rebuilt config.
    let other_tls = client_tls(&pki, Some(&other), TLS13);
    assert_eq!(
        session(&gw, &other_tls, "device-6").await,
        HandshakeKind::Full
    );
    let out = tls_pub(
        &gw,
        &pki,
        Some(&other),
        MqttVersion::V5,
        &["-t", "resume/ok", "-m", "x", "-q", "1"],
    );
    assert!(out.success(), "{out:?}");
}

/// Not a refusal: the suite the gateway picks for what a client offers (`tls::client_hello`), on
/// the running gateway in front of Mosquitto. A client listing AES-256-GCM first (rustls' and
/// OpenSSL's default order) gets AES-128-GCM; one listing ChaCha20-Poly1305 first (a device
/// without AES instructions) gets it; one offering only AES-256-GCM gets that. Each is admitted
/// (CONNACK 0 from the broker) on the same listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_prefers_aes128_unless_the_client_puts_chacha20_first() {
    use rustls::CipherSuite as C;
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let pki = Pki::new();
    let cert = pki.client("dev-suites", None, Flaw::None);
    let gw = Setup::new(&pki).start().await;
    let default = rustls::crypto::aws_lc_rs::default_provider().cipher_suites;
    assert_eq!(default[0].suite(), C::TLS13_AES_256_GCM_SHA384);
    let cases = [
        ("default", default, C::TLS13_AES_128_GCM_SHA256),
        (
            "chacha",
            vec![
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS13_AES_256_GCM_SHA384,
            ],
            C::TLS13_CHACHA20_POLY1305_SHA256,
        ),
        (
            "aes256",
            vec![cs::TLS13_AES_256_GCM_SHA384],
            C::TLS13_AES_256_GCM_SHA384,
        ),
    ];
    for (name, offered, want) in cases {
        let tls = support::client_tls_offering(&pki, Some(&cert), TLS13, offered);
        let c = admitted(&gw, tls, &format!("dev-suites-{name}")).await;
        let got = c.stream.get_ref().1.negotiated_cipher_suite().unwrap();
        assert_eq!(got.suite(), want, "{name}");
    }
}

/// Waits until the system clock is past `t` (the event the next step depends on: a certificate's
/// `notAfter` or a CRL's `nextUpdate`, which have one-second resolution).
async fn clock_past(t: time::OffsetDateTime) {
    while time::OffsetDateTime::now_utc() <= t + time::Duration::seconds(1) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Offers the session stored in `config` again: the client's handshake resumes, and the gateway
/// must close the connection without reading its CONNECT (no CONNACK). Returns the client's local
/// address.
async fn resumed_then_closed(
    gw: &TestGateway,
    config: &Arc<ClientConfig>,
    client_id: &str,
) -> SocketAddr {
    let tcp = TcpStream::connect(gw.tls_addr()).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut tls = TlsConnector::from(Arc::clone(config))
        .connect(name, tcp)
        .await
        .expect("the client's side of a resumption completes");
    assert_eq!(
        tls.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed),
        "{client_id}: the test needs the client to resume"
    );
    let _ = tls
        .write_all(&connect_frame(ProtocolVersion::V5, client_id, None, None))
        .await;
    let _ = tls.flush().await;
    let mut buf = [0u8; 256];
    match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
        Err(_) => panic!("{client_id}: no verdict from the gateway within 10 s"),
        Ok(Ok(n)) => assert_eq!(n, 0, "{client_id} was admitted: {:02x?}", &buf[..n]),
        Ok(Err(_)) => {}
    }
    local
}

/// Issue 20 item 1: a TLS 1.3 ticket or a TLS 1.2 session id made while the client certificate
/// was valid must not resume after its `notAfter` (a full handshake with the same certificate is
/// refused, so a resumption must be too). The refusal is counted and audited as `expired`; a
/// device whose certificate is still valid resumes and is served next to it.
///
/// DESIGN §3: "Resumption is not a back door."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumed_after_the_certificate_expired_is_refused() {
    let pki = Pki::new();
    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let gw = Setup::new(&pki).start().await;
    let good = pki.client("resume-good", None, Flaw::None);
    let good_tls = client_tls(&pki, Some(&good), TLS13);

    // One ClientConfig per version and device keeps its session (ticket or session id).
    let mut short = Vec::new();
    for (name, versions) in [("v13", TLS13), ("v12", TLS12)] {
        let cert = pki.client_until(&format!("short-{name}"), until);
        let config = client_tls(&pki, Some(&cert), versions);
        let id = format!("short-{name}");
        assert_eq!(
            session(&gw, &config, &id).await,
            HandshakeKind::Full,
            "{name}"
        );
        short.push((id, config, cert));
    }
    assert_eq!(
        session(&gw, &good_tls, "resume-good").await,
        HandshakeKind::Full
    );

    clock_past(until).await;

    for (id, config, cert) in &short {
        // A full handshake with the expired certificate is refused by rustls...
        let versions = if id.ends_with("v13") { TLS13 } else { TLS12 };
        let (_, err) = refused(gw.tls_addr(), client_tls(&pki, Some(cert), versions)).await;
        assert_eq!(
            err,
            rustls::Error::AlertReceived(AlertDescription::CertificateExpired),
            "{id}"
        );
        // ...and so is the resumption of the session made while it was valid.
        let before = counters(&gw, "expired").await;
        let local = resumed_then_closed(&gw, config, id).await;
        let line = assert_recorded(
            &gw,
            Some(local),
            "expired",
            Some("resumed TLS session"),
            before,
        )
        .await;
        assert!(line["principal"].is_null(), "{line}");
    }

    // The good device resumes and is served (PINGREQ answered through the broker).
    let before = gw
        .metric("mqtt_gateway_tls_resumptions_total{listener=\"mqtts\"}")
        .await;
    let c = admitted(&gw, Arc::clone(&good_tls), "resume-good").await;
    assert_eq!(
        c.stream.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed)
    );
    assert!(
        gw.metric("mqtt_gateway_tls_resumptions_total{listener=\"mqtts\"}")
            .await
            >= before + 1.0
    );
}

/// Issue 20 item 1, the CRL's side: once the CRL the listener enforces is past its `nextUpdate`,
/// every certificate it covers is refused (fail closed), by resumption as by a full handshake.
/// Beside it, a listener whose CRL is fresh lets the same kind of resumption in.
///
/// DESIGN §3: "Resumption is not a back door" and "Fail closed."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumed_after_the_crl_went_stale_is_refused() {
    let pki = Pki::new();
    let device = pki.client("stale-crl", None, Flaw::None);
    let stale_at = time::OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let crl = pki.write_leaf_crl_until(&[], stale_at);
    let mut setup = Setup::new(&pki);
    setup.tls_extra = crl_extra(&[&crl], "leaf");
    let gw = setup.start().await;

    let pki2 = Pki::new();
    let fresh_device = pki2.client("fresh-crl", None, Flaw::None);
    let fresh_crl = pki2.write_leaf_crl(&[]);
    let mut fresh_setup = Setup::new(&pki2);
    fresh_setup.tls_extra = crl_extra(&[&fresh_crl], "leaf");
    let fresh_gw = fresh_setup.start().await;

    let config = client_tls(&pki, Some(&device), TLS13);
    assert_eq!(
        session(&gw, &config, "stale-crl").await,
        HandshakeKind::Full
    );
    let fresh_config = client_tls(&pki2, Some(&fresh_device), TLS13);
    assert_eq!(
        session(&fresh_gw, &fresh_config, "fresh-crl").await,
        HandshakeKind::Full
    );

    clock_past(stale_at).await;

    // A full handshake is refused (`other`: the CRL, not the certificate, is at fault)...
    let before = counters(&gw, "other").await;
    let (_, err) = refused(gw.tls_addr(), client_tls(&pki, Some(&device), TLS13)).await;
    assert!(matches!(err, rustls::Error::AlertReceived(_)), "{err:?}");
    // ...and so is the resumption.
    let local = resumed_then_closed(&gw, &config, "stale-crl").await;
    assert_recorded(
        &gw,
        Some(local),
        "other",
        Some("resumed TLS session"),
        before,
    )
    .await;

    // The listener with a fresh CRL resumes the same kind of session and serves it.
    let c = admitted(&fresh_gw, Arc::clone(&fresh_config), "fresh-crl").await;
    assert_eq!(
        c.stream.get_ref().1.handshake_kind(),
        Some(HandshakeKind::Resumed)
    );
}
