//! The relay end to end: real Mosquitto behind the gateway, real TLS with certificates made here,
//! `mosquitto_pub`/`mosquitto_sub` as clients (MQTT 3.1.1 and 5), and raw frames for what a
//! well-behaved client never sends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use e2e::{LiveSubscriber, MqttVersion};
use mqtt_inspect::{Packet, ProtocolVersion, ReasonCode, decode};
use support::wire::TlsWire;
use support::{Flaw, Pki, Setup, alive_tasks, client_tls, connect_frame, tls_args, tls_pub};

fn sub_args<'a>(tls: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut v: Vec<&str> = tls.iter().map(String::as_str).collect();
    v.extend_from_slice(extra);
    v
}

/// Enforces end to end through the gateway [MQTT-3.3.4-1]: each PUBLISH is answered as its QoS
/// requires (none, PUBACK, PUBREC/PUBREL/PUBCOMP), in 3.1.1 and 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_certificate_publishes_and_subscribes_all_qos_both_versions() {
    let pki = Pki::new();
    let gw = Setup::new(&pki).start().await;
    let sub_cert = pki.client("subscriber-1", Some("ops"), Flaw::None);
    let pub_cert = pki.client("sensor-1", Some("sensors"), Flaw::None);
    for version in [MqttVersion::V311, MqttVersion::V5] {
        let tls = tls_args(&pki, Some(&sub_cert));
        let topic = format!("e2e/{version}/x");
        let addr = gw.tls_addr();
        let args = sub_args(&tls, &["-t", "e2e/#", "-C", "3", "-v", "-q", "2"]);
        let owned: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let sub = tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = owned.iter().map(String::as_str).collect();
            LiveSubscriber::spawn(addr, version, 10, &a)
        })
        .await
        .unwrap()
        .expect("subscriber connects through the gateway");
        for qos in ["0", "1", "2"] {
            let out = tls_pub(
                &gw,
                &pki,
                Some(&pub_cert),
                version,
                &["-t", &topic, "-m", &format!("qos{qos}"), "-q", qos],
            );
            assert!(
                out.success(),
                "publish qos {qos} via gateway ({version}): {out:?}"
            );
        }
        let out = tokio::task::spawn_blocking(move || sub.finish())
            .await
            .unwrap()
            .unwrap();
        let msgs = out.messages();
        assert_eq!(
            msgs,
            [
                format!("{topic} qos0"),
                format!("{topic} qos1"),
                format!("{topic} qos2")
            ],
            "{out:?}"
        );
    }
    // Retained, and a large payload just under the limit (256 KiB packet).
    // (A single command-line argument is capped at 128 KiB: the payload goes through a file.)
    let big = "x".repeat(200 * 1024);
    let payload = pki.path("big.txt");
    std::fs::write(&payload, &big).unwrap();
    let payload = payload.display().to_string();
    let out = tls_pub(
        &gw,
        &pki,
        Some(&pub_cert),
        MqttVersion::V5,
        &["-t", "e2e/retained", "-f", &payload, "-r", "-q", "1"],
    );
    assert!(out.success(), "{out:?}");
    let tls = tls_args(&pki, Some(&sub_cert));
    let addr = gw.tls_addr();
    let out = tokio::task::spawn_blocking(move || {
        let a = sub_args(&tls, &["-t", "e2e/retained", "-C", "1"]);
        e2e::mosquitto_sub(addr, MqttVersion::V311, 5, &a)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        out.messages(),
        [big.as_str()],
        "retained message delivered through the gateway"
    );
}

