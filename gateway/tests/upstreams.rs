//! Several upstream brokers (issue 10): `upstream.addresses` with two real Mosquittos. A client
//! id lands on the same node while both are up (rendezvous order by client id), ids spread over
//! both, and when one node stops its clients reach the other on reconnect; `/readyz` is ready
//! while any node is reachable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use e2e::Mosquitto;
use mqtt_gateway::session::upstream::rendezvous_order;
use mqtt_inspect::{AckKind, ProtocolVersion};
use support::enforcement_setup;
use support::wire::{Got, PlainWire, TlsWire, assert_broker_ack, connect, publish, subscribe};
use support::{Flaw, Pki, TestGateway, client_tls};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// Connects `id` through the gateway and publishes a retained QoS 1 `where/<id>` = `mark`;
/// returns the live connection.
async fn publish_where(gw: &TestGateway, pki: &Pki, id: &str, mark: &str) -> TlsWire {
    let cert = pki.client(id, None, Flaw::None);
    let mut w = TlsWire::tls(
        gw.tls_addr(),
        client_tls(pki, Some(&cert), &[&rustls::version::TLS13]),
        V5,
    )
    .await;
    assert_eq!(w.connect(&connect(V5, id, None, None)).await, 0, "{id}");
    let mut frame = publish(V5, &format!("where/{id}"), 1, 1, &[], mark.as_bytes());
    frame[0] |= 0x01; // RETAIN
    w.send(&frame).await;
    assert_broker_ack(&w.next("PUBACK").await, AckKind::Puback, 1);
    w
}

/// The retained `where/<id>` messages held by the broker at `addr`, read directly from it.
async fn retained_on(addr: SocketAddr) -> Vec<(String, String)> {
    let mut w = PlainWire::plain(addr, ProtocolVersion::V311).await;
    assert_eq!(
        w.connect(&connect(ProtocolVersion::V311, "", None, None))
            .await,
        0
    );
    w.send(&subscribe(ProtocolVersion::V311, 1, &[("where/#", 0)]))
        .await;
    assert!(matches!(w.next("SUBACK").await, Got::Suback { .. }));
    // Retained messages come right after the SUBACK; the PINGRESP marks their end.
    w.send(&[0xc0, 0x00]).await;
    let mut out = Vec::new();
    loop {
        match w.next("retained or PINGRESP").await {
            Got::Publish { topic, payload, .. } => {
                out.push((topic, String::from_utf8(payload).unwrap()));
            }
            Got::Pingresp => return out,
            other => panic!("{other:?}"),
        }
    }
}

/// A client id must reach one broker for [MQTT-3.1.4-3] (takeover of a connected client id) to
/// hold across nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_stays_on_its_node_and_moves_when_the_node_stops() {
    let pki = Pki::new();
    let mut second = tokio::task::spawn_blocking(Mosquitto::start)
        .await
        .unwrap()
        .unwrap();
    let mut setup = enforcement_setup(&pki);
    setup.more_upstreams = vec![second.addr()];
    let gw = setup.start().await;
    let nodes = [gw.broker.addr().to_string(), second.addr().to_string()];
    let ids: Vec<String> = (0..12).map(|i| format!("device-{i}")).collect();
    let home =
        |id: &str| rendezvous_order(nodes.iter().map(String::as_str), id.as_bytes())[0].to_owned();

    // Twice each: every id lands on its rendezvous node both times.
    for round in ["r1", "r2"] {
        for id in &ids {
            let mut w = publish_where(&gw, &pki, id, round).await;
            w.disconnect().await;
        }
        let on_first = retained_on(gw.broker.addr()).await;
        let on_second = retained_on(second.addr()).await;
        for id in &ids {
            let topic = format!("where/{id}");
            let here =
                |held: &[(String, String)]| held.iter().any(|(t, m)| *t == topic && m == round);
            let expected_first = home(id) == nodes[0];
            assert_eq!(here(&on_first), expected_first, "{id} {round}");
            assert_eq!(here(&on_second), !expected_first, "{id} {round}");
        }
    }
    let on_second: Vec<&String> = ids.iter().filter(|id| home(id) == nodes[1]).collect();
    assert!(
        !on_second.is_empty() && on_second.len() < ids.len(),
        "the ids spread over both nodes"
    );
    assert_eq!(gw.admin_get("/readyz").await.0, 200);

    // The second node stops: its live clients are disconnected (0x8B), and on reconnect they
    // reach the first node; the others were not disturbed.
    let mut live = Vec::new();
    for id in &ids {
        live.push((id.clone(), publish_where(&gw, &pki, id, "r3").await));
    }
    tokio::task::block_in_place(|| second.stop()).unwrap();
    for (id, w) in &mut live {
        if home(id) == nodes[1] {
            assert_eq!(
                w.next("DISCONNECT").await,
                Got::Disconnect { reason: 0x8b },
                "{id}"
            );
            let mut again = publish_where(&gw, &pki, id, "r4").await;
            again.ping().await;
        } else {
            w.ping().await;
        }
    }
    let on_first = retained_on(gw.broker.addr()).await;
    for id in on_second {
        assert!(
            on_first.contains(&(format!("where/{id}"), "r4".to_owned())),
            "{id} moved to the first node"
        );
    }
    assert!(
        gw.metric("mqtt_gateway_upstream_errors_total{reason=\"refused\"}")
            .await
            >= 1.0
    );
    // Still ready: one node answers.
    assert_eq!(gw.admin_get("/readyz").await.0, 200);
}

