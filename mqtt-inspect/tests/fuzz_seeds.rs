//! Writes the seed corpus of the cargo-fuzz targets in `mqtt-inspect/fuzz/`.
//!
//! Ignored by default; regenerate with
//!
//!     cargo test -p mqtt-inspect --test fuzz_seeds -- --ignored
//!
//! - `corpus/{decode,roundtrip}/`: every `tests/fixtures/*.bin` (one captured packet each), one
//!   `session-*.bin` per captured connection (its packets of both directions concatenated in
//!   order, for the stream-level `decode` target), and `gen-*.bin`: packets the captures lack
//!   (AUTH, MQTT 5 property lists in every packet, the non-canonical short/long forms).
//! - `corpus/alias/` and `corpus/topic/`: hand-written `seed-*.bin` in those targets' input formats.
//!
//! File names never start with a hex digit: `.gitignore` drops corpus files named by hash.

// Helpers outside #[test] fns build the test's own input: nothing here meets peer bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use mqtt_inspect::{
    Ack, AckKind, Auth, Connack, ConnackCode, Connect, Disconnect, Packet, PacketId, Properties,
    Property, PropertyContext, ProtocolVersion, Publish, QoS, ReasonCode, Suback, Unsuback, Will,
    decode, encode_properties,
};

fn props(list: &[Property<'_>]) -> Vec<u8> {
    let mut raw = Vec::new();
    encode_properties(list, &mut raw).unwrap();
    raw
}

fn frame(p: &Packet<'_>, version: ProtocolVersion) -> Vec<u8> {
    let mut out = Vec::new();
    p.encode(version, &mut out).unwrap();
    out
}

fn with_rl(first: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![first, u8::try_from(body.len()).unwrap()];
    f.extend_from_slice(body);
    f
}

fn generated() -> Vec<(&'static str, Vec<u8>)> {
    use PropertyContext as C;
    use ProtocolVersion::{V5, V31, V311};
    let id = |n| PacketId::new(n).unwrap();
    let connect_props = props(&[
        Property::SessionExpiryInterval(3600),
        Property::ReceiveMaximum(20),
        Property::MaximumPacketSize(65_536),
        Property::TopicAliasMaximum(10),
        Property::RequestProblemInformation(1),
        Property::AuthenticationMethod("SCRAM-SHA-256"),
        Property::AuthenticationData(b"n,,n=user"),
        Property::UserProperty("region", "eu"),
    ]);
    let will_props = props(&[
        Property::WillDelayInterval(30),
        Property::PayloadFormatIndicator(1),
        Property::ContentType("text/plain"),
        Property::ResponseTopic("will/reply"),
    ]);
    let connack_props = props(&[
        Property::AssignedClientIdentifier("auto-1"),
        Property::ServerKeepAlive(60),
        Property::TopicAliasMaximum(10),
        Property::MaximumQos(1),
        Property::RetainAvailable(0),
        Property::WildcardSubscriptionAvailable(1),
        Property::SubscriptionIdentifierAvailable(1),
        Property::SharedSubscriptionAvailable(1),
        Property::ReasonString("ok"),
    ]);
    let publish_props = props(&[
        Property::TopicAlias(3),
        Property::MessageExpiryInterval(60),
        Property::CorrelationData(b"\x00\x01"),
        Property::UserProperty("k", "v"),
    ]);
    let server_publish_props = props(&[
        Property::SubscriptionIdentifier(7),
        Property::SubscriptionIdentifier(300),
    ]);
    let reason_props = props(&[
        Property::ReasonString("quota"),
        Property::UserProperty("a", "b"),
    ]);
    let disconnect_props = props(&[
        Property::SessionExpiryInterval(0),
        Property::ServerReference("other.example"),
    ]);
    let auth_props = props(&[
        Property::AuthenticationMethod("SCRAM-SHA-256"),
        Property::AuthenticationData(b"r=nonce"),
    ]);
    fn p(raw: &[u8], ctx: PropertyContext) -> Properties<'_> {
        Properties::parse(raw, ctx).unwrap()
    }
    // The property bytes must outlive the packets that borrow them: build every frame here.
    let connect = Connect {
        version: V5,
        clean_start: true,
        keep_alive: 30,
        properties: p(&connect_props, C::Connect),
        client_id: "gen-client",
        will: Some(Will {
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: p(&will_props, C::Will),
            topic: "clients/gen-client/state",
            payload: b"offline",
        }),
        username: Some("user"),
        password: Some(b"secret"),
        bridge: false,
    };
    let v31_connect = Connect {
        version: V31,
        properties: Properties::EMPTY,
        will: None,
        ..connect
    };
    let publish = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "a/b",
        packet_id: Some(id(9)),
        properties: p(&publish_props, C::Publish),
        payload: b"{\"t\":21.5}",
    };
    vec![
        (
            "gen-v5-connect-props-will",
            frame(&Packet::Connect(connect), V5),
        ),
        ("gen-v31-connect", frame(&Packet::Connect(v31_connect), V31)),
        (
            "gen-v5-connack-props",
            frame(
                &Packet::Connack(Connack {
                    session_present: true,
                    code: ConnackCode::V5(ReasonCode::Success),
                    properties: p(&connack_props, C::Connack),
                }),
                V5,
            ),
        ),
        ("gen-v5-publish-alias", frame(&Packet::Publish(publish), V5)),
        (
            "gen-v5-publish-empty-topic-alias",
            frame(
                &Packet::Publish(Publish {
                    topic: "",
                    ..publish
                }),
                V5,
            ),
        ),
        (
            "gen-v5-publish-subscription-ids",
            frame(
                &Packet::Publish(Publish {
                    properties: p(&server_publish_props, C::Publish),
                    ..publish
                }),
                V5,
            ),
        ),
        (
            "gen-v5-puback-reason-props",
            frame(
                &Packet::Ack(Ack {
                    kind: AckKind::Puback,
                    packet_id: id(9),
                    reason: ReasonCode::QuotaExceeded,
                    properties: p(&reason_props, C::Ack),
                }),
                V5,
            ),
        ),
        (
            "gen-v5-pubrel-not-found",
            frame(
                &Packet::Ack(Ack::new(
                    AckKind::Pubrel,
                    id(9),
                    ReasonCode::PacketIdentifierNotFound,
                )),
                V5,
            ),
        ),
        (
            "gen-v5-suback-props",
            frame(
                &Packet::Suback(Suback {
                    packet_id: id(2),
                    properties: p(&reason_props, C::Suback),
                    codes: &[0x00, 0x01, 0x02, 0x87, 0x9e],
                }),
                V5,
            ),
        ),
        (
            "gen-v5-unsuback",
            frame(
                &Packet::Unsuback(Unsuback {
                    packet_id: id(3),
                    properties: Properties::EMPTY,
                    codes: &[0x00, 0x11],
                }),
                V5,
            ),
        ),
        (
            "gen-v5-disconnect-props",
            frame(
                &Packet::Disconnect(Disconnect {
                    reason: ReasonCode::UseAnotherServer,
                    properties: p(&disconnect_props, C::Disconnect),
                }),
                V5,
            ),
        ),
        (
            "gen-v5-auth-continue",
            frame(
                &Packet::Auth(Auth {
                    reason: ReasonCode::ContinueAuthentication,
                    properties: p(&auth_props, C::Auth),
                }),
                V5,
            ),
        ),
        (
            "gen-v311-connack-refused",
            frame(
                &Packet::Connack(Connack {
                    session_present: false,
                    code: ConnackCode::for_version(V311, ReasonCode::NotAuthorized),
                    properties: Properties::EMPTY,
                }),
                V311,
            ),
        ),
        // SUBSCRIBE (MQTT 5): Subscription Identifier 1; a shared filter with Retain Handling 2;
        // a plain filter with No Local, Retain As Published and QoS 1.
        (
            "gen-v5-subscribe-options",
            with_rl(
                0x82,
                &[
                    0x00, 0x05, 0x02, 0x0b, 0x01, // packet id 5, properties: SubId 1
                    0x00, 0x0c, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/', b'a', b'/',
                    b'#', 0x20, // $share/g/a/#, RH 2
                    0x00, 0x03, b'+', b'/', b'b', 0x0d, // +/b, NL RAP QoS 1
                ],
            ),
        ),
        (
            "gen-v5-unsubscribe",
            with_rl(
                0xa2,
                &[
                    0x00, 0x06, 0x00, 0x00, 0x03, b'a', b'/', b'+', 0x00, 0x01, b'#',
                ],
            ),
        ),
        // Accepted but not canonical (see fuzz_targets/roundtrip.rs).
        (
            "gen-v5-puback-success-long",
            vec![0x40, 0x04, 0x00, 0x01, 0x00, 0x00],
        ),
        (
            "gen-v5-puback-reason-proplen0",
            vec![0x40, 0x04, 0x00, 0x01, 0x10, 0x00],
        ),
        (
            "gen-v5-disconnect-success-long",
            vec![0xe0, 0x02, 0x00, 0x00],
        ),
        ("gen-v5-auth-reason-only", vec![0xf0, 0x01, 0x18]),
        ("gen-v31-connack-flags", vec![0x20, 0x02, 0x01, 0x00]),
    ]
}

