//! MQTT 5 topic aliases on the wire (issue 4). Contract, "On the wire": "MQTT 5 topic aliases
//! are tracked in both directions, so a PUBLISH with an empty topic and an alias is judged by the
//! topic the alias stands for." Mosquitto 2.0 grants a Topic Alias Maximum of 10 in its CONNACK
//! (`max_topic_alias`); a spy straight on the broker shows which topic each forwarded message
//! ended up on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;

use mqtt_inspect::{AckKind, Property, ProtocolVersion};
use support::wire::{Got, TlsWire, assert_broker_ack, connect, frame, got_ack, publish};
use support::{Flaw, Pki, Rule, TestGateway, anyone, client_tls};
use support::{
    acl_denied, assert_rule, audit_of, broker_spy, enforcement_setup, rule_line, spy_messages,
};

/// `al/#` may be published, `al/no/#` not.
const RULES: &[Rule<'_>] = &[
    ("allow", &["publish"], &["al/#"]),
    ("deny", &["publish"], &["al/no/#"]),
];

const V5: ProtocolVersion = ProtocolVersion::V5;

async fn gateway(pki: &Pki) -> TestGateway {
    let mut setup = enforcement_setup(pki);
    setup.policy = anyone(RULES);
    setup.start().await
}

/// A v5 client; asserts the broker's Topic Alias Maximum reached it.
async fn client(gw: &TestGateway, pki: &Pki, id: &str) -> TlsWire {
    let cert = pki.client(id, None, Flaw::None);
    let tls = client_tls(pki, Some(&cert), &[&rustls::version::TLS13]);
    let mut c = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), V5).await;
    let connack = c.connect_full(&connect(V5, id, None, None)).await;
    assert_eq!(
        connack,
        Got::Connack {
            code: 0,
            session_present: false,
            topic_alias_max: 10
        }
    );
    c
}

fn aliased(topic: &str, alias: u16, qos: u8, id: u16, payload: &[u8]) -> Vec<u8> {
    publish(V5, topic, qos, id, &[Property::TopicAlias(alias)], payload)
}

/// Rebinding an alias to a denied topic, then publishing with the alias alone: denied, because
/// the judged topic is the one the alias now stands for (the broker, which never saw the
/// rebinding, would have delivered it on the old allowed topic).
///
/// Contract ("On the wire"): "MQTT 5 topic aliases are tracked in both directions, so a PUBLISH
/// with an empty topic and an alias is judged by the topic the alias stands for."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_is_judged_by_the_topic_it_stands_for() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let deny_rule = rule_line(&anyone(RULES), "topics = [\"al/no/#\"]");
    let before = acl_denied(&gw, "publish").await;
    let spy = broker_spy(&gw, "al/#", 4, 10).await;
    let mut c = client(&gw, &pki, "alias-1").await;

    c.send(&aliased("al/ok/1", 1, 1, 1, b"bind")).await;
    assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 1);
    c.send(&aliased("", 1, 1, 2, b"reuse")).await;
    assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 2);

    // Rebinding to a denied topic: denied.
    c.send(&aliased("al/no/1", 1, 1, 3, b"rebind")).await;
    assert_eq!(c.next("PUBACK").await, got_ack(AckKind::Puback, 3, 0x87));
    // The alias alone now stands for al/no/1: denied at QoS 1 and dropped at QoS 0.
    c.send(&aliased("", 1, 1, 4, b"sneak")).await;
    assert_eq!(c.next("PUBACK").await, got_ack(AckKind::Puback, 4, 0x87));
    c.send(&aliased("", 1, 0, 0, b"sneak0")).await;
    c.ping().await;
    let line = audit_of(&gw, c.local, "acl_denied", Some("publish"), Some("al/no/1")).await;
    assert_rule(&line, deny_rule);

    // Bound again to an allowed topic: forwarded, with and without the topic.
    c.send(&aliased("al/ok/2", 1, 1, 5, b"rebind-ok")).await;
    assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 5);
    c.send(&aliased("", 1, 1, 6, b"reuse-ok")).await;
    assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 6);

    assert_eq!(
        spy_messages(spy).await,
        [
            "al/ok/1 bind",
            "al/ok/1 reuse",
            "al/ok/2 rebind-ok",
            "al/ok/2 reuse-ok"
        ],
        "nothing sent under the denied binding reached the broker, on any topic"
    );
    assert!(acl_denied(&gw, "publish").await >= before + 3.0);
}

