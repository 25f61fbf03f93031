//! Denied PUBLISH on the wire (issue 4): QoS 0 dropped, QoS 1/2 answered by the gateway (MQTT 5
//! with 0x87) and never forwarded, `on_publish_deny = "disconnect"`, `$SYS` and `$CONTROL`, and
//! the MQTT 5 Response Topic. A spy subscribed straight on the broker shows what got through.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;

use mqtt_inspect::{AckKind, Property, ProtocolVersion};
use support::wire::{
    Got, TlsWire, VERSIONS, ack, assert_broker_ack, connect, got_ack, per_version, publish,
    subscribe,
};
use support::{ALL_ACTIONS, Flaw, Pki, Rule, TestGateway, anyone, client_tls};
use support::{
    acl_denied, assert_rule, audit_of, broker_spy, enforcement_setup, rule_line, spy_messages,
};

/// Everything but `pub/denied/...` and `$CONTROL/...` may be published; `#` does not reach
/// `$SYS` (or any `$` topic), so `$SYS` is denied by default.
const RULES: &[Rule<'_>] = &[
    ("allow", ALL_ACTIONS, &["#"]),
    ("deny", &["publish"], &["pub/denied/#"]),
    ("deny", ALL_ACTIONS, &["$CONTROL/#"]),
    ("deny", &["receive"], &["resp/other/#"]),
];

async fn gateway(pki: &Pki, policy_extra: &str) -> TestGateway {
    let mut setup = enforcement_setup(pki);
    setup.policy = anyone(RULES);
    setup.policy_extra = policy_extra.to_owned();
    setup.start().await
}

async fn client(gw: &TestGateway, pki: &Pki, version: ProtocolVersion, id: &str) -> TlsWire {
    let cert = pki.client(id, None, Flaw::None);
    let tls = client_tls(pki, Some(&cert), &[&rustls::version::TLS13]);
    let mut c = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), version).await;
    assert_eq!(c.connect(&connect(version, id, None, None)).await, 0);
    c
}

/// Contract, "On the wire": "Denied PUBLISH: QoS 0 dropped; QoS 1/2 acknowledged to the client by
/// the gateway (MQTT 5 with reason 0x87) and never forwarded."
///
/// Enforces: [MQTT-3.3.4-1] (the receiver of a PUBLISH answers as its QoS requires: PUBACK, or
/// PUBREC then PUBCOMP) and [MQTT-3.4.2-1] / [MQTT-3.5.2-1] (0x87 is a PUBACK / PUBREC Reason Code).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_publish_is_dropped_or_acknowledged_by_the_gateway_and_never_forwarded() {
    let pki = Pki::new();
    let gw = gateway(&pki, "").await;
    let deny_rule = rule_line(&anyone(RULES), "topics = [\"pub/denied/#\"]");
    let before = acl_denied(&gw, "publish").await;
    let spy = broker_spy(&gw, "pub/#", 4, 10).await;
    for version in VERSIONS {
        let v = version.level();
        let mut c = client(&gw, &pki, version, &format!("pub-{v}")).await;
        let denied = format!("pub/denied/{v}");
        // QoS 0: dropped, nothing comes back (the next packet is the PINGRESP).
        c.send(&publish(version, &denied, 0, 0, &[], b"q0")).await;
        c.ping().await;
        // QoS 1: PUBACK from the gateway, 0x87 in MQTT 5, a plain PUBACK in 3.1.1.
        c.send(&publish(version, &denied, 1, 10, &[], b"q1")).await;
        assert_eq!(
            c.next("PUBACK").await,
            got_ack(AckKind::Puback, 10, per_version(version, 0, 0x87))
        );
        // QoS 2: PUBREC (0x87) from the gateway, then PUBREL is answered with PUBCOMP locally.
        c.send(&publish(version, &denied, 2, 11, &[], b"q2")).await;
        assert_eq!(
            c.next("PUBREC").await,
            got_ack(AckKind::Pubrec, 11, per_version(version, 0, 0x87))
        );
        c.send(&ack(version, AckKind::Pubrel, 11)).await;
        assert_eq!(c.next("PUBCOMP").await, got_ack(AckKind::Pubcomp, 11, 0));
        let line = audit_of(&gw, c.local, "acl_denied", Some("publish"), Some(&denied)).await;
        assert_eq!(line["reason"], "publish", "{line}");
        assert_eq!(line["principal"], format!("pub-{v}"), "{line}");
        assert_eq!(line["client_id"], format!("pub-{v}"), "{line}");
        assert_rule(&line, deny_rule);

        // The good case on the same connection: the broker's own acknowledgements.
        let allowed = format!("pub/ok/{v}");
        c.send(&publish(version, &allowed, 1, 12, &[], b"ok")).await;
        assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 12);
        c.send(&publish(version, &allowed, 2, 13, &[], b"ok2"))
            .await;
        assert_broker_ack(&c.next("PUBREC").await, AckKind::Pubrec, 13);
        c.send(&ack(version, AckKind::Pubrel, 13)).await;
        assert_broker_ack(&c.next("PUBCOMP").await, AckKind::Pubcomp, 13);
        c.ping().await;
    }
    // The broker got the allowed messages only, in order (the spy stops at 4).
    assert_eq!(
        spy_messages(spy).await,
        ["pub/ok/4 ok", "pub/ok/4 ok2", "pub/ok/5 ok", "pub/ok/5 ok2"],
        "nothing denied reached the broker"
    );
    assert!(acl_denied(&gw, "publish").await >= before + 6.0);
}