/// Topic target: `a \0 b \0 t`.
const TOPIC_SEEDS: [(&str, &[u8]); 8] = [
    ("seed-plus", b"a/+/c\0a/b/c\0a/b/c"),
    ("seed-hash", b"a/#\0a/+/b\0a/x/b"),
    ("seed-dollar", b"#\0$SYS/#\0$SYS/uptime"),
    ("seed-share", b"$share/g/a/#\0a/b\0a/b"),
    ("seed-empty-levels", b"+/+\0/+\0/finance"),
    ("seed-bad-filter", b"a/#/b\0a+\0a/b#"),
    (
        "seed-utf8",
        "caf\u{e9}/+\0caf\u{e9}/\u{20ac}\0caf\u{e9}/\u{20ac}".as_bytes(),
    ),
    ("seed-invalid-utf8", b"a/\xc3\x28\0\xed\xa0\x80\0+"),
];

/// Alias target: maximum (1 byte, or 0xff + 2 bytes), then `c`, alias, topic (see
/// fuzz_targets/alias.rs).
const ALIAS_SEEDS: [(&str, &[u8]); 4] = [
    // max 10: bind 3 -> "a/b", use 3, rebind 3 -> "c", use 3, use unbound 4.
    (
        "seed-bind-use",
        b"\x0a\x0d\x03a/b\x01\x03\x05\x03c\x01\x03\x01\x04",
    ),
    // max 2: alias 0, alias 3 (above), no alias with empty topic, no alias with a topic.
    ("seed-refusals", b"\x02\x07\x00a\x07\x03a\x00\x04x"),
    // max 65535: the largest alias, two-byte form.
    ("seed-max", b"\xff\xff\xff\x06\xff\xffz\x02\xff\xff"),
    // max 0: every alias refused.
    ("seed-zero", b"\x00\x05\x01a\x07\x01b"),
];

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
}

