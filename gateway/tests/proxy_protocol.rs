//! PROXY protocol on listeners (issue 10): with `proxy_protocol = true` a v1 or v2 header is
//! required first, only from `proxy_protocol_from`; the address it carries is the client's for
//! `sources` rules, bans, metrics and the audit log. The load balancer is played by the test
//! (HAProxy itself is in `behind_haproxy.rs`); headers are built with `ppp`, the same crate the
//! gateway parses with, and by hand for v1.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;

use ppp::v2;
use rustls::pki_types::ServerName;
use support::wire::PlainWire;
use support::{Flaw, Pki, Setup, TestGateway, client_tls, connect_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use mqtt_inspect::ProtocolVersion;

const POLICY: &str = r##"version = 1
[[connect]]
who = { sources = ["198.51.100.0/24"] }
client_ids = ["*"]
[[rule]]
who = { any = true }
allow = ["publish", "subscribe", "receive"]
topics = ["t/#"]
"##;

async fn gateway(pki: &Pki, limits: &str) -> TestGateway {
    let mut setup = Setup::new(pki);
    setup.policy = POLICY.to_owned();
    setup.listener_extra = "proxy_protocol = true\nproxy_protocol_from = [\"127.0.0.1/32\"]".into();
    setup.auth = "[auth]\nallow_anonymous = false\nprincipal_from = \"cert_cn\"\ncert_is_credential = true\npassword_file = \"passwords\"\n".into();
    setup.passwords = format!(
        "alice:{}\n",
        mqtt_gateway::auth::hash_mosquitto_pbkdf2(b"secret", 1000).unwrap()
    );
    setup.limits = limits.to_owned();
    setup.start().await
}

fn v2_header(client: &str) -> Vec<u8> {
    let client: SocketAddr = client.parse().unwrap();
    let lb: SocketAddr = "10.9.9.9:1883".parse().unwrap();
    v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (client, lb),
    )
    .build()
    .unwrap()
}

fn v2_local() -> Vec<u8> {
    v2::Builder::new(
        v2::Version::Two | v2::Command::Local,
        v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
    )
    .build()
    .unwrap()
}

fn v1_header(client: &str) -> Vec<u8> {
    let (ip, port) = client.rsplit_once(':').unwrap();
    format!("PROXY TCP4 {ip} 10.9.9.9 {port} 1883\r\n").into_bytes()
}

/// Opens a TCP connection from `from` (a loopback address), writes `first` then a v3.1.1 CONNECT
/// (alice, `password`) in one write, and returns the CONNACK return code, or `None` when the
/// connection was closed without one.
async fn exchange(addr: SocketAddr, from: &str, first: &[u8], password: &[u8]) -> Option<u8> {
    let mut c = PlainWire::plain_from(addr, from, ProtocolVersion::V311)
        .await
        .unwrap();
    let mut bytes = first.to_vec();
    bytes.extend_from_slice(&connect_frame(
        ProtocolVersion::V311,
        "c",
        Some("alice"),
        Some(password),
    ));
    let _ = c.try_send(&bytes).await;
    c.recv().await.map(|f| {
        assert_eq!(f[0], 0x20, "{f:?}");
        f[3]
    })
}

/// The same through the test's balancer at 127.0.0.1 (allowed by `proxy_protocol_from`).
async fn via_balancer(addr: SocketAddr, first: &[u8], password: &[u8]) -> Option<u8> {
    exchange(addr, "127.0.0.1", first, password).await
}

async fn read_connack(s: &mut (impl AsyncReadExt + Unpin)) -> Option<u8> {
    let mut b = [0u8; 4];
    match tokio::time::timeout(std::time::Duration::from_secs(5), s.read_exact(&mut b)).await {
        Ok(Ok(_)) => {
            assert_eq!(b[0], 0x20, "{b:?}");
            Some(b[3])
        }
        _ => None,
    }
}

/// Policy contract: `sources = ["10.0.0.0/8"]` is the "client address (CIDR)"; contract ("Audit
/// log"): each line carries the "peer address".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_in_the_header_is_the_client_address_for_sources_rules_and_audit() {
    let pki = Pki::new();
    let gw = gateway(&pki, "").await;
    let addr = gw.plain_addr();
    // v2 and v1, from an allowed client address: let in by the `sources` connect rule.
    assert_eq!(
        via_balancer(addr, &v2_header("198.51.100.7:40000"), b"secret").await,
        Some(0)
    );
    assert_eq!(
        via_balancer(addr, &v1_header("198.51.100.8:40001"), b"secret").await,
        Some(0)
    );
    // The same balancer with a client outside the rule's sources: not authorized (5), and the
    // audit line names the client's address, not the balancer's.
    assert_eq!(
        via_balancer(addr, &v2_header("203.0.113.9:40002"), b"secret").await,
        Some(5)
    );
    let line = gw
        .audit_line(|v| {
            v["event"] == "acl_denied"
                && v["peer"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("203.0.113.9:"))
        })
        .await;
    assert!(line.is_some(), "the audit line names the client's address");
    // A LOCAL header (the balancer's own health check) keeps the balancer's address, which the
    // connect rule does not allow.
    assert_eq!(via_balancer(addr, &v2_local(), b"secret").await, Some(5));
}

