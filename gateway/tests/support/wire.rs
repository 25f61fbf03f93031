//! Byte-level MQTT: a raw client over plain TCP or real TLS that sees every byte, frame builders
//! on the `mqtt_inspect` encoders, and decoded answers as owned values.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mqtt_inspect::{
    Ack, AckKind, Connect, Packet, PacketId, Properties, Property, PropertyContext,
    ProtocolVersion, Publish, QoS, ReasonCode, Will, decode, encode_properties,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long a test waits for an answer that must come.
pub const ANSWER: Duration = Duration::from_secs(5);

// === Raw client ===

/// What the next read brought: a frame, the peer's close, or nothing within the wait.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// One complete MQTT frame.
    Frame(Vec<u8>),
    /// The peer closed the connection (EOF, reset, or TLS EOF without close_notify).
    Closed,
    /// Nothing within the wait.
    Silent,
}

/// A raw MQTT connection (plain TCP or TLS) that speaks one protocol version: the one raw
/// client of the tests.
pub struct Wire<S> {
    /// The connection (for TLS: `stream.get_ref().1` is the rustls session, to read what the
    /// handshake negotiated).
    pub stream: S,
    buf: Vec<u8>,
    /// The client's own address: the `peer` of the gateway's audit lines.
    pub local: SocketAddr,
    /// The protocol version used to decode what arrives.
    pub version: ProtocolVersion,
}

/// A raw client on a plain listener.
pub type PlainWire = Wire<TcpStream>;
/// A raw client over TLS.
pub type TlsWire = Wire<TlsStream<TcpStream>>;

impl Wire<TcpStream> {
    /// Connects over plain TCP.
    pub async fn plain(addr: SocketAddr, version: ProtocolVersion) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        let local = stream.local_addr().unwrap();
        Self {
            stream,
            buf: Vec::new(),
            local,
            version,
        }
    }

    /// Connects over plain TCP from the loopback source address `from` (e.g. `127.0.6.1`), so
    /// that per-address limits and bans see a client of its own.
    pub async fn plain_from(
        to: SocketAddr,
        from: &str,
        version: ProtocolVersion,
    ) -> std::io::Result<Self> {
        let sock = TcpSocket::new_v4()?;
        sock.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0))?;
        let stream = sock.connect(to).await?;
        let local = stream.local_addr()?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            local,
            version,
        })
    }
}