#[test]
#[ignore = "writes files: run it to regenerate the fuzz seed corpus"]
fn write_fuzz_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("fuzz/corpus");
    let packet_dirs = [corpus.join("decode"), corpus.join("roundtrip")];

    // Fixtures, and one session per captured connection.
    let mut fixtures: Vec<PathBuf> = fs::read_dir(root.join("tests/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .collect();
    fixtures.sort();
    // key: client-version-scenario; value: (nn, direction) -> bytes
    let mut sessions: BTreeMap<String, BTreeMap<(String, String), Vec<u8>>> = BTreeMap::new();
    for path in &fixtures {
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let bytes = fs::read(path).unwrap();
        for dir in &packet_dirs {
            write(dir, &name, &bytes);
        }
        let fields: Vec<&str> = name.split('-').collect();
        if let [client, version, scenario, direction, nn, _type] = fields[..] {
            sessions
                .entry(format!("{client}-{version}-{scenario}"))
                .or_default()
                .insert((nn.to_owned(), direction.to_owned()), bytes);
        }
    }
    for (key, packets) in &sessions {
        // c2s-00 (CONNECT), s2c-00 (CONNACK), c2s-01, s2c-01, ...: the order "c2s" < "s2c" gives.
        let stream: Vec<u8> = packets.values().flatten().copied().collect();
        write(&corpus.join("decode"), &format!("session-{key}"), &stream);
    }
    for (name, bytes) in generated() {
        let version = if name.starts_with("gen-v5-") {
            ProtocolVersion::V5
        } else if name.starts_with("gen-v311-") {
            ProtocolVersion::V311
        } else {
            ProtocolVersion::V31
        };
        if let Err(e) = decode(&bytes, version) {
            panic!("seed {name} does not decode: {e:?}");
        }
        for dir in &packet_dirs {
            write(dir, name, &bytes);
        }
    }
    for (name, bytes) in TOPIC_SEEDS {
        write(&corpus.join("topic"), name, bytes);
    }
    for (name, bytes) in ALIAS_SEEDS {
        write(&corpus.join("alias"), name, bytes);
    }
}
