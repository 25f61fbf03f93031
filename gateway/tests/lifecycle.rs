//! A connection's life through the gateway (issue 3): packet size limit, connect timeout, the
//! CONNECT rules, broker restart, keep-alive, and the real binary's graceful shutdown and `check`.
//! Real Mosquitto, real TLS with certificates made here; raw MQTT clients that see every byte,
//! and `mosquitto_pub`/`mosquitto_sub` for the good cases.
//!
//! No assertion is about time: every wait is a generous liveness bound after which the test fails
//! instead of hanging.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use e2e::{LiveSubscriber, MqttVersion};
use mqtt_inspect::{Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode, decode};
use rustls::ClientConfig;
use support::wire::{Next, PlainWire, TlsWire, Wire};
use support::{Flaw, Pki, Setup, TestGateway, client_tls, tls_pub};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;
const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
/// Liveness bound for one expected event (a frame, a close).
const WAIT: Duration = Duration::from_secs(10);

/// A TLS connection, handshake done, nothing sent (MQTT 5 until [`connected`] says otherwise).
async fn tls_client(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsWire {
    TlsWire::try_tls(addr, config, V5)
        .await
        .expect("TLS handshake")
}

async fn tcp_client(addr: SocketAddr) -> PlainWire {
    PlainWire::plain(addr, V5).await
}

// === frames ===

fn connect(version: ProtocolVersion, client_id: &str, keep_alive: u16) -> Vec<u8> {
    e2e::connect_frame(version, keep_alive, client_id, None, None).unwrap()
}

fn publish(version: ProtocolVersion, topic: &str, qos: QoS, id: u16, payload: &[u8]) -> Vec<u8> {
    let p = Publish {
        dup: false,
        qos,
        retain: false,
        topic,
        packet_id: (qos != QoS::AtMostOnce).then(|| NonZeroU16::new(id).unwrap()),
        properties: Properties::EMPTY,
        payload,
    };
    let mut out = Vec::new();
    p.encode(version, &mut out).unwrap();
    out
}

/// A QoS 1 PUBLISH of exactly `size` bytes on the wire.
fn publish_of_size(version: ProtocolVersion, topic: &str, size: usize) -> Vec<u8> {
    (0..size)
        .rev()
        .map(|n| publish(version, topic, QoS::AtLeastOnce, 1, &vec![b'x'; n]))
        .find(|f| f.len() == size)
        .unwrap()
}

fn disconnect_reason(frame: &[u8]) -> ReasonCode {
    match decode(frame, V5) {
        Ok(Packet::Disconnect(d)) => d.reason,
        other => panic!("expected DISCONNECT, got {other:?} ({frame:02x?})"),
    }
}

/// CONNECT, and a successful CONNACK.
async fn connected(
    addr: SocketAddr,
    tls: &Arc<ClientConfig>,
    version: ProtocolVersion,
    client_id: &str,
    keep_alive: u16,
) -> TlsWire {
    let mut c = tls_client(addr, Arc::clone(tls)).await;
    c.version = version;
    c.send(&connect(version, client_id, keep_alive)).await;
    let f = c.frame_within(WAIT).await;
    assert!(
        matches!(decode(&f, version), Ok(Packet::Connack(ack)) if ack.code.is_success()),
        "{client_id}: {f:02x?}"
    );
    c
}

/// The connection is served end to end: a QoS 1 PUBLISH is acknowledged (by the broker).
async fn assert_served<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Wire<S>,
    version: ProtocolVersion,
    id: u16,
) {
    c.send(&publish(version, "life/ok", QoS::AtLeastOnce, id, b"ok"))
        .await;
    let f = c.frame_within(WAIT).await;
    assert_eq!(f[0], 0x40, "PUBACK: {f:02x?}");
    assert_eq!(u16::from_be_bytes([f[2], f[3]]), id, "PUBACK id: {f:02x?}");
}

