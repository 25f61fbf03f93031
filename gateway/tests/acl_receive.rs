//! The receive decision on the wire (issue 4): every PUBLISH the broker delivers is judged,
//! retained ones too; a denied one is not delivered and, at QoS 1/2, acknowledged to the broker by
//! the gateway (so the broker's inflight window never fills with messages the client will never
//! see); a subscription restored from a persistent session is judged by the policy of the day.
//!
//! The policy allows subscribing to `a/#` but denies receiving `a/secret`: the broker delivers
//! `a/secret`, the gateway must not.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;

use mqtt_gateway::server::load_snapshot;
use mqtt_inspect::{Property, ProtocolVersion};
use support::wire::{ConnectSpec, Got, TlsWire, VERSIONS, connect, subscribe};
use support::{Flaw, Pki, Rule, TestGateway, anyone, client_tls};
use support::{acl_denied, assert_rule, audit_of, broker_pub, enforcement_setup, rule_line};

const RULES: &[Rule<'_>] = &[
    ("allow", &["subscribe", "receive"], &["a/#", "p/#"]),
    ("deny", &["receive"], &["a/secret"]),
];

async fn gateway(pki: &Pki) -> TestGateway {
    let mut setup = enforcement_setup(pki);
    setup.policy = anyone(RULES);
    setup.start().await
}

fn tls(pki: &Pki, cn: &str) -> Arc<rustls::ClientConfig> {
    let cert = pki.client(cn, None, Flaw::None);
    client_tls(pki, Some(&cert), &[&rustls::version::TLS13])
}

/// Policy contract: "receive - each PUBLISH the broker delivers to the client (retained ones
/// too); a denied one is not delivered".
///
/// DESIGN §3 ("The judged topic is the delivered topic"): "retained deliveries are judged as
/// receive".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_message_the_client_may_not_receive_is_not_delivered() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let deny_rule = rule_line(&anyone(RULES), "topics = [\"a/secret\"]");
    let before = acl_denied(&gw, "receive").await;
    broker_pub(&gw, &["-r", "-q", "1", "-t", "a/secret", "-m", "s"]).await;
    broker_pub(&gw, &["-r", "-q", "1", "-t", "a/public", "-m", "p"]).await;
    let tls = tls(&pki, "reader");
    for version in VERSIONS {
        let mut c = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), version).await;
        let id = format!("ret-{}", version.level());
        assert_eq!(c.connect(&connect(version, &id, None, None)).await, 0);
        c.send(&subscribe(version, 1, &[("a/#", 1)])).await;
        assert_eq!(
            c.next("SUBACK").await,
            Got::Suback {
                id: 1,
                codes: vec![1]
            }
        );
        // Retained messages come right after the SUBACK; then a live marker.
        broker_pub(&gw, &["-q", "1", "-t", "a/zz", "-m", "marker"]).await;
        assert_eq!(
            c.publishes_until("a/zz").await,
            [
                ("a/public".to_owned(), b"p".to_vec()),
                ("a/zz".to_owned(), b"marker".to_vec())
            ]
        );
        let line = audit_of(
            &gw,
            c.local,
            "acl_denied",
            Some("receive"),
            Some("a/secret"),
        )
        .await;
        assert_eq!(line["reason"], "receive", "{line}");
        assert_eq!(line["principal"], "reader", "{line}");
        assert_rule(&line, deny_rule);
    }
    assert!(acl_denied(&gw, "receive").await >= before + 2.0);
}

/// Policy contract: denied receives at QoS 1/2 are "acknowledged to the broker by the gateway".
/// Mosquitto sends at most `max_inflight_messages` (20) unacknowledged QoS 1/2 messages to a
/// client; 30 denied ones that the client never sees must not block the allowed one behind them.
/// (Checked against this broker directly: a client that does not acknowledge gets 20 of them and
/// never the allowed one, in 3.1.1 and in 5.)
///
/// Toward the broker the gateway is the receiver: [MQTT-4.3.2-4] (PUBACK for a QoS 1 delivery) and
/// [MQTT-4.3.3-8] (PUBREC for a QoS 2 one); [MQTT-3.3.4-9]: the broker sends no more than Receive
/// Maximum unacknowledged QoS 1/2 PUBLISH packets, so an unanswered denial would hold the window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_qos1_and_qos2_deliveries_are_acknowledged_so_the_inflight_window_never_fills() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let before = acl_denied(&gw, "receive").await;
    let tls = tls(&pki, "window");
    for version in VERSIONS {
        for qos in [1u8, 2] {
            let mut c = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), version).await;
            let id = format!("win-{}-{qos}", version.level());
            assert_eq!(c.connect(&connect(version, &id, None, None)).await, 0);
            c.send(&subscribe(version, 1, &[("a/#", qos)])).await;
            assert_eq!(
                c.next("SUBACK").await,
                Got::Suback {
                    id: 1,
                    codes: vec![qos]
                }
            );
            // QoS 2: the gateway answers PUBREC, and the broker's PUBREL with PUBCOMP.
            let q = qos.to_string();
            broker_pub(
                &gw,
                &["-q", &q, "-t", "a/secret", "-m", "x", "--repeat", "30"],
            )
            .await;
            broker_pub(&gw, &["-q", &q, "-t", "a/ok", "-m", "after"]).await;
            assert_eq!(
                c.publishes_until("a/ok").await,
                [("a/ok".to_owned(), b"after".to_vec())],
                "{version:?} QoS {qos}"
            );
            c.ping().await;
        }
    }
    assert!(acl_denied(&gw, "receive").await >= before + 120.0);
}

