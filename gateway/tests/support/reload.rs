//! Hot-reload helpers shared by the reload tests: files replaced as operators and kubelet do it,
//! TLS 1.3 sessions that CONNECT, and what a session sees when it is kept or cut off.

use std::path::Path;

use mqtt_inspect::{Packet, ProtocolVersion, ReasonCode, decode};

use super::wire::TlsWire;
use super::{Issued, Pki, TestGateway, client_tls, connect_frame};

/// Replaces `path` atomically, as editors, `openssl ca -gencrl > tmp && mv` and kubelet do.
pub fn replace(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A TLS 1.3 connection with `cert`, handshake done, nothing sent yet.
pub async fn tls13(gw: &TestGateway, pki: &Pki, cert: &Issued) -> TlsWire {
    TlsWire::try_tls(
        gw.tls_addr(),
        client_tls(pki, Some(cert), &[&rustls::version::TLS13]),
        ProtocolVersion::V5,
    )
    .await
    .unwrap()
}

/// The frame is an MQTT 5 CONNACK that accepts the connection.
pub fn assert_accepted(connack: &[u8]) {
    assert!(
        matches!(decode(connack, ProtocolVersion::V5), Ok(Packet::Connack(a)) if a.code.is_success()),
        "{connack:?}"
    );
}

/// `connect` sent on `c`, and accepted.
pub async fn accepted(c: &mut TlsWire, connect: &[u8]) {
    c.send(connect).await;
    assert_accepted(&c.recv().await.expect("CONNACK"));
}

/// A TLS 1.3 session with `cert`, CONNECTed (MQTT 5) as `id` and accepted.
pub async fn connected(gw: &TestGateway, pki: &Pki, cert: &Issued, id: &str) -> TlsWire {
    let mut c = tls13(gw, pki, cert).await;
    accepted(&mut c, &connect_frame(ProtocolVersion::V5, id, None, None)).await;
    c
}

/// The session still answers a PINGREQ.
pub async fn still_served(c: &mut TlsWire) {
    c.send(&[0xc0, 0x00]).await;
    assert_eq!(
        c.recv().await.expect("PINGRESP: still connected"),
        [0xd0, 0x00]
    );
}

/// The next packet is a DISCONNECT with `reason`, then the connection closes.
pub async fn disconnected_with(c: &mut TlsWire, reason: ReasonCode) {
    let frame = c.recv().await.expect("a DISCONNECT from the gateway");
    let Ok(Packet::Disconnect(d)) = decode(&frame, ProtocolVersion::V5) else {
        panic!("not a DISCONNECT: {frame:?}")
    };
    assert_eq!(d.reason, reason);
    assert!(c.recv().await.is_none(), "closed after the DISCONNECT");
}
