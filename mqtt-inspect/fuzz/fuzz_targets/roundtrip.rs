//! Fuzz target `roundtrip`: the first frame of the input, in each version where it decodes.
//!
//! For a packet `p = decode(frame)`:
//! 1. `encode(p)` succeeds, and `decode(encode(p)) == p` (the same packet);
//! 2. `encode(decode(encode(p))) == encode(p)` (the encoding is a fixed point);
//! 3. `encode(p) == frame` exactly when the frame is CANONICAL (see [`is_canonical`]).
//!
//! The decoder is strict (minimal Variable Byte Integers, reserved bits refused, property bytes kept
//! as sent), so almost every accepted frame is canonical. The exceptions are the optional parts that
//! MQTT 5 lets a sender omit or spell in two ways, and one byte MQTT 3.1 ignored:
//!
//! - PUBACK / PUBREC / PUBREL / PUBCOMP (MQTT 5): the encoder writes Remaining Length 2 for reason
//!   Success without properties, and omits the Property Length when there are no properties. So a
//!   Success with a reason byte (RL 3, or RL 4 with Property Length 0) becomes RL 2, and another
//!   reason with Property Length 0 (RL 4) becomes RL 3.
//! - DISCONNECT (MQTT 5): the same, with RL 0 instead of 2 (`e0 01 00` and `e0 02 00 00` become
//!   `e0 00`; `e0 02 8e 00` becomes `e0 01 8e`).
//! - AUTH: RL 0 for Success without properties; otherwise the encoder always writes the Property
//!   Length. So `f0 01 18` (reason without Property Length) becomes `f0 02 18 00`, and
//!   `f0 01 00` / `f0 02 00 00` become `f0 00`.
//! - CONNACK (MQTT 3.1): the acknowledge flags byte was unused in 3.1 and is not checked; it is
//!   re-encoded as 0.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_inspect::{
    MAX_PACKET_SIZE, Packet, Peek, ProtocolVersion, ReasonCode, decode, peek_frame, split_frame,
};

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

/// Whether `encode(decode(frame)) == frame` must hold, from the rules in the module comment.
fn is_canonical(frame: &[u8], version: ProtocolVersion, packet: &Packet<'_>) -> bool {
    let Ok(Peek::Complete(h)) = peek_frame(frame, MAX_PACKET_SIZE) else {
        return false;
    };
    let rl = h.remaining_length;
    let body = frame.get(usize::from(h.header_len)..).unwrap_or_default();
    match packet {
        Packet::Ack(a) if version.is_v5() => {
            let success = a.reason == ReasonCode::Success;
            match (success, a.properties.is_empty()) {
                (true, true) => rl == 2,
                (false, true) => rl == 3,
                (_, false) => true,
            }
        }
        Packet::Disconnect(d) if version.is_v5() => {
            let success = d.reason == ReasonCode::Success;
            match (success, d.properties.is_empty()) {
                (true, true) => rl == 0,
                (false, true) => rl == 1,
                (_, false) => true,
            }
        }
        Packet::Auth(a) => {
            if a.reason == ReasonCode::Success && a.properties.is_empty() {
                rl == 0
            } else {
                rl >= 2
            }
        }
        Packet::Connack(_) if version == ProtocolVersion::V31 => body.first() == Some(&0),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(Some((frame, _))) = split_frame(data, MAX_PACKET_SIZE) else {
        return;
    };
    for version in VERSIONS {
        let Ok(packet) = decode(frame, version) else {
            continue;
        };
        let mut once = Vec::new();
        if let Err(e) = packet.encode(version, &mut once) {
            panic!("decoded {packet:?} ({version:?}) does not encode: {e:?}");
        }
        let again = match decode(&once, version) {
            Ok(p) => p,
            Err(e) => {
                panic!("re-encoded {packet:?} ({version:?}) does not decode: {e:?} {once:02x?}")
            }
        };
        assert_eq!(again, packet, "decode(encode(p)) != p ({version:?})");
        let mut twice = Vec::new();
        if let Err(e) = again.encode(version, &mut twice) {
            panic!("second encode of {again:?} failed: {e:?}");
        }
        assert_eq!(
            twice, once,
            "the encoding is not a fixed point ({version:?})"
        );
        let canonical = is_canonical(frame, version, &packet);
        assert_eq!(
            once == frame,
            canonical,
            "{version:?} {packet:?}\n  frame     {frame:02x?}\n  re-encoded {once:02x?}\n  canonical by the rules: {canonical}"
        );
    }
});