async fn audit_for(gw: &TestGateway, event: &str, peer: SocketAddr) -> serde_json::Value {
    gw.audit_line(|v| v["event"] == event && v["peer"] == peer.to_string())
        .await
        .unwrap_or_else(|| {
            panic!(
                "no {event} audit line for {peer}; audit: {}",
                std::fs::read_to_string(&gw.audit_path).unwrap_or_default()
            )
        })
}

fn outcome(listener: &str, outcome: &str) -> String {
    format!("mqtt_gateway_connections_total{{listener=\"{listener}\",outcome=\"{outcome}\"}}")
}

const MALFORMED_C2B: &str = "mqtt_gateway_malformed_packets_total{direction=\"client_to_broker\"}";

// === tests ===

/// Enforces [MQTT-3.2.2-15]: a packet over the Maximum Packet Size is a Protocol Error and the
/// Server uses DISCONNECT 0x95 (Packet too large). DESIGN §3: "Every frame is framed and decoded
/// (within `max_packet_size`) before a byte of it is forwarded".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_over_max_packet_size_is_refused_from_its_header_and_one_at_the_limit_passes() {
    let pki = Pki::new();
    let mut setup = Setup::new(&pki);
    setup.limits = "max_packet_size = \"1KiB\"\n".to_owned();
    let gw = setup.start().await;
    let cert = pki.client("big-1", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), TLS13);

    // Everything the broker receives on big/#, as "topic payload-length".
    let broker_addr = gw.broker.addr();
    let spy = tokio::task::spawn_blocking(move || {
        LiveSubscriber::spawn(
            broker_addr,
            MqttVersion::V311,
            10,
            &["-t", "big/#", "-F", "%t %l", "-C", "3"],
        )
    })
    .await
    .unwrap()
    .unwrap();

    let before = gw.metric(MALFORMED_C2B).await;
    let mut lengths = Vec::new();
    for (version, id) in [(V5, "big-v5"), (V311, "big-v311")] {
        let mut c = connected(gw.tls_addr(), &tls, version, id, 30).await;
        let topic = format!("big/{id}");
        // 1024 bytes, the limit itself: forwarded, and the broker acknowledges it.
        let at_limit = publish_of_size(version, &topic, 1024);
        c.send(&at_limit).await;
        let ack = c.frame_within(WAIT).await;
        assert_eq!(
            ack[0], 0x40,
            "{id}: PUBACK for the packet at the limit: {ack:02x?}"
        );
        let Ok(Packet::Publish(p)) = decode(&at_limit, version) else {
            unreachable!()
        };
        lengths.push(p.payload.len());

        // 1025 bytes: only the fixed header and the first bytes of the body are sent. The gateway
        // refuses it from the header, without waiting for a body that never comes.
        let over = publish_of_size(version, &topic, 1025);
        c.send(&over[..16]).await;
        if version == V5 {
            // MQTT 5: DISCONNECT 0x95 Packet too large, then close.
            assert_eq!(
                disconnect_reason(&c.frame_within(WAIT).await),
                ReasonCode::PacketTooLarge
            );
        }
        // MQTT 3.1.1 has no server DISCONNECT: the connection is just closed.
        c.assert_eof_within(WAIT).await;
        let line = audit_for(&gw, "malformed", c.local).await;
        assert_eq!(line["client_id"], id, "{line}");
        assert!(
            line["detail"].as_str().unwrap_or_default().contains("1025"),
            "{line}"
        );
    }
    assert!(gw.metric(MALFORMED_C2B).await >= before + 2.0);

    // A good client is still served; its marker is the last thing the broker receives.
    let out = tls_pub(
        &gw,
        &pki,
        Some(&cert),
        MqttVersion::V5,
        &["-t", "big/end", "-m", "end", "-q", "1"],
    );
    assert!(out.success(), "{out:?}");
    let out = tokio::task::spawn_blocking(move || spy.finish())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.messages(),
        [
            format!("big/big-v5 {}", lengths[0]),
            format!("big/big-v311 {}", lengths[1]),
            "big/end 3".to_owned()
        ],
        "the oversized packets never reached the broker: {out:?}"
    );
}

