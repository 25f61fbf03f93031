//! Verdict tables for the two inspectors: frame bytes (and the session's state) in, verdict,
//! denials and new state out, with no socket, no broker and no clock. One [`Row`] is one story:
//! a policy, the session's settings, and a sequence of frames from the client or the broker, each
//! with the verdict and the denials it must produce.
//!
//! The contract lines these rows hold the inspectors to are in the contract (`spec/README.md`),
//! "On the wire" (quoted in each group's comment); the protocol's own are named per row.
//! Frames are written out byte by byte by the helpers below (not with the codec under test), so a
//! row says on the wire what the gateway sends.

use std::fmt::Write as _;

use mqtt_inspect::{DecodeError, Direction, ProtocolVersion, ReasonCode};

use super::{
    BrokerInspector, ClientInspector, Denial, Inspect, MAX_FILTERS_PER_SUBSCRIBE,
    MAX_USER_PROPERTIES, Under, Verdict,
};
use crate::close::CloseReason;
use crate::config::OnPublishDeny;
use crate::policy::{ClientFacts, ClientPolicy, Policy};
use crate::session::state::{MAX_GATEWAY_QOS2, MAX_TOPIC_ALIASES, SessionShared};

const V5: ProtocolVersion = ProtocolVersion::V5;
const V3: ProtocolVersion = ProtocolVersion::V311;

/// One `[[rule]]` for anyone (`who = { any = true }`): `allow` or `deny`, the actions, the topics.
type Rule = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
);

/// Every action.
const ALL: &[&str] = &["publish", "subscribe", "receive"];

/// The policy most rows run under, for the client `dev1` (anyone may connect, any client id):
/// - `ok/#` and `dev/dev1/#` may be published, subscribed to and received; `ok/secret/#` not;
/// - `send-only/#` may only be published (a client may not ask for answers there);
/// - `muted/#` may be subscribed to but nothing there is delivered.
const POLICY: &[Rule] = &[
    ("allow", ALL, &["ok/#", "dev/%u/#"]),
    ("deny", ALL, &["ok/secret/#"]),
    ("allow", &["publish"], &["send-only/#"]),
    ("allow", &["subscribe"], &["muted/#"]),
];

/// Everything a wildcard can reach (so never a `$` topic, [MQTT-4.7.2-1]).
const ALLOW_ALL: &[Rule] = &[("allow", ALL, &["#"])];

/// The policy file of `rules`, after a `[[connect]]` that lets anyone in with any client id.
fn policy_file(rules: &[Rule]) -> String {
    let mut src =
        String::from("version = 1\n[[connect]]\nwho = { any = true }\nclient_ids = [\"*\"]\n");
    for (verb, actions, topics) in rules {
        writeln!(
            src,
            "[[rule]]\nwho = {{ any = true }}\n{verb} = {actions:?}\ntopics = {topics:?}"
        )
        .unwrap();
    }
    src
}

// === frames, byte by byte ===