/// A relay in front of the broker that takes the PROXY v2 header off each connection (as a
/// broker with `enable_proxy_protocol 2` would), records it, and relays the rest.
async fn proxy_reading_broker(
    broker: SocketAddr,
) -> (SocketAddr, Arc<Mutex<Vec<ppp::v2::Header<'static>>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let mut head = [0u8; 16];
                s.read_exact(&mut head).await.unwrap();
                let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
                let mut all = head.to_vec();
                all.resize(16 + len, 0);
                s.read_exact(&mut all[16..]).await.unwrap();
                let header = ppp::v2::Header::try_from(all.as_slice())
                    .unwrap()
                    .to_owned();
                record.lock().unwrap().push(header);
                let mut b = TcpStream::connect(broker).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut s, &mut b).await;
            });
        }
    });
    (addr, seen)
}

/// Contract ("Audit log"): "peer address" and "principal" are the client's, here told to the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_v2_header_upstream_carries_the_client_address_and_identity() {
    let pki = Pki::new();
    let broker = tokio::task::spawn_blocking(Mosquitto::start)
        .await
        .unwrap()
        .unwrap();
    let (front, seen) = proxy_reading_broker(broker.addr()).await;
    let mut setup = enforcement_setup(&pki);
    // The gateway's own test broker stays unused: the relay in front of `broker` replaces it.
    setup.upstream_keys = Some(format!("address = \"{front}\"\nproxy_protocol = true"));
    let gw = setup.start().await;
    // Ready before any client: the readiness probe got through the header-reading relay.
    readyz_becomes(&gw, 200).await;
    let mut w = publish_where(&gw, &pki, "sensor-9", "via-proxy").await;
    w.ping().await;
    // Besides the client's, the readiness probe's connections: a PROXY header naming the
    // gateway's own connection to the relay, with no TLS or principal TLV.
    let (headers, probes): (Vec<_>, Vec<_>) =
        seen.lock().unwrap().clone().into_iter().partition(|h| {
            matches!(h.addresses, ppp::v2::Addresses::IPv4(a)
                if SocketAddr::from((a.source_address, a.source_port)) == w.local)
        });
    for p in &probes {
        assert_eq!(p.command, ppp::v2::Command::Proxy, "{p:?}");
        let ppp::v2::Addresses::IPv4(a) = p.addresses else {
            panic!("{p:?}")
        };
        assert_eq!(a.destination_port, front.port(), "{p:?}");
        assert_eq!(p.tlvs().count(), 0, "{p:?}");
    }
    assert!(!probes.is_empty(), "the probe sent its own header");
    assert_eq!(headers.len(), 1);
    let h = &headers[0];
    assert_eq!(h.command, ppp::v2::Command::Proxy);
    let ppp::v2::Addresses::IPv4(a) = h.addresses else {
        panic!("{:?}", h.addresses)
    };
    assert_eq!(SocketAddr::from((a.source_address, a.source_port)), w.local);
    assert_eq!(a.destination_port, gw.tls_addr().port());
    let tlvs: Vec<_> = h.tlvs().map(Result::unwrap).collect();
    let principal = tlvs
        .iter()
        .find(|t| t.kind == mqtt_gateway::transport::proxy_protocol::PP2_TYPE_PRINCIPAL)
        .expect("principal TLV");
    assert_eq!(&*principal.value, b"sensor-9");
    let ssl = tlvs.iter().find(|t| t.kind == 0x20).expect("PP2_TYPE_SSL");
    assert_eq!(ssl.value[0], 0x03, "PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN");
    assert!(ssl.value.windows(7).any(|x| x == b"TLSv1.3"));
    // The broker got the CONNECT and the PUBLISH behind the header.
    assert!(
        retained_on(broker.addr())
            .await
            .contains(&("where/sensor-9".to_owned(), "via-proxy".to_owned()))
    );
}