/// `policy.on_publish_deny = "disconnect"` closes the connection instead (MQTT 5: DISCONNECT
/// 0x87 first; 3.1.1 has no server DISCONNECT); the denied message is not forwarded.
///
/// Enforces the contract line above ("`policy.on_publish_deny = "disconnect"` closes the
/// connection instead"), and as the sender of that DISCONNECT [MQTT-3.14.4-1] / [MQTT-3.14.4-2]:
/// nothing after it, then the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_publish_deny_disconnect_closes_the_connection() {
    let pki = Pki::new();
    let gw = gateway(&pki, "on_publish_deny = \"disconnect\"").await;
    let before = acl_denied(&gw, "publish").await;
    let spy = broker_spy(&gw, "pub/#", 2, 10).await;
    for (version, qos) in [(ProtocolVersion::V311, 1), (ProtocolVersion::V5, 0)] {
        let v = version.level();
        let mut c = client(&gw, &pki, version, &format!("dc-{v}")).await;
        c.send(&publish(version, &format!("pub/ok/{v}"), 1, 1, &[], b"ok"))
            .await;
        assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 1);
        let denied = format!("pub/denied/{v}");
        c.send(&publish(version, &denied, qos, 2, &[], b"no")).await;
        if version.is_v5() {
            assert_eq!(c.next("DISCONNECT").await, Got::Disconnect { reason: 0x87 });
        }
        c.assert_closed().await;
        audit_of(&gw, c.local, "acl_denied", Some("publish"), Some(&denied)).await;
    }
    assert_eq!(spy_messages(spy).await, ["pub/ok/4 ok", "pub/ok/5 ok"]);
    assert!(acl_denied(&gw, "publish").await >= before + 2.0);
}

