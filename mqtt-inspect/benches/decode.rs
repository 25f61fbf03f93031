//! Decode throughput: mqtt-inspect against rumqttc's own codec, on the same bytes.
//!
//!     cargo bench -p mqtt-inspect --bench decode -- --warm-up-time 1 --measurement-time 5
//!
//! One buffer per protocol version holds a realistic client-to-broker mix (seeded, so every run
//! sees the same bytes): 85 % small PUBLISH (QoS 0 and 1, 16–64 B topics, 64 B–1 KiB payloads; in
//! MQTT 5 a third of them carry properties), 10 % SUBSCRIBE (1–3 filters), 5 % PINGREQ.
//!
//! - `mqtt-inspect`: `split_frame` + `decode` over the whole buffer, then reading the views the
//!   way a gateway does: topic and payload of each PUBLISH, every property, every SUBSCRIBE filter.
//! - `mqtt-inspect/decode-only`: `split_frame` + `decode`, views untouched (the decode already
//!   validated them: topic UTF-8 and wildcards, every property, every filter).
//! - `rumqttc`: `Packet::read(&mut BytesMut, max)` of `rumqttc::mqttbytes::v4` (3.1.1) or
//!   `rumqttc::v5::mqttbytes::v5` (5) until the buffer is empty. rumqttc copies topics into `String`
//!   (v4) or `Bytes` (v5) and parses properties into owned structs: that is its design. Refilling its
//!   `BytesMut` from the buffer happens in the untimed setup (`iter_batched`).

// Benchmark setup code builds its own input: unwrap and indexing cannot meet peer bytes here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mqtt_inspect::{
    Packet, PacketId, Properties, Property, PropertyContext, ProtocolVersion, Publish, QoS, decode,
    encode_properties, split_frame,
};

const FRAMES: usize = 2_000;
const MAX: u32 = 1 << 20;

/// xorshift64*: a fixed, dependency-free stream of pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        let span = u64::try_from(hi - lo + 1).unwrap();
        lo + usize::try_from(self.next() % span).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// A topic of `16..=64` bytes: levels of lower-case letters and digits.
fn topic(rng: &mut Rng) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let len = rng.range(16, 64);
    let mut t = String::with_capacity(len);
    while t.len() < len {
        if !t.is_empty() && t.len() < len - 1 && rng.range(0, 5) == 0 {
            t.push('/');
        } else {
            t.push(char::from(ALPHABET[rng.range(0, ALPHABET.len() - 1)]));
        }
    }
    t
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    loop {
        let low = u8::try_from(v % 128).unwrap();
        v /= 128;
        if v == 0 {
            out.push(low);
            return;
        }
        out.push(low | 0x80);
    }
}

/// SUBSCRIBE has no public constructor (the codec keeps its filters as validated wire bytes):
/// written by hand, MQTT 5.0 §3.8.
fn subscribe(rng: &mut Rng, version: ProtocolVersion, id: u16, out: &mut Vec<u8>) {
    let mut body = id.to_be_bytes().to_vec();
    if version.is_v5() {
        body.extend_from_slice(&[0x02, 0x0b, 0x01]); // Subscription Identifier 1
    }
    for _ in 0..rng.range(1, 3) {
        let mut f = topic(rng);
        if rng.range(0, 1) == 0 {
            f.push_str("/#");
        }
        body.extend_from_slice(&u16::try_from(f.len()).unwrap().to_be_bytes());
        body.extend_from_slice(f.as_bytes());
        body.push(u8::try_from(rng.range(0, 1)).unwrap());
    }
    out.push(0x82);
    put_varint(out, body.len());
    out.extend_from_slice(&body);
}