/// `upstream.address = "unix:/path"`: the broker on the gateway's host behind a Unix domain
/// socket (no loopback listener for other local processes to bypass the gateway through). A
/// session is carried over it both ways; when nothing listens on the socket a CONNECT is answered
/// Server unavailable (0x88), the connection closed ([MQTT-3.2.2-7]) and the failure counted as
/// refused, and the next client is served again once the broker is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_upstream_carries_sessions_and_a_dead_socket_is_server_unavailable() {
    let pki = Pki::new();
    let broker = tokio::task::spawn_blocking(Mosquitto::start)
        .await
        .unwrap()
        .unwrap();
    let socket = broker.unix_socket();
    let mut setup = enforcement_setup(&pki);
    setup.upstream_keys = Some(format!("address = \"unix:{}\"", socket.display()));
    let mut gw = setup.start_with(broker).await;

    // Good: a retained QoS 1 publish (PUBACK from the broker) and a subscription that gets it.
    let mut live = publish_where(&gw, &pki, "dev-unix", "u1").await;
    live.send(&subscribe(V5, 2, &[("where/dev-unix", 0)])).await;
    assert!(matches!(live.next("SUBACK").await, Got::Suback { .. }));
    match live.next("retained PUBLISH").await {
        Got::Publish { topic, payload, .. } => {
            assert_eq!(
                (topic.as_str(), payload.as_slice()),
                ("where/dev-unix", &b"u1"[..])
            );
        }
        other => panic!("{other:?}"),
    }
    // It went over the socket, not over TCP: the broker names the socket as the client's origin.
    let origin = format!("New client connected from {}", socket.display());
    assert!(gw.broker.log().contains(&origin), "{}", gw.broker.log());
    assert_eq!(gw.admin_get("/readyz").await.0, 200);

    // Bad: the broker stops; the live session ends with Server shutting down (0x8B) and a new
    // CONNECT finds nothing on the socket.
    tokio::task::block_in_place(|| gw.broker.stop()).unwrap();
    assert_eq!(
        live.next("DISCONNECT").await,
        Got::Disconnect { reason: 0x8b }
    );
    let cert = pki.client("dev-unix", None, Flaw::None);
    let mut refused = TlsWire::tls(
        gw.tls_addr(),
        client_tls(&pki, Some(&cert), &[&rustls::version::TLS13]),
        V5,
    )
    .await;
    assert_eq!(
        refused.connect(&connect(V5, "dev-unix", None, None)).await,
        0x88
    );
    refused.assert_closed().await;
    assert!(
        gw.metric("mqtt_gateway_upstream_errors_total{reason=\"refused\"}")
            .await
            >= 1.0
    );

    // The broker is back on the same socket: served again.
    tokio::task::block_in_place(|| gw.broker.restart()).unwrap();
    let mut again = publish_where(&gw, &pki, "dev-unix", "u2").await;
    again.ping().await;
}

/// The broker's log from byte `from` on.
fn broker_log_since(gw: &TestGateway, from: usize) -> String {
    gw.broker.log().get(from..).unwrap_or_default().to_owned()
}