/// `$SYS` is the broker's: `#` in an allow rule does not reach it ([MQTT-4.7.2-1]), so publishing
/// or subscribing there is denied by default (no rule); `$CONTROL` is denied by an explicit rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sys_and_control_topics_are_denied() {
    let pki = Pki::new();
    let gw = gateway(&pki, "").await;
    let control_rule = rule_line(&anyone(RULES), "topics = [\"$CONTROL/#\"]");
    let before = acl_denied(&gw, "publish").await;
    let v = ProtocolVersion::V5;
    let mut c = client(&gw, &pki, v, "sys-1").await;
    c.send(&publish(v, "$SYS/test/x", 1, 1, &[], b"fake")).await;
    assert_eq!(c.next("PUBACK").await, got_ack(AckKind::Puback, 1, 0x87));
    let line = audit_of(
        &gw,
        c.local,
        "acl_denied",
        Some("publish"),
        Some("$SYS/test/x"),
    )
    .await;
    assert!(
        line.get("rule").is_none(),
        "default deny names no rule: {line}"
    );
    c.send(&publish(
        v,
        "$CONTROL/dynamic-security/v1",
        1,
        2,
        &[],
        b"{}",
    ))
    .await;
    assert_eq!(c.next("PUBACK").await, got_ack(AckKind::Puback, 2, 0x87));
    let line = audit_of(
        &gw,
        c.local,
        "acl_denied",
        Some("publish"),
        Some("$CONTROL/dynamic-security/v1"),
    )
    .await;
    assert_rule(&line, control_rule);
    // Good case: an ordinary topic.
    c.send(&publish(v, "plain/x", 1, 3, &[], b"ok")).await;
    assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 3);
    // Subscribing: the same (the allowed filter gets the broker's code, in its position).
    let sub_before = acl_denied(&gw, "subscribe").await;
    c.send(&subscribe(
        v,
        4,
        &[("$SYS/#", 0), ("plain/#", 1), ("$CONTROL/#", 0)],
    ))
    .await;
    assert_eq!(
        c.next("SUBACK").await,
        Got::Suback {
            id: 4,
            codes: vec![0x87, 1, 0x87]
        }
    );
    let line = audit_of(
        &gw,
        c.local,
        "acl_denied",
        Some("subscribe"),
        Some("$CONTROL/#"),
    )
    .await;
    assert_rule(&line, control_rule);
    audit_of(
        &gw,
        c.local,
        "acl_denied",
        Some("subscribe"),
        Some("$SYS/#"),
    )
    .await;
    assert!(acl_denied(&gw, "subscribe").await >= sub_before + 2.0);
    // (Mosquitto 2.0 itself answers a $SYS publish with 0x87 and routes $CONTROL to plugins
    // only, so the broker side shows nothing either way: the audit lines and the counter are the
    // gateway's own decisions.)
    assert!(acl_denied(&gw, "publish").await >= before + 2.0);
}

/// MQTT 5 request/response: a PUBLISH naming a Response Topic is denied when the requester may
/// not receive on that topic (it would get the answer through the broker otherwise).
///
/// The rule is ours, not the specification's (MQTT 5.0 §3.3.2.3.5 only makes the Response Topic
/// the Topic Name of the answer). Contract ("On the wire"): "Denied PUBLISH: QoS 0 dropped; QoS 1/2
/// acknowledged to the client by the gateway (MQTT 5 with reason 0x87) and never forwarded."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_topic_outside_the_receive_rights_denies_the_request() {
    let pki = Pki::new();
    let gw = gateway(&pki, "").await;
    let resp_rule = rule_line(&anyone(RULES), "topics = [\"resp/other/#\"]");
    let before = acl_denied(&gw, "publish").await;
    let spy = broker_spy(&gw, "req/#", 1, 10).await;
    let v = ProtocolVersion::V5;
    let mut c = client(&gw, &pki, v, "rq-1").await;
    c.send(&publish(
        v,
        "req/a",
        1,
        1,
        &[Property::ResponseTopic("resp/other/1")],
        b"denied",
    ))
    .await;
    assert_eq!(c.next("PUBACK").await, got_ack(AckKind::Puback, 1, 0x87));
    let line = audit_of(
        &gw,
        c.local,
        "acl_denied",
        Some("publish"),
        Some("resp/other/1"),
    )
    .await;
    assert_rule(&line, resp_rule);
    c.send(&publish(
        v,
        "req/a",
        1,
        2,
        &[Property::ResponseTopic("resp/me/1")],
        b"allowed",
    ))
    .await;
    assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 2);
    assert_eq!(spy_messages(spy).await, ["req/a allowed"]);
    assert!(acl_denied(&gw, "publish").await > before);
}