/// A subscription made under an older policy and restored from a persistent session (MQTT 5
/// Session Expiry Interval, 3.1.1 Clean Session 0) is judged by the current policy: the first
/// delivery after the new policy is published already uses it. So is a subscription of a
/// connection that stays up across the change.
///
/// DESIGN §3: "Revocation reaches live sessions. A new CRL, password file or policy generation is
/// checked against every live connection".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_subscription_is_judged_by_the_new_policy() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let tls = tls(&pki, "keeper");
    let spec = |id: &'static str| ConnectSpec {
        client_id: id,
        resume: true,
        properties: vec![Property::SessionExpiryInterval(300)],
        ..ConnectSpec::default()
    };
    let frame = |version: ProtocolVersion, id: &'static str| {
        let mut s = spec(id);
        if !version.is_v5() {
            s.properties.clear();
        }
        s.encode(version)
    };
    let ids = ["keep-4", "keep-5"];
    // Under the first policy: subscribe p/#, and p/secret is delivered.
    for (version, id) in VERSIONS.into_iter().zip(ids) {
        let mut c = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), version).await;
        assert_eq!(c.connect(&frame(version, id)).await, 0);
        c.send(&subscribe(version, 1, &[("p/#", 1)])).await;
        assert_eq!(
            c.next("SUBACK").await,
            Got::Suback {
                id: 1,
                codes: vec![1]
            }
        );
        broker_pub(&gw, &["-q", "1", "-t", "p/secret", "-m", "old"]).await;
        assert_eq!(
            c.publishes_until("p/secret").await,
            [("p/secret".to_owned(), b"old".to_vec())],
            "allowed by the first policy"
        );
        c.disconnect().await;
        c.assert_closed().await;
    }

    // A connection that stays up across the change.
    let mut live = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), ProtocolVersion::V5).await;
    let v5 = ProtocolVersion::V5;
    assert_eq!(live.connect(&connect(v5, "live-5", None, None)).await, 0);
    live.send(&subscribe(v5, 1, &[("p/#", 1)])).await;
    assert_eq!(
        live.next("SUBACK").await,
        Got::Suback {
            id: 1,
            codes: vec![1]
        }
    );

    // A new policy that denies receiving p/secret (reload plumbing comes later: publish the
    // snapshot directly).
    let new_policy = anyone(&[RULES, &[("deny", &["receive"], &["p/secret"])]].concat());
    let new_rule = rule_line(&new_policy, "topics = [\"p/secret\"]");
    std::fs::write(gw.dir.path().join("policy.toml"), &new_policy).unwrap();
    let snap = gw.running.gateway.current();
    gw.running
        .gateway
        .store(load_snapshot(Arc::clone(&snap.config), snap.generation + 1).unwrap());
    let before = acl_denied(&gw, "receive").await;

    // Queued for the offline sessions while nobody is connected.
    broker_pub(&gw, &["-q", "1", "-t", "p/secret", "-m", "queued"]).await;
    broker_pub(&gw, &["-q", "1", "-t", "p/open", "-m", "queued"]).await;
    assert_eq!(
        live.publishes_until("p/open").await,
        [("p/open".to_owned(), b"queued".to_vec())],
        "the live subscription is judged by the new policy"
    );
    audit_of(
        &gw,
        live.local,
        "acl_denied",
        Some("receive"),
        Some("p/secret"),
    )
    .await;
    for (version, id) in VERSIONS.into_iter().zip(ids) {
        let mut c = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), version).await;
        let connack = c.connect_full(&frame(version, id)).await;
        assert!(
            matches!(
                connack,
                Got::Connack {
                    code: 0,
                    session_present: true,
                    ..
                }
            ),
            "the session was restored: {connack:?}"
        );
        assert_eq!(
            c.publishes_until("p/open").await,
            [("p/open".to_owned(), b"queued".to_vec())],
            "p/secret is judged by the new policy"
        );
        let line = audit_of(
            &gw,
            c.local,
            "acl_denied",
            Some("receive"),
            Some("p/secret"),
        )
        .await;
        assert_rule(&line, new_rule);
        c.disconnect().await;
    }
    assert!(acl_denied(&gw, "receive").await >= before + 3.0);
}