/// Contract ("On the wire"): "A client must send CONNECT within `limits.connect_timeout`;
/// otherwise the connection is closed."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_sends_connect_is_closed_at_connect_timeout() {
    let pki = Pki::new();
    // Setup's config has its own connect_timeout: this test writes the whole config.
    let broker = tokio::task::spawn_blocking(e2e::Mosquitto::start)
        .await
        .unwrap()
        .unwrap();
    let files = write_config(&pki, broker.addr(), "1s", false);
    let config = mqtt_gateway::config::Config::load(&files.config).unwrap();
    let gw = TestGateway {
        running: mqtt_gateway::start(config).await.unwrap(),
        broker,
        audit_path: files.dir.path().join("audit.jsonl"),
        config_path: files.config.clone(),
        dir: files.dir,
    };
    let cert = pki.client("early-1", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), TLS13);
    // A client that connected properly before: the connect timeout is not its concern.
    let mut early = connected(gw.tls_addr(), &tls, V5, "early-1", 30).await;

    let tls_before = gw.metric(&outcome("mqtts", "timeout")).await;
    let plain_before = gw.metric(&outcome("plain", "timeout")).await;

    // TLS handshake done, then no CONNECT.
    let mut after_tls = tls_client(gw.tls_addr(), Arc::clone(&tls)).await;
    // TCP only: not even a ClientHello.
    let mut no_tls = tcp_client(gw.tls_addr()).await;
    // The plain listener, no CONNECT.
    let mut plain = tcp_client(gw.plain_addr()).await;
    // All three are closed by the gateway (not by the wait of this test running out).
    after_tls.assert_eof_within(WAIT).await;
    no_tls.assert_eof_within(WAIT).await;
    plain.assert_eof_within(WAIT).await;

    for (c, listener, reason) in [
        (after_tls.local, "mqtts", "connect_timeout"),
        (no_tls.local, "mqtts", "tls_handshake_timeout"),
        (plain.local, "plain", "connect_timeout"),
    ] {
        let line = audit_for(&gw, "timeout", c).await;
        assert_eq!(line["reason"], reason, "{line}");
        assert_eq!(line["listener"], listener, "{line}");
    }
    assert!(gw.metric(&outcome("mqtts", "timeout")).await >= tls_before + 2.0);
    assert!(gw.metric(&outcome("plain", "timeout")).await >= plain_before + 1.0);

    // Next to them: the early client is still served, and a new client that sends its CONNECT
    // gets in.
    assert_served(&mut early, V5, 1).await;
    let mut late = connected(gw.tls_addr(), &tls, V311, "late-1", 30).await;
    assert_served(&mut late, V311, 2).await;
}

