//! Denied SUBSCRIBE filters on the wire (issue 4): each filter of one SUBSCRIBE is judged by
//! containment; denied ones get 0x80 (3.1.1) / 0x87 (MQTT 5) in their position of the SUBACK and
//! are not subscribed at the broker, the allowed ones get the broker's own code; a SUBSCRIBE with
//! nothing allowed is answered by the gateway; `$share/<group>/<filter>` is judged by `<filter>`;
//! `#` does not reach `$SYS`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;

use mqtt_inspect::ProtocolVersion;
use support::wire::{Got, TlsWire, VERSIONS, connect, per_version, subscribe};
use support::{Flaw, Pki, TestGateway, client_tls};
use support::{acl_denied, assert_rule, audit_of, broker_pub, enforcement_setup, rule_line};

/// `narrow-*` may subscribe to `a/+` and its own tree (and receive anything it is subscribed to);
/// `wide` may subscribe to `#`. `narrow-*` may not subscribe to what overlaps `b/secret`.
const POLICY: &str = r##"
version = 1
[[connect]]
who = { any = true }
client_ids = ["*"]
[[rule]]
who = { principals = ["narrow-*"] }
allow = ["subscribe"]
topics = ["a/+", "own/%u/#"]
[[rule]]
who = { principals = ["narrow-*"] }
allow = ["receive"]
topics = ["#"]
[[rule]]
who = { principals = ["wide"] }
allow = ["subscribe", "receive"]
topics = ["#"]
[[rule]]
who = { principals = ["narrow-*"] }
deny = ["subscribe"]
topics = ["b/secret"]
"##;

async fn gateway(pki: &Pki) -> TestGateway {
    let mut setup = enforcement_setup(pki);
    setup.policy = POLICY.to_owned();
    setup.start().await
}

async fn client(
    gw: &TestGateway,
    pki: &Pki,
    version: ProtocolVersion,
    cn: &str,
    id: &str,
) -> TlsWire {
    let cert = pki.client(cn, None, Flaw::None);
    let tls = client_tls(pki, Some(&cert), &[&rustls::version::TLS13]);
    let mut c = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), version).await;
    assert_eq!(c.connect(&connect(version, id, None, None)).await, 0);
    c
}

/// Contract, "On the wire": "Denied SUBSCRIBE filter: that filter alone gets 0x80 (3.1.1) / 0x87
/// (MQTT 5) in the SUBACK, in its position; the allowed filters of the same SUBSCRIBE are
/// subscribed normally."
///
/// Enforces [MQTT-3.8.4-6] (one Reason Code per Topic Filter), [MQTT-3.9.3-1] (in the order of
/// the filters) and [MQTT-3.9.3-2] (each one a Subscribe Reason Code of the client's version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_and_denied_filters_of_one_subscribe_are_answered_in_position() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let secret_rule = rule_line(POLICY, "topics = [\"b/secret\"]");
    let before = acl_denied(&gw, "subscribe").await;
    for version in VERSIONS {
        let v = version.level();
        let denied = per_version(version, 0x80, 0x87);
        let mut c = client(&gw, &pki, version, "narrow-1", &format!("mix-{v}")).await;
        c.send(&subscribe(
            version,
            7,
            &[("a/1", 1), ("b/x", 0), ("a/2", 2), ("b/secret", 1)],
        ))
        .await;
        // The broker granted what was asked (QoS 1 and 2) for the allowed filters.
        assert_eq!(
            c.next("SUBACK").await,
            Got::Suback {
                id: 7,
                codes: vec![1, denied, 2, denied]
            }
        );
        let line = audit_of(&gw, c.local, "acl_denied", Some("subscribe"), Some("b/x")).await;
        assert_eq!(line["reason"], "subscribe", "{line}");
        assert!(line.get("rule").is_none(), "default deny: {line}");
        let line = audit_of(
            &gw,
            c.local,
            "acl_denied",
            Some("subscribe"),
            Some("b/secret"),
        )
        .await;
        assert_rule(&line, secret_rule);
        // Only the allowed filters were subscribed at the broker: a message on b/x (which this
        // client may receive) does not come, the marker on a/1 does.
        broker_pub(&gw, &["-q", "1", "-t", "b/x", "-m", "leak"]).await;
        broker_pub(&gw, &["-q", "1", "-t", "a/1", "-m", "marker"]).await;
        assert_eq!(
            c.publishes_until("a/1").await,
            [("a/1".to_owned(), b"marker".to_vec())]
        );

        // Nothing allowed: the gateway answers itself, same packet identifier.
        let mut c = client(&gw, &pki, version, "narrow-1", &format!("none-{v}")).await;
        c.send(&subscribe(version, 8, &[("b/x", 0), ("c/#", 1)]))
            .await;
        assert_eq!(
            c.next("SUBACK").await,
            Got::Suback {
                id: 8,
                codes: vec![denied, denied]
            }
        );
        c.ping().await;
        broker_pub(&gw, &["-q", "1", "-t", "c/1", "-m", "leak"]).await;
        c.ping().await;

        // Containment: a/+ allowed does not allow a/#.
        let mut c = client(&gw, &pki, version, "narrow-1", &format!("cont-{v}")).await;
        c.send(&subscribe(
            version,
            9,
            &[("a/+", 0), ("a/#", 0), ("own/narrow-1/#", 0)],
        ))
        .await;
        assert_eq!(
            c.next("SUBACK").await,
            Got::Suback {
                id: 9,
                codes: vec![0, denied, 0]
            }
        );
        audit_of(&gw, c.local, "acl_denied", Some("subscribe"), Some("a/#")).await;
        broker_pub(&gw, &["-q", "1", "-t", "a/b/c", "-m", "deep"]).await;
        broker_pub(&gw, &["-q", "1", "-t", "a/b", "-m", "marker"]).await;
        assert_eq!(
            c.publishes_until("a/b").await,
            [("a/b".to_owned(), b"marker".to_vec())],
            "a/b/c would only match the denied a/#"
        );
    }
    assert!(acl_denied(&gw, "subscribe").await >= before + 10.0);
}