/// MQTT 5.0 §4.3.3: after a PUBREC with a reason of 0x80 or more the QoS 2 flow is over: the
/// client sends no PUBREL and may reuse the packet identifier at once. An allowed QoS 2 PUBLISH
/// with that identifier must then run its own flow with the broker (Mosquitto releases a QoS 2
/// message to subscribers on PUBREL), and a client that keeps being denied must not pile up
/// state until it is cut off.
///
/// Enforces [MQTT-4.3.3-9]: "If it has sent a PUBREC with a Reason Code of 0x80 or greater, the
/// receiver MUST treat any subsequent PUBLISH packet that contains that Packet Identifier as being a
/// new Application Message".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_id_freed_by_a_denied_qos2_publish_can_be_reused() {
    let pki = Pki::new();
    let gw = gateway(&pki, "").await;
    let reuse_spy = broker_spy(&gw, "pub/ok/reused", 1, 10).await;
    let later_spy = broker_spy(&gw, "pub/ok/later", 1, 10).await;
    let v = ProtocolVersion::V5;
    let mut c = client(&gw, &pki, v, "qos2-reuse").await;
    let allowed_qos2 = async |c: &mut TlsWire, topic: &str, id: u16| {
        c.send(&publish(v, topic, 2, id, &[], b"ok")).await;
        assert_broker_ack(&c.next("PUBREC").await, AckKind::Pubrec, id);
        c.send(&ack(v, AckKind::Pubrel, id)).await;
        assert_broker_ack(&c.next("PUBCOMP").await, AckKind::Pubcomp, id);
    };
    // Denied, no PUBREL; identifier 7 at once again, allowed: the broker's PUBREC, the PUBREL
    // to the broker, its PUBCOMP, and the message is delivered.
    c.send(&publish(v, "pub/denied/x", 2, 7, &[], b"no")).await;
    assert_eq!(c.next("PUBREC").await, got_ack(AckKind::Pubrec, 7, 0x87));
    allowed_qos2(&mut c, "pub/ok/reused", 7).await;
    assert_eq!(spy_messages(reuse_spy).await, ["pub/ok/reused ok"]);
    // More denied QoS 2 flows than the gateway keeps state for (1024), without PUBREL: the
    // client is not cut off, and the latest identifier can be reused as well.
    for id in 100..1200u16 {
        c.send(&publish(v, "pub/denied/x", 2, id, &[], b"no")).await;
        assert_eq!(c.next("PUBREC").await, got_ack(AckKind::Pubrec, id, 0x87));
    }
    allowed_qos2(&mut c, "pub/ok/later", 1199).await;
    c.ping().await;
    assert_eq!(spy_messages(later_spy).await, ["pub/ok/later ok"]);
}