/// Waits until `what` occurs `times` times in the broker's log after byte `from`.
async fn broker_logs(gw: &TestGateway, from: usize, what: &str, times: usize) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while broker_log_since(gw, from).matches(what).count() < times {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker never logged {what:?} {times} times:\n{}",
            broker_log_since(gw, from)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until `/readyz` answers `status`.
async fn readyz_becomes(gw: &TestGateway, status: u16) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while gw.admin_get("/readyz").await.0 != status {
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz never answered {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The offset in the broker's log after the line of the test harness's own start-up check (a bare
/// TCP connection, made before `Mosquitto::start` or `restart` returns), which comes after `from`.
async fn after_startup_check(gw: &TestGateway, from: usize) -> usize {
    const CHECK: &str = "Client <unknown> closed its connection.\n";
    broker_logs(gw, from, CHECK, 1).await;
    let log = broker_log_since(gw, from);
    from + log.find(CHECK).unwrap() + CHECK.len()
}

/// What a probe must not leave in the broker's log: a connection without a CONNECT, or one
/// dropped without DISCONNECT.
fn assert_no_half_connections(log: &str) {
    for bad in ["<unknown>", "protocol error", "closed its connection"] {
        assert!(!log.contains(bad), "{bad:?} in the broker's log:\n{log}");
    }
}

/// Issue 20, item 16: the readiness prober does not spam the broker. With no client it makes whole
/// MQTT connections as `mqtt-gateway-readyz-probe` (CONNECT, CONNACK, DISCONNECT: no "protocol
/// error" or "closed its connection" lines in Mosquitto's log); while a client is active its
/// packets prove the broker alive and no probe comes; `/readyz` still turns 503 when the broker
/// stops and 200 when it is back. Before, a bare TCP connection every 2 s, whatever the traffic.
///
/// The probe is a well-formed client: [MQTT-3.1.0-1] (CONNECT first) and a DISCONNECT before the
/// close ([MQTT-3.14.4-2]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_probes_only_an_idle_broker_with_a_whole_mqtt_connection() {
    const PROBE_END: &str = "Client mqtt-gateway-readyz-probe disconnected.";
    let pki = Pki::new();
    let mut gw = enforcement_setup(&pki).start().await;
    let start = after_startup_check(&gw, 0).await;

    // No client: probes, each a whole MQTT connection under the probe's client id.
    broker_logs(&gw, start, PROBE_END, 2).await;
    readyz_becomes(&gw, 200).await;
    let idle = broker_log_since(&gw, start);
    assert!(idle.contains("as mqtt-gateway-readyz-probe ("), "{idle}");
    assert_no_half_connections(&idle);

    // An active client: its PINGRESPs come from the broker, and no probe connects. Three probe
    // intervals of traffic; a probe already under way when the client began may still finish.
    let cert = pki.client("active", None, Flaw::None);
    let mut active = TlsWire::tls(
        gw.tls_addr(),
        client_tls(&pki, Some(&cert), &[&rustls::version::TLS13]),
        V5,
    )
    .await;
    assert_eq!(active.connect(&connect(V5, "active", None, None)).await, 0);
    active.ping().await;
    let from = gw.broker.log().len();
    let until = tokio::time::Instant::now()
        + std::time::Duration::from_millis(3 * mqtt_gateway::admin::PROBE_AFTER_MS);
    while tokio::time::Instant::now() < until {
        active.ping().await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let during = broker_log_since(&gw, from);
    assert!(
        during.matches("New connection from").count() <= 1,
        "probes while a client was active:\n{during}"
    );
    assert_eq!(gw.admin_get("/readyz").await.0, 200);
    active.disconnect().await;
    active.assert_closed().await;

    // Idle again: probes again. The broker stops: not ready; back: ready, by a probe.
    let from = gw.broker.log().len();
    broker_logs(&gw, from, PROBE_END, 1).await;
    assert_no_half_connections(&broker_log_since(&gw, from));
    tokio::task::block_in_place(|| gw.broker.stop()).unwrap();
    readyz_becomes(&gw, 503).await;
    let from = gw.broker.log().len();
    tokio::task::block_in_place(|| gw.broker.restart()).unwrap();
    let from = after_startup_check(&gw, from).await;
    readyz_becomes(&gw, 200).await;
    broker_logs(&gw, from, PROBE_END, 1).await;
    assert_no_half_connections(&broker_log_since(&gw, from));
}