/// Policy contract: "`$share/<group>/<filter>` is judged by `<filter>`" (Mosquitto takes shared
/// subscriptions from 3.1.1 clients too).
///
/// [MQTT-4.8.2-1] defines the `$share/<ShareName>/<filter>` form taken apart here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscriptions_are_judged_by_their_filter() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let before = acl_denied(&gw, "subscribe").await;
    for v in VERSIONS {
        let denied = per_version(v, 0x80, 0x87);
        let mut c = client(&gw, &pki, v, "narrow-2", &format!("share-{}", v.level())).await;
        c.send(&subscribe(
            v,
            3,
            &[
                ("$share/g1/a/x", 1),
                ("$share/g1/b/x", 1),
                ("$share/g1/own/narrow-2/#", 1),
                ("$share/g1/own/narrow-3/#", 1),
                ("$share/g1/#", 1),
            ],
        ))
        .await;
        assert_eq!(
            c.next("SUBACK").await,
            Got::Suback {
                id: 3,
                codes: vec![1, denied, 1, denied, denied]
            }
        );
        for denied in ["$share/g1/b/x", "$share/g1/own/narrow-3/#", "$share/g1/#"] {
            audit_of(&gw, c.local, "acl_denied", Some("subscribe"), Some(denied)).await;
        }
        // The allowed shared subscription works through the gateway; the denied one does not exist.
        broker_pub(&gw, &["-q", "1", "-t", "own/narrow-3/x", "-m", "leak"]).await;
        broker_pub(&gw, &["-q", "1", "-t", "a/x", "-m", "shared"]).await;
        assert_eq!(
            c.publishes_until("a/x").await,
            [("a/x".to_owned(), b"shared".to_vec())]
        );
        c.disconnect().await;
    }
    assert!(acl_denied(&gw, "subscribe").await >= before + 6.0);
}

/// Issue 20, item 10: `$share/g1/$share/g2/a/x` is group `g1`'s shared subscription to the filter
/// `$share/g2/a/x` ([MQTT-4.8.2-1], [MQTT-4.8.2-2]; Mosquitto grants it so), and is judged as that
/// filter: the `$share/` prefix is taken off once, not twice (which judged it as `a/x`, allowed).
/// `$share/g2/a/x` starts with `$`, so neither `a/+` nor `#` allows it ([MQTT-4.7.2-1]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_prefix_is_taken_off_once() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let before = acl_denied(&gw, "subscribe").await;
    for v in VERSIONS {
        let denied = per_version(v, 0x80, 0x87);
        for cn in ["narrow-2", "wide"] {
            let mut c = client(&gw, &pki, v, cn, &format!("twice-{cn}-{}", v.level())).await;
            c.send(&subscribe(
                v,
                4,
                &[("$share/g1/a/x", 1), ("$share/g1/$share/g2/a/x", 1)],
            ))
            .await;
            assert_eq!(
                c.next("SUBACK").await,
                Got::Suback {
                    id: 4,
                    codes: vec![1, denied]
                },
                "{cn}"
            );
            audit_of(
                &gw,
                c.local,
                "acl_denied",
                Some("subscribe"),
                Some("$share/g1/$share/g2/a/x"),
            )
            .await;
            c.ping().await;
            c.disconnect().await;
        }
    }
    assert!(acl_denied(&gw, "subscribe").await >= before + 4.0);
}

/// `#` does not match topics that start with `$` ([MQTT-4.7.2-1]), in the policy as in the
/// broker: a rule allowing `#` does not allow `$SYS/#` (nor any filter that reaches `$SYS`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_does_not_reach_sys() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    for version in VERSIONS {
        let v = version.level();
        let denied = per_version(version, 0x80, 0x87);
        let mut c = client(&gw, &pki, version, "wide", &format!("wide-{v}")).await;
        c.send(&subscribe(
            version,
            4,
            &[
                ("#", 0),
                ("$SYS/#", 0),
                ("$SYS/broker/version", 0),
                ("+/broker/version", 0),
                ("$SYS/broker/+", 0),
            ],
        ))
        .await;
        assert_eq!(
            c.next("SUBACK").await,
            Got::Suback {
                id: 4,
                codes: vec![0, denied, denied, 0, denied]
            }
        );
        let line = audit_of(
            &gw,
            c.local,
            "acl_denied",
            Some("subscribe"),
            Some("$SYS/#"),
        )
        .await;
        assert!(line.get("rule").is_none(), "no rule reaches $SYS: {line}");
        // Had $SYS/# been subscribed, Mosquitto's retained $SYS messages would come first.
        broker_pub(&gw, &["-q", "1", "-t", "z/1", "-m", "marker"]).await;
        assert_eq!(
            c.publishes_until("z/1").await,
            [("z/1".to_owned(), b"marker".to_vec())]
        );
    }
}