/// Enforces [MQTT-3.1.0-1] (the first packet is CONNECT), [MQTT-3.1.2-3] (reserved CONNECT flag
/// 0, else malformed) and [MQTT-3.1.4-1] (a CONNECT not in the format of §3.1 closes the
/// connection, MAY after a CONNACK 0x80 or more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_packet_must_be_a_well_formed_connect() {
    let pki = Pki::new();
    let gw = Setup::new(&pki).start().await;
    let cert = pki.client("first-1", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), TLS13);

    // [MQTT-3.1.0-1]: after a network connection is established the first packet a client sends
    // must be CONNECT. Anything else: closed, without a byte of MQTT in return (the protocol
    // version is unknown) and without reaching the broker.
    // The type is judged from the first byte: a packet that cannot be a CONNECT is closed at once
    // (audited as malformed), not held until connect_timeout waiting for its body (issue 20
    // item 12; Mosquitto closes it at once too).
    let firsts: [&[u8]; 6] = [
        &[0xc0, 0x00],                                     // PINGREQ
        &[0x30, 0x05, 0x00, 0x01, b'x', b'h', 0x05],       // PUBLISH (byte 6 = 5)
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'#', 0x00], // SUBSCRIBE
        &[0x30, 0x7f],                                     // a PUBLISH header, no body yet
        &[0x82],                                           // a SUBSCRIBE type byte alone
        &[0x11, 0x7f],                                     // CONNECT with a reserved flag set
    ];
    for (i, first) in firsts.into_iter().enumerate() {
        let before = gw.metric(&outcome("mqtts", "malformed")).await;
        let mut c = tls_client(gw.tls_addr(), Arc::clone(&tls)).await;
        c.send(first).await;
        c.assert_eof_within(WAIT).await;
        audit_for(&gw, "malformed", c.local).await;
        assert!(gw.metric(&outcome("mqtts", "malformed")).await >= before + 1.0);
        // Next to it, a client whose first packet is CONNECT is served.
        let mut good = connected(gw.tls_addr(), &tls, V5, &format!("first-{i}"), 30).await;
        assert_served(&mut good, V5, 1).await;
    }

    // [MQTT-3.1.2-3]: the reserved flag of the CONNECT flags must be 0, otherwise the CONNECT is
    // malformed. The client said MQTT 5, so it is told why: CONNACK 0x81, then close.
    let before = gw.metric(&outcome("mqtts", "malformed")).await;
    let mut bad = connect(V5, "first-bad", 30);
    let flags_at = 2 + 2 + 4 + 1; // fixed header (2), "MQTT" (2 + 4), level
    bad[flags_at] |= 0x01;
    let mut c = tls_client(gw.tls_addr(), Arc::clone(&tls)).await;
    c.send(&bad).await;
    let f = c.frame_within(WAIT).await;
    match decode(&f, V5) {
        Ok(Packet::Connack(ack)) => assert_eq!(
            ack.code,
            mqtt_inspect::ConnackCode::V5(ReasonCode::MalformedPacket),
            "{f:02x?}"
        ),
        other => panic!("expected CONNACK 0x81, got {other:?}"),
    }
    c.assert_eof_within(WAIT).await;
    assert!(gw.metric(&outcome("mqtts", "malformed")).await >= before + 1.0);
}

/// Enforces [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error and the connection is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connect_closes_the_connection() {
    let pki = Pki::new();
    let gw = Setup::new(&pki).start().await;
    let cert = pki.client("twice-1", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), TLS13);
    let mut good = connected(gw.tls_addr(), &tls, V5, "twice-good", 30).await;

    // [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error and the connection is closed.
    let before = gw.metric(MALFORMED_C2B).await;
    for version in [V5, V311] {
        let id = format!("twice-{version:?}");
        let mut c = connected(gw.tls_addr(), &tls, version, &id, 30).await;
        c.send(&connect(version, &id, 30)).await;
        if version == V5 {
            assert_eq!(
                disconnect_reason(&c.frame_within(WAIT).await),
                ReasonCode::ProtocolError
            );
        }
        c.assert_eof_within(WAIT).await;
        let line = audit_for(&gw, "malformed", c.local).await;
        assert_eq!(line["client_id"], id.as_str(), "{line}");
    }
    assert!(gw.metric(MALFORMED_C2B).await >= before + 2.0);
    // The other client of the same gateway is still served.
    assert_served(&mut good, V5, 7).await;
}

