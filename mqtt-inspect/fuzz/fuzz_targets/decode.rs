//! Fuzz target `decode`: the input is a byte stream as a peer would send it.
//!
//! - the whole input as one frame, decoded in MQTT 3.1, 3.1.1 and 5, and as a first CONNECT;
//! - the input split into frames (`peek_frame` / `split_frame`, with a large and a small maximum),
//!   each frame decoded in every version and fed to a `StreamState` in both directions (the state
//!   goes on with the direction that accepted the frame, client first).
//!
//! Nothing may panic; `peek_frame` and `split_frame` must agree with each other and with the buffer;
//! a packet that decodes must encode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_inspect::{
    MAX_PACKET_SIZE, Peek, ProtocolVersion, StreamState, decode, decode_connect, peek_frame,
    split_frame,
};

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

fn decode_all_versions(frame: &[u8]) {
    for version in VERSIONS {
        if let Ok(packet) = decode(frame, version) {
            let mut out = Vec::new();
            if let Err(e) = packet.encode(version, &mut out) {
                panic!("decoded {packet:?} ({version:?}) does not encode: {e:?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    decode_all_versions(data);
    let _ = decode_connect(data);

    for max in [MAX_PACKET_SIZE, 64] {
        let mut state = StreamState::new();
        let mut rest = data;
        loop {
            let peek = peek_frame(rest, max);
            let split = split_frame(rest, max);
            let (frame, tail) = match (peek, split) {
                (Ok(Peek::Complete(h)), Ok(Some((frame, tail)))) => {
                    assert_eq!(frame.len(), h.frame_len());
                    assert_eq!(frame.len() + tail.len(), rest.len());
                    (frame, tail)
                }
                (Ok(Peek::Incomplete { needed, header }), Ok(None)) => {
                    assert!(needed > 0);
                    if let Some(h) = header {
                        assert_eq!(rest.len() + needed, h.frame_len());
                    }
                    break;
                }
                (Err(a), Err(b)) => {
                    assert_eq!(a, b);
                    break;
                }
                other => panic!("peek_frame and split_frame disagree: {other:?}"),
            };
            decode_all_versions(frame);
            let mut as_client = state;
            let mut as_server = state;
            if as_client.decode_client(frame).is_ok() {
                state = as_client;
            } else if as_server.decode_server(frame).is_ok() {
                state = as_server;
            }
            rest = tail;
        }
    }
});
