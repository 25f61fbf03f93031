//! A policy reload under steady QoS 1 traffic from many clients (issue 7): a grant takes effect
//! without reconnecting anyone and without losing a single allowed message; a revocation stops
//! the topic's deliveries from the next packet, for publishers and for receivers alike.
//!
//! Eight MQTT 5 publishers over mTLS publish QoS 1, round after round, one message to
//! `steady/<id>` (always allowed) and one to `new/<id>` (allowed only while the grant is in
//! force); two subscribers (MQTT 5 and 3.1.1) receive `steady/#` and `new/#` through the gateway.
//! The policy file is replaced twice by the gateway's own watcher while this runs. Afterwards
//! each subscriber must hold exactly, in order, every message the broker acknowledged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use mqtt_inspect::{AckKind, ProtocolVersion};
use support::wire::{Got, TlsWire, ack, connect, publish, subscribe};
use support::{Flaw, Pki, Rule, TestGateway, anyone, client_tls};
use support::{broker_pub, enforcement_setup};

const PUBLISHERS: usize = 8;
/// Rounds every publisher completes in each phase before the test moves on.
const ROUNDS_PER_PHASE: u32 = 15;
/// How long a phase may take before the test declares the reload never took effect.
const PHASE_LIMIT: Duration = Duration::from_secs(20);

/// Publish and receive on `steady/#`; subscribe to `steady/#` and `new/#`.
const STEADY: &[Rule<'_>] = &[
    ("allow", &["publish", "receive"], &["steady/#"]),
    ("allow", &["subscribe"], &["steady/#", "new/#"]),
];

/// What the reload grants: publish and receive on `new/#`.
const GRANT: Rule<'_> = ("allow", &["publish", "receive"], &["new/#"]);

fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// What one publisher saw, shared with the test while it runs.
#[derive(Default)]
struct Progress {
    rounds: AtomicU32,
    /// `new/<id>` publishes the broker acknowledged.
    accepted: AtomicU32,
    /// `new/<id>` publishes refused (PUBACK 0x87) after at least one was accepted.
    refused_after_grant: AtomicU32,
}

/// The outcome of each `new/<id>` publish, by sequence number: acknowledged by the broker or not.
type NewOutcomes = Vec<(u32, bool)>;

async fn tls_client(gw: &TestGateway, pki: &Pki, cn: &str, version: ProtocolVersion) -> TlsWire {
    let cert = pki.client(cn, None, Flaw::None);
    let mut w = TlsWire::tls(
        gw.tls_addr(),
        client_tls(pki, Some(&cert), &[&rustls::version::TLS13]),
        version,
    )
    .await;
    assert_eq!(w.connect(&connect(version, cn, None, None)).await, 0);
    w
}

/// Publishes one QoS 1 message; returns the PUBACK reason code. Any other answer fails the test
/// (in particular a DISCONNECT: nobody may be disconnected by a policy reload).
async fn publish_qos1(w: &mut TlsWire, topic: &str, id: u16, payload: &str) -> u8 {
    w.send(&publish(w.version, topic, 1, id, &[], payload.as_bytes()))
        .await;
    match w.next("PUBACK").await {
        Got::Ack {
            kind: AckKind::Puback,
            id: got,
            reason,
        } if got == id => reason,
        other => panic!("{topic} #{id}: expected PUBACK, got {other:?}"),
    }
}

async fn publisher(
    mut w: TlsWire,
    n: usize,
    progress: Arc<Progress>,
    stop: Arc<AtomicBool>,
) -> (u32, NewOutcomes) {
    let mut steady_sent = 0;
    let mut new_outcomes = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    let mut seq = 0u32;
    while !stop.load(Ordering::Acquire) {
        tick.tick().await;
        let id = u16::try_from(seq % 30_000 * 2 + 1).unwrap();
        let steady = publish_qos1(&mut w, &format!("steady/{n}"), id, &seq.to_string()).await;
        assert!(
            matches!(steady, 0x00 | 0x10),
            "steady/{n} #{seq} refused: {steady:#x}"
        );
        steady_sent += 1;
        let reason = publish_qos1(&mut w, &format!("new/{n}"), id + 1, &seq.to_string()).await;
        let accepted = match reason {
            0x00 | 0x10 => true,
            0x87 => false,
            other => panic!("new/{n} #{seq}: unexpected PUBACK reason {other:#x}"),
        };
        new_outcomes.push((seq, accepted));
        if accepted {
            progress.accepted.fetch_add(1, Ordering::AcqRel);
        } else if progress.accepted.load(Ordering::Acquire) > 0 {
            progress.refused_after_grant.fetch_add(1, Ordering::AcqRel);
        }
        progress.rounds.fetch_add(1, Ordering::AcqRel);
        seq += 1;
    }
    // The end marker, then proof the connection is still the same live session.
    assert!(matches!(
        publish_qos1(&mut w, &format!("steady/{n}"), 60_001, "end").await,
        0x00 | 0x10
    ));
    w.ping().await;
    (steady_sent, new_outcomes)
}

