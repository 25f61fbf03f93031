//! rumqttc (MQTT 3.1.1 and MQTT 5) through the gateway's TLS listener, with client certificates.
//! rumqttc is built here without TLS, so each client goes through a `support::shim::Shim`: a
//! loopback TCP listener that carries every connection over real TLS (tokio-rustls, a client
//! certificate of the test PKI) to the gateway, in front of a real Mosquitto.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use support::shim::Shim;
use support::{Flaw, Pki, Setup, client_tls};
use tokio::sync::mpsc::{Receiver, Sender, channel};

const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const WAIT: Duration = Duration::from_secs(10);

/// What an event loop saw, in terms both protocol versions share.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    ConnAck,
    /// The granted QoS of each filter, or `None` for a refused one.
    SubAck(Vec<Option<u8>>),
    Message {
        topic: String,
        payload: Vec<u8>,
        qos: u8,
    },
    PubAck(u16),
    PubComp(u16),
    Error(String),
}

/// Waits for the first event that `pick` accepts, skipping others; fails on a connection error or
/// after [`WAIT`].
async fn expect<T>(
    rx: &mut Receiver<Seen>,
    what: &str,
    mut pick: impl FnMut(&Seen) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Err(_) => panic!("no {what} within {WAIT:?}"),
            Ok(None) => panic!("event loop ended before {what}"),
            Ok(Some(Seen::Error(e))) => panic!("connection error before {what}: {e}"),
            Ok(Some(seen)) => {
                if let Some(t) = pick(&seen) {
                    return t;
                }
            }
        }
    }
}

fn qos_v4(q: rumqttc::QoS) -> u8 {
    match q {
        rumqttc::QoS::AtMostOnce => 0,
        rumqttc::QoS::AtLeastOnce => 1,
        rumqttc::QoS::ExactlyOnce => 2,
    }
}

fn qos_v5(q: rumqttc::v5::mqttbytes::QoS) -> u8 {
    match q {
        rumqttc::v5::mqttbytes::QoS::AtMostOnce => 0,
        rumqttc::v5::mqttbytes::QoS::AtLeastOnce => 1,
        rumqttc::v5::mqttbytes::QoS::ExactlyOnce => 2,
    }
}

/// Drives an MQTT 3.1.1 event loop, reporting what it sees; stops at the first error.
fn drive_v4(mut el: rumqttc::EventLoop, tx: Sender<Seen>) {
    use rumqttc::{Event, Packet, SubscribeReasonCode};
    tokio::spawn(async move {
        loop {
            let seen = match el.poll().await {
                Ok(Event::Incoming(p)) => match p {
                    Packet::ConnAck(_) => Seen::ConnAck,
                    Packet::SubAck(a) => Seen::SubAck(
                        a.return_codes
                            .iter()
                            .map(|c| match c {
                                SubscribeReasonCode::Success(q) => Some(qos_v4(*q)),
                                SubscribeReasonCode::Failure => None,
                            })
                            .collect(),
                    ),
                    Packet::Publish(p) => Seen::Message {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        qos: qos_v4(p.qos),
                    },
                    Packet::PubAck(a) => Seen::PubAck(a.pkid),
                    Packet::PubComp(c) => Seen::PubComp(c.pkid),
                    _ => continue,
                },
                Ok(Event::Outgoing(_)) => continue,
                Err(e) => {
                    let _ = tx.send(Seen::Error(e.to_string())).await;
                    return;
                }
            };
            if tx.send(seen).await.is_err() {
                return;
            }
        }
    });
}

/// Drives an MQTT 5 event loop, reporting what it sees; stops at the first error.
fn drive_v5(mut el: rumqttc::v5::EventLoop, tx: Sender<Seen>) {
    use rumqttc::v5::Event;
    use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
    tokio::spawn(async move {
        loop {
            let seen = match el.poll().await {
                Ok(Event::Incoming(p)) => match p {
                    Packet::ConnAck(_) => Seen::ConnAck,
                    Packet::SubAck(a) => Seen::SubAck(
                        a.return_codes
                            .iter()
                            .map(|c| match c {
                                SubscribeReasonCode::Success(q) => Some(qos_v5(*q)),
                                _ => None,
                            })
                            .collect(),
                    ),
                    Packet::Publish(p) => Seen::Message {
                        topic: String::from_utf8(p.topic.to_vec()).unwrap(),
                        payload: p.payload.to_vec(),
                        qos: qos_v5(p.qos),
                    },
                    Packet::PubAck(a) => Seen::PubAck(a.pkid),
                    Packet::PubComp(c) => Seen::PubComp(c.pkid),
                    _ => continue,
                },
                Ok(Event::Outgoing(_)) => continue,
                Err(e) => {
                    let _ = tx.send(Seen::Error(e.to_string())).await;
                    return;
                }
            };
            if tx.send(seen).await.is_err() {
                return;
            }
        }
    });
}

/// The subscriber receives exactly the three messages, each at the QoS it was published with.
async fn assert_three_messages(sub: &mut Receiver<Seen>, prefix: &str) {
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(
            expect(sub, "a message", |s| match s {
                Seen::Message { .. } => Some(s.clone()),
                _ => None,
            })
            .await,
        );
    }
    got.sort_by_key(|s| format!("{s:?}"));
    let want: Vec<Seen> = (0..3u8)
        .map(|q| Seen::Message {
            topic: format!("{prefix}/q{q}"),
            payload: format!("payload at qos {q}").into_bytes(),
            qos: q,
        })
        .collect();
    assert_eq!(got, want);
}

