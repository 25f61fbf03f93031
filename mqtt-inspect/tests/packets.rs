//! One test per rule of the specification that the decoder enforces, for each protocol level, with
//! frames written out byte by byte (not produced by our own encoder), and the accepted case beside
//! each refusal.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)] // test helpers build frames from constants

use mqtt_inspect::{
    Ack, AckKind, Connack, ConnackCode, ConnectReturnCode, DecodeError, Disconnect, Packet,
    PacketId, ProtocolVersion, QoS, ReasonCode, StreamState, Suback, decode, decode_connect,
};

const V31: ProtocolVersion = ProtocolVersion::V31;
const V311: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Builds a frame: first byte, Remaining Length, body.
fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut len = body.len();
    loop {
        let mut b = u8::try_from(len % 128).unwrap();
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

fn s(v: &str) -> Vec<u8> {
    let mut out = u16::try_from(v.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(v.as_bytes());
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn connect_body(name: &str, level: u8, flags: u8, props: Option<&[u8]>, payload: &[u8]) -> Vec<u8> {
    let mut b = s(name);
    b.push(level);
    b.push(flags);
    b.extend_from_slice(&60u16.to_be_bytes());
    if let Some(p) = props {
        b.push(u8::try_from(p.len()).unwrap());
        b.extend_from_slice(p);
    }
    b.extend_from_slice(payload);
    b
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

// === CONNECT ===

#[test]
fn connect_each_version_decodes() {
    for (name, level, props, version) in [
        ("MQIsdp", 3u8, None, V31),
        ("MQTT", 4, None, V311),
        ("MQTT", 5, Some(&[][..]), V5),
    ] {
        let f = frame(
            0x10,
            &connect_body(
                name,
                level,
                0x02 | 0x80 | 0x40,
                props,
                &cat(&[&s("dev-1"), &s("alice"), &s("secret")]),
            ),
        );
        let c = decode_connect(&f).unwrap();
        assert_eq!(c.version, version);
        assert_eq!(c.client_id, "dev-1");
        assert_eq!(c.username, Some("alice"));
        assert_eq!(c.password, Some(&b"secret"[..]));
        assert!(c.clean_start);
        assert_eq!(c.keep_alive, 60);
        // The password never shows in Debug output.
        assert!(!format!("{c:?}").contains("secret"));
    }
}

#[test]
fn connect_protocol_name_and_level_must_agree() {
    // [MQTT-3.1.2-1] / [MQTT-3.1.2-2]: unknown name, unsupported level, mismatched pair.
    let payload = s("c");
    let bad = [
        (
            connect_body("MQTX", 4, 2, None, &payload),
            DecodeError::InvalidProtocolName,
        ),
        (
            connect_body("MQTT", 6, 2, None, &payload),
            DecodeError::UnsupportedProtocolVersion(6),
        ),
        (
            connect_body("MQTT", 3, 2, None, &payload),
            DecodeError::UnsupportedProtocolVersion(3),
        ),
        (
            connect_body("MQIsdp", 4, 2, None, &payload),
            DecodeError::UnsupportedProtocolVersion(4),
        ),
    ];
    for (body, want) in bad {
        let err = decode_connect(&frame(0x10, &body)).unwrap_err();
        assert_eq!(err, want);
        assert_eq!(err.reason_code(), ReasonCode::UnsupportedProtocolVersion);
    }
}

/// A Mosquitto bridge sets the level's high bit (`try_private`): 0x83, 0x84, 0x85 decode as
/// 3.1, 3.1.1 and 5 with `bridge` set, and encode back to the same bytes; the bit does not make
/// an unsupported level or a mismatched name acceptable.
#[test]
fn the_bridge_bit_is_read_with_the_level_it_marks() {
    let payload = s("site-a");
    for (name, level, version) in [("MQIsdp", 3, V31), ("MQTT", 4, V311), ("MQTT", 5, V5)] {
        let props: Option<&[u8]> = version.is_v5().then_some(&[]);
        let plain = frame(0x10, &connect_body(name, level, 2, props, &payload));
        let bridge = frame(0x10, &connect_body(name, level | 0x80, 2, props, &payload));
        let p = decode_connect(&plain).unwrap();
        assert!(!p.bridge);
        let b = decode_connect(&bridge).unwrap();
        assert!(b.bridge, "{level:#x}");
        assert_eq!((b.version, b.client_id), (version, "site-a"));
        let mut out = Vec::new();
        b.encode(&mut out).unwrap();
        assert_eq!(out, bridge, "{level:#x} re-encodes with the bit");
    }
    for (name, level) in [
        ("MQTT", 0x86),
        ("MQTT", 0x83),
        ("MQIsdp", 0x84),
        ("MQTT", 0x80),
    ] {
        let body = connect_body(name, level, 2, None, &payload);
        assert_eq!(
            decode_connect(&frame(0x10, &body)).unwrap_err(),
            DecodeError::UnsupportedProtocolVersion(level),
            "{name} {level:#x}"
        );
    }
}

#[test]
fn connect_flag_rules() {
    let p = s("c");
    // [MQTT-3.1.2-3] reserved flag.
    assert!(matches!(
        decode_connect(&frame(0x10, &connect_body("MQTT", 4, 0x03, None, &p))),
        Err(DecodeError::InvalidConnectFlags(_))
    ));
    // [MQTT-3.1.2-11] / [MQTT-3.1.2-13]: Will QoS or Will Retain without the Will Flag.
    for flags in [0x02 | 0x08, 0x02 | 0x20] {
        assert!(matches!(
            decode_connect(&frame(0x10, &connect_body("MQTT", 4, flags, None, &p))),
            Err(DecodeError::InvalidConnectFlags(_))
        ));
    }
    // [MQTT-3.1.2-12]: Will QoS 3.
    let will = cat(&[&p, &s("w/t"), &s("bye")]);
    assert!(matches!(
        decode_connect(&frame(
            0x10,
            &connect_body("MQTT", 4, 0x02 | 0x04 | 0x18, None, &will)
        )),
        Err(DecodeError::InvalidQos(_))
    ));
    // Will QoS 2 + retain is fine.
    let bytes = frame(
        0x10,
        &connect_body("MQTT", 4, 0x02 | 0x04 | 0x10 | 0x20, None, &will),
    );
    let c = decode_connect(&bytes).unwrap();
    let w = c.will.unwrap();
    assert_eq!(
        (w.qos, w.retain, w.topic, w.payload),
        (QoS::ExactlyOnce, true, "w/t", &b"bye"[..])
    );
    // 3.1.1 [MQTT-3.1.2-22]: a password without a user name; allowed in MQTT 5 (§3.1.2.9).
    let pw = cat(&[&p, &s("pw")]);
    assert!(matches!(
        decode_connect(&frame(
            0x10,
            &connect_body("MQTT", 4, 0x02 | 0x40, None, &pw)
        )),
        Err(DecodeError::InvalidConnectFlags(_))
    ));
    let bytes = frame(0x10, &connect_body("MQTT", 5, 0x02 | 0x40, Some(&[]), &pw));
    let c = decode_connect(&bytes).unwrap();
    assert_eq!((c.username, c.password), (None, Some(&b"pw"[..])));
}

#[test]
fn connect_will_topic_must_be_a_topic_name() {
    // [MQTT-3.1.3-11]: the Will Topic is a UTF-8 topic name: no wildcards.
    for (topic, ok) in [("a/b", true), ("a/#", false), ("a/+", false), ("", false)] {
        let payload = cat(&[&s("c"), &s(topic), &s("x")]);
        let bytes = frame(0x10, &connect_body("MQTT", 4, 0x02 | 0x04, None, &payload));
        let r = decode_connect(&bytes);
        assert_eq!(r.is_ok(), ok, "{topic:?}: {r:?}");
    }
}

#[test]
fn connect_strings_are_checked() {
    // [MQTT-1.5.4-1] invalid UTF-8 and [MQTT-1.5.4-2] U+0000 in the client id and the user name.
    let bad_utf8 = [0x00, 0x02, 0xc3, 0x28];
    assert_eq!(
        decode_connect(&frame(
            0x10,
            &connect_body("MQTT", 4, 0x02, None, &bad_utf8)
        )),
        Err(DecodeError::InvalidUtf8("client identifier"))
    );
    let nul_user = cat(&[&s("c"), &[0x00, 0x03, b'a', 0x00, b'b']]);
    assert_eq!(
        decode_connect(&frame(
            0x10,
            &connect_body("MQTT", 4, 0x02 | 0x80, None, &nul_user)
        )),
        Err(DecodeError::DisallowedCodePoint("user name"))
    );
}

#[test]
fn connect_lengths_must_agree_with_remaining_length() {
    let good = connect_body("MQTT", 4, 0x02, None, &s("c"));
    assert!(decode_connect(&frame(0x10, &good)).is_ok());
    // One byte too many inside the Remaining Length.
    let mut long = good.clone();
    long.push(0);
    assert_eq!(
        decode_connect(&frame(0x10, &long)),
        Err(DecodeError::TrailingBytes("CONNECT"))
    );
    // A string whose length runs past the packet.
    let short = connect_body("MQTT", 4, 0x02, None, &[0x00, 0x09, b'c']);
    assert_eq!(
        decode_connect(&frame(0x10, &short)),
        Err(DecodeError::UnexpectedEnd("client identifier"))
    );
    // A frame with bytes beyond its Remaining Length is not one packet.
    let mut f = frame(0x10, &good);
    f.push(0xc0);
    assert_eq!(decode_connect(&f), Err(DecodeError::TrailingBytes("frame")));
}

#[test]
fn connect_v5_properties() {
    // Session Expiry, Receive Maximum, Topic Alias Maximum, User Property.
    let props = [
        &[0x11, 0, 0, 0, 60][..],
        &[0x21, 0, 10],
        &[0x22, 0, 5],
        &[0x26],
        &s("k"),
        &s("v"),
    ]
    .concat();
    let bytes = frame(0x10, &connect_body("MQTT", 5, 0x02, Some(&props), &s("c")));
    let c = decode_connect(&bytes).unwrap();
    assert_eq!(c.properties.topic_alias_maximum(), 5);
    assert_eq!(c.properties.user_property_count(), 1);
    // A Topic Alias is not a CONNECT property; Receive Maximum 0 is a Protocol Error ([MQTT-3.1.2-...]).
    for (bad, want) in [
        (&[0x23, 0, 1][..], DecodeError::PropertyNotAllowed(0x23)),
        (
            &[0x21, 0, 0][..],
            DecodeError::InvalidValue("receive maximum 0"),
        ),
        (
            &[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2][..],
            DecodeError::DuplicateProperty(0x11),
        ),
        (&[0x7f, 0][..], DecodeError::UnknownProperty(0x7f)),
    ] {
        let bytes = frame(0x10, &connect_body("MQTT", 5, 0x02, Some(bad), &s("c")));
        let err = decode_connect(&bytes).unwrap_err();
        assert_eq!(err, want);
    }
    assert_eq!(
        DecodeError::DuplicateProperty(0x11).reason_code(),
        ReasonCode::ProtocolError
    );
    assert_eq!(
        DecodeError::UnknownProperty(0x7f).reason_code(),
        ReasonCode::MalformedPacket
    );
}

#[test]
fn connect_fixed_header_flags_are_reserved() {
    // [MQTT-2.2.2-2]
    let body = connect_body("MQTT", 4, 0x02, None, &s("c"));
    assert_eq!(
        decode_connect(&frame(0x11, &body)),
        Err(DecodeError::ReservedFlags("CONNECT"))
    );
}

// === Stream rules ===

#[test]
fn first_packet_must_be_connect_and_only_once() {
    let connect = frame(0x10, &connect_body("MQTT", 4, 0x02, None, &s("c")));
    let ping = [0xc0, 0x00];
    // [MQTT-3.1.0-1]
    let mut st = StreamState::new();
    assert!(matches!(
        st.decode_client(&ping),
        Err(DecodeError::ProtocolViolation(_))
    ));
    let mut st = StreamState::new();
    assert!(matches!(st.decode_client(&connect), Ok(Packet::Connect(_))));
    assert_eq!(st.version(), Some(V311));
    assert!(matches!(st.decode_client(&ping), Ok(Packet::Pingreq)));
    // [MQTT-3.1.0-2]: a second CONNECT is a Protocol Error.
    let err = st.decode_client(&connect).unwrap_err();
    assert_eq!(err, DecodeError::ProtocolViolation("a second CONNECT"));
    assert_eq!(err.reason_code(), ReasonCode::ProtocolError);
}

#[test]
fn each_side_sends_only_its_own_packets() {
    let mut st = StreamState::new();
    st.decode_client(&frame(
        0x10,
        &connect_body("MQTT", 5, 0x02, Some(&[]), &s("c")),
    ))
    .unwrap();
    // Broker must answer with CONNACK first ([MQTT-3.2.0-1]).
    assert!(st.decode_server(&[0xd0, 0x00]).is_err());
    assert!(matches!(
        st.decode_server(&[0x20, 0x03, 0x00, 0x00, 0x00]),
        Ok(Packet::Connack(_))
    ));
    assert!(matches!(
        st.decode_server(&[0xd0, 0x00]),
        Ok(Packet::Pingresp)
    ));
    // A client does not send PINGRESP, a broker does not send PINGREQ or SUBSCRIBE.
    assert!(st.decode_client(&[0xd0, 0x00]).is_err());
    assert!(st.decode_server(&[0xc0, 0x00]).is_err());
    assert!(
        st.decode_server(&frame(0x82, &cat(&[&[0, 1, 0], &s("a"), &[0]])))
            .is_err()
    );
    // [MQTT-3.3.4-6]: no Subscription Identifier in a PUBLISH from a client; fine from the broker.
    let publish = frame(0x30, &cat(&[&s("a/b"), &[2, 0x0b, 7], b"x"]));
    assert!(matches!(
        st.decode_client(&publish),
        Err(DecodeError::ProtocolViolation(_))
    ));
    assert!(matches!(st.decode_server(&publish), Ok(Packet::Publish(_))));
}

// === PUBLISH ===

#[test]
fn publish_flags_and_packet_id() {
    for v in [V31, V311] {
        // QoS 1 with packet id 7, retained.
        let f = frame(0x33, &cat(&[&s("a/b"), &[0, 7], b"hello"]));
        let Packet::Publish(p) = decode(&f, v).unwrap() else {
            panic!()
        };
        assert_eq!(
            (p.qos, p.retain, p.dup, p.topic, p.payload),
            (QoS::AtLeastOnce, true, false, "a/b", &b"hello"[..])
        );
        assert_eq!(p.packet_id, Some(pid(7)));
        // [MQTT-3.3.1-4] QoS 3.
        assert_eq!(
            decode(&frame(0x36, &cat(&[&s("a"), &[0, 1]])), v),
            Err(DecodeError::InvalidQos("PUBLISH"))
        );
        // [MQTT-2.2.1-3] packet id 0 at QoS > 0.
        assert!(matches!(
            decode(&frame(0x32, &cat(&[&s("a"), &[0, 0]])), v),
            Err(DecodeError::ZeroPacketId(_))
        ));
        // [MQTT-3.3.1-2] DUP on QoS 0.
        assert!(matches!(
            decode(&frame(0x38, &s("a")), v),
            Err(DecodeError::ReservedFlags(_))
        ));
        // QoS 0 has no packet id: the two bytes are payload.
        let bytes = frame(0x30, &cat(&[&s("a"), &[0, 0]]));
        let Packet::Publish(p) = decode(&bytes, v).unwrap() else {
            panic!()
        };
        assert_eq!((p.packet_id, p.payload), (None, &[0u8, 0][..]));
    }
}

#[test]
fn publish_topic_rules() {
    // [MQTT-3.3.2-2]: no wildcards in a topic name.
    for topic in ["a/+", "#", "a/b#"] {
        let err = decode(&frame(0x30, &s(topic)), V311).unwrap_err();
        assert!(matches!(err, DecodeError::InvalidTopicName(_)), "{topic}");
        assert_eq!(err.reason_code(), ReasonCode::TopicNameInvalid);
    }
    // Empty topic: refused in 3.1.1, and in 5 without a Topic Alias; accepted in 5 with one.
    assert!(matches!(
        decode(&frame(0x30, &s("")), V311),
        Err(DecodeError::InvalidTopicName(_))
    ));
    assert!(matches!(
        decode(&frame(0x30, &cat(&[&s(""), &[0]])), V5),
        Err(DecodeError::InvalidTopicName(_))
    ));
    let bytes = frame(0x30, &cat(&[&s(""), &[3, 0x23, 0, 4]]));
    let Packet::Publish(p) = decode(&bytes, V5).unwrap() else {
        panic!()
    };
    assert_eq!(p.properties.topic_alias(), Some(4));
    // [MQTT-3.3.2-8]: Topic Alias 0.
    assert_eq!(
        decode(&frame(0x30, &cat(&[&s("a"), &[3, 0x23, 0, 0]])), V5),
        Err(DecodeError::TopicAliasInvalid)
    );
    assert_eq!(
        DecodeError::TopicAliasInvalid.reason_code(),
        ReasonCode::TopicAliasInvalid
    );
}

#[test]
fn publish_v5_properties() {
    let props = cat(&[
        &[0x01, 1, 0x02, 0, 0, 0, 60, 0x03],
        &s("text/plain"),
        &[0x08],
        &s("reply/here"),
        &[0x09, 0, 2, 0xde, 0xad, 0x26],
        &s("k"),
        &s("v"),
    ]);
    let f = frame(
        0x30,
        &cat(&[&s("t"), &[u8::try_from(props.len()).unwrap()], &props, b"p"]),
    );
    let Packet::Publish(p) = decode(&f, V5).unwrap() else {
        panic!()
    };
    assert_eq!(p.properties.response_topic(), Some("reply/here"));
    assert_eq!(p.properties.iter().count(), 6);
    assert_eq!(p.payload, b"p");
    // [MQTT-3.3.2-14]: the Response Topic is a topic name (no wildcards).
    let bad = cat(&[&[0x08], &s("reply/#")]);
    let f = frame(
        0x30,
        &cat(&[&s("t"), &[u8::try_from(bad.len()).unwrap()], &bad]),
    );
    assert!(matches!(
        decode(&f, V5),
        Err(DecodeError::InvalidTopicName(_))
    ));
    // Payload Format Indicator 2 is a Protocol Error.
    let f = frame(0x30, &cat(&[&s("t"), &[2, 0x01, 2]]));
    assert!(matches!(decode(&f, V5), Err(DecodeError::InvalidValue(_))));
    // A property length that runs past the packet.
    let f = frame(0x30, &cat(&[&s("t"), &[9, 0x01, 1]]));
    assert_eq!(
        decode(&f, V5),
        Err(DecodeError::UnexpectedEnd("properties"))
    );
}

// === Acknowledgements ===

#[test]
fn acks_per_version() {
    for (first, kind) in [
        (0x40, AckKind::Puback),
        (0x50, AckKind::Pubrec),
        (0x62, AckKind::Pubrel),
        (0x70, AckKind::Pubcomp),
    ] {
        for v in [V31, V311, V5] {
            let bytes = [first, 2, 0, 9];
            let Packet::Ack(a) = decode(&bytes, v).unwrap() else {
                panic!()
            };
            assert_eq!(
                (a.kind, a.packet_id, a.reason),
                (kind, pid(9), ReasonCode::Success)
            );
            // [MQTT-2.2.1-3]
            assert!(matches!(
                decode(&[first, 2, 0, 0], v),
                Err(DecodeError::ZeroPacketId(_))
            ));
            // [MQTT-2.2.2-2]: PUBREL's flags are 0010, the others' 0000.
            assert!(matches!(
                decode(&[first ^ 0x02, 2, 0, 9], v),
                Err(DecodeError::ReservedFlags(_))
            ));
        }
        // A reason code is MQTT 5 only.
        assert_eq!(
            decode(&[first, 3, 0, 9, 0x00], V311),
            Err(DecodeError::TrailingBytes(kind_name(kind)))
        );
    }
    // MQTT 5: reason code sets differ per packet.
    assert!(decode(&[0x40, 3, 0, 9, 0x87], V5).is_ok());
    assert_eq!(
        decode(&[0x40, 3, 0, 9, 0x92], V5),
        Err(DecodeError::InvalidReasonCode(0x92))
    );
    assert!(decode(&[0x62, 3, 0, 9, 0x92], V5).is_ok());
    assert_eq!(
        decode(&[0x62, 3, 0, 9, 0x87], V5),
        Err(DecodeError::InvalidReasonCode(0x87))
    );
    // Reason String allowed, Topic Alias not.
    let bytes = frame(0x40, &cat(&[&[0, 9, 0x80, 5, 0x1f], &s("no")]));
    let Packet::Ack(a) = decode(&bytes, V5).unwrap() else {
        panic!()
    };
    assert_eq!(a.reason, ReasonCode::UnspecifiedError);
    assert_eq!(
        decode(&[0x40, 7, 0, 9, 0x00, 3, 0x23, 0, 1], V5),
        Err(DecodeError::PropertyNotAllowed(0x23))
    );
}

fn kind_name(k: AckKind) -> &'static str {
    match k {
        AckKind::Puback => "PUBACK",
        AckKind::Pubrec => "PUBREC",
        AckKind::Pubrel => "PUBREL",
        AckKind::Pubcomp => "PUBCOMP",
    }
}

// === SUBSCRIBE / UNSUBSCRIBE ===

#[test]
fn subscribe_rules_311() {
    for v in [V31, V311] {
        let f = frame(0x82, &cat(&[&[0, 5], &s("a/+"), &[1], &s("b/#"), &[2]]));
        let Packet::Subscribe(sub) = decode(&f, v).unwrap() else {
            panic!()
        };
        let got: Vec<_> = sub.filters().map(|(f, o)| (f.as_str(), o.qos)).collect();
        assert_eq!(got, [("a/+", QoS::AtLeastOnce), ("b/#", QoS::ExactlyOnce)]);
        // [MQTT-3.8.1-1] flags 0010.
        assert!(matches!(
            decode(&frame(0x80, &cat(&[&[0, 5], &s("a"), &[0]])), v),
            Err(DecodeError::ReservedFlags(_))
        ));
        // [MQTT-3.8.3-2] at least one filter (Protocol Error).
        let err = decode(&frame(0x82, &[0, 5]), v).unwrap_err();
        assert!(matches!(err, DecodeError::ProtocolViolation(_)));
        // [MQTT-3-8.3-4] reserved bits of the requested QoS; QoS 3.
        assert!(matches!(
            decode(&frame(0x82, &cat(&[&[0, 5], &s("a"), &[0x04]])), v),
            Err(DecodeError::ReservedFlags(_))
        ));
        assert!(matches!(
            decode(&frame(0x82, &cat(&[&[0, 5], &s("a"), &[3]])), v),
            Err(DecodeError::InvalidQos(_))
        ));
        // [MQTT-4.7.1-1] [MQTT-4.7.1-2] misplaced wildcards; [MQTT-4.7.3-1] empty filter.
        for bad in ["a/#/b", "a+", ""] {
            assert!(
                matches!(
                    decode(&frame(0x82, &cat(&[&[0, 5], &s(bad), &[0]])), v),
                    Err(DecodeError::InvalidTopicFilter(_))
                ),
                "{bad:?}"
            );
        }
        // Packet id 0.
        assert!(matches!(
            decode(&frame(0x82, &cat(&[&[0, 0], &s("a"), &[0]])), v),
            Err(DecodeError::ZeroPacketId(_))
        ));
    }
}

#[test]
fn subscribe_rules_v5() {
    // Options: QoS 1, No Local, Retain As Published, Retain Handling 2 = 0b0010_1101.
    let f = frame(0x82, &cat(&[&[0, 5, 2, 0x0b, 9], &s("a/+"), &[0x2d]]));
    let Packet::Subscribe(sub) = decode(&f, V5).unwrap() else {
        panic!()
    };
    let (filter, o) = sub.filters().next().unwrap();
    assert_eq!(filter.as_str(), "a/+");
    assert!(o.no_local && o.retain_as_published);
    assert_eq!(o.to_byte(), 0x2d);
    assert!(sub.properties.has_subscription_identifier());
    // [MQTT-3.8.3-5] reserved bits 6-7; Retain Handling 3 is a Protocol Error.
    assert!(matches!(
        decode(&frame(0x82, &cat(&[&[0, 5, 0], &s("a"), &[0x40]])), V5),
        Err(DecodeError::ReservedFlags(_))
    ));
    assert!(matches!(
        decode(&frame(0x82, &cat(&[&[0, 5, 0], &s("a"), &[0x30]])), V5),
        Err(DecodeError::InvalidValue(_))
    ));
    // [MQTT-3.8.3-4]: No Local on a shared subscription.
    assert!(matches!(
        decode(
            &frame(0x82, &cat(&[&[0, 5, 0], &s("$share/g/a"), &[0x04]])),
            V5
        ),
        Err(DecodeError::ProtocolViolation(_))
    ));
    assert!(
        decode(
            &frame(0x82, &cat(&[&[0, 5, 0], &s("$share/g/a"), &[0x01]])),
            V5
        )
        .is_ok()
    );
    // [MQTT-4.8.2-1] a share name with a wildcard.
    assert!(matches!(
        decode(
            &frame(0x82, &cat(&[&[0, 5, 0], &s("$share/g+/a"), &[0]])),
            V5
        ),
        Err(DecodeError::InvalidSharedSubscription(_))
    ));
    // Subscription Identifier 0, or twice.
    assert!(matches!(
        decode(
            &frame(0x82, &cat(&[&[0, 5, 2, 0x0b, 0], &s("a"), &[0]])),
            V5
        ),
        Err(DecodeError::InvalidValue(_))
    ));
    assert_eq!(
        decode(
            &frame(0x82, &cat(&[&[0, 5, 4, 0x0b, 1, 0x0b, 2], &s("a"), &[0]])),
            V5
        ),
        Err(DecodeError::DuplicateProperty(0x0b))
    );
}

#[test]
fn subscribe_rewrite_keeps_allowed_filters_in_order() {
    let f = frame(
        0x82,
        &cat(&[
            &[0, 5, 0],
            &s("a/#"),
            &[1],
            &s("$SYS/#"),
            &[0],
            &s("b"),
            &[2],
        ]),
    );
    let Packet::Subscribe(sub) = decode(&f, V5).unwrap() else {
        panic!()
    };
    let mut out = Vec::new();
    sub.encode_filtered(V5, |i| i != 1, &mut out).unwrap();
    assert_eq!(
        out,
        frame(0x82, &cat(&[&[0, 5, 0], &s("a/#"), &[1], &s("b"), &[2]]))
    );
    // Keeping nothing is refused: the gateway answers such a SUBSCRIBE itself.
    assert!(sub.encode_filtered(V5, |_| false, &mut Vec::new()).is_err());
    // Unchanged re-encoding is byte-identical.
    let mut same = Vec::new();
    sub.encode(V5, &mut same).unwrap();
    assert_eq!(same, f);
}

#[test]
fn unsubscribe_rules() {
    for v in [V311, V5] {
        let props: &[u8] = if v == V5 { &[0] } else { &[] };
        let f = frame(0xa2, &cat(&[&[0, 3], props, &s("a/+"), &s("b")]));
        let Packet::Unsubscribe(u) = decode(&f, v).unwrap() else {
            panic!()
        };
        assert_eq!(
            u.filters().map(|f| f.as_str()).collect::<Vec<_>>(),
            ["a/+", "b"]
        );
        // [MQTT-3.10.1-1] flags; [MQTT-3.10.3-2] at least one filter.
        assert!(matches!(
            decode(&frame(0xa0, &cat(&[&[0, 3], props, &s("a")])), v),
            Err(DecodeError::ReservedFlags(_))
        ));
        assert!(matches!(
            decode(&frame(0xa2, &cat(&[&[0, 3], props])), v),
            Err(DecodeError::ProtocolViolation(_))
        ));
        assert!(matches!(
            decode(&frame(0xa2, &cat(&[&[0, 3], props, &s("#/a")])), v),
            Err(DecodeError::InvalidTopicFilter(_))
        ));
    }
}

// === SUBACK / UNSUBACK / CONNACK ===

#[test]
fn suback_codes_per_version() {
    assert!(decode(&[0x90, 4, 0, 1, 0x00, 0x80], V311).is_ok());
    assert_eq!(
        decode(&[0x90, 3, 0, 1, 0x87], V311),
        Err(DecodeError::InvalidReasonCode(0x87))
    );
    assert!(decode(&[0x90, 5, 0, 1, 0, 0x02, 0x87], V5).is_ok());
    assert_eq!(
        decode(&[0x90, 4, 0, 1, 0, 0x03], V5),
        Err(DecodeError::InvalidReasonCode(0x03))
    );
    assert_eq!(
        decode(&[0x90, 2, 0, 1], V311),
        Err(DecodeError::UnexpectedEnd("SUBACK return codes"))
    );
    // Built by the gateway: 3.1.1 return code 0x80 / MQTT 5 0x87 in the denied position.
    let s311 = Suback {
        packet_id: pid(1),
        properties: Default::default(),
        codes: &[1, 0x80],
    };
    let mut out = Vec::new();
    s311.encode(V311, &mut out).unwrap();
    assert_eq!(out, [0x90, 4, 0, 1, 1, 0x80]);
    let s5 = Suback {
        packet_id: pid(1),
        properties: Default::default(),
        codes: &[0x87, 0],
    };
    let mut out = Vec::new();
    s5.encode(V5, &mut out).unwrap();
    assert_eq!(out, [0x90, 5, 0, 1, 0, 0x87, 0]);
    assert!(s5.encode(V311, &mut Vec::new()).is_err());
}

#[test]
fn unsuback_per_version() {
    assert!(decode(&[0xb0, 2, 0, 1], V311).is_ok());
    assert!(matches!(
        decode(&[0xb0, 3, 0, 1, 0], V311),
        Err(DecodeError::TrailingBytes(_))
    ));
    assert!(decode(&[0xb0, 5, 0, 1, 0, 0x00, 0x11], V5).is_ok());
    assert_eq!(
        decode(&[0xb0, 4, 0, 1, 0, 0x01], V5),
        Err(DecodeError::InvalidReasonCode(0x01))
    );
}

#[test]
fn connack_per_version() {
    let Packet::Connack(c) = decode(&[0x20, 2, 1, 0], V311).unwrap() else {
        panic!()
    };
    assert!(c.session_present && c.code.is_success());
    // [MQTT-3.2.2-1] reserved acknowledge flags; [MQTT-3.2.2-4] session present on a refusal.
    assert!(matches!(
        decode(&[0x20, 2, 2, 0], V311),
        Err(DecodeError::ReservedFlags(_))
    ));
    assert!(matches!(
        decode(&[0x20, 2, 1, 5], V311),
        Err(DecodeError::ProtocolViolation(_))
    ));
    assert_eq!(
        decode(&[0x20, 2, 0, 6], V311),
        Err(DecodeError::InvalidReasonCode(6))
    );
    // MQTT 3.1 left the acknowledge byte unused.
    assert!(decode(&[0x20, 2, 0xff, 0], V31).is_ok());
    // MQTT 5: reason + properties.
    let Packet::Connack(c) = decode(&[0x20, 6, 0, 0, 3, 0x13, 0, 30], V5).unwrap() else {
        panic!()
    };
    assert!(c.code.is_success());
    assert_eq!(
        decode(&[0x20, 3, 0, 0x10, 0], V5),
        Err(DecodeError::InvalidReasonCode(0x10))
    );
    // Gateway refusals, encoded per version.
    for (version, reason, want) in [
        (V311, ReasonCode::BadUserNameOrPassword, vec![0x20, 2, 0, 4]),
        (V311, ReasonCode::NotAuthorized, vec![0x20, 2, 0, 5]),
        (V311, ReasonCode::Banned, vec![0x20, 2, 0, 5]),
        (V311, ReasonCode::ServerUnavailable, vec![0x20, 2, 0, 3]),
        (V5, ReasonCode::Banned, vec![0x20, 3, 0, 0x8a, 0]),
        (V5, ReasonCode::ServerUnavailable, vec![0x20, 3, 0, 0x88, 0]),
    ] {
        let c = Connack {
            session_present: false,
            code: ConnackCode::for_version(version, reason),
            properties: Default::default(),
        };
        let mut out = Vec::new();
        c.encode(version, &mut out).unwrap();
        assert_eq!(out, want, "{reason:?} in {version:?}");
    }
    assert_eq!(
        ConnackCode::for_version(V31, ReasonCode::QuotaExceeded),
        ConnackCode::V3(ConnectReturnCode::NotAuthorized)
    );
}

// === PING / DISCONNECT / AUTH ===

#[test]
fn ping_disconnect_auth() {
    for v in [V31, V311, V5] {
        assert_eq!(decode(&[0xc0, 0], v), Ok(Packet::Pingreq));
        assert_eq!(decode(&[0xd0, 0], v), Ok(Packet::Pingresp));
        assert!(matches!(
            decode(&[0xc0, 1, 0], v),
            Err(DecodeError::TrailingBytes(_))
        ));
        assert!(matches!(
            decode(&[0xc1, 0], v),
            Err(DecodeError::ReservedFlags(_))
        ));
        assert!(matches!(decode(&[0xe0, 0], v), Ok(Packet::Disconnect(_))));
    }
    assert!(matches!(
        decode(&[0xe0, 1, 0x8e], V311),
        Err(DecodeError::TrailingBytes(_))
    ));
    let Packet::Disconnect(d) = decode(&[0xe0, 1, 0x8e], V5).unwrap() else {
        panic!()
    };
    assert_eq!(d.reason, ReasonCode::SessionTakenOver);
    assert_eq!(
        decode(&[0xe0, 1, 0x01], V5),
        Err(DecodeError::InvalidReasonCode(0x01))
    );
    // Gateway DISCONNECT 0x81 before closing on a malformed packet (MQTT 5 only).
    let mut out = Vec::new();
    Disconnect::new(ReasonCode::MalformedPacket)
        .encode(V5, &mut out)
        .unwrap();
    assert_eq!(out, [0xe0, 1, 0x81]);
    assert!(
        Disconnect::new(ReasonCode::MalformedPacket)
            .encode(V311, &mut Vec::new())
            .is_err()
    );
    let mut out = Vec::new();
    Disconnect::new(ReasonCode::Success)
        .encode(V311, &mut out)
        .unwrap();
    assert_eq!(out, [0xe0, 0]);
    // AUTH is MQTT 5 only: type 15 is reserved before.
    assert_eq!(
        decode(&[0xf0, 0], V311),
        Err(DecodeError::InvalidPacketType(15))
    );
    let auth = frame(0xf0, &cat(&[&[0x18, 8, 0x15], &s("SCRAM")]));
    let Packet::Auth(a) = decode(&auth, V5).unwrap() else {
        panic!()
    };
    assert_eq!(a.properties.authentication_method(), Some("SCRAM"));
    assert_eq!(
        decode(&[0xf0, 2, 0x87, 0], V5),
        Err(DecodeError::InvalidReasonCode(0x87))
    );
}

#[test]
fn gateway_acks_encode_per_version() {
    // QoS 1 deny: PUBACK 0x87 in MQTT 5, plain PUBACK in 3.1.1.
    let mut out = Vec::new();
    Ack::new(AckKind::Puback, pid(0x1234), ReasonCode::NotAuthorized)
        .encode(V5, &mut out)
        .unwrap();
    assert_eq!(out, [0x40, 3, 0x12, 0x34, 0x87]);
    let mut out = Vec::new();
    Ack::new(AckKind::Puback, pid(0x1234), ReasonCode::Success)
        .encode(V311, &mut out)
        .unwrap();
    assert_eq!(out, [0x40, 2, 0x12, 0x34]);
    assert!(
        Ack::new(AckKind::Puback, pid(1), ReasonCode::NotAuthorized)
            .encode(V311, &mut Vec::new())
            .is_err()
    );
    // QoS 2 flow completed locally: PUBREC 0x87, then PUBCOMP.
    let mut out = Vec::new();
    Ack::new(AckKind::Pubrec, pid(2), ReasonCode::NotAuthorized)
        .encode(V5, &mut out)
        .unwrap();
    assert_eq!(out, [0x50, 3, 0, 2, 0x87]);
    let mut out = Vec::new();
    Ack::new(AckKind::Pubcomp, pid(2), ReasonCode::Success)
        .encode(V5, &mut out)
        .unwrap();
    assert_eq!(out, [0x70, 2, 0, 2]);
    let mut out = Vec::new();
    Ack::new(AckKind::Pubrel, pid(2), ReasonCode::Success)
        .encode(V311, &mut out)
        .unwrap();
    assert_eq!(out, [0x62, 2, 0, 2]);
}

#[test]
fn connect_reencoded_with_principal_and_no_password() {
    let props = cat(&[&[0x11, 0, 0, 0, 30, 0x26], &s("k"), &s("v")]);
    let payload = cat(&[
        &s("c-1"),
        &[0],
        &s("w/t"),
        &s("bye"),
        &s("alice"),
        &s("secret"),
    ]);
    let orig = frame(
        0x10,
        &connect_body(
            "MQTT",
            5,
            0x02 | 0x04 | 0x08 | 0x80 | 0x40,
            Some(&props),
            &payload,
        ),
    );
    let c = decode_connect(&orig).unwrap();
    let mut rewritten = c;
    rewritten.username = Some("sensor-1");
    rewritten.password = None;
    let mut out = Vec::new();
    rewritten.encode(&mut out).unwrap();
    let back = decode_connect(&out).unwrap();
    assert_eq!(back.username, Some("sensor-1"));
    assert_eq!(back.password, None);
    assert_eq!(
        (back.client_id, back.keep_alive, back.clean_start),
        (c.client_id, c.keep_alive, c.clean_start)
    );
    assert_eq!(back.properties, c.properties);
    assert_eq!(back.will, c.will);
    assert!(!out.windows(6).any(|w| w == b"secret"));
    // Unchanged re-encoding is byte-identical.
    let mut same = Vec::new();
    c.encode(&mut same).unwrap();
    assert_eq!(same, orig);
}

#[test]
fn oversize_and_malformed_lengths() {
    // Remaining Length with a fifth byte.
    assert!(matches!(
        decode(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], V311),
        Err(DecodeError::MalformedVarInt(_))
    ));
    // Packet type 0.
    assert_eq!(
        decode(&[0x00, 0x00], V311),
        Err(DecodeError::InvalidPacketType(0))
    );
    // A truncated frame is not a packet.
    assert!(matches!(
        decode(&[0x30, 0x05, 0x00], V311),
        Err(DecodeError::UnexpectedEnd(_))
    ));
    assert_eq!(
        DecodeError::PacketTooLarge { size: 10, max: 5 }.reason_code(),
        ReasonCode::PacketTooLarge
    );
}

/// [MQTT-3.1.0-1] and [MQTT-2.2.2-2] from the first byte alone: only 0x10 can start a
/// connection; every other first byte is refused before its body is read, and agrees with what
/// `decode_connect` says of the whole frame.
#[test]
fn the_first_byte_of_a_connection_must_be_a_connects() {
    assert_eq!(mqtt_inspect::check_connect_first_byte(0x10), Ok(()));
    for byte in 0..=u8::MAX {
        let early = mqtt_inspect::check_connect_first_byte(byte);
        if byte == 0x10 {
            continue;
        }
        let expected = if byte >> 4 == 1 {
            DecodeError::ReservedFlags("CONNECT")
        } else {
            DecodeError::ProtocolViolation("the first packet must be CONNECT")
        };
        assert_eq!(early, Err(expected), "{byte:#04x}");
        // The whole frame is refused too (never accepted by one and refused by the other).
        let body = connect_body("MQTT", 4, 0x02, None, &s("c"));
        assert!(decode_connect(&frame(byte, &body)).is_err(), "{byte:#04x}");
    }
    let good = frame(0x10, &connect_body("MQTT", 4, 0x02, None, &s("c")));
    assert!(decode_connect(&good).is_ok());
}