/// The benchmark input for `version`: `FRAMES` frames in one buffer.
fn stream(version: ProtocolVersion) -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(version.level()));
    let mut props = Vec::new();
    encode_properties(
        &[
            Property::ContentType("application/json"),
            Property::MessageExpiryInterval(300),
            Property::UserProperty("trace-id", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ],
        &mut props,
    )
    .unwrap();
    let mut out = Vec::new();
    for i in 0..FRAMES {
        let id = u16::try_from(i % 65_535 + 1).unwrap();
        let kind = rng.range(0, 99);
        if kind < 85 {
            let t = topic(&mut rng);
            let payload: Vec<u8> = (0..rng.range(64, 1024)).map(|_| rng.byte()).collect();
            let qos = if kind < 55 {
                QoS::AtMostOnce
            } else {
                QoS::AtLeastOnce
            };
            let properties = if version.is_v5() && rng.range(0, 2) == 0 {
                Properties::parse(&props, PropertyContext::Publish).unwrap()
            } else {
                Properties::EMPTY
            };
            let publish = Publish {
                dup: false,
                qos,
                retain: false,
                topic: &t,
                packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(id).unwrap()),
                properties,
                payload: &payload,
            };
            Packet::Publish(publish).encode(version, &mut out).unwrap();
        } else if kind < 95 {
            subscribe(&mut rng, version, id, &mut out);
        } else {
            Packet::Pingreq.encode(version, &mut out).unwrap();
        }
    }
    out
}

/// split_frame + decode, then read every view. Returns the number of frames.
#[inline(never)] // one call per iteration; a symbol for `valgrind --toggle-collect`
fn inspect_walk(buf: &[u8], version: ProtocolVersion) -> usize {
    let mut rest = buf;
    let mut n = 0;
    while let Ok(Some((frame, tail))) = split_frame(rest, MAX) {
        match decode(frame, version).unwrap() {
            Packet::Publish(p) => {
                black_box((p.topic, p.payload, p.packet_id));
                for prop in p.properties.iter() {
                    black_box(prop);
                }
            }
            Packet::Subscribe(s) => {
                for f in s.filters() {
                    black_box(f);
                }
            }
            other => {
                black_box(other);
            }
        }
        n += 1;
        rest = tail;
    }
    n
}

/// split_frame + decode only.
#[inline(never)] // one call per iteration; a symbol for `valgrind --toggle-collect`
fn inspect_decode(buf: &[u8], version: ProtocolVersion) -> usize {
    let mut rest = buf;
    let mut n = 0;
    while let Ok(Some((frame, tail))) = split_frame(rest, MAX) {
        black_box(decode(frame, version).unwrap());
        n += 1;
        rest = tail;
    }
    n
}

#[inline(never)] // one call per iteration; a symbol for `valgrind --toggle-collect`
fn rumqttc_v4(mut stream: BytesMut) -> usize {
    let mut n = 0;
    while !stream.is_empty() {
        let p = rumqttc::mqttbytes::v4::Packet::read(&mut stream, 1 << 20).unwrap();
        black_box(&p);
        n += 1;
    }
    n
}

#[inline(never)] // one call per iteration; a symbol for `valgrind --toggle-collect`
fn rumqttc_v5(mut stream: BytesMut) -> usize {
    let mut n = 0;
    while !stream.is_empty() {
        let p = rumqttc::v5::mqttbytes::v5::Packet::read(&mut stream, Some(MAX)).unwrap();
        black_box(&p);
        n += 1;
    }
    n
}

fn bench(c: &mut Criterion) {
    for (label, version) in [
        ("v3.1.1", ProtocolVersion::V311),
        ("v5", ProtocolVersion::V5),
    ] {
        let buf = stream(version);
        // Both codecs must accept every frame of the input, or the comparison means nothing.
        assert_eq!(inspect_walk(&buf, version), FRAMES);
        let rumqttc = if version.is_v5() {
            rumqttc_v5
        } else {
            rumqttc_v4
        };
        assert_eq!(rumqttc(BytesMut::from(&buf[..])), FRAMES);

        let mut group = c.benchmark_group(format!("decode/{label}"));
        group.throughput(Throughput::ElementsAndBytes {
            elements: u64::try_from(FRAMES).unwrap(),
            bytes: u64::try_from(buf.len()).unwrap(),
        });
        group.bench_function("mqtt-inspect", |b| {
            b.iter(|| inspect_walk(black_box(&buf), version));
        });
        group.bench_function("mqtt-inspect/decode-only", |b| {
            b.iter(|| inspect_decode(black_box(&buf), version));
        });
        group.bench_function("rumqttc", |b| {
            b.iter_batched(|| BytesMut::from(&buf[..]), rumqttc, BatchSize::LargeInput);
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