/// As `mqtt-gateway run` serves: connections accepted and carried by single-threaded worker
/// runtimes (one per core), not the runtime that started the gateway. The subscriber's session
/// is a task on a worker while it lives, messages from publishers on any worker reach it, and
/// every session task ends when its client leaves.
///
/// Not a wire rule. DESIGN §3 (Resources): "Both directions of a connection progress
/// independently"; every session task ends with its client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_carried_by_the_worker_runtimes() {
    let pki = Pki::new();
    let workers = mqtt_gateway::workers::Workers::start(2).unwrap();
    let mut setup = Setup::new(&pki);
    setup.workers = workers.handles().to_vec();
    let gw = setup.start().await;
    // One accept loop per listener (TLS and plain) on each worker.
    let accept_loops = 2 * 2;
    assert_eq!(alive_tasks(&workers), accept_loops);
    let sub_cert = pki.client("subscriber-1", Some("ops"), Flaw::None);
    let pub_cert = pki.client("sensor-1", Some("sensors"), Flaw::None);
    let tls = tls_args(&pki, Some(&sub_cert));
    let addr = gw.tls_addr();
    let args = sub_args(&tls, &["-t", "w/#", "-C", "4", "-v", "-q", "1"]);
    let owned: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let sub = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = owned.iter().map(String::as_str).collect();
        LiveSubscriber::spawn(addr, MqttVersion::V5, 10, &a)
    })
    .await
    .unwrap()
    .expect("subscriber connects through the gateway");
    assert_eq!(
        alive_tasks(&workers),
        accept_loops + 1,
        "the subscriber's session runs on a worker"
    );
    for i in 0..4 {
        let out = tls_pub(
            &gw,
            &pki,
            Some(&pub_cert),
            MqttVersion::V5,
            &["-t", &format!("w/{i}"), "-m", "m", "-q", "1"],
        );
        assert!(out.success(), "publish {i}: {out:?}");
    }
    let out = tokio::task::spawn_blocking(move || sub.finish())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.messages(),
        ["w/0 m", "w/1 m", "w/2 m", "w/3 m"],
        "{out:?}"
    );
    // The sessions end with their clients (waiting for the gateway to see the last close).
    for _ in 0..500 {
        if alive_tasks(&workers) == accept_loops {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(alive_tasks(&workers), accept_loops);
}

/// Enforces [MQTT-4.13.1-1] (a Malformed Packet closes the connection), [MQTT-3.3.2-2] (no wildcard
/// in a Topic Name) and DESIGN §3: "Nothing unparsed reaches the broker."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packet_closes_the_connection_and_never_reaches_the_broker() {
    let pki = Pki::new();
    let gw = Setup::new(&pki).start().await;
    let cert = pki.client("raw-1", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), &[&rustls::version::TLS13]);

    // The good case first: CONNECT, CONNACK, PUBLISH QoS 1, PUBACK.
    let mut good = TlsWire::try_tls(gw.tls_addr(), tls.clone(), ProtocolVersion::V5)
        .await
        .unwrap();
    good.try_send(&connect_frame(ProtocolVersion::V5, "raw-1", None, None))
        .await
        .unwrap();
    let connack = good.recv().await.expect("CONNACK");
    assert!(
        matches!(decode(&connack, ProtocolVersion::V5), Ok(Packet::Connack(c)) if c.code.is_success())
    );
    good.try_send(&[0x32, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, 0x00])
        .await
        .unwrap();
    let puback = good.recv().await.expect("PUBACK");
    assert_eq!(puback[0], 0x40);

    // Watch everything the broker gets, directly on the broker.
    let broker_addr = gw.broker.addr();
    let spy = tokio::task::spawn_blocking(move || {
        LiveSubscriber::spawn(
            broker_addr,
            MqttVersion::V311,
            10,
            &["-t", "#", "-v", "-C", "1"],
        )
    })
    .await
    .unwrap()
    .unwrap();

    // A control character in a topic name: Mosquitto would accept it, the gateway refuses it as
    // malformed (MQTT 5.0 §1.5.4), answers DISCONNECT 0x81 first and closes; the broker never sees it.
    let mut bad = TlsWire::try_tls(gw.tls_addr(), tls.clone(), ProtocolVersion::V5)
        .await
        .unwrap();
    bad.try_send(&connect_frame(ProtocolVersion::V5, "raw-2", None, None))
        .await
        .unwrap();
    assert!(bad.recv().await.is_some());
    bad.try_send(&[
        0x30, 0x09, 0x00, 0x03, b'l', b'/', 0x01, 0x00, b'b', b'a', b'd',
    ])
    .await
    .unwrap();
    let disconnect = bad.recv().await.expect("DISCONNECT before close");
    let Ok(Packet::Disconnect(d)) = decode(&disconnect, ProtocolVersion::V5) else {
        panic!("{disconnect:?}")
    };
    assert_eq!(d.reason, ReasonCode::MalformedPacket);
    assert!(bad.recv().await.is_none(), "connection closed");

    // [MQTT-3.3.2-2]: a wildcard in a topic name is refused with 0x90 Topic Name invalid.
    let mut bad = TlsWire::try_tls(gw.tls_addr(), tls, ProtocolVersion::V5)
        .await
        .unwrap();
    bad.try_send(&connect_frame(ProtocolVersion::V5, "raw-3", None, None))
        .await
        .unwrap();
    assert!(bad.recv().await.is_some());
    bad.try_send(&[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'#', 0x00])
        .await
        .unwrap();
    let disconnect = bad.recv().await.expect("DISCONNECT before close");
    let Ok(Packet::Disconnect(d)) = decode(&disconnect, ProtocolVersion::V5) else {
        panic!("{disconnect:?}")
    };
    assert_eq!(d.reason, ReasonCode::TopicNameInvalid);
    assert!(bad.recv().await.is_none(), "connection closed");

    // The good client publishes a marker: it is the only thing the broker received.
    good.try_send(&[
        0x30, 0x0d, 0x00, 0x04, b'l', b'/', b'o', b'k', 0x00, b'm', b'a', b'r', b'k', b'e', b'r',
    ])
    .await
    .unwrap();
    let out = tokio::task::spawn_blocking(move || spy.finish())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.messages(), ["l/ok marker"], "{out:?}");
    assert!(
        gw.metric("mqtt_gateway_malformed_packets_total{direction=\"client_to_broker\"}")
            .await
            >= 2.0
    );

    // The good client is still served.
    good.try_send(&[0xc0, 0x00]).await.unwrap();
    assert_eq!(good.recv().await.expect("PINGRESP"), [0xd0, 0x00]);
}