/// Receives until every publisher's end marker arrived; returns the payloads by topic, in
/// arrival order.
async fn subscriber(
    mut w: TlsWire,
    delivered: Arc<Vec<AtomicU32>>,
) -> BTreeMap<String, Vec<String>> {
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut ended = 0;
    while ended < PUBLISHERS {
        match w.next("a delivery").await {
            Got::Publish {
                topic,
                qos,
                id,
                payload,
                ..
            } => {
                if let (1, Some(id)) = (qos, id) {
                    w.send(&ack(w.version, AckKind::Puback, id)).await;
                }
                let payload = String::from_utf8(payload).unwrap();
                if topic.starts_with("steady/") && payload == "end" {
                    ended += 1;
                } else {
                    if let Some(count) = topic
                        .strip_prefix("new/")
                        .and_then(|n| n.parse::<usize>().ok())
                        .and_then(|n| delivered.get(n))
                    {
                        count.fetch_add(1, Ordering::AcqRel);
                    }
                    got.entry(topic).or_default().push(payload);
                }
            }
            other => panic!("subscriber: expected PUBLISH, got {other:?}"),
        }
    }
    w.ping().await;
    got
}

/// Waits until `done` holds for every publisher.
async fn until_all(progress: &[Arc<Progress>], what: &str, done: impl Fn(&Progress) -> bool) {
    let deadline = tokio::time::Instant::now() + PHASE_LIMIT;
    while !progress.iter().all(|p| done(p)) {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// DESIGN §4: "live sessions wake on it and re-check" a new policy; [MQTT-4.3.2-4]: every allowed
/// QoS 1 message is acknowledged and delivered across the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_grant_and_revocation_under_steady_qos1_traffic_lose_nothing_allowed() {
    let pki = Pki::new();
    let mut setup = enforcement_setup(&pki);
    setup.policy = anyone(STEADY);
    let gw = setup.start().await;
    let _reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);
    let policy_path = gw.dir.path().join("policy.toml");

    let mut subscribers = Vec::new();
    let mut delivered = Vec::new();
    for (i, version) in [ProtocolVersion::V5, ProtocolVersion::V311]
        .into_iter()
        .enumerate()
    {
        let mut w = tls_client(&gw, &pki, &format!("watcher-{i}"), version).await;
        w.send(&subscribe(version, 1, &[("steady/#", 1), ("new/#", 1)]))
            .await;
        assert_eq!(
            w.next("SUBACK").await,
            Got::Suback {
                id: 1,
                codes: vec![1, 1]
            }
        );
        let counts: Arc<Vec<AtomicU32>> =
            Arc::new((0..PUBLISHERS).map(|_| AtomicU32::new(0)).collect());
        delivered.push(Arc::clone(&counts));
        subscribers.push(tokio::spawn(subscriber(w, counts)));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let progress: Vec<Arc<Progress>> = (0..PUBLISHERS).map(|_| Arc::default()).collect();
    let mut publishers = Vec::new();
    for (n, p) in progress.iter().enumerate() {
        let w = tls_client(&gw, &pki, &format!("device-{n}"), ProtocolVersion::V5).await;
        publishers.push(tokio::spawn(publisher(
            w,
            n,
            Arc::clone(p),
            Arc::clone(&stop),
        )));
    }

    // Phase 1: `new/#` is not granted; traffic flows on `steady/#`.
    until_all(&progress, "publishers never got going", |p| {
        p.rounds.load(Ordering::Acquire) >= ROUNDS_PER_PHASE
    })
    .await;
    assert!(
        progress
            .iter()
            .all(|p| p.accepted.load(Ordering::Acquire) == 0)
    );

    // Phase 2: the grant, written while every publisher is mid-stream.
    replace(&policy_path, &anyone(&[STEADY, &[GRANT]].concat()));
    until_all(
        &progress,
        "the grant never took effect on a live connection",
        |p| p.accepted.load(Ordering::Acquire) >= ROUNDS_PER_PHASE,
    )
    .await;
    // ... and the receivers got the granted messages of every publisher.
    let deadline = tokio::time::Instant::now() + PHASE_LIMIT;
    while !delivered
        .iter()
        .flat_map(|counts| counts.iter())
        .all(|c| c.load(Ordering::Acquire) >= ROUNDS_PER_PHASE)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the grant never reached the receivers"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A message the broker itself delivers on the granted topic reaches the receivers.
    broker_pub(&gw, &["-q", "1", "-t", "new/direct", "-m", "granted"]).await;

    // Phase 3: the revocation.
    replace(&policy_path, &anyone(STEADY));
    until_all(
        &progress,
        "the revocation never took effect on a live connection",
        |p| p.refused_after_grant.load(Ordering::Acquire) >= ROUNDS_PER_PHASE,
    )
    .await;
    // Delivered by the broker after the revocation: must not reach the receivers.
    broker_pub(&gw, &["-q", "1", "-t", "new/direct", "-m", "revoked"]).await;
    stop.store(true, Ordering::Release);

    let mut outcomes = Vec::new();
    for p in publishers {
        outcomes.push(p.await.unwrap());
    }
    let mut received = Vec::new();
    for sub in subscribers {
        received.push(sub.await.unwrap());
    }
    let audit = gw.audit().await;
    for (i, got) in received.iter().enumerate() {
        for (n, (steady_sent, new_outcomes)) in outcomes.iter().enumerate() {
            // Every steady message, in order, exactly once: nothing lost over two reloads.
            let expected: Vec<String> = (0..*steady_sent).map(|s| s.to_string()).collect();
            assert_eq!(
                got.get(&format!("steady/{n}")).cloned().unwrap_or_default(),
                expected,
                "subscriber {i}: steady/{n}"
            );
            // On new/<n>: the publishes the broker acknowledged, in order, with no gap. A
            // message acknowledged just before the revocation may reach the gateway's delivery
            // check just after it; it is then refused at delivery ("stops its deliveries from the
            // next packet"), and audited. Nothing goes missing without a policy decision.
            let accepted: Vec<String> = new_outcomes
                .iter()
                .filter(|(_, ok)| *ok)
                .map(|(s, _)| s.to_string())
                .collect();
            let received = got.get(&format!("new/{n}")).cloned().unwrap_or_default();
            assert!(
                accepted.starts_with(&received)
                    && received.len() >= usize::try_from(ROUNDS_PER_PHASE).unwrap(),
                "subscriber {i}: new/{n}: received {received:?} of {accepted:?}"
            );
            let refused_at_delivery = audit
                .iter()
                .filter(|v| {
                    v["event"] == "acl_denied"
                        && v["action"] == "receive"
                        && v["client_id"] == format!("watcher-{i}").as_str()
                        && v["topic"] == format!("new/{n}").as_str()
                })
                .count();
            assert_eq!(
                received.len() + refused_at_delivery,
                accepted.len(),
                "subscriber {i}: new/{n}: every acknowledged message delivered or refused by policy"
            );
            // Refused, then accepted, then refused: once the revocation is seen it holds from
            // the next packet on, with no accepted straggler after it.
            let pattern: Vec<bool> = new_outcomes.iter().map(|(_, ok)| *ok).collect();
            let switches = pattern.windows(2).filter(|w| w[0] != w[1]).count();
            assert!(!pattern[0] && switches == 2, "publisher {n}: {pattern:?}");
        }
        assert_eq!(
            got.get("new/direct").cloned().unwrap_or_default(),
            ["granted"],
            "subscriber {i}: the broker's own delivery is judged by the policy of the moment"
        );
        assert!(audit.iter().any(|v| v["event"] == "acl_denied"
            && v["action"] == "receive"
            && v["client_id"] == format!("watcher-{i}").as_str()
            && v["topic"] == "new/direct"));
    }
    // The reloads were applied, not rejected, and nobody was cut off.
    assert!(
        gw.metric("mqtt_gateway_reloads_total{source=\"policy\",result=\"ok\"}")
            .await
            >= 2.0
    );
    assert_eq!(
        gw.metric("mqtt_gateway_sessions_revoked_total{reason=\"policy\"}")
            .await,
        0.0
    );
}