/// Enforces [MQTT-3.14.4-1] / [MQTT-3.14.4-2] (after a DISCONNECT no more packets, then the
/// close), with a takeover as the broker's side ([MQTT-3.1.4-3]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnect_relayed_either_way_is_the_last_packet_of_the_connection() {
    let pki = Pki::new();
    let gw = Setup::new(&pki).start().await;
    let cert = pki.client("bye-1", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), TLS13);

    // The client says goodbye: the broker closes its side, and the client gets nothing more (no
    // DISCONNECT 0x8B "server shutting down" for a broker that merely did what it was asked).
    let mut c = connected(gw.tls_addr(), &tls, V5, "bye-client", 30).await;
    assert_served(&mut c, V5, 1).await;
    c.send(&[0xe0, 0x00]).await;
    c.assert_eof_within(WAIT).await;

    // The broker ends it: a second connection with the same client id takes the session over
    // ([MQTT-3.1.4-3]). Mosquitto 2.0.11 closes the old connection without a DISCONNECT of its
    // own, so the gateway sends one (0x8B); a broker that sends 0x8E would have it relayed instead.
    // Either way exactly one DISCONNECT, then the close ([MQTT-3.14.4-1]: nothing after it).
    let mut first = connected(gw.tls_addr(), &tls, V5, "bye-same", 30).await;
    let mut second = connected(gw.tls_addr(), &tls, V5, "bye-same", 30).await;
    let reason = disconnect_reason(&first.frame_within(WAIT).await);
    assert!(
        [ReasonCode::SessionTakenOver, ReasonCode::ServerShuttingDown].contains(&reason),
        "{reason:?}"
    );
    first.assert_eof_within(WAIT).await;
    assert_served(&mut second, V5, 2).await;
}

/// Enforces [MQTT-3.14.2-1] (0x8B Server shutting down is a DISCONNECT Reason Code) and
/// [MQTT-3.14.4-1] / [MQTT-3.14.4-2]; 3.1.1 has no server DISCONNECT (§3.14: client to server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_disconnects_clients_cleanly_and_new_ones_are_served_after_it() {
    let pki = Pki::new();
    let mut gw = Setup::new(&pki).start().await;
    let cert = pki.client("restart-1", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), TLS13);
    let mut v5 = connected(gw.tls_addr(), &tls, V5, "restart-v5", 30).await;
    let mut v311 = connected(gw.tls_addr(), &tls, V311, "restart-v311", 30).await;
    assert_served(&mut v5, V5, 1).await;
    assert_served(&mut v311, V311, 1).await;

    tokio::task::block_in_place(|| gw.broker.restart()).unwrap();

    // MQTT 5: one DISCONNECT 0x8B Server shutting down, then close. 3.1.1: close.
    assert_eq!(
        disconnect_reason(&v5.frame_within(WAIT).await),
        ReasonCode::ServerShuttingDown
    );
    v5.assert_eof_within(WAIT).await;
    v311.assert_eof_within(WAIT).await;

    // The broker is back: new clients are served.
    let out = tls_pub(
        &gw,
        &pki,
        Some(&cert),
        MqttVersion::V5,
        &["-t", "life/back", "-m", "x", "-q", "1"],
    );
    assert!(out.success(), "{out:?}");
    let mut again = connected(gw.tls_addr(), &tls, V311, "restart-again", 30).await;
    assert_served(&mut again, V311, 2).await;
}

/// Enforces [MQTT-3.1.2-22] (MQTT 5.0 numbering): "If the Keep Alive value is non-zero and the
/// Server does not receive an MQTT Control Packet from the Client within one and a half times the
/// Keep Alive time period, it MUST close the Network Connection"; [MQTT-3.12.4-1] for the pinger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_cut_after_one_and_a_half_keep_alives_and_a_pinging_one_stays() {
    let pki = Pki::new();
    let gw = Setup::new(&pki).start().await;
    let cert = pki.client("ka-1", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), TLS13);

    // Keep alive 1 s: both clients. One pings every 300 ms, the other says nothing.
    let mut pinger = connected(gw.tls_addr(), &tls, V5, "ka-pinger", 1).await;
    let mut silent_v5 = connected(gw.tls_addr(), &tls, V5, "ka-silent-v5", 1).await;
    let mut silent_v311 = connected(gw.tls_addr(), &tls, V311, "ka-silent-v311", 1).await;
    let pings = tokio::spawn(async move {
        // 12 × 300 ms: well past 1.5 × keep-alive.
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            pinger.send(&[0xc0, 0x00]).await;
            assert_eq!(pinger.frame_within(WAIT).await, [0xd0, 0x00], "PINGRESP");
        }
        pinger
    });

    // [MQTT-3.1.2-22]: no packet within 1.5 × keep-alive → disconnected; MQTT 5 with 0x8D.
    assert_eq!(
        disconnect_reason(&silent_v5.frame_within(WAIT).await),
        ReasonCode::KeepAliveTimeout
    );
    silent_v5.assert_eof_within(WAIT).await;
    silent_v311.assert_eof_within(WAIT).await;

    // The pinging client stayed connected all along, and is still served.
    let mut pinger = pings.await.unwrap();
    assert_served(&mut pinger, V5, 1).await;
}