fn string(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap();
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn varint(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = u8::try_from(n % 128).unwrap();
        n /= 128;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// A packet: its first byte, the Remaining Length, the body.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    varint(&mut out, body.len());
    out.extend_from_slice(body);
    out
}

/// An MQTT 5 property.
#[derive(Clone, Copy)]
enum Prop<'a> {
    /// 0x23 Topic Alias.
    Alias(u16),
    /// 0x08 Response Topic.
    Response(&'a str),
    /// 0x26 User Property.
    User(&'a str, &'a str),
    /// 0x22 Topic Alias Maximum (CONNACK).
    AliasMax(u16),
}

/// The property block of an MQTT 5 packet; nothing at all before MQTT 5.
fn props(v: ProtocolVersion, props: &[Prop<'_>]) -> Vec<u8> {
    if v != V5 {
        assert!(props.is_empty(), "properties before MQTT 5");
        return Vec::new();
    }
    let mut raw = Vec::new();
    for p in props {
        match *p {
            Prop::Alias(a) => {
                raw.push(0x23);
                raw.extend_from_slice(&a.to_be_bytes());
            }
            Prop::Response(t) => {
                raw.push(0x08);
                string(&mut raw, t);
            }
            Prop::User(k, val) => {
                raw.push(0x26);
                string(&mut raw, k);
                string(&mut raw, val);
            }
            Prop::AliasMax(m) => {
                raw.push(0x22);
                raw.extend_from_slice(&m.to_be_bytes());
            }
        }
    }
    let mut out = Vec::new();
    varint(&mut out, raw.len());
    out.extend_from_slice(&raw);
    out
}

/// An MQTT 5 AUTH with `reason`, an Authentication Method and Authentication Data.
fn auth(reason: u8, method: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    if let Some(m) = method {
        raw.push(0x15);
        string(&mut raw, m);
    }
    raw.push(0x16);
    raw.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
    raw.extend_from_slice(data);
    let mut body = vec![reason];
    varint(&mut body, raw.len());
    body.extend_from_slice(&raw);
    packet(0xf0, &body)
}

/// A PUBLISH with payload `x` (`id` ignored at QoS 0).
fn publish_full(
    v: ProtocolVersion,
    qos: u8,
    retain: bool,
    topic: &str,
    id: u16,
    with: &[Prop<'_>],
) -> Vec<u8> {
    let mut body = Vec::new();
    string(&mut body, topic);
    if qos > 0 {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(&props(v, with));
    body.push(b'x');
    packet(0x30 | (qos << 1) | u8::from(retain), &body)
}

fn publish(v: ProtocolVersion, qos: u8, topic: &str, id: u16) -> Vec<u8> {
    publish_full(v, qos, false, topic, id, &[])
}

fn publish_with(v: ProtocolVersion, qos: u8, topic: &str, id: u16, with: &[Prop<'_>]) -> Vec<u8> {
    publish_full(v, qos, false, topic, id, with)
}

/// An MQTT 5 PUBLISH carrying Topic Alias `a` (with an empty `topic`: the alias alone).
fn aliased(qos: u8, topic: &str, id: u16, a: u16) -> Vec<u8> {
    publish_with(V5, qos, topic, id, &[Prop::Alias(a)])
}

fn retained(v: ProtocolVersion, qos: u8, topic: &str, id: u16) -> Vec<u8> {
    publish_full(v, qos, true, topic, id, &[])
}

/// A SUBSCRIBE of `filters`, each at QoS 1.
fn subscribe(v: ProtocolVersion, id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend_from_slice(&props(v, &[]));
    for f in filters {
        string(&mut body, f);
        body.push(1);
    }
    packet(0x82, &body)
}

fn unsubscribe(v: ProtocolVersion, id: u16, filters: &[&str]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend_from_slice(&props(v, &[]));
    for f in filters {
        string(&mut body, f);
    }
    packet(0xa2, &body)
}

fn suback(v: ProtocolVersion, id: u16, codes: &[u8]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend_from_slice(&props(v, &[]));
    body.extend_from_slice(codes);
    packet(0x90, &body)
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP (`first`), with a reason code only when it is not Success.
fn ack(first: u8, id: u16, reason: u8) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if reason != 0 {
        body.push(reason);
    }
    packet(first, &body)
}

fn puback(id: u16, reason: u8) -> Vec<u8> {
    ack(0x40, id, reason)
}
fn pubrec(id: u16, reason: u8) -> Vec<u8> {
    ack(0x50, id, reason)
}
fn pubrel(id: u16) -> Vec<u8> {
    ack(0x62, id, 0)
}
fn pubcomp(id: u16) -> Vec<u8> {
    ack(0x70, id, 0)
}

/// The broker's CONNACK (MQTT 5 with a Topic Alias Maximum when `alias_max` is not 0).
fn connack(v: ProtocolVersion, alias_max: u16) -> Vec<u8> {
    let mut body = vec![0, 0];
    if alias_max > 0 {
        body.extend_from_slice(&props(v, &[Prop::AliasMax(alias_max)]));
    } else {
        body.extend_from_slice(&props(v, &[]));
    }
    packet(0x20, &body)
}

// === verdicts ===

/// A malformed packet from the client, closed with `error` (MQTT 5: DISCONNECT with its code).
fn malformed_c(error: DecodeError) -> Verdict {
    Verdict::Close(CloseReason::Malformed {
        direction: Direction::ClientToServer,
        error,
    })
}

fn malformed_b(error: DecodeError) -> Verdict {
    Verdict::Close(CloseReason::Malformed {
        direction: Direction::ServerToClient,
        error,
    })
}

/// 0x94 Topic Alias invalid, from the client.
fn alias_invalid_c() -> Verdict {
    malformed_c(DecodeError::TopicAliasInvalid)
}

fn alias_invalid_b() -> Verdict {
    malformed_b(DecodeError::TopicAliasInvalid)
}

/// The alias alone rewritten to carry its `topic` as well (a binding the other side never saw).
fn written_out(qos: u8, topic: &str, id: u16, a: u16) -> Verdict {
    Verdict::Replace(aliased(qos, topic, id, a))
}

/// A denial as the audit log and `acl_denied_total` get it: action, topic, quota (not policy).
type Deny = (&'static str, String, bool);

fn denied(action: &'static str, topic: &str) -> Vec<Deny> {
    vec![(action, topic.to_owned(), false)]
}

fn quota(topic: &str) -> Vec<Deny> {
    vec![("subscribe", topic.to_owned(), true)]
}

// === the table ===

/// What happens at one step of a row.
enum Step {
    /// A frame from the client: the verdict and the denials it produces.
    Client(Vec<u8>, Verdict, Vec<Deny>),
    /// A frame from the broker.
    Broker(Vec<u8>, Verdict, Vec<Deny>),
    /// A policy reload: the next frames are judged under this policy (a new generation).
    Reload(&'static [Rule]),
    /// The state after: filters the client holds at the broker through this connection.
    Held(usize),
}
use Step::{Broker, Client, Held, Reload};

fn c(frame: Vec<u8>, verdict: Verdict) -> Step {
    Client(frame, verdict, Vec::new())
}
fn b(frame: Vec<u8>, verdict: Verdict) -> Step {
    Broker(frame, verdict, Vec::new())
}
/// A client PUBLISH denied for `topic`.
fn c_denied(frame: Vec<u8>, verdict: Verdict, topic: &str) -> Step {
    Client(frame, verdict, denied("publish", topic))
}
/// A delivery from the broker denied for `topic`.
fn b_denied(frame: Vec<u8>, verdict: Verdict, topic: &str) -> Step {
    Broker(frame, verdict, denied("receive", topic))
}

/// The session a row starts with.
#[derive(Clone, Copy)]
struct Setup {
    version: ProtocolVersion,
    on_publish_deny: OnPublishDeny,
    max_subscriptions: u32,
    /// The Topic Alias Maximum the client announced in CONNECT (the broker may use 1..=it).
    client_alias_max: u16,
    /// The broker's CONNACK, sent (and forwarded unchanged) before the row's steps, granting the
    /// client this Topic Alias Maximum; `None`: the row sends the CONNACK itself.
    connack: Option<u16>,
    /// The policy the row starts under.
    policy: &'static [Rule],
    /// The Authentication Method the client connected with (a token), if any.
    auth_method: Option<&'static str>,
}

const fn v5() -> Setup {
    Setup {
        version: V5,
        on_publish_deny: OnPublishDeny::Drop,
        max_subscriptions: 100,
        client_alias_max: 0,
        connack: Some(0),
        policy: POLICY,
        auth_method: None,
    }
}

const fn v3() -> Setup {
    Setup {
        version: V3,
        ..v5()
    }
}

impl Setup {
    const fn disconnect(self) -> Self {
        Self {
            on_publish_deny: OnPublishDeny::Disconnect,
            ..self
        }
    }
    const fn max_subscriptions(self, n: u32) -> Self {
        Self {
            max_subscriptions: n,
            ..self
        }
    }
    /// The broker grants the client `n` aliases.
    const fn broker_grants_aliases(self, n: u16) -> Self {
        Self {
            connack: Some(n),
            ..self
        }
    }
    /// The client accepts `n` aliases from the broker.
    const fn client_accepts_aliases(self, n: u16) -> Self {
        Self {
            client_alias_max: n,
            ..self
        }
    }
    /// Under [`ALLOW_ALL`] instead of [`POLICY`].
    const fn allow_all(self) -> Self {
        Self {
            policy: ALLOW_ALL,
            ..self
        }
    }
    /// The client connected with a token as Authentication Data of `method`.
    const fn token(self, method: &'static str) -> Self {
        Self {
            auth_method: Some(method),
            ..self
        }
    }
    const fn no_connack(self) -> Self {
        Self {
            connack: None,
            ..self
        }
    }
}

struct Row {
    name: &'static str,
    setup: Setup,
    steps: Vec<Step>,
}

fn resolve(rules: &[Rule]) -> ClientPolicy {
    let policy = Policy::from_str(&policy_file(rules), "p.toml", &["mqtts"]).unwrap();
    policy.resolve(&ClientFacts {
        principal: Some("dev1"),
        client_id: "dev1",
        cert_ous: &[],
        listener: "mqtts",
        source: std::net::IpAddr::from([10, 0, 0, 7]),
        anonymous: false,
        groups: &[],
    })
}

fn under<'a>(
    generation: u64,
    policy: &'a ClientPolicy,
    shared: &'a SessionShared,
    denials: &'a mut Vec<Denial>,
) -> Under<'a> {
    Under {
        generation,
        policy,
        shared,
        denials,
    }
}

fn run(row: &Row) {
    let s = row.setup;
    let mut client = ClientInspector::new(
        s.version,
        s.on_publish_deny,
        s.max_subscriptions,
        s.auth_method,
    );
    let mut broker = BrokerInspector::new(s.version, s.client_alias_max, 60, None, s.auth_method);
    let shared = SessionShared::default();
    let mut generation = 1u64;
    let mut policy = resolve(s.policy);
    let mut steps: Vec<&Step> = Vec::new();
    let first = s
        .connack
        .map(|n| b(connack(s.version, n), Verdict::Forward));
    steps.extend(first.as_ref());
    steps.extend(row.steps.iter());
    for (i, step) in steps.into_iter().enumerate() {
        let at = format!("row {:?}, step {i}", row.name);
        let mut denials = Vec::new();
        let (got, want, want_denials) = match step {
            Client(frame, want, d) => {
                let got = client.inspect(
                    frame,
                    &mut under(generation, &policy, &shared, &mut denials),
                );
                (got, want, d)
            }
            Broker(frame, want, d) => {
                let got = broker.inspect(
                    frame,
                    &mut under(generation, &policy, &shared, &mut denials),
                );
                (got, want, d)
            }
            Reload(src) => {
                generation += 1;
                policy = resolve(src);
                continue;
            }
            Held(n) => {
                assert_eq!(client.subscriptions.len(), *n, "{at}: filters held");
                continue;
            }
        };
        assert_eq!(&got.verdict, want, "{at}: verdict");
        let got_denials: Vec<Deny> = denials
            .iter()
            .map(|d: &Denial| (d.action.as_str(), d.topic.clone(), d.quota))
            .collect();
        assert_eq!(&got_denials, want_denials, "{at}: denials");
    }
}

fn run_all(rows: &[Row]) {
    for row in rows {
        run(row);
    }
}

// === client to broker: PUBLISH ===

/// "Denied PUBLISH: QoS 0 dropped; QoS 1/2 acknowledged to the client by the gateway (MQTT 5 with
/// reason 0x87) and never forwarded. `policy.on_publish_deny = "disconnect"` closes the connection
/// instead."
#[test]
fn publish_table() {
    run_all(&[
        Row {
            name: "allowed PUBLISH at each QoS is forwarded as sent",
            setup: v5(),
            steps: vec![
                c(publish(V5, 0, "ok/a", 0), Verdict::Forward),
                c(publish(V5, 1, "ok/a", 1), Verdict::Forward),
                c(publish(V5, 2, "dev/dev1/t", 2), Verdict::Forward),
                c(retained(V5, 1, "ok/r", 3), Verdict::Forward),
            ],
        },
        Row {
            name: "denied QoS 0 is dropped (MQTT 5)",
            setup: v5(),
            steps: vec![Client(
                publish(V5, 0, "no/x", 0),
                Verdict::Drop,
                denied("publish", "no/x"),
            )],
        },
        Row {
            name: "denied QoS 1 gets PUBACK 0x87 from the gateway (MQTT 5)",
            setup: v5(),
            steps: vec![Client(
                publish(V5, 1, "no/x", 7),
                Verdict::Reply(puback(7, 0x87)),
                denied("publish", "no/x"),
            )],
        },
        Row {
            name: "an explicit deny beats the allow (ok/secret under ok/#)",
            setup: v5(),
            steps: vec![Client(
                publish(V5, 1, "ok/secret/k", 8),
                Verdict::Reply(puback(8, 0x87)),
                denied("publish", "ok/secret/k"),
            )],
        },
        Row {
            name: "another client's %u topic is denied",
            setup: v5(),
            steps: vec![Client(
                publish(V5, 1, "dev/dev2/t", 9),
                Verdict::Reply(puback(9, 0x87)),
                denied("publish", "dev/dev2/t"),
            )],
        },
        Row {
            name: "denied QoS 0 is dropped (3.1.1)",
            setup: v3(),
            steps: vec![Client(
                publish(V3, 0, "no/x", 0),
                Verdict::Drop,
                denied("publish", "no/x"),
            )],
        },
        Row {
            name: "denied QoS 1 gets a plain PUBACK (3.1.1 has no reason codes)",
            setup: v3(),
            steps: vec![Client(
                publish(V3, 1, "no/x", 7),
                Verdict::Reply(puback(7, 0)),
                denied("publish", "no/x"),
            )],
        },
        Row {
            name: "on_publish_deny = disconnect: denied QoS 0 closes (DISCONNECT 0x87)",
            setup: v5().disconnect(),
            steps: vec![
                c(publish(V5, 0, "ok/a", 0), Verdict::Forward),
                c_denied(
                    publish(V5, 0, "no/x", 0),
                    Verdict::Close(CloseReason::PublishDenied),
                    "no/x",
                ),
            ],
        },
        Row {
            name: "on_publish_deny = disconnect: denied QoS 1 closes, no PUBACK",
            setup: v5().disconnect(),
            steps: vec![Client(
                publish(V5, 1, "no/x", 1),
                Verdict::Close(CloseReason::PublishDenied),
                denied("publish", "no/x"),
            )],
        },
        Row {
            name: "on_publish_deny = disconnect (3.1.1): denied QoS 2 closes",
            setup: v3().disconnect(),
            steps: vec![Client(
                publish(V3, 2, "no/x", 1),
                Verdict::Close(CloseReason::PublishDenied),
                denied("publish", "no/x"),
            )],
        },
        Row {
            name: "a Response Topic the client may not receive denies the PUBLISH, judged by it",
            setup: v5(),
            steps: vec![
                c(
                    publish_with(V5, 1, "ok/req", 1, &[Prop::Response("ok/answers")]),
                    Verdict::Forward,
                ),
                c_denied(
                    publish_with(V5, 1, "ok/req", 2, &[Prop::Response("send-only/answers")]),
                    Verdict::Reply(puback(2, 0x87)),
                    "send-only/answers",
                ),
                c_denied(
                    publish_with(V5, 0, "ok/req", 0, &[Prop::Response("ok/secret/a")]),
                    Verdict::Drop,
                    "ok/secret/a",
                ),
            ],
        },
        Row {
            name: "a PUBLISH denied by its topic is reported by its topic, not its Response Topic",
            setup: v5(),
            steps: vec![Client(
                publish_with(V5, 1, "no/x", 3, &[Prop::Response("no/answers")]),
                Verdict::Reply(puback(3, 0x87)),
                denied("publish", "no/x"),
            )],
        },
        Row {
            name: "a reload applies from the next PUBLISH, even to the topic last allowed",
            setup: v5().allow_all(),
            steps: vec![
                c(publish(V5, 1, "no/x", 1), Verdict::Forward),
                c(publish(V5, 1, "no/x", 2), Verdict::Forward),
                Reload(POLICY),
                c_denied(
                    publish(V5, 1, "no/x", 3),
                    Verdict::Reply(puback(3, 0x87)),
                    "no/x",
                ),
                Reload(ALLOW_ALL),
                c(publish(V5, 1, "no/x", 4), Verdict::Forward),
            ],
        },
        Row {
            name: "$ topics are not reached by # [MQTT-4.7.2-1]",
            setup: v5().allow_all(),
            steps: vec![Client(
                publish(V5, 1, "$SYS/x", 1),
                Verdict::Reply(puback(1, 0x87)),
                denied("publish", "$SYS/x"),
            )],
        },
        Row {
            name: "a wildcard in a topic name is malformed: 0x90 [MQTT-3.3.2-2]",
            setup: v5().allow_all(),
            steps: vec![c(
                publish(V5, 0, "ok/#", 0),
                malformed_c(DecodeError::InvalidTopicName(
                    "wildcard or NUL in a topic name",
                )),
            )],
        },
    ]);
}

/// The user-property cap: [`MAX_USER_PROPERTIES`] per PUBLISH, one more closes with 0x97.
#[test]
fn user_property_cap_table() {
    let users = |n: u16| -> Vec<Prop<'static>> { (0..n).map(|_| Prop::User("k", "v")).collect() };
    let at_cap = users(MAX_USER_PROPERTIES);
    let over = users(MAX_USER_PROPERTIES + 1);
    run_all(&[Row {
        name: "64 User Properties pass, 65 close with Quota exceeded (0x97)",
        setup: v5(),
        steps: vec![
            c(publish_with(V5, 1, "ok/a", 1, &at_cap), Verdict::Forward),
            c(
                publish_with(V5, 1, "ok/a", 2, &over),
                Verdict::Close(CloseReason::QuotaExceeded),
            ),
        ],
    }]);
    assert_eq!(
        CloseReason::QuotaExceeded.disconnect_reason(),
        Some(ReasonCode::QuotaExceeded)
    );
}

// === client to broker: QoS 2 the gateway answers itself ===

/// A denied QoS 2 PUBLISH: PUBREC from the gateway (MQTT 5: 0x87), and the client's PUBREL is
/// answered with PUBCOMP by the gateway, never forwarded (the broker never saw the PUBLISH).
#[test]
fn qos2_table() {
    run_all(&[
        Row {
            name: "denied QoS 2 (MQTT 5): PUBREC 0x87, PUBREL answered with PUBCOMP",
            setup: v5(),
            steps: vec![
                c_denied(
                    publish(V5, 2, "no/x", 5),
                    Verdict::Reply(pubrec(5, 0x87)),
                    "no/x",
                ),
                c(pubrel(5), Verdict::Reply(pubcomp(5))),
                // The flow is over: a second PUBREL with that id is the broker's business.
                c(pubrel(5), Verdict::Forward),
            ],
        },
        Row {
            name: "denied QoS 2 (3.1.1): plain PUBREC, PUBREL answered with PUBCOMP",
            setup: v3(),
            steps: vec![
                c_denied(
                    publish(V3, 2, "no/x", 5),
                    Verdict::Reply(pubrec(5, 0)),
                    "no/x",
                ),
                c(pubrel(5), Verdict::Reply(pubcomp(5))),
            ],
        },
        Row {
            name: "allowed QoS 2: PUBLISH and PUBREL both forwarded",
            setup: v5(),
            steps: vec![
                c(publish(V5, 2, "ok/a", 5), Verdict::Forward),
                c(pubrel(5), Verdict::Forward),
            ],
        },
        Row {
            name: "an id reused by an allowed PUBLISH: its PUBREL goes to the broker",
            setup: v5(),
            steps: vec![
                c_denied(
                    publish(V5, 2, "no/x", 9),
                    Verdict::Reply(pubrec(9, 0x87)),
                    "no/x",
                ),
                // MQTT 5 §4.3.3: a PUBREC of 0x80 or more ends the flow; the id is free again.
                c(publish(V5, 2, "ok/a", 9), Verdict::Forward),
                c(pubrel(9), Verdict::Forward),
            ],
        },
        Row {
            name: "acks of the broker's deliveries pass through",
            setup: v5(),
            steps: vec![
                c(puback(3, 0), Verdict::Forward),
                c(pubrec(4, 0), Verdict::Forward),
                c(pubcomp(4), Verdict::Forward),
            ],
        },
    ]);
}

/// The QoS 2 ids the gateway holds are bounded: 3.1.1 closes with Quota exceeded when a client
/// leaves [`MAX_GATEWAY_QOS2`] flows open; MQTT 5 (where the client need not send PUBREL) evicts
/// the oldest instead and never closes.
#[test]
fn qos2_bound_table() {
    let max = u16::try_from(MAX_GATEWAY_QOS2).unwrap();
    let open = |v: ProtocolVersion, reason: u8| -> Vec<Step> {
        (1..=max)
            .map(|id| {
                c_denied(
                    publish(v, 2, "no/x", id),
                    Verdict::Reply(pubrec(id, reason)),
                    "no/x",
                )
            })
            .collect()
    };
    let mut v3_steps = open(V3, 0);
    v3_steps.push(Client(
        publish(V3, 2, "no/x", max + 1),
        Verdict::Close(CloseReason::QuotaExceeded),
        denied("publish", "no/x"),
    ));
    let mut v5_steps = open(V5, 0x87);
    v5_steps.extend([
        c_denied(
            publish(V5, 2, "no/x", max + 1),
            Verdict::Reply(pubrec(max + 1, 0x87)),
            "no/x",
        ),
        // Id 1 was evicted: its late PUBREL is the broker's to answer (0x92).
        c(pubrel(1), Verdict::Forward),
        c(pubrel(2), Verdict::Reply(pubcomp(2))),
        c(pubrel(max + 1), Verdict::Reply(pubcomp(max + 1))),
    ]);
    run_all(&[
        Row {
            name: "3.1.1: 1,024 open gateway QoS 2 flows, the next closes with quota",
            setup: v3(),
            steps: v3_steps,
        },
        Row {
            name: "MQTT 5: the oldest gateway QoS 2 flow makes room",
            setup: v5(),
            steps: v5_steps,
        },
    ]);
}

// === client to broker: topic aliases ===

/// "MQTT 5 topic aliases are tracked in both directions, so a PUBLISH with an empty topic and an
/// alias is judged by the topic the alias stands for."
#[test]
fn client_alias_table() {
    run_all(&[
        Row {
            name: "bound then used alone: judged by the bound topic, forwarded as sent",
            setup: v5().broker_grants_aliases(10),
            steps: vec![
                c(aliased(1, "ok/a", 1, 1), Verdict::Forward),
                c(aliased(1, "", 2, 1), Verdict::Forward),
            ],
        },
        Row {
            name: "rebound to a denied topic: the alias alone is judged by the new topic",
            setup: v5().broker_grants_aliases(10),
            steps: vec![
                c(aliased(1, "ok/a", 1, 1), Verdict::Forward),
                c_denied(
                    aliased(1, "no/b", 2, 1),
                    Verdict::Reply(puback(2, 0x87)),
                    "no/b",
                ),
                // The broker still maps 1 to ok/a; the gateway never lets that stand for no/b.
                c_denied(
                    aliased(1, "", 3, 1),
                    Verdict::Reply(puback(3, 0x87)),
                    "no/b",
                ),
                // Rebound to an allowed topic: forwarded, the broker learns the new binding.
                c(aliased(1, "ok/c", 4, 1), Verdict::Forward),
                c(aliased(1, "", 5, 1), Verdict::Forward),
            ],
        },
        Row {
            name: "a binding the broker never saw is written out when the alias is next allowed",
            setup: v5().broker_grants_aliases(10),
            steps: vec![
                // Dropped for its Response Topic: the broker never learns 1 = ok/q.
                Client(
                    publish_with(
                        V5,
                        1,
                        "ok/q",
                        1,
                        &[Prop::Alias(1), Prop::Response("send-only/r")],
                    ),
                    Verdict::Reply(puback(1, 0x87)),
                    denied("publish", "send-only/r"),
                ),
                c(aliased(1, "", 2, 1), written_out(1, "ok/q", 2, 1)),
                // Now the broker knows it: the alias alone passes as sent.
                c(aliased(1, "", 3, 1), Verdict::Forward),
            ],
        },
        Row {
            name: "rebound by a dropped PUBLISH, then allowed: written out, never the stale binding",
            setup: v5().broker_grants_aliases(10),
            steps: vec![
                c(aliased(0, "ok/a", 0, 3), Verdict::Forward),
                // The broker keeps 3 = ok/a; the gateway now has 3 = no/b.
                c_denied(aliased(0, "no/b", 0, 3), Verdict::Drop, "no/b"),
                Reload(ALLOW_ALL),
                // Forwarded as sent, the broker would file it under ok/a.
                c(aliased(0, "", 0, 3), written_out(0, "no/b", 0, 3)),
                c(aliased(0, "", 0, 3), Verdict::Forward),
            ],
        },
        Row {
            name: "alias used before binding: 0x94 Topic Alias invalid",
            setup: v5().broker_grants_aliases(10),
            steps: vec![c(aliased(1, "", 1, 2), alias_invalid_c())],
        },
        Row {
            name: "alias above the broker's Topic Alias Maximum: 0x94 [MQTT-3.3.2-9]",
            setup: v5().broker_grants_aliases(10),
            steps: vec![
                c(aliased(1, "ok/a", 1, 10), Verdict::Forward),
                c(aliased(1, "ok/a", 2, 11), alias_invalid_c()),
            ],
        },
        Row {
            name: "no Topic Alias Maximum granted: any alias is 0x94 [MQTT-3.3.2-9]",
            setup: v5(),
            steps: vec![c(aliased(1, "ok/a", 1, 1), alias_invalid_c())],
        },
        Row {
            name: "alias 0: 0x94 [MQTT-3.3.2-8]",
            setup: v5().broker_grants_aliases(10),
            steps: vec![c(aliased(1, "ok/a", 1, 0), alias_invalid_c())],
        },
        Row {
            name: "an empty topic without an alias: 0x90 [MQTT-3.3.2-1]",
            setup: v5().broker_grants_aliases(10),
            steps: vec![c(
                publish(V5, 1, "", 1),
                malformed_c(DecodeError::InvalidTopicName("empty")),
            )],
        },
    ]);
}

// === client to broker: SUBSCRIBE, UNSUBSCRIBE ===

/// "Denied SUBSCRIBE filter: that filter alone gets 0x80 (3.1.1) / 0x87 (MQTT 5) in the SUBACK, in
/// its position; the allowed filters of the same SUBSCRIBE are subscribed normally."
#[test]
fn subscribe_table() {
    run_all(&[
        Row {
            name: "all filters allowed: forwarded, the broker's SUBACK passes",
            setup: v5(),
            steps: vec![
                c(
                    subscribe(V5, 1, &["ok/a/#", "dev/dev1/+"]),
                    Verdict::Forward,
                ),
                Held(2),
                b(suback(V5, 1, &[1, 1]), Verdict::Forward),
            ],
        },
        Row {
            name: "mixed (MQTT 5): broker gets the allowed ones, 0x87 merged in position \
                   [MQTT-3.8.4-6] [MQTT-3.9.3-1]",
            setup: v5(),
            steps: vec![
                Client(
                    subscribe(V5, 4, &["no/a", "ok/a", "ok/secret/#", "ok/b"]),
                    Verdict::Replace(subscribe(V5, 4, &["ok/a", "ok/b"])),
                    vec![
                        ("subscribe", "no/a".to_owned(), false),
                        ("subscribe", "ok/secret/#".to_owned(), false),
                    ],
                ),
                Held(2),
                // The broker grants QoS 1 to one and refuses the other itself (0x80).
                b(
                    suback(V5, 4, &[1, 0x80]),
                    Verdict::Replace(suback(V5, 4, &[0x87, 1, 0x87, 0x80])),
                ),
                // Merged once: a later SUBACK with that id is the broker's own.
                b(suback(V5, 4, &[1]), Verdict::Forward),
            ],
        },
        Row {
            name: "mixed (3.1.1): 0x80 in the denied positions [MQTT-3.9.3-2]",
            setup: v3(),
            steps: vec![
                Client(
                    subscribe(V3, 4, &["ok/a", "no/a"]),
                    Verdict::Replace(subscribe(V3, 4, &["ok/a"])),
                    denied("subscribe", "no/a"),
                ),
                b(
                    suback(V3, 4, &[1]),
                    Verdict::Replace(suback(V3, 4, &[1, 0x80])),
                ),
            ],
        },
        Row {
            name: "all denied (MQTT 5): the gateway answers the SUBACK itself",
            setup: v5(),
            steps: vec![
                Client(
                    subscribe(V5, 2, &["no/a", "$SYS/#"]),
                    Verdict::Reply(suback(V5, 2, &[0x87, 0x87])),
                    vec![
                        ("subscribe", "no/a".to_owned(), false),
                        ("subscribe", "$SYS/#".to_owned(), false),
                    ],
                ),
                Held(0),
            ],
        },
        Row {
            name: "all denied (MQTT 3.1): answered as 3.1.1, 0x80",
            setup: Setup {
                version: ProtocolVersion::V31,
                ..v3()
            },
            steps: vec![Client(
                subscribe(ProtocolVersion::V31, 2, &["no/a"]),
                Verdict::Reply(suback(ProtocolVersion::V31, 2, &[0x80])),
                denied("subscribe", "no/a"),
            )],
        },
        Row {
            name: "all denied (3.1.1): SUBACK 0x80 from the gateway",
            setup: v3(),
            steps: vec![Client(
                subscribe(V3, 2, &["no/a"]),
                Verdict::Reply(suback(V3, 2, &[0x80])),
                denied("subscribe", "no/a"),
            )],
        },
        Row {
            name: "containment: a filter inside ok/# passes; # and +/a are not inside it",
            setup: v5(),
            steps: vec![
                c(subscribe(V5, 1, &["ok/a/+/x"]), Verdict::Forward),
                Client(
                    subscribe(V5, 2, &["#"]),
                    Verdict::Reply(suback(V5, 2, &[0x87])),
                    denied("subscribe", "#"),
                ),
                Client(
                    subscribe(V5, 3, &["+/a"]),
                    Verdict::Reply(suback(V5, 3, &[0x87])),
                    denied("subscribe", "+/a"),
                ),
                // ok/# would deliver ok/secret/..., which a deny rule covers: deny wins.
                Client(
                    subscribe(V5, 4, &["ok/#"]),
                    Verdict::Reply(suback(V5, 4, &[0x87])),
                    denied("subscribe", "ok/#"),
                ),
            ],
        },
        Row {
            name: "$share/<g>/<f> is judged by <f> [MQTT-4.8.2-1]",
            setup: v5(),
            steps: vec![
                c(subscribe(V5, 1, &["$share/g/ok/a/#"]), Verdict::Forward),
                Client(
                    subscribe(V5, 2, &["$share/g/ok/a", "$share/g/no/a"]),
                    Verdict::Replace(subscribe(V5, 2, &["$share/g/ok/a"])),
                    denied("subscribe", "$share/g/no/a"),
                ),
                Held(2),
            ],
        },
        Row {
            name: "$share/g1/$share/g2/F is judged as $share/g2/F, which no rule allows \
                   [MQTT-4.8.2-1] [MQTT-4.7.2-1]",
            setup: v5().allow_all(),
            steps: vec![
                c(subscribe(V5, 1, &["$share/g1/ok/a"]), Verdict::Forward),
                Client(
                    subscribe(V5, 2, &["$share/g1/$share/g2/ok/a"]),
                    Verdict::Reply(suback(V5, 2, &[0x87])),
                    denied("subscribe", "$share/g1/$share/g2/ok/a"),
                ),
            ],
        },
        Row {
            name: "UNSUBSCRIBE is forwarded and frees the filter's place",
            setup: v5(),
            steps: vec![
                c(subscribe(V5, 1, &["ok/a", "ok/b"]), Verdict::Forward),
                Held(2),
                c(
                    unsubscribe(V5, 2, &["ok/a", "never/held"]),
                    Verdict::Forward,
                ),
                Held(1),
            ],
        },
    ]);
}

/// `max_subscriptions_per_client`: a filter beyond it gets 0x97 (3.1.1: 0x80) in its position,
/// audited as a quota refusal; a filter held already replaces itself [MQTT-3.8.4-3].
#[test]
fn subscription_quota_table() {
    run_all(&[
        Row {
            name: "the third filter of three (max 2) gets 0x97 in position",
            setup: v5().max_subscriptions(2),
            steps: vec![
                Client(
                    subscribe(V5, 1, &["ok/a", "ok/b", "ok/c"]),
                    Verdict::Replace(subscribe(V5, 1, &["ok/a", "ok/b"])),
                    quota("ok/c"),
                ),
                Held(2),
                b(
                    suback(V5, 1, &[1, 1]),
                    Verdict::Replace(suback(V5, 1, &[1, 1, 0x97])),
                ),
                // Held already: a new SUBSCRIBE to it replaces the old one [MQTT-3.8.4-3].
                c(subscribe(V5, 2, &["ok/a"]), Verdict::Forward),
                Client(
                    subscribe(V5, 3, &["ok/c"]),
                    Verdict::Reply(suback(V5, 3, &[0x97])),
                    quota("ok/c"),
                ),
                c(unsubscribe(V5, 4, &["ok/a"]), Verdict::Forward),
                Held(1),
                c(subscribe(V5, 5, &["ok/c"]), Verdict::Forward),
                Held(2),
            ],
        },
        Row {
            name: "a denied filter takes no place; policy and quota codes side by side",
            setup: v5().max_subscriptions(1),
            steps: vec![
                Client(
                    subscribe(V5, 1, &["no/a", "ok/a", "ok/b"]),
                    Verdict::Replace(subscribe(V5, 1, &["ok/a"])),
                    vec![
                        ("subscribe", "no/a".to_owned(), false),
                        ("subscribe", "ok/b".to_owned(), true),
                    ],
                ),
                b(
                    suback(V5, 1, &[0]),
                    Verdict::Replace(suback(V5, 1, &[0x87, 0, 0x97])),
                ),
            ],
        },
        Row {
            name: "3.1.1: over the quota is 0x80, the only failure code",
            setup: v3().max_subscriptions(1),
            steps: vec![
                c(subscribe(V3, 1, &["ok/a"]), Verdict::Forward),
                Client(
                    subscribe(V3, 2, &["ok/b"]),
                    Verdict::Reply(suback(V3, 2, &[0x80])),
                    quota("ok/b"),
                ),
            ],
        },
    ]);
}

/// The per-SUBSCRIBE filter cap: [`MAX_FILTERS_PER_SUBSCRIBE`] filters pass, one more closes
/// with 0x97.
#[test]
fn filter_cap_table() {
    let names: Vec<String> = (0..=MAX_FILTERS_PER_SUBSCRIBE)
        .map(|i| format!("ok/{i}"))
        .collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let at_cap = all.get(..MAX_FILTERS_PER_SUBSCRIBE).unwrap();
    run_all(&[Row {
        name: "64 filters pass, 65 close with Quota exceeded (0x97)",
        setup: v5(),
        steps: vec![
            c(subscribe(V5, 1, at_cap), Verdict::Forward),
            c(
                subscribe(V5, 2, &all),
                Verdict::Close(CloseReason::QuotaExceeded),
            ),
        ],
    }]);
}

// === client to broker: the other packet types ===

#[test]
fn client_other_packets_table() {
    run_all(&[
        Row {
            name: "PINGREQ and DISCONNECT pass",
            setup: v5(),
            steps: vec![
                c(vec![0xc0, 0], Verdict::Forward),
                c(vec![0xe0, 0], Verdict::Forward),
            ],
        },
        Row {
            name: "AUTH closes: no re-authentication (MQTT 5 §4.12, Protocol Error)",
            setup: v5(),
            steps: vec![c(
                vec![0xf0, 0],
                Verdict::Close(CloseReason::AuthNotSupported),
            )],
        },
        Row {
            name: "a token session's AUTH 0x19 with its method goes to the session, not the broker [MQTT-4.12.1-1]",
            setup: v5().token("JWT").no_connack(),
            steps: vec![c(
                auth(0x19, Some("JWT"), b"fresh"),
                Verdict::Reauthenticate(b"fresh".to_vec()),
            )],
        },
        Row {
            name: "a re-authentication with another method is a Protocol Error [MQTT-4.12.1-1]",
            setup: v5().token("JWT").no_connack(),
            steps: vec![c(
                auth(0x19, Some("SCRAM-SHA-1"), b"x"),
                malformed_c(DecodeError::ProtocolViolation(
                    "AUTH with another Authentication Method than the CONNECT's",
                )),
            )],
        },
        Row {
            name: "AUTH 0x18 or 0x00 from the client with no exchange under way is a Protocol Error",
            setup: v5().token("JWT").no_connack(),
            steps: vec![c(
                auth(0x18, Some("JWT"), b"x"),
                malformed_c(DecodeError::ProtocolViolation(
                    "AUTH from the client must start a re-authentication (0x19)",
                )),
            )],
        },
        Row {
            name: "a token session's CONNACK carries its Authentication Method back (the broker never saw it)",
            setup: v5().token("JWT").no_connack(),
            steps: vec![b(
                connack(V5, 0),
                Verdict::Replace(packet(0x20, &[0, 0, 6, 0x15, 0, 3, b'J', b'W', b'T'])),
            )],
        },
        Row {
            name: "a second CONNECT is malformed [MQTT-3.1.0-2]",
            setup: v3(),
            steps: vec![c(
                packet(0x10, b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x01c"),
                malformed_c(DecodeError::ProtocolViolation("a second CONNECT")),
            )],
        },
        Row {
            name: "a server packet from the client is malformed",
            setup: v5(),
            steps: vec![c(
                vec![0xd0, 0],
                malformed_c(DecodeError::ProtocolViolation(
                    "a server packet sent by a client",
                )),
            )],
        },
    ]);
}

// === broker to client ===

/// Receive: "every PUBLISH (retained ones too) is judged as receive; a denied one is not
/// delivered and, at QoS 1/2, acknowledged to the broker by the gateway" (contract, policy
/// actions; the PUBACK/PUBREC go to the broker, so they carry no error reason).
#[test]
fn receive_table() {
    run_all(&[
        Row {
            name: "allowed deliveries pass, retained too",
            setup: v5(),
            steps: vec![
                b(publish(V5, 0, "ok/a", 0), Verdict::Forward),
                b(publish(V5, 1, "ok/a", 1), Verdict::Forward),
                b(retained(V5, 2, "dev/dev1/r", 2), Verdict::Forward),
            ],
        },
        Row {
            name: "a subscribed but unreceivable QoS 0 is not delivered",
            setup: v5(),
            steps: vec![
                c(subscribe(V5, 1, &["muted/#"]), Verdict::Forward),
                b_denied(publish(V5, 0, "muted/x", 0), Verdict::Drop, "muted/x"),
            ],
        },
        Row {
            name: "a retained message the client may not receive is not delivered",
            setup: v5(),
            steps: vec![Broker(
                retained(V5, 0, "ok/secret/r", 0),
                Verdict::Drop,
                denied("receive", "ok/secret/r"),
            )],
        },
        Row {
            name: "denied QoS 1 delivery: the gateway PUBACKs the broker (MQTT 5 and 3.1.1)",
            setup: v5(),
            steps: vec![Broker(
                retained(V5, 1, "muted/x", 6),
                Verdict::Reply(puback(6, 0)),
                denied("receive", "muted/x"),
            )],
        },
        Row {
            name: "denied QoS 1 delivery (3.1.1): PUBACK to the broker",
            setup: v3(),
            steps: vec![Broker(
                publish(V3, 1, "muted/x", 6),
                Verdict::Reply(puback(6, 0)),
                denied("receive", "muted/x"),
            )],
        },
        Row {
            name: "denied QoS 2 delivery: PUBREC to the broker, its PUBREL answered with PUBCOMP",
            setup: v5(),
            steps: vec![
                b_denied(
                    publish(V5, 2, "muted/x", 7),
                    Verdict::Reply(pubrec(7, 0)),
                    "muted/x",
                ),
                b(pubrel(7), Verdict::Reply(pubcomp(7))),
                // Not the gateway's any more: a PUBREL of an allowed delivery goes to the client.
                b(publish(V5, 2, "ok/a", 7), Verdict::Forward),
                b(pubrel(7), Verdict::Forward),
            ],
        },
        Row {
            name: "a reload that denies a topic last delivered applies to the next delivery",
            setup: v5().allow_all(),
            steps: vec![
                b(publish(V5, 0, "muted/x", 0), Verdict::Forward),
                Reload(POLICY),
                b_denied(publish(V5, 0, "muted/x", 0), Verdict::Drop, "muted/x"),
            ],
        },
        Row {
            name: "acks and the rest of the broker's packets pass",
            setup: v5(),
            steps: vec![
                b(puback(1, 0), Verdict::Forward),
                b(pubrec(2, 0), Verdict::Forward),
                b(pubcomp(2), Verdict::Forward),
                b(packet(0xb0, &[0, 3, 0, 0]), Verdict::Forward), // UNSUBACK
                b(vec![0xd0, 0], Verdict::Forward),               // PINGRESP
                b(vec![0xe0, 0], Verdict::Forward),               // DISCONNECT
            ],
        },
        Row {
            name: "a client packet from the broker is malformed",
            setup: v5(),
            steps: vec![b(
                vec![0xc0, 0],
                malformed_b(DecodeError::ProtocolViolation(
                    "a client packet sent by a server",
                )),
            )],
        },
    ]);
}

/// Aliases from the broker: tracked as from the client, bounded by the client's CONNECT.
#[test]
fn broker_alias_table() {
    run_all(&[
        Row {
            name: "bound, used, rebound to an unreceivable topic: judged by the new topic",
            setup: v5().client_accepts_aliases(5),
            steps: vec![
                b(aliased(0, "ok/a", 0, 1), Verdict::Forward),
                b(aliased(0, "", 0, 1), Verdict::Forward),
                b_denied(aliased(0, "muted/x", 0, 1), Verdict::Drop, "muted/x"),
                b_denied(
                    aliased(1, "", 3, 1),
                    Verdict::Reply(puback(3, 0)),
                    "muted/x",
                ),
            ],
        },
        Row {
            name: "a binding the client never saw is written out once allowed (after a reload)",
            setup: v5().client_accepts_aliases(5),
            steps: vec![
                b_denied(aliased(0, "muted/x", 0, 2), Verdict::Drop, "muted/x"),
                Reload(ALLOW_ALL),
                b(aliased(0, "", 0, 2), written_out(0, "muted/x", 0, 2)),
                b(aliased(0, "", 0, 2), Verdict::Forward),
            ],
        },
        Row {
            name: "rebound by a dropped delivery, then allowed: written out, never the stale one",
            setup: v5().client_accepts_aliases(5),
            steps: vec![
                b(aliased(0, "ok/a", 0, 3), Verdict::Forward),
                b_denied(aliased(0, "muted/x", 0, 3), Verdict::Drop, "muted/x"),
                Reload(ALLOW_ALL),
                b(aliased(0, "", 0, 3), written_out(0, "muted/x", 0, 3)),
            ],
        },
        Row {
            name: "alias above the client's Topic Alias Maximum: 0x94 [MQTT-3.3.2-11]",
            setup: v5().client_accepts_aliases(5),
            steps: vec![b(aliased(0, "ok/a", 0, 6), alias_invalid_b())],
        },
        Row {
            name: "broker alias used before binding: 0x94",
            setup: v5().client_accepts_aliases(5),
            steps: vec![b(aliased(0, "", 0, 1), alias_invalid_b())],
        },
        Row {
            name: "client and broker aliases are separate tables",
            setup: v5().client_accepts_aliases(5).broker_grants_aliases(5),
            steps: vec![
                c(aliased(0, "ok/c", 0, 1), Verdict::Forward),
                b(aliased(0, "", 0, 1), alias_invalid_b()),
            ],
        },
    ]);
}

/// The broker's CONNACK: forwarded, with the Topic Alias Maximum capped at what the gateway
/// tracks (the keep-alive rewrites are `inspect::tests`).
#[test]
fn connack_table() {
    run_all(&[
        Row {
            name: "CONNACK (3.1.1) passes",
            setup: v3().no_connack(),
            steps: vec![b(connack(V3, 0), Verdict::Forward)],
        },
        Row {
            name: "a Topic Alias Maximum above 1,024 is told as 1,024, and enforced so",
            setup: v5().no_connack(),
            steps: vec![
                b(
                    connack(V5, u16::MAX),
                    Verdict::Replace(connack(V5, MAX_TOPIC_ALIASES)),
                ),
                c(
                    publish_with(V5, 0, "ok/a", 0, &[Prop::Alias(1024)]),
                    Verdict::Forward,
                ),
                c(
                    publish_with(V5, 0, "ok/a", 0, &[Prop::Alias(1025)]),
                    alias_invalid_c(),
                ),
            ],
        },
        Row {
            name: "a second CONNACK is malformed",
            setup: v5(),
            steps: vec![b(
                connack(V5, 0),
                malformed_b(DecodeError::ProtocolViolation("a second CONNACK")),
            )],
        },
    ]);
}

/// The closes the rows above end in, as the MQTT 5 client is told them: "any malformed packet,
/// in either direction, closes the connection (MQTT 5: DISCONNECT with reason 0x81 first)" (or
/// the error's own, more precise code); limits "get reason 0x96 or 0x97".
#[test]
fn close_reason_table() {
    let rows: [(&str, CloseReason, ReasonCode); 7] = [
        (
            "alias before binding or over the maximum: 0x94",
            CloseReason::Malformed {
                direction: Direction::ClientToServer,
                error: DecodeError::TopicAliasInvalid,
            },
            ReasonCode::TopicAliasInvalid,
        ),
        (
            "wildcard or empty topic name: 0x90",
            CloseReason::Malformed {
                direction: Direction::ClientToServer,
                error: DecodeError::InvalidTopicName("empty"),
            },
            ReasonCode::TopicNameInvalid,
        ),
        (
            "a second CONNECT, a server packet from the client: 0x82 Protocol Error",
            CloseReason::Malformed {
                direction: Direction::ClientToServer,
                error: DecodeError::ProtocolViolation("a second CONNECT"),
            },
            ReasonCode::ProtocolError,
        ),
        (
            "malformed from the broker: the client is told too",
            CloseReason::Malformed {
                direction: Direction::ServerToClient,
                error: DecodeError::TopicAliasInvalid,
            },
            ReasonCode::TopicAliasInvalid,
        ),
        (
            "on_publish_deny = disconnect: 0x87",
            CloseReason::PublishDenied,
            ReasonCode::NotAuthorized,
        ),
        (
            "filter, user-property, QoS 2 and pending-SUBACK caps: 0x97",
            CloseReason::QuotaExceeded,
            ReasonCode::QuotaExceeded,
        ),
        (
            "AUTH after CONNECT: 0x82",
            CloseReason::AuthNotSupported,
            ReasonCode::ProtocolError,
        ),
    ];
    for (name, close, code) in rows {
        assert_eq!(close.disconnect_reason(), Some(code), "{name}");
    }
}
