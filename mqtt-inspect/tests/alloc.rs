//! Decoding a PUBLISH allocates nothing (the crate's zero-copy promise, `lib.rs`).
//!
//! This file is its own test binary so that the counting global allocator below sees only this
//! test. It holds ONE `#[test]` fn: the harness then runs a single test thread, and nothing else in
//! the process allocates while a region is being measured. Everything the measured code needs
//! (frames, alias table, stream state) is built before each region opens; the assertions run after
//! it closes, since formatting a failure message allocates.

// Helpers outside #[test] fns build the test's own input: nothing here meets peer bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::alloc::System;
use std::hint::black_box;

use mqtt_inspect::{
    MAX_PACKET_SIZE, Packet, PacketId, Peek, Properties, Property, PropertyContext,
    ProtocolVersion, Publish, QoS, StreamState, TopicAliases, decode, encode_properties,
    peek_frame, split_frame,
};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, Stats, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Runs `f` inside a fresh region and returns what it allocated.
fn measure(f: impl FnOnce()) -> Stats {
    let region = Region::new(GLOBAL);
    f();
    region.change()
}

fn publish_frame(version: ProtocolVersion, qos: QoS, topic: &str, props: &[u8]) -> Vec<u8> {
    let packet_id = (qos != QoS::AtMostOnce).then(|| PacketId::new(42).unwrap());
    let properties = Properties::parse(props, PropertyContext::Publish).unwrap();
    let publish = Publish {
        dup: false,
        qos,
        retain: qos == QoS::ExactlyOnce,
        topic,
        packet_id,
        properties,
        payload: &[0xa5; 300],
    };
    let mut out = Vec::new();
    Packet::Publish(publish).encode(version, &mut out).unwrap();
    out
}

fn connect_frame(version: ProtocolVersion) -> Vec<u8> {
    // CONNECT: protocol name, level, flags (clean start), keep alive 60, [properties], client id.
    let mut body = vec![
        0x00,
        0x04,
        b'M',
        b'Q',
        b'T',
        b'T',
        version.level(),
        0x02,
        0x00,
        0x3c,
    ];
    if version.is_v5() {
        body.push(0x00);
    }
    body.extend_from_slice(&[0x00, 0x01, b'c']);
    let mut frame = vec![0x10, u8::try_from(body.len()).unwrap()];
    frame.extend_from_slice(&body);
    frame
}

#[test]
fn decoding_a_publish_does_not_allocate() {
    let mut props = Vec::new();
    encode_properties(
        &[
            Property::PayloadFormatIndicator(1),
            Property::MessageExpiryInterval(3600),
            Property::ContentType("application/json"),
            Property::ResponseTopic("reply/to/me"),
            Property::CorrelationData(b"corr-1234"),
            Property::UserProperty("tenant", "acme"),
            Property::UserProperty("trace", "00-abc-def-01"),
        ],
        &mut props,
    )
    .unwrap();
    let mut alias_props = Vec::new();
    encode_properties(
        &[Property::TopicAlias(3), Property::UserProperty("k", "v")],
        &mut alias_props,
    )
    .unwrap();

    let topic = "factory/line-7/sensor/temperature";
    let mut frames: Vec<(String, ProtocolVersion, Vec<u8>)> = Vec::new();
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
        frames.push((
            format!("3.1.1 {qos:?}"),
            ProtocolVersion::V311,
            publish_frame(ProtocolVersion::V311, qos, topic, &[]),
        ));
        frames.push((
            format!("5 {qos:?} with properties"),
            ProtocolVersion::V5,
            publish_frame(ProtocolVersion::V5, qos, topic, &props),
        ));
    }
    // Warm up anything lazily initialised on first use (none expected, but a first-call
    // allocation inside std must not be blamed on the codec).
    for (_, version, frame) in &frames {
        black_box(decode(frame, *version).unwrap());
    }

    let mut failures: Vec<(String, Stats)> = Vec::new();
    let mut check = |what: String, stats: Stats| {
        if stats.allocations != 0 || stats.reallocations != 0 {
            failures.push((what, stats));
        }
    };

    for (name, version, frame) in &frames {
        // Framing: peek_frame and split_frame.
        let stats = measure(|| {
            let peek = peek_frame(black_box(frame), MAX_PACKET_SIZE);
            assert!(matches!(peek, Ok(Peek::Complete(_))));
            let split = split_frame(black_box(frame), MAX_PACKET_SIZE);
            black_box(&split);
        });
        check(format!("peek_frame/split_frame {name}"), stats);

        // Decoding, reading every field and iterating the properties.
        let stats = measure(|| {
            let packet = decode(black_box(frame), *version);
            if let Ok(Packet::Publish(p)) = packet {
                black_box((p.topic, p.payload, p.packet_id, p.qos));
                for prop in p.properties.iter() {
                    black_box(prop);
                }
                black_box(p.properties.response_topic());
                black_box(p.properties.user_property_count());
                black_box(p.properties.topic_alias());
            } else {
                black_box(&packet);
            }
        });
        check(format!("decode + iterate {name}"), stats);
    }

    // StreamState::decode_client of a PUBLISH, once the CONNECT has fixed the version.
    for (name, version, frame) in &frames {
        let connect = connect_frame(*version);
        let mut state = StreamState::new();
        state.decode_client(&connect).unwrap();
        let stats = measure(|| {
            black_box(state.decode_client(black_box(frame)).unwrap());
        });
        check(format!("StreamState::decode_client {name}"), stats);
    }

    // Topic aliases: resolving an alias that is already bound, and rebinding it to a topic no
    // longer than the previous one (the slot's allocation is reused).
    let bind = publish_frame(ProtocolVersion::V5, QoS::AtLeastOnce, topic, &alias_props);
    let use_alias = publish_frame(ProtocolVersion::V5, QoS::AtLeastOnce, "", &alias_props);
    let rebind = publish_frame(ProtocolVersion::V5, QoS::AtMostOnce, "a/b", &alias_props);
    let mut aliases = TopicAliases::new(10);
    let Ok(Packet::Publish(first)) = decode(&bind, ProtocolVersion::V5) else {
        panic!("binding PUBLISH does not decode");
    };
    assert_eq!(
        aliases.resolve(first.topic, first.properties.topic_alias()),
        Ok(topic)
    );
    let stats = measure(|| {
        let Ok(Packet::Publish(p)) = decode(black_box(&use_alias), ProtocolVersion::V5) else {
            panic!("aliased PUBLISH does not decode");
        };
        let resolved = aliases.resolve(p.topic, p.properties.topic_alias());
        assert_eq!(resolved, Ok(topic));
        black_box(resolved.ok());
    });
    check("decode + resolve a bound topic alias".to_owned(), stats);
    let stats = measure(|| {
        let Ok(Packet::Publish(p)) = decode(black_box(&rebind), ProtocolVersion::V5) else {
            panic!("rebinding PUBLISH does not decode");
        };
        black_box(aliases.resolve(p.topic, p.properties.topic_alias()).ok());
    });
    check(
        "decode + rebind an alias to a shorter topic".to_owned(),
        stats,
    );
    assert_eq!(aliases.get(3), Some("a/b"));

    assert!(
        failures.is_empty(),
        "allocations while decoding: {failures:#?}"
    );
}