// === the real binary ===

struct Files {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    tls_addr: SocketAddr,
}

/// A gateway config in a new directory: listeners `mqtts` (client certificates from the test PKI)
/// and `plain`, on fixed free ports (for the binary) or port 0 (in-process).
fn write_config(pki: &Pki, broker: SocketAddr, connect_timeout: &str, fixed_ports: bool) -> Files {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.toml"), support::open_policy()).unwrap();
    let port = || if fixed_ports { e2e::free_port() } else { 0 };
    let tls_port = port();
    let text = format!(
        r#"[admin]
listen = "127.0.0.1:{admin}"

[upstream]
address = "{broker}"
connect_timeout = "2s"

[[listener]]
name = "mqtts"
bind = "127.0.0.1:{tls_port}"
[listener.tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"

[[listener]]
name = "plain"
bind = "127.0.0.1:{plain}"

[auth]
allow_anonymous = false
principal_from = "cert_cn"

[policy]
file = "policy.toml"

[limits]
connect_timeout = "{connect_timeout}"

[log]
audit_file = "audit.jsonl"
"#,
        admin = port(),
        plain = port(),
        cert = pki.server.chain_path.display(),
        key = pki.server.key_path.display(),
        ca = pki.root_path.display(),
    );
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, text).unwrap();
    Files {
        dir,
        config,
        tls_addr: SocketAddr::from(([127, 0, 0, 1], tls_port)),
    }
}

fn gateway_cmd(args: &[&str], config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mqtt-gateway"));
    cmd.args(args).arg("--config").arg(config);
    cmd
}

/// Contract ("Command line"): "`mqtt-gateway check --config FILE` | loads and validates ...;
/// prints what is wrong with file:line, exit 1; or a one-line summary, exit 0".
#[test]
fn check_accepts_a_good_config_and_points_at_the_line_of_a_broken_one() {
    let pki = Pki::new();
    let files = write_config(&pki, "127.0.0.1:1883".parse().unwrap(), "5s", true);
    let out = e2e::run_with_timeout(
        &mut gateway_cmd(&["check"], &files.config),
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("ok"), "{out:?}");
    assert!(
        out.stdout
            .contains("bound at start: a change to them needs a restart"),
        "{out:?}"
    );

    // The same config with a bad size on a known line.
    let good = std::fs::read_to_string(&files.config).unwrap();
    let broken = good.replace(
        "connect_timeout = \"5s\"",
        "connect_timeout = \"5s\"\nmax_packet_size = \"12 apples\"",
    );
    let line = broken
        .lines()
        .position(|l| l.starts_with("max_packet_size"))
        .unwrap()
        + 1;
    let path = files.dir.path().join("broken.toml");
    std::fs::write(&path, broken).unwrap();
    let out = e2e::run_with_timeout(&mut gateway_cmd(&["check"], &path), Duration::from_secs(20))
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let at = format!("{}:{line}", path.display());
    assert!(out.stderr.contains(&at), "expected {at} in: {out:?}");
    assert!(out.stderr.contains("max_packet_size"), "{out:?}");
}