/// A binding whose PUBLISH was denied is still the client's binding (the alias alone is judged
/// by it, not refused as unknown), and the alias can then be bound to an allowed topic.
///
/// Contract ("On the wire"): "MQTT 5 topic aliases are tracked in both directions, so a PUBLISH
/// with an empty topic and an alias is judged by the topic the alias stands for."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_binding_then_an_allowed_one() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let spy = broker_spy(&gw, "al/#", 2, 10).await;
    let mut c = client(&gw, &pki, "alias-2").await;

    c.send(&aliased("al/no/x", 2, 1, 1, b"denied")).await;
    assert_eq!(c.next("PUBACK").await, got_ack(AckKind::Puback, 1, 0x87));
    c.send(&aliased("", 2, 1, 2, b"denied-again")).await;
    assert_eq!(c.next("PUBACK").await, got_ack(AckKind::Puback, 2, 0x87));
    // The broker never learned alias 2; the allowed binding is forwarded with its topic.
    c.send(&aliased("al/ok/y", 2, 1, 3, b"bound")).await;
    assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 3);
    c.send(&aliased("", 2, 1, 4, b"reused")).await;
    assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 4);
    c.ping().await;
    assert_eq!(spy_messages(spy).await, ["al/ok/y bound", "al/ok/y reused"]);
}

/// MQTT 5.0 §3.3.2.3.4: an alias that is not bound, 0, or above the Topic Alias Maximum is a
/// "Topic Alias invalid" error: DISCONNECT 0x94, and nothing reaches the broker
/// ([MQTT-3.3.2-8], [MQTT-3.3.2-9]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_zero_and_too_large_aliases_disconnect_with_0x94() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let spy = broker_spy(&gw, "al/#", 3, 10).await;

    // Alias 0, hand-built (the encoder refuses it): topic "al/ok/0", property 0x23 = 0.
    let mut body = vec![0x00, 0x07];
    body.extend_from_slice(b"al/ok/0");
    body.extend_from_slice(&[0x03, 0x23, 0x00, 0x00]);
    body.extend_from_slice(b"zero");
    let zero = frame(0x30, &body);
    let cases: [(&str, Vec<u8>); 3] = [
        ("unbound", aliased("", 5, 0, 0, b"unbound")),
        ("zero", zero),
        ("too large", aliased("al/ok/11", 11, 0, 0, b"eleven")),
    ];
    for (i, (what, bad)) in cases.into_iter().enumerate() {
        let mut c = client(&gw, &pki, &format!("alias-bad-{i}")).await;
        // The good case first, on the same connection.
        c.send(&aliased(&format!("al/ok/{what}"), 1, 1, 1, b"good"))
            .await;
        assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 1);
        c.send(&bad).await;
        assert_eq!(
            c.next("DISCONNECT").await,
            Got::Disconnect { reason: 0x94 },
            "{what}"
        );
        c.assert_closed().await;
        let line = audit_of(&gw, c.local, "malformed", None, None).await;
        assert_eq!(line["reason"], "client_to_broker", "{line}");
    }
    assert_eq!(
        spy_messages(spy).await,
        [
            "al/ok/unbound good",
            "al/ok/zero good",
            "al/ok/too large good"
        ]
    );
}

/// The receiver must never attribute a message to a stale binding: when a binding PUBLISH was
/// dropped by the policy and a later policy allows the alias alone, the gateway writes the topic
/// out (the broker still has the old binding, or none at all).
///
/// DESIGN §3: "The judged topic is the delivered topic. Topic aliases are resolved (both
/// directions) before a decision".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alias_whose_binding_the_broker_never_saw_is_written_out() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let spy = broker_spy(&gw, "al/#", 4, 10).await;
    let mut c = client(&gw, &pki, "alias-3").await;
    c.send(&aliased("al/ok/1", 1, 1, 1, b"bind")).await;
    assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 1);
    // Denied: the broker keeps alias 1 = al/ok/1 and never hears of alias 2.
    c.send(&aliased("al/no/1", 1, 1, 2, b"denied")).await;
    assert_eq!(c.next("PUBACK").await, got_ack(AckKind::Puback, 2, 0x87));
    c.send(&aliased("al/no/2", 2, 1, 3, b"denied")).await;
    assert_eq!(c.next("PUBACK").await, got_ack(AckKind::Puback, 3, 0x87));

    // A policy without the deny (reload plumbing comes later: publish the snapshot directly).
    let open = anyone(&[
        ("allow", &["publish"], &["al/#"]),
        ("allow", &["publish"], &["al/no/#"]),
    ]);
    std::fs::write(gw.dir.path().join("policy.toml"), open).unwrap();
    let snap = gw.running.gateway.current();
    gw.running.gateway.store(
        mqtt_gateway::server::load_snapshot(Arc::clone(&snap.config), snap.generation + 1).unwrap(),
    );

    // Now allowed, and delivered on the topic the client bound, not the broker's stale one.
    c.send(&aliased("", 1, 1, 4, b"one")).await;
    assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 4);
    c.send(&aliased("", 2, 1, 5, b"two")).await;
    assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 5);
    // The written-out PUBLISH kept its alias, so the broker is in step again.
    c.send(&aliased("", 1, 1, 6, b"again")).await;
    assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 6);
    assert_eq!(
        spy_messages(spy).await,
        [
            "al/ok/1 bind",
            "al/no/1 one",
            "al/no/2 two",
            "al/no/1 again"
        ]
    );
}

