//! MQTT over WebSocket listeners (issue 10), with a real Mosquitto behind: `ws://` and `wss://`
//! (mTLS), the same authentication and policy as MQTT over TCP, the rules of MQTT 3.1.1 / 5.0
//! section 6 on the wire, and the upgrade refused for a wrong path, a foreign browser Origin or
//! a missing `mqtt` subprotocol. (A real MQTT.js client is in `tests/mqttjs`.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mqtt_inspect::ProtocolVersion;
use rustls::pki_types::ServerName;
use support::wire::{Got, connect, publish, subscribe};
use support::{ALL_ACTIONS, Flaw, Pki, Setup, TestGateway, anyone, client_tls};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const V5: ProtocolVersion = ProtocolVersion::V5;

async fn gateway(pki: &Pki) -> TestGateway {
    let mut setup = Setup::new(pki);
    setup.policy = anyone(&[("allow", ALL_ACTIONS, &["ws/#"])]);
    setup.listener_extra =
        "protocol = \"websocket\"\nwebsocket_origins = [\"https://dash.example\"]".into();
    setup.passwords = format!(
        "alice:{}\n",
        mqtt_gateway::auth::hash_mosquitto_pbkdf2(b"secret", 1000).unwrap()
    );
    setup.start().await
}

/// The upgrade request for `addr` and `path` with optional Origin and subprotocol offer.
fn request(
    addr: SocketAddr,
    path: &str,
    origin: Option<&str>,
    protocol: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut r = format!("ws://{addr}{path}").into_client_request().unwrap();
    if let Some(o) = origin {
        r.headers_mut().insert("Origin", o.parse().unwrap());
    }
    if let Some(p) = protocol {
        r.headers_mut()
            .insert("Sec-WebSocket-Protocol", p.parse().unwrap());
    }
    r
}

async fn ws_plain(
    addr: SocketAddr,
    path: &str,
    origin: Option<&str>,
    protocol: Option<&str>,
) -> Result<WebSocketStream<TcpStream>, WsError> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, response) =
        tokio_tungstenite::client_async(request(addr, path, origin, protocol), tcp).await?;
    assert_eq!(
        response.headers()["Sec-WebSocket-Protocol"],
        protocol.unwrap().split(',').next().unwrap().trim(),
        "the server echoes the chosen subprotocol [MQTT-6.0.0-4]"
    );
    Ok(ws)
}

/// Sends bytes as one binary message.
async fn send<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>, bytes: &[u8]) {
    ws.send(Message::Binary(bytes.to_vec().into()))
        .await
        .unwrap();
}

/// Reads binary messages until one whole MQTT packet is buffered; `None` when the connection
/// closes first.
async fn recv<S: AsyncRead + AsyncWrite + Unpin>(
    ws: &mut WebSocketStream<S>,
    buf: &mut Vec<u8>,
) -> Option<Got> {
    loop {
        if let Ok(Some((frame, _))) = mqtt_inspect::split_frame(buf, mqtt_inspect::MAX_PACKET_SIZE)
        {
            let got = Got::from_frame(frame, V5);
            let n = frame.len();
            buf.drain(..n);
            return Some(got);
        }
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => buf.extend_from_slice(&b),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            _ => return None,
        }
    }
}

