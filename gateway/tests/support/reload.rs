//! Hot-reload helpers shared by the reload tests: files replaced as operators and kubelet do it,
//! TLS 1.3 sessions that CONNECT, and what a session sees when it is kept or cut off.

use std::path::Path;

use mqtt_inspect::{Packet, ProtocolVersion, ReasonCode, decode};

use tokio::io::{AsyncRead, AsyncWrite};

use super::wire::{PlainWire, TlsWire, Wire};
use super::{Issued, Pki, Setup, TestGateway, client_tls, connect_frame};

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
pub async fn still_served<S: AsyncRead + AsyncWrite + Unpin>(c: &mut Wire<S>) {
    c.send(&[0xc0, 0x00]).await;
    assert_eq!(
        c.recv().await.expect("PINGRESP: still connected"),
        [0xd0, 0x00]
    );
}

/// The next packet is a DISCONNECT with `reason`, then the connection closes.
pub async fn disconnected_with<S: AsyncRead + AsyncWrite + Unpin>(
    c: &mut Wire<S>,
    reason: ReasonCode,
) {
    let frame = c.recv().await.expect("a DISCONNECT from the gateway");
    let Ok(Packet::Disconnect(d)) = decode(&frame, ProtocolVersion::V5) else {
        panic!("not a DISCONNECT: {frame:?}")
    };
    assert_eq!(d.reason, reason);
    assert!(c.recv().await.is_none(), "closed after the DISCONNECT");
}

// === The broker side ===

/// A 3.1.1 subscriber straight at the broker (not through the gateway) on `#`: it sees every
/// message the broker publishes, Wills included.
pub async fn broker_watcher(gw: &TestGateway) -> PlainWire {
    let mut w = PlainWire::plain_from(gw.broker.addr(), "127.0.0.1", ProtocolVersion::V311)
        .await
        .unwrap();
    w.try_send(&connect_frame(ProtocolVersion::V311, "watcher", None, None))
        .await
        .unwrap();
    assert_eq!(w.recv().await.unwrap(), [0x20, 2, 0, 0]);
    w.try_send(&[0x82, 6, 0, 1, 0, 1, b'#', 0]).await.unwrap();
    assert_eq!(w.recv().await.unwrap(), [0x90, 3, 0, 1, 0]);
    w
}

/// The topic of the next PUBLISH the watcher receives.
pub async fn next_topic(w: &mut PlainWire) -> String {
    let frame = w.recv().await.expect("a PUBLISH at the broker");
    let Ok(Packet::Publish(p)) = decode(&frame, ProtocolVersion::V311) else {
        panic!("not a PUBLISH: {frame:?}")
    };
    p.topic.to_owned()
}

/// Starts `setup` with client certificates checked (leaf scope) against the CRL file `crl`, and
/// the gateway's own file watcher running as long as the returned sender lives.
pub async fn start_with_leaf_crl(
    mut setup: Setup<'_>,
    crl: &Path,
) -> (TestGateway, tokio::sync::mpsc::Sender<()>) {
    setup.tls_extra = format!("crl = [\"{}\"]\ncrl_scope = \"leaf\"", crl.display());
    let gw = setup.start().await;
    let reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);
    (gw, reload)
}

/// A new connection with `cert` gets no CONNACK: refused at the TLS handshake (TLS 1.3 shows
/// the refusal on the first read).
pub async fn refused_at_handshake(gw: &TestGateway, pki: &Pki, cert: &Issued) {
    let attempt = TlsWire::try_tls(
        gw.tls_addr(),
        client_tls(pki, Some(cert), &[&rustls::version::TLS13]),
        ProtocolVersion::V5,
    )
    .await;
    if let Ok(mut c) = attempt {
        let _ = c
            .try_send(&connect_frame(ProtocolVersion::V5, "again", None, None))
            .await;
        assert!(c.recv().await.is_none(), "a revoked certificate was let in");
    }
}