/// The aliases of one connection may not hold unbounded memory at the gateway: a topic may be
/// 64 KiB long, so the table of one direction holds at most 256 KiB of topics. Four aliases of
/// 60 KiB topics and a short one are carried; the binding that would pass the budget ends the
/// connection with DISCONNECT 0x97 (Quota exceeded) and never reaches the broker; the close is
/// counted (`sessions_closed_total{reason="quota_exceeded"}`) and audited for that client only.
///
/// Contract ("On the wire"): "Limits exceeded: ... MQTT 5 clients get reason 0x96 or 0x97 when
/// disconnected for it." DESIGN §3 (Resources): "every buffer, map and queue keyed by peers has a
/// cap".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alias_topics_beyond_the_byte_budget_disconnect_with_0x97() {
    const QUOTA: &str = "mqtt_gateway_sessions_closed_total{reason=\"quota_exceeded\"}";
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    // The metrics recorder is shared by the gateways of this test binary; no other test here
    // ends a session on a quota.
    let quota_before = gw.metric(QUOTA).await;
    let spy = broker_spy(&gw, "al/#", 5, 10).await;
    let mut c = client(&gw, &pki, "alias-big").await;
    let long = |i: u16| format!("al/ok/{i}/{}", "x".repeat(60 * 1024));
    for i in 1..=4u16 {
        c.send(&aliased(&long(i), i, 1, i, b"big")).await;
        assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, i);
    }
    c.send(&aliased("al/ok/short", 5, 1, 5, b"small")).await;
    assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 5);
    c.send(&aliased(&long(6), 6, 1, 6, b"too much")).await;
    assert_eq!(c.next("DISCONNECT").await, Got::Disconnect { reason: 0x97 });
    c.assert_closed().await;
    let delivered = spy_messages(spy).await;
    assert_eq!(
        delivered.len(),
        5,
        "{:?}",
        delivered.iter().map(|m| m.len()).collect::<Vec<_>>()
    );
    assert!(delivered.iter().all(|m| !m.ends_with("too much")));
    assert_eq!(gw.metric(QUOTA).await - quota_before, 1.0);
    let line = gw
        .audit_line(|l| l["event"] == "quota_exceeded")
        .await
        .expect("the quota close is audited");
    assert_eq!(line["client_id"], "alias-big");
    assert_eq!(line["reason"], "quota_exceeded");
    // One line for the one refused binding; the bindings within the budget were not refused.
    let quotas = gw.audit().await;
    assert_eq!(
        quotas
            .iter()
            .filter(|l| l["event"] == "quota_exceeded")
            .count(),
        1,
        "{quotas:?}"
    );
}

/// The gateway tracks at most 1,024 topic aliases per direction, so the broker is never told it
/// may use more [MQTT-3.3.2-10]: a client announcing 65,535 reaches the broker (seen by a tap in
/// front of it) announcing 1,024, and is served; a client announcing 10 reaches it unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_is_told_at_most_the_aliases_the_gateway_tracks() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    // The tap between the gateway and the broker.
    let tap = support::ConnectTap::between(&gw).await;
    for (id, announced, told) in [("alias-many", u16::MAX, 1024), ("alias-few", 10, 10)] {
        let cert = pki.client(id, None, Flaw::None);
        let tls = client_tls(&pki, Some(&cert), &[&rustls::version::TLS13]);
        let mut c = TlsWire::tls(gw.tls_addr(), tls, V5).await;
        let frame = support::wire::ConnectSpec {
            client_id: id,
            properties: vec![Property::TopicAliasMaximum(announced)],
            ..support::wire::ConnectSpec::default()
        }
        .encode(V5);
        assert_eq!(c.connect(&frame).await, 0, "{id}");
        c.send(&aliased("al/ok/t", 1, 1, 1, b"served")).await;
        assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 1);
        assert_eq!(tap.get(id).topic_alias_max, told, "{id}");
    }
}