/// Enforces [MQTT-6.0.0-1] (binary frames only), [MQTT-6.0.0-2] (packets need not align with
/// frames) and DESIGN §3: "Nothing unparsed reaches the broker."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_over_ws_is_inspected_like_mqtt_over_tcp() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let addr = gw.plain_addr();
    let mut ws = ws_plain(addr, "/mqtt", None, Some("mqtt")).await.unwrap();
    let mut buf = Vec::new();
    // The CONNECT split over two messages [MQTT-6.0.0-2]: a message need not hold one packet.
    let c = connect(V5, "ws-1", Some("alice"), Some(b"secret"));
    send(&mut ws, &c[..5]).await;
    send(&mut ws, &c[5..]).await;
    assert!(matches!(
        recv(&mut ws, &mut buf).await,
        Some(Got::Connack { code: 0, .. })
    ));
    // SUBSCRIBE and two PUBLISHes in one message: a message may hold several packets.
    let mut batch = subscribe(V5, 1, &[("ws/#", 1)]);
    batch.extend(publish(V5, "ws/a", 1, 2, &[], b"allowed"));
    batch.extend(publish(V5, "secret/a", 1, 3, &[], b"denied"));
    send(&mut ws, &batch).await;
    let mut acks = Vec::new();
    let mut delivered = Vec::new();
    while acks.len() < 3 || delivered.is_empty() {
        match recv(&mut ws, &mut buf).await.expect("answers") {
            Got::Suback { id: 1, codes } => acks.push((1, codes[0])),
            Got::Ack { id, reason, .. } => acks.push((id, reason)),
            Got::Publish { topic, payload, .. } => delivered.push((topic, payload)),
            other => panic!("{other:?}"),
        }
    }
    acks.sort_unstable();
    // SUBACK granted QoS 1; the broker's PUBACK for ws/a (0x00, or 0x10 if nobody had
    // subscribed yet); the gateway's PUBACK 0x87 for the topic the policy does not grant.
    assert_eq!(acks[0], (1, 1));
    assert_eq!(acks[1].0, 2);
    assert!(matches!(acks[1].1, 0x00 | 0x10));
    assert_eq!(acks[2], (3, 0x87));
    assert_eq!(delivered, [("ws/a".to_owned(), b"allowed".to_vec())]);
    assert!(
        gw.metric("mqtt_gateway_acl_denied_total{action=\"publish\"}")
            .await
            >= 1.0
    );

    // A text message is not MQTT [MQTT-6.0.0-1]: the connection is closed.
    ws.send(Message::Text("hello".into())).await.unwrap();
    assert!(recv(&mut ws, &mut buf).await.is_none());
}

/// Enforces [MQTT-6.0.0-3] / [MQTT-6.0.0-4]: the client offers "mqtt" and the server selects it;
/// an upgrade without it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrade_is_refused_for_a_wrong_path_a_foreign_origin_or_no_mqtt_subprotocol() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let addr = gw.plain_addr();
    let status = |r: Result<WebSocketStream<TcpStream>, WsError>| match r {
        Err(WsError::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
        Ok(_) => 101,
    };
    assert_eq!(
        status(ws_plain(addr, "/other", None, Some("mqtt")).await),
        404
    );
    assert_eq!(
        status(ws_plain(addr, "/mqtt", Some("https://evil.example"), Some("mqtt")).await),
        403
    );
    let tcp = TcpStream::connect(addr).await.unwrap();
    let no_protocol =
        tokio_tungstenite::client_async(request(addr, "/mqtt", None, None), tcp).await;
    assert!(matches!(no_protocol, Err(WsError::Http(r)) if r.status() == 400));
    assert!(
        gw.audit_line(|v| v["event"] == "connection_refused" && v["reason"] == "websocket_origin")
            .await
            .is_some()
    );
    assert!(
        gw.metric("mqtt_gateway_connections_total{listener=\"plain\",outcome=\"denied\"}")
            .await
            >= 1.0
    );
    // The allowed browser origin and the MQTT 3.1 subprotocol name are accepted.
    let mut ws = ws_plain(
        addr,
        "/mqtt",
        Some("https://dash.example"),
        Some("mqttv3.1"),
    )
    .await
    .unwrap();
    send(
        &mut ws,
        &connect(V5, "ws-2", Some("alice"), Some(b"secret")),
    )
    .await;
    assert!(matches!(
        recv(&mut ws, &mut Vec::new()).await,
        Some(Got::Connack { code: 0, .. })
    ));
}