/// Enforces end to end [MQTT-3.3.4-1]: each PUBLISH is answered as its QoS requires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_mqtt_3_1_1_publishes_and_subscribes_all_qos_through_the_tls_listener() {
    use rumqttc::{AsyncClient, MqttOptions, QoS};
    let pki = Pki::new();
    let gw = Setup::new(&pki).start().await;
    let sub_cert = pki.client("rumq-sub-4", None, Flaw::None);
    let pub_cert = pki.client("rumq-pub-4", None, Flaw::None);
    let sub_shim = Shim::start(gw.tls_addr(), client_tls(&pki, Some(&sub_cert), TLS13)).await;
    let pub_shim = Shim::start(gw.tls_addr(), client_tls(&pki, Some(&pub_cert), TLS13)).await;

    let (tx, mut sub_rx) = channel(64);
    let mut opts = MqttOptions::new("rumq-sub-4", "127.0.0.1", sub_shim.addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (sub, el) = AsyncClient::new(opts, 16);
    drive_v4(el, tx);
    expect(&mut sub_rx, "CONNACK", |s| {
        (*s == Seen::ConnAck).then_some(())
    })
    .await;
    sub.subscribe("rumq/v4/#", QoS::ExactlyOnce).await.unwrap();
    let granted = expect(&mut sub_rx, "SUBACK", |s| match s {
        Seen::SubAck(g) => Some(g.clone()),
        _ => None,
    })
    .await;
    assert_eq!(granted, [Some(2)]);

    let (tx, mut pub_rx) = channel(64);
    let mut opts = MqttOptions::new("rumq-pub-4", "127.0.0.1", pub_shim.addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (publisher, el) = AsyncClient::new(opts, 16);
    drive_v4(el, tx);
    expect(&mut pub_rx, "CONNACK", |s| {
        (*s == Seen::ConnAck).then_some(())
    })
    .await;
    for (q, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publisher
            .publish(
                format!("rumq/v4/q{q}"),
                qos,
                false,
                format!("payload at qos {q}"),
            )
            .await
            .unwrap();
    }
    // QoS 1 acknowledged, QoS 2 completed: both flows crossed the gateway.
    expect(&mut pub_rx, "PUBACK", |s| {
        matches!(s, Seen::PubAck(_)).then_some(())
    })
    .await;
    expect(&mut pub_rx, "PUBCOMP", |s| {
        matches!(s, Seen::PubComp(_)).then_some(())
    })
    .await;
    assert_three_messages(&mut sub_rx, "rumq/v4").await;
}

/// Enforces end to end [MQTT-3.3.4-1]: each PUBLISH is answered as its QoS requires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_mqtt_5_publishes_and_subscribes_all_qos_through_the_tls_listener() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, MqttOptions};
    let pki = Pki::new();
    let gw = Setup::new(&pki).start().await;
    let sub_cert = pki.client("rumq-sub-5", None, Flaw::None);
    let pub_cert = pki.client("rumq-pub-5", None, Flaw::None);
    let sub_shim = Shim::start(gw.tls_addr(), client_tls(&pki, Some(&sub_cert), TLS13)).await;
    let pub_shim = Shim::start(gw.tls_addr(), client_tls(&pki, Some(&pub_cert), TLS13)).await;

    let (tx, mut sub_rx) = channel(64);
    let mut opts = MqttOptions::new("rumq-sub-5", "127.0.0.1", sub_shim.addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (sub, el) = AsyncClient::new(opts, 16);
    drive_v5(el, tx);
    expect(&mut sub_rx, "CONNACK", |s| {
        (*s == Seen::ConnAck).then_some(())
    })
    .await;
    sub.subscribe("rumq/v5/#", QoS::ExactlyOnce).await.unwrap();
    let granted = expect(&mut sub_rx, "SUBACK", |s| match s {
        Seen::SubAck(g) => Some(g.clone()),
        _ => None,
    })
    .await;
    assert_eq!(granted, [Some(2)]);

    let (tx, mut pub_rx) = channel(64);
    let mut opts = MqttOptions::new("rumq-pub-5", "127.0.0.1", pub_shim.addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    let (publisher, el) = AsyncClient::new(opts, 16);
    drive_v5(el, tx);
    expect(&mut pub_rx, "CONNACK", |s| {
        (*s == Seen::ConnAck).then_some(())
    })
    .await;
    for (q, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publisher
            .publish(
                format!("rumq/v5/q{q}"),
                qos,
                false,
                format!("payload at qos {q}"),
            )
            .await
            .unwrap();
    }
    expect(&mut pub_rx, "PUBACK", |s| {
        matches!(s, Seen::PubAck(_)).then_some(())
    })
    .await;
    expect(&mut pub_rx, "PUBCOMP", |s| {
        matches!(s, Seen::PubComp(_)).then_some(())
    })
    .await;
    assert_three_messages(&mut sub_rx, "rumq/v5").await;
}
