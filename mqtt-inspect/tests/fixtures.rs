//! Every packet captured from real clients (`mosquitto_pub`/`mosquitto_sub` against the reference
//! Mosquitto, see `tests/fixtures/README.md`) decodes in the version it was sent with, passes the
//! direction rules of [`StreamState`], and re-encodes to exactly the captured bytes: the gateway can
//! forward or rebuild any of them without changing a byte.

use std::path::Path;

use mqtt_inspect::{
    MAX_PACKET_SIZE, Packet, Peek, ProtocolVersion, StreamState, decode, peek_frame,
};

fn version_of(field: &str) -> ProtocolVersion {
    match field {
        "v31" => ProtocolVersion::V31,
        "v311" => ProtocolVersion::V311,
        "v5" => ProtocolVersion::V5,
        other => panic!("unknown version field {other}"),
    }
}

#[test]
fn captured_packets_decode_and_reencode_byte_identically() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    let mut types = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        // <client>-<version>-<scenario>-<dir>-<nn>-<type>
        let fields: Vec<&str> = name.split('-').collect();
        assert_eq!(fields.len(), 6, "{name}");
        let version = version_of(fields[1]);
        let bytes = std::fs::read(&path).unwrap();

        let Ok(Peek::Complete(h)) = peek_frame(&bytes, MAX_PACKET_SIZE) else {
            panic!("{name}: not one complete frame")
        };
        assert_eq!(h.frame_len(), bytes.len(), "{name}");

        let packet = decode(&bytes, version).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(packet.packet_type().as_str(), fields[5], "{name}");
        types.insert(fields[5].to_owned());
        if let Packet::Connect(c) = &packet {
            assert_eq!(c.version, version, "{name}");
        }

        // Direction rules: a fresh stream that has seen a CONNECT (and CONNACK) of this version.
        let mut st = StreamState::after_connack(version);
        match fields[3] {
            "c2s" if !matches!(packet, Packet::Connect(_)) => {
                st.decode_client(&bytes)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            "s2c" if !matches!(packet, Packet::Connack(_)) => {
                st.decode_server(&bytes)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            "c2s" | "s2c" => {}
            other => panic!("{name}: direction {other}"),
        }

        let mut out = Vec::new();
        packet
            .encode(version, &mut out)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(out, bytes, "{name}: re-encoding differs");
        seen += 1;
    }
    assert!(
        seen >= 50,
        "only {seen} fixtures found in {}",
        dir.display()
    );
    for t in [
        "connect",
        "connack",
        "publish",
        "puback",
        "pubrec",
        "pubrel",
        "pubcomp",
        "subscribe",
        "suback",
        "unsubscribe",
        "unsuback",
        "pingreq",
        "pingresp",
        "disconnect",
    ] {
        assert!(types.contains(t), "no fixture of type {t}");
    }
}