/// Enforces [MQTT-6.0.0-4] over `wss://`; gateway.example.toml: `client_auth = "required"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_client_certificate_and_refused_without_one() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let cert = pki.client("sensor-ws", None, Flaw::None);
    let tls_then_ws = |cert: Option<support::Issued>| {
        let pki = &pki;
        let addr = gw.tls_addr();
        async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let tls = tokio_rustls::TlsConnector::from(client_tls(
                pki,
                cert.as_ref(),
                &[&rustls::version::TLS13],
            ))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
            tokio_tungstenite::client_async(request(addr, "/mqtt", None, Some("mqtt")), tls).await
        }
    };
    let (mut ws, _) = tls_then_ws(Some(cert)).await.unwrap();
    send(&mut ws, &connect(V5, "sensor-ws", None, None)).await;
    assert!(matches!(
        recv(&mut ws, &mut Vec::new()).await,
        Some(Got::Connack { code: 0, .. })
    ));
    // Without a certificate the TLS layer refuses (TLS 1.3: seen at the first read).
    assert!(tls_then_ws(None).await.is_err());
}

/// A Python with paho-mqtt (`bash scripts/test.sh` installs Debian's python3-paho-mqtt): the
/// system one first, as a `python3` earlier on PATH (pyenv, a venv) may not see Debian's packages.
fn python_with_paho() -> &'static str {
    ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|python| {
            std::process::Command::new(python)
                .args(["-c", "import paho.mqtt.client"])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("paho-mqtt for Python is missing: bash scripts/test.sh installs python3-paho-mqtt")
}

/// Runs `gateway/tests/paho/ws_roundtrip.py` with `args`: its exit code and what it printed.
async fn paho(args: Vec<String>) -> (Option<i32>, String) {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/paho/ws_roundtrip.py");
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(python_with_paho());
        cmd.arg(script).args(args);
        e2e::run_with_timeout(&mut cmd, Duration::from_secs(90)).unwrap()
    })
    .await
    .unwrap();
    assert!(!out.timed_out, "{out:?}");
    (out.status.code(), format!("{}{}", out.stdout, out.stderr))
}

/// Issue 20, item 17: paho-mqtt, the most used MQTT client library, with its default WebSocket
/// settings (it sends `Origin: https://HOST:PORT` for the host and port it connects to) over
/// `ws://` (password) and `wss://` (client certificate) publishes and receives through the
/// gateway; the same client with a foreign Origin is refused with 403 and audited.
///
/// Enforces [MQTT-6.0.0-3] / [MQTT-6.0.0-4] with a real client's defaults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_mqtt_over_ws_and_wss_with_its_default_settings() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let s = |v: &str| v.to_owned();
    let plain = gw.plain_addr();
    let ws = |origin: Option<&str>| {
        let mut args = vec![
            s("ws"),
            plain.ip().to_string(),
            plain.port().to_string(),
            s("paho-ws"),
            s("ws/paho/plain"),
            s("--user"),
            s("alice"),
            s("--password"),
            s("secret"),
        ];
        if let Some(o) = origin {
            args.extend([s("--origin"), o.to_owned()]);
        }
        args
    };
    let (code, out) = paho(ws(None)).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("received hello from paho over ws"), "{out}");

    let cert = pki.client("paho-wss", None, Flaw::None);
    let (code, out) = paho(vec![
        s("wss"),
        s("localhost"),
        gw.tls_addr().port().to_string(),
        s("paho-wss"),
        s("ws/paho/tls"),
        s("--ca"),
        pki.root_path.display().to_string(),
        s("--cert"),
        cert.chain_path.display().to_string(),
        s("--key"),
        cert.key_path.display().to_string(),
    ])
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("received hello from paho over wss"), "{out}");

    // Another site's page: still refused (paho does not show the status; the 403 itself is in
    // the_upgrade_is_refused_for_a_wrong_path_a_foreign_origin_or_no_mqtt_subprotocol).
    let (code, out) = paho(ws(Some("https://evil.example"))).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("WebsocketConnectionError"), "{out}");
    assert!(
        gw.metric("mqtt_gateway_connections_total{listener=\"plain\",outcome=\"denied\"}")
            .await
            >= 1.0
    );
    assert!(
        gw.audit_line(|v| v["event"] == "connection_refused" && v["reason"] == "websocket_origin")
            .await
            .is_some()
    );
}