/// Field finding (issue 20, item 5): one denied 5-byte PUBLISH wrote a 336-byte audit line, so a
/// client could make the gateway write tens of GB a day. A session's denials now have a budget:
/// the first ten of a minute are written in full, the rest counted by action in one
/// `acl_denied_summary` line (here at the session's end). Every denial is still counted in
/// `acl_denied_total`. A client with few denials beside it keeps every line and gets no summary.
///
/// Not a wire rule. Contract ("Metrics"): `mqtt_gateway_acl_denied_total` (every denial counted);
/// contract ("Audit log"): "Every security decision that refuses something (... ACL deny ...) is
/// one JSON line", here bounded per session (DESIGN §3, Resources: "every buffer, map and queue
/// keyed by peers has a cap").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denials_beyond_a_sessions_budget_become_one_summary_line() {
    let pki = Pki::new();
    let gw = gateway(&pki, "").await;
    let version = ProtocolVersion::V5;
    let before = acl_denied(&gw, "publish").await;
    let mut quiet = client(&gw, &pki, version, "quiet").await;
    for i in 0..3 {
        quiet
            .send(&publish(
                version,
                &format!("pub/denied/q{i}"),
                0,
                0,
                &[],
                b"x",
            ))
            .await;
    }
    quiet.ping().await;
    quiet.disconnect().await;
    let mut noisy = client(&gw, &pki, version, "noisy").await;
    for i in 0..50 {
        noisy
            .send(&publish(
                version,
                &format!("pub/denied/n{i}"),
                0,
                0,
                &[],
                b"x",
            ))
            .await;
    }
    noisy
        .send(&subscribe(version, 7, &[("$CONTROL/x", 0)]))
        .await;
    assert_eq!(
        noisy.next("SUBACK").await,
        Got::Suback {
            id: 7,
            codes: vec![0x87]
        }
    );
    noisy.ping().await;
    noisy.disconnect().await;

    let summary = gw
        .audit_line(|v| v["event"] == "acl_denied_summary" && v["client_id"] == "noisy")
        .await
        .expect("the noisy session's summary line");
    assert_eq!(summary["reason"], "budget", "{summary}");
    assert_eq!(summary["listener"], "mqtts", "{summary}");
    assert_eq!(summary["principal"], "noisy", "{summary}");
    assert!(summary["cert_serial"].is_string(), "{summary}");
    assert!(summary["since"].is_string(), "{summary}");
    assert_eq!(
        summary["suppressed"],
        serde_json::json!({"publish": 40, "subscribe": 1}),
        "{summary}"
    );
    let lines = gw.audit().await;
    let denied = |id: &str| {
        lines
            .iter()
            .filter(|v| v["event"] == "acl_denied" && v["client_id"] == id)
            .count()
    };
    assert_eq!(denied("noisy"), 10, "the first ten in full");
    assert_eq!(denied("quiet"), 3, "a quiet client keeps every line");
    assert!(
        !lines
            .iter()
            .any(|v| v["event"] == "acl_denied_summary" && v["client_id"] == "quiet"),
        "nothing suppressed, no summary"
    );
    assert!(acl_denied(&gw, "publish").await >= before + 53.0);
}

/// Issue 20, item 11: U+2028/U+2029 and the bidi controls (U+202A..U+202E, U+2066..U+2069) are
/// refused in MQTT strings like the control characters (MQTT 5.0 §1.5.4 lets a receiver treat
/// the code points it lists as malformed; these are ours to add): a PUBLISH whose topic holds one is malformed (MQTT 5: DISCONNECT 0x81, then close;
/// 3.1.1: close), is never forwarded, and no audit line carries the character raw. Before, the
/// topic passed the string check and a denied one was written raw into the `acl_denied` line.
/// Beside it, a topic in right-to-left script (no controls) is forwarded.
/// Enforces [MQTT-4.13.1-1] and the contract ("On the wire"): "any malformed packet, in either
/// direction, closes the connection (MQTT 5: DISCONNECT with reason 0x81 first)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separators_and_bidi_controls_in_a_topic_are_malformed() {
    let pki = Pki::new();
    let gw = gateway(&pki, "").await;
    let spy = broker_spy(&gw, "pub/#", 2, 10).await;
    for version in VERSIONS {
        let v = version.level();
        let mut c = client(&gw, &pki, version, &format!("bidi-{v}")).await;
        let good = format!("pub/ok/\u{5e9}\u{5dc}\u{5d5}\u{5dd}/{v}");
        c.send(&publish(version, &good, 1, 1, &[], b"rtl")).await;
        assert_broker_ack(&c.next("PUBACK").await, AckKind::Puback, 1);
        for (i, bad) in [
            "pub/denied/\u{202e}gpj.exe",
            "pub/ok/a\u{2028}b",
            "pub/ok/\u{2066}x",
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                c = client(&gw, &pki, version, &format!("bidi-{v}-{i}")).await;
            }
            c.send(&publish(version, bad, 1, 2, &[], b"bad")).await;
            if version.is_v5() {
                assert!(
                    matches!(
                        c.next("DISCONNECT").await,
                        Got::Disconnect { reason: 0x81, .. }
                    ),
                    "{bad:?}"
                );
            }
            c.assert_closed().await;
            audit_of(&gw, c.local, "malformed", None, None).await;
        }
    }
    let got = spy_messages(spy).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|m| m.ends_with(" rtl")), "{got:?}");
    let text = std::fs::read_to_string(&gw.audit_path).unwrap();
    assert!(
        !text.contains(['\u{202e}', '\u{2028}', '\u{2066}']),
        "{text}"
    );
}