/// A client that publishes QoS 1 in a loop until the gateway ends the connection. Signals its
/// first PUBACK on `ready`; returns the number of PUBACKs and the last frame that was not one.
async fn chatter(
    mut c: TlsWire,
    version: ProtocolVersion,
    ready: tokio::sync::mpsc::Sender<()>,
) -> (u32, Option<Vec<u8>>) {
    let mut acks = 0u32;
    let mut id = 1u16;
    loop {
        // A failed write means the gateway is gone: what it sent before is still to be read.
        let tick = publish(version, "life/chatter", QoS::AtLeastOnce, id, b"tick");
        let _ = c.stream.write_all(&tick).await;
        let _ = c.stream.flush().await;
        match c.read_within(WAIT).await {
            Next::Frame(f) if f[0] == 0x40 => {
                acks += 1;
                id = id.checked_add(1).unwrap_or(1);
                if acks == 1 {
                    ready.send(()).await.unwrap();
                }
            }
            Next::Frame(f) => {
                c.assert_eof_within(WAIT).await;
                return (acks, Some(f));
            }
            Next::Closed => return (acks, None),
            Next::Silent => panic!("the gateway neither answered nor closed"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Contract ("Command line"): "serves until SIGTERM/SIGINT (then stops accepting, closes clients
/// with DISCONNECT where the protocol allows, exits 0 within 10 s)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_disconnects_clients_and_exits_zero() {
    let pki = Pki::new();
    let broker = tokio::task::spawn_blocking(e2e::Mosquitto::start)
        .await
        .unwrap()
        .unwrap();
    let files = write_config(&pki, broker.addr(), "5s", true);
    let log = std::fs::File::create(files.dir.path().join("gateway.log")).unwrap();
    let mut child = gateway_cmd(&["run"], &files.config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(files.dir.path().join("gateway.log")).unwrap();

    // Ready when the TLS listener accepts.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(files.tls_addr).await.is_err() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "exited: {}",
            log_text()
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "never listened: {}",
            log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let cert = pki.client("term-1", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), TLS13);
    let (ready_tx, mut ready) = tokio::sync::mpsc::channel(4);
    let mut clients = Vec::new();
    for (version, id) in [(V5, "term-a"), (V5, "term-b"), (V311, "term-c")] {
        let c = connected(files.tls_addr, &tls, version, id, 30).await;
        clients.push((version, tokio::spawn(chatter(c, version, ready_tx.clone()))));
    }
    // Traffic is flowing on every connection.
    for _ in 0..clients.len() {
        tokio::time::timeout(WAIT, ready.recv())
            .await
            .unwrap()
            .unwrap();
    }

    e2e::sigterm(child.id()).unwrap();

    for (version, task) in clients {
        let (acks, last) = task.await.unwrap();
        assert!(acks >= 1);
        if version == V5 {
            let last = last.expect("MQTT 5 clients get a DISCONNECT before the close");
            assert_eq!(disconnect_reason(&last), ReasonCode::ServerShuttingDown);
        } else {
            assert_eq!(last, None, "MQTT 3.1.1 has no server DISCONNECT");
        }
    }
    // Liveness bound: the process must exit (the contract says within 10 s).
    let status = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let status = status.unwrap_or_else(|| panic!("did not exit after SIGTERM: {}", log_text()));
    assert_eq!(status.code(), Some(0), "{}", log_text());
    // Stopped accepting: the port is closed.
    assert!(TcpStream::connect(files.tls_addr).await.is_err());
    // The broker is on loopback: by default one worker per core less one, and the log says so.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let log = without_colours(&log_text());
    let want = format!(
        "broker_on_this_host=true workers={}",
        cores.saturating_sub(1).max(1)
    );

    assert!(log.contains(&want), "{want} not in {log}");
    drop(broker);
}

/// `text` without its ANSI colour sequences (`ESC [ ... m`).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&d| d == 'm');
        } else {
            out.push(c);
        }
    }
    out
}