impl Wire<TlsStream<TcpStream>> {
    /// Connects over TLS with `config` (see [`super::client_tls`]).
    pub async fn tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        version: ProtocolVersion,
    ) -> Self {
        Self::try_tls(addr, config, version).await.unwrap()
    }

    /// [`Wire::tls`], returning the error of a TCP connect or TLS handshake that fails.
    pub async fn try_tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        version: ProtocolVersion,
    ) -> std::io::Result<Self> {
        let tcp = TcpStream::connect(addr).await?;
        let local = tcp.local_addr()?;
        let stream = TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            local,
            version,
        })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// Writes bytes; panics when the write fails.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.try_send(bytes).await.unwrap();
    }

    /// Writes bytes, returning the error of a write that fails (a peer that has closed).
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// The next frame, the peer's close, or silence after `wait`.
    pub async fn read_within(&mut self, wait: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Ok(Some((frame, _))) =
                mqtt_inspect::split_frame(&self.buf, mqtt_inspect::MAX_PACKET_SIZE)
            {
                let f = frame.to_vec();
                self.buf.drain(..f.len());
                return Next::Frame(f);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Next::Silent,
                Ok(Ok(0) | Err(_)) => return Next::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// One frame, or `None` at EOF, on an error, or after `limit` without one.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Vec<u8>> {
        match self.read_within(limit).await {
            Next::Frame(f) => Some(f),
            Next::Closed | Next::Silent => None,
        }
    }

    /// One frame, or `None` at EOF, on an error, or after [`ANSWER`] without one.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        self.recv_within(ANSWER).await
    }

    /// The next frame; panics when the peer closes or nothing comes within `wait`.
    pub async fn frame_within(&mut self, wait: Duration) -> Vec<u8> {
        match self.read_within(wait).await {
            Next::Frame(f) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Asserts that the peer closes the connection (EOF or reset) within `wait` without sending
    /// anything (more): no frame, no partial frame, and not silence (a connection left open
    /// fails).
    pub async fn assert_eof_within(&mut self, wait: Duration) {
        match self.read_within(wait).await {
            Next::Closed => {}
            Next::Frame(frame) => panic!(
                "{}: expected the connection to close, got {:?}",
                self.local,
                Got::from_frame(&frame, self.version)
            ),
            Next::Silent => panic!(
                "{}: expected the connection to close, it stayed open for {wait:?}",
                self.local
            ),
        }
        assert!(
            self.buf.is_empty(),
            "partial frame before close: {:02x?}",
            self.buf
        );
    }

    /// The next packet, decoded; panics when none comes within [`ANSWER`].
    pub async fn next(&mut self, what: &str) -> Got {
        let frame = self
            .recv_within(ANSWER)
            .await
            .unwrap_or_else(|| panic!("expected {what}, got nothing (closed or timed out)"));
        Got::from_frame(&frame, self.version)
    }

    /// Sends a CONNECT and returns the CONNACK code (3.1.1 return code / MQTT 5 reason).
    pub async fn connect(&mut self, frame: &[u8]) -> u8 {
        self.send(frame).await;
        match self.next("CONNACK").await {
            Got::Connack { code, .. } => code,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Sends a CONNECT; returns the whole CONNACK.
    pub async fn connect_full(&mut self, frame: &[u8]) -> Got {
        self.send(frame).await;
        let got = self.next("CONNACK").await;
        assert!(matches!(got, Got::Connack { .. }), "{got:?}");
        got
    }

    /// Asserts that the gateway closes the connection (EOF or reset) within [`ANSWER`] without
    /// sending anything more; silence fails ([`Wire::assert_eof_within`]).
    pub async fn assert_closed(&mut self) {
        self.assert_eof_within(ANSWER).await;
    }

    /// PINGREQ; asserts that the very next packet is the PINGRESP (so nothing else was sent
    /// before it, and the session is alive end to end).
    pub async fn ping(&mut self) {
        self.send(&[0xc0, 0x00]).await;
        let got = self.next("PINGRESP").await;
        assert_eq!(got, Got::Pingresp, "expected PINGRESP");
    }

    /// Sends a normal DISCONNECT.
    pub async fn disconnect(&mut self) {
        self.send(&[0xe0, 0x00]).await;
    }

    /// Collects PUBLISHes (acknowledging QoS 1 ones) until one on `until` arrives; panics on any
    /// other packet or when nothing comes for [`ANSWER`].
    pub async fn publishes_until(&mut self, until: &str) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            match self.next("PUBLISH").await {
                Got::Publish {
                    topic,
                    payload,
                    qos,
                    id,
                    ..
                } => {
                    if let (1, Some(id)) = (qos, id) {
                        self.send(&ack(self.version, AckKind::Puback, id)).await;
                    }
                    let done = topic == until;
                    out.push((topic, payload));
                    if done {
                        return out;
                    }
                }
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
    }
}

// === Decoded answers ===

/// A packet from the gateway, decoded into owned values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// CONNACK.
    Connack {
        /// 3.1.1 return code or MQTT 5 reason code.
        code: u8,
        /// Session Present.
        session_present: bool,
        /// MQTT 5 Topic Alias Maximum (0 when absent).
        topic_alias_max: u16,
    },
    /// PUBLISH.
    Publish {
        /// Topic as sent (empty with an alias).
        topic: String,
        /// QoS bits.
        qos: u8,
        /// Packet identifier.
        id: Option<u16>,
        /// RETAIN.
        retain: bool,
        /// Topic Alias.
        alias: Option<u16>,
        /// Payload.
        payload: Vec<u8>,
    },
    /// PUBACK, PUBREC, PUBREL, PUBCOMP.
    Ack {
        /// Which one.
        kind: AckKind,
        /// Packet identifier.
        id: u16,
        /// Reason code (0 before MQTT 5).
        reason: u8,
    },
    /// SUBACK.
    Suback {
        /// Packet identifier.
        id: u16,
        /// Return / reason codes in order.
        codes: Vec<u8>,
    },
    /// PINGRESP.
    Pingresp,
    /// DISCONNECT.
    Disconnect {
        /// Reason code.
        reason: u8,
    },
    /// Anything else (by type name).
    Other(&'static str),
}

impl Got {
    /// Decodes one frame; panics on bytes that do not decode.
    pub fn from_frame(frame: &[u8], version: ProtocolVersion) -> Self {
        let packet =
            decode(frame, version).unwrap_or_else(|e| panic!("undecodable {frame:02x?}: {e}"));
        match packet {
            Packet::Connack(c) => Self::Connack {
                code: c.code.to_u8(),
                session_present: c.session_present,
                topic_alias_max: c.properties.topic_alias_maximum(),
            },
            Packet::Publish(p) => Self::Publish {
                topic: p.topic.to_owned(),
                qos: p.qos.bits(),
                id: p.packet_id.map(PacketId::get),
                retain: p.retain,
                alias: p.properties.topic_alias(),
                payload: p.payload.to_vec(),
            },
            Packet::Ack(a) => Self::Ack {
                kind: a.kind,
                id: a.packet_id.get(),
                reason: a.reason.to_u8(),
            },
            Packet::Suback(s) => Self::Suback {
                id: s.packet_id.get(),
                codes: s.codes.to_vec(),
            },
            Packet::Pingresp => Self::Pingresp,
            Packet::Disconnect(d) => Self::Disconnect {
                reason: d.reason.to_u8(),
            },
            other => Self::Other(other.packet_type().as_str()),
        }
    }
}

/// Shorthand for an expected acknowledgement.
pub fn got_ack(kind: AckKind, id: u16, reason: u8) -> Got {
    Got::Ack { kind, id, reason }
}

/// Asserts an acknowledgement that the broker gave: success, or MQTT 5 0x10 "no matching
/// subscribers" (Mosquitto's answer when nobody subscribed; still a success).
pub fn assert_broker_ack(got: &Got, kind: AckKind, id: u16) {
    assert!(
        matches!(got, Got::Ack { kind: k, id: i, reason: 0x00 | 0x10 } if *k == kind && *i == id),
        "expected the broker's {kind:?} {id} (0x00 / 0x10), got {got:?}"
    );
}

// === Frame builders ===

/// A CONNECT to build; `Default` is a clean-start connect with keep-alive 30 and nothing else.
#[derive(Debug, Clone, Default)]
pub struct ConnectSpec<'a> {
    /// Client identifier.
    pub client_id: &'a str,
    /// User Name.
    pub username: Option<&'a str>,
    /// Password.
    pub password: Option<&'a [u8]>,
    /// Clean Session / Clean Start is *off*.
    pub resume: bool,
    /// MQTT 5 CONNECT properties.
    pub properties: Vec<Property<'a>>,
    /// Will topic and MQTT 5 Will properties (QoS 0, not retained, payload "gone").
    pub will: Option<(&'a str, Vec<Property<'a>>)>,
}

impl ConnectSpec<'_> {
    /// The CONNECT frame in `version`.
    pub fn encode(&self, version: ProtocolVersion) -> Vec<u8> {
        let mut props = Vec::new();
        encode_properties(&self.properties, &mut props).unwrap();
        let mut will_props = Vec::new();
        let will = self.will.as_ref().map(|(topic, p)| {
            encode_properties(p, &mut will_props).unwrap();
            *topic
        });
        let will = will.map(|topic| Will {
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::parse(&will_props, PropertyContext::Will).unwrap(),
            topic,
            payload: b"gone",
        });
        let c = Connect {
            version,
            clean_start: !self.resume,
            keep_alive: 30,
            properties: Properties::parse(&props, PropertyContext::Connect).unwrap(),
            client_id: self.client_id,
            will,
            username: self.username,
            password: self.password,
            bridge: false,
        };
        let mut out = Vec::new();
        c.encode(&mut out).unwrap();
        out
    }
}

/// A CONNECT with a client id and optional credentials.
pub fn connect(
    version: ProtocolVersion,
    client_id: &str,
    username: Option<&str>,
    password: Option<&[u8]>,
) -> Vec<u8> {
    ConnectSpec {
        client_id,
        username,
        password,
        ..ConnectSpec::default()
    }
    .encode(version)
}

fn qos(bits: u8) -> QoS {
    match bits {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// A PUBLISH (`id` is ignored at QoS 0) with MQTT 5 properties.
pub fn publish(
    version: ProtocolVersion,
    topic: &str,
    qos_bits: u8,
    id: u16,
    properties: &[Property<'_>],
    payload: &[u8],
) -> Vec<u8> {
    let mut props = Vec::new();
    encode_properties(properties, &mut props).unwrap();
    let p = Publish {
        dup: false,
        qos: qos(qos_bits),
        retain: false,
        topic,
        packet_id: (qos_bits > 0).then(|| PacketId::new(id).unwrap()),
        properties: Properties::parse(&props, PropertyContext::Publish).unwrap(),
        payload,
    };
    let mut out = Vec::new();
    p.encode(version, &mut out).unwrap();
    out
}

fn varint(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = u8::try_from(n % 128).unwrap();
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return;
        }
    }
}

/// Frames a packet body behind `first_byte` and its Remaining Length.
pub fn frame(first_byte: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    varint(body.len(), &mut out);
    out.extend_from_slice(body);
    out
}

/// A SUBSCRIBE of `(filter, options byte)` pairs (no properties).
pub fn subscribe(version: ProtocolVersion, id: u16, filters: &[(&str, u8)]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    if version.is_v5() {
        body.push(0);
    }
    for (filter, options) in filters {
        body.extend_from_slice(&u16::try_from(filter.len()).unwrap().to_be_bytes());
        body.extend_from_slice(filter.as_bytes());
        body.push(*options);
    }
    let out = frame(0x82, &body);
    assert!(
        matches!(decode(&out, version), Ok(Packet::Subscribe(_))),
        "test SUBSCRIBE does not decode"
    );
    out
}

/// PUBACK/PUBREC/PUBREL/PUBCOMP with reason Success.
pub fn ack(version: ProtocolVersion, kind: AckKind, id: u16) -> Vec<u8> {
    let mut out = Vec::new();
    Ack::new(kind, PacketId::new(id).unwrap(), ReasonCode::Success)
        .encode(version, &mut out)
        .unwrap();
    out
}

/// The two versions the raw tests run in.
pub const VERSIONS: [ProtocolVersion; 2] = [ProtocolVersion::V311, ProtocolVersion::V5];

/// 3.1.1 answer / MQTT 5 answer.
pub fn per_version(version: ProtocolVersion, v311: u8, v5: u8) -> u8 {
    if version.is_v5() { v5 } else { v311 }
}

// === CONNECT without the builder ===

/// A CONNECT frame (keep-alive 30 s).
pub fn connect_frame(
    version: mqtt_inspect::ProtocolVersion,
    client_id: &str,
    user: Option<&str>,
    password: Option<&[u8]>,
) -> Vec<u8> {
    e2e::connect_frame(version, 30, client_id, user, password).unwrap()
}