/// DESIGN §3: "Fail closed." A missing, broken or untrusted header is refused, never read as
/// MQTT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_valid_header_or_from_elsewhere_is_refused() {
    let pki = Pki::new();
    let gw = gateway(&pki, "").await;
    let addr = gw.plain_addr();
    let malformed = "mqtt_gateway_connections_total{listener=\"plain\",outcome=\"malformed\"}";
    let denied = "mqtt_gateway_connections_total{listener=\"plain\",outcome=\"denied\"}";
    let (m0, d0) = (gw.metric(malformed).await, gw.metric(denied).await);
    // No header: the CONNECT itself is not a PROXY header.
    assert_eq!(via_balancer(addr, b"", b"secret").await, None);
    // A broken v1 line and a v2 signature with a bad version.
    assert_eq!(
        via_balancer(addr, b"PROXY TCP4 nonsense\r\n", b"secret").await,
        None
    );
    let mut bad_v2 = v2_header("198.51.100.7:40000");
    bad_v2[12] = 0x31;
    assert_eq!(via_balancer(addr, &bad_v2, b"secret").await, None);
    // A v2 header announcing more than the gateway reads.
    let mut huge = v2_header("198.51.100.7:40000");
    huge[14..16].copy_from_slice(&60_000u16.to_be_bytes());
    assert_eq!(via_balancer(addr, &huge, b"secret").await, None);
    assert!(gw.metric(malformed).await >= m0 + 4.0);
    let line = gw
        .audit_line(|v| v["event"] == "connection_refused" && v["reason"] == "proxy_header_missing")
        .await
        .expect("audit line");
    assert_eq!(line["listener"], "plain");
    // A valid header from an address not in proxy_protocol_from: refused before it is read.
    assert_eq!(
        exchange(
            addr,
            "127.0.0.2",
            &v2_header("198.51.100.7:40000"),
            b"secret"
        )
        .await,
        None
    );
    assert!(gw.metric(denied).await >= d0 + 1.0);
    assert!(
        gw.audit_line(|v| v["event"] == "connection_refused"
            && v["reason"] == "proxy_source_not_allowed"
            && v["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.2:")))
            .await
            .is_some()
    );
    // And the good case next to them.
    assert_eq!(
        via_balancer(addr, &v2_header("198.51.100.7:40000"), b"secret").await,
        Some(0)
    );
}

/// Contract ("On the wire"): a refused CONNECT gets "MQTT 5 reason ... 0x8A (banned)"; the ban is
/// the client's address, not the balancer's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_follow_the_client_address_not_the_balancer() {
    let pki = Pki::new();
    let gw = gateway(
        &pki,
        "auth_failures_before_ban = 2\nconnections_per_ip_per_second = 1000",
    )
    .await;
    let addr = gw.plain_addr();
    for _ in 0..2 {
        assert_eq!(
            via_balancer(addr, &v2_header("198.51.100.66:1"), b"wrong").await,
            Some(4)
        );
    }
    // The attacker's address is banned: closed before any answer, even with the right password.
    assert_eq!(
        via_balancer(addr, &v2_header("198.51.100.66:2"), b"secret").await,
        None
    );
    // Another client behind the same balancer is served.
    assert_eq!(
        via_balancer(addr, &v2_header("198.51.100.67:3"), b"secret").await,
        Some(0)
    );
}

/// Not a refusal: the header is taken off before TLS, so the handshake and the client-certificate
/// checks are those of gateway.example.toml (`client_auth = "required"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_before_a_tls_handshake_leaves_the_handshake_intact() {
    let pki = Pki::new();
    let gw = gateway(&pki, "").await;
    let cert = pki.client("sensor-1", None, Flaw::None);
    let mut tcp = TcpStream::connect(gw.tls_addr()).await.unwrap();
    // v1, with the TLS ClientHello right behind it in the same segment as far as TCP goes.
    tcp.write_all(&v1_header("198.51.100.20:5000"))
        .await
        .unwrap();
    let mut tls =
        tokio_rustls::TlsConnector::from(client_tls(&pki, Some(&cert), &[&rustls::version::TLS13]))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
    tls.write_all(&connect_frame(
        ProtocolVersion::V311,
        "sensor-1",
        None,
        None,
    ))
    .await
    .unwrap();
    assert_eq!(read_connack(&mut tls).await, Some(0));
}