/// Contract ("On the wire"): "Broker unreachable: CONNACK 3 (3.1.1) / 0x88 (MQTT 5), then
/// close." [MQTT-3.2.2-7].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_gives_connack_server_unavailable() {
    let pki = Pki::new();
    let mut gw = Setup::new(&pki).start().await;
    let cert = pki.client("dev-1", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), &[&rustls::version::TLS13]);
    gw.broker.stop().unwrap();
    for (version, want) in [
        (ProtocolVersion::V311, vec![0x20, 2, 0, 3]),
        (ProtocolVersion::V5, vec![0x20, 3, 0, 0x88, 0]),
    ] {
        let mut c = TlsWire::try_tls(gw.tls_addr(), tls.clone(), version)
            .await
            .unwrap();
        c.try_send(&connect_frame(version, "dev-1", None, None))
            .await
            .unwrap();
        assert_eq!(c.recv().await.expect("CONNACK"), want, "{version:?}");
        assert!(c.recv().await.is_none());
    }
    assert!(
        gw.metric("mqtt_gateway_upstream_errors_total{reason=\"refused\"}")
            .await
            >= 2.0
    );
    // Broker back: served again.
    gw.broker.restart().unwrap();
    let mut c = TlsWire::try_tls(gw.tls_addr(), tls, ProtocolVersion::V311)
        .await
        .unwrap();
    c.try_send(&connect_frame(ProtocolVersion::V311, "dev-1", None, None))
        .await
        .unwrap();
    assert_eq!(c.recv().await.expect("CONNACK"), [0x20, 2, 0, 0]);
}

/// Enforces [MQTT-3.1.2-24] (the Server MUST NOT send packets over the client's Maximum Packet
/// Size) and [MQTT-3.1.2-25] (it discards such a packet and behaves as if it had sent it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt5_client_is_not_cut_off_by_a_broker_message_larger_than_max_packet_size() {
    use support::broker_pub;
    use support::wire::{Got, TlsWire, connect, subscribe};
    // The gateway announces its max_packet_size to the broker in the upstream CONNECT, so the
    // broker skips the oversized message for this client [MQTT-3.1.2-25] rather than sending it
    // (which would end the session at the gateway's frame limit, 0x95).
    let pki = Pki::new();
    let mut setup = Setup::new(&pki);
    setup.limits = "max_packet_size = \"4KiB\"".into();
    let gw = setup.start().await;
    let cert = pki.client("big-sub", None, Flaw::None);
    let v5 = ProtocolVersion::V5;
    let mut w = TlsWire::tls(
        gw.tls_addr(),
        client_tls(&pki, Some(&cert), &[&rustls::version::TLS13]),
        v5,
    )
    .await;
    assert_eq!(w.connect(&connect(v5, "big-sub", None, None)).await, 0);
    w.send(&subscribe(v5, 1, &[("big/#", 1)])).await;
    assert!(matches!(w.next("SUBACK").await, Got::Suback { .. }));
    let large = "x".repeat(8 * 1024);
    broker_pub(&gw, &["-q", "1", "-t", "big/large", "-m", &large]).await;
    broker_pub(&gw, &["-q", "1", "-t", "big/small", "-m", "fits"]).await;
    let got = w.publishes_until("big/small").await;
    assert_eq!(got, [("big/small".to_owned(), b"fits".to_vec())]);
    w.ping().await;
}
