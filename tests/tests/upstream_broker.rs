//! The reference broker (`upstream-broker/`) as the tests and benches use it: started through
//! `e2e::Mosquitto`, reachable on 127.0.0.1 only, and carrying messages between the real Mosquitto
//! clients for every protocol version the gateway speaks.
// Test helpers outside #[test] fns: .clippy.toml's allow-*-in-tests does not reach them, and a
// panic with the client's output is exactly the failure report wanted here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use e2e::{LiveSubscriber, Mosquitto, MqttVersion, mosquitto_pub, mosquitto_sub};

/// `mosquitto_sub -F`: retain flag, QoS, topic, payload.
const FORMAT: &str = "%r %q %t %p";
/// `-W` for every subscriber: generous, because a loaded 2-core CI machine is slow.
const WAIT_SECS: u32 = 10;

fn live_message(broker: &Mosquitto, version: MqttVersion, qos: u8) {
    let topic = format!("e2e/{version}/live/q{qos}");
    let payload = format!("live {version} qos {qos}");
    let qos = qos.to_string();
    let sub = LiveSubscriber::spawn(
        broker.addr(),
        version,
        WAIT_SECS,
        &["-t", &topic, "-q", &qos, "-C", "1", "-F", FORMAT],
    )
    .unwrap();
    let publ = mosquitto_pub(
        broker.addr(),
        version,
        &["-t", &topic, "-m", &payload, "-q", &qos],
    )
    .unwrap();
    assert!(
        publ.success(),
        "{version} qos {qos}: mosquitto_pub failed: {publ:?}"
    );
    let out = sub.finish().unwrap();
    assert!(
        out.success(),
        "{version} qos {qos}: mosquitto_sub failed: {out:?}"
    );
    // Live delivery: retain flag 0, delivered at the QoS both sides asked for.
    assert_eq!(
        out.messages(),
        [format!("0 {qos} {topic} {payload}")],
        "{version} qos {qos}: {out:?}"
    );
}

fn retained_message(broker: &Mosquitto, version: MqttVersion) {
    let topic = format!("e2e/{version}/retained");
    let payload = format!("retained {version}");
    let publ = mosquitto_pub(
        broker.addr(),
        version,
        &["-t", &topic, "-m", &payload, "-q", "1", "-r"],
    )
    .unwrap();
    assert!(
        publ.success(),
        "{version}: mosquitto_pub -r failed: {publ:?}"
    );
    // Subscribed after the publish: only the broker's retained copy can arrive, with retain=1.
    let out = mosquitto_sub(
        broker.addr(),
        version,
        WAIT_SECS,
        &["-t", &topic, "-q", "1", "-C", "1", "-F", FORMAT],
    )
    .unwrap();
    assert!(out.success(), "{version}: mosquitto_sub failed: {out:?}");
    assert_eq!(
        out.messages(),
        [format!("1 1 {topic} {payload}")],
        "{version}: {out:?}"
    );
}

#[test]
fn mqtt_311_messages_reach_the_subscriber() {
    let broker = Mosquitto::start().unwrap();
    for qos in [0, 1] {
        live_message(&broker, MqttVersion::V311, qos);
    }
    retained_message(&broker, MqttVersion::V311);
}

#[test]
fn mqtt_5_messages_reach_the_subscriber() {
    let broker = Mosquitto::start().unwrap();
    for qos in [0, 1] {
        live_message(&broker, MqttVersion::V5, qos);
    }
    retained_message(&broker, MqttVersion::V5);
}

#[test]
fn mqtt_31_messages_reach_the_subscriber() {
    let broker = Mosquitto::start().unwrap();
    live_message(&broker, MqttVersion::V31, 1);
    retained_message(&broker, MqttVersion::V31);
}

#[test]
fn subscriber_without_a_message_times_out() {
    // The negative beside the positives above: `-C 1` alone does not make a test pass.
    let broker = Mosquitto::start().unwrap();
    let out = mosquitto_sub(
        broker.addr(),
        MqttVersion::V5,
        1,
        &["-t", "e2e/nothing", "-C", "1"],
    )
    .unwrap();
    assert!(!out.success(), "{out:?}");
    assert!(out.messages().is_empty(), "{out:?}");
}

/// A non-loopback IPv4 address of this machine: the source address the kernel would pick for a
/// route to a documentation or private address. UDP `connect` sends nothing.
fn non_loopback_ipv4() -> Option<Ipv4Addr> {
    [
        "192.0.2.1:9",
        "10.255.255.254:9",
        "172.31.255.254:9",
        "198.51.100.1:9",
    ]
    .iter()
    .find_map(|target| {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
        socket.connect(target).ok()?;
        match socket.local_addr().ok()?.ip() {
            IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
            _ => None,
        }
    })
}

fn connect(ip: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&SocketAddr::new(ip, port), Duration::from_secs(3))
}

#[test]
fn broker_listens_on_127_0_0_1_only() {
    let broker = Mosquitto::start().unwrap();
    let port = broker.port();

    // The good case beside the refusals.
    connect(IpAddr::V4(Ipv4Addr::LOCALHOST), port).expect("127.0.0.1 accepts");

    // 127.0.0.2 is a loopback address too (all of 127/8 is local on Linux) but not the bound one:
    // a wildcard (0.0.0.0) listener would accept here.
    let err = connect(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), port)
        .expect_err("127.0.0.2 must be refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    // No IPv6 listener either (connect fails: refused, or no IPv6 on this machine).
    assert!(
        connect(IpAddr::V6(Ipv6Addr::LOCALHOST), port).is_err(),
        "[::1] must be refused"
    );

    match non_loopback_ipv4() {
        Some(ip) => {
            let result = connect(IpAddr::V4(ip), port);
            assert!(
                result.is_err(),
                "{ip}:{port} (non-loopback) must be refused, got {result:?}"
            );
        }
        None => println!(
            "note: no non-loopback IPv4 address on this machine; checked 127.0.0.2 and [::1] only"
        ),
    }
}

#[test]
fn persistent_broker_keeps_retained_messages_across_restart() {
    let mut broker = Mosquitto::start_persistent().unwrap();
    let port = broker.port();
    let publ = mosquitto_pub(
        broker.addr(),
        MqttVersion::V5,
        &["-t", "e2e/persist", "-m", "kept", "-q", "1", "-r"],
    )
    .unwrap();
    assert!(publ.success(), "{publ:?}");

    let pid = broker.pid();
    broker.restart().unwrap();
    assert_ne!(broker.pid(), pid, "restart starts a new process");
    assert_eq!(broker.port(), port, "restart keeps the port");
    assert!(
        broker.data_dir().unwrap().join("mosquitto.db").is_file(),
        "SIGTERM saves the persistence file; log:\n{}",
        broker.log()
    );

    let out = mosquitto_sub(
        broker.addr(),
        MqttVersion::V5,
        WAIT_SECS,
        &["-t", "e2e/persist", "-C", "1", "-F", FORMAT],
    )
    .unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.messages(), ["1 0 e2e/persist kept"], "{out:?}");

    // A clean stop: Mosquitto exits 0 on SIGTERM.
    let status = broker.stop().unwrap().expect("was running");
    assert!(status.success(), "{status}");
    assert!(
        broker.stop().unwrap().is_none(),
        "stopping twice is a no-op"
    );
    assert!(
        connect(IpAddr::V4(Ipv4Addr::LOCALHOST), port).is_err(),
        "port closed after stop"
    );
}
