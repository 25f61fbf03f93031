//! Byte-level MQTT for the enforcement tests (`auth_connect`, `acl_*`, `aliases`): a raw client
//! over plain TCP or real TLS, frame builders on the `mqtt_inspect` encoders, decoded answers as
//! owned values, a broker spy and direct publisher, a tap that records the CONNECT the broker
//! receives, and readers of `/metrics` samples and audit lines.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::{LiveSubscriber, MqttVersion};
use mqtt_inspect::{
    Ack, AckKind, Connect, Packet, PacketId, Peek, Properties, Property, PropertyContext,
    ProtocolVersion, Publish, QoS, ReasonCode, Will, decode, decode_connect, encode_properties,
    peek_frame,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Pki, Setup, TestGateway};

/// `[limits]` for the enforcement tests: many connections, packets and refusals from 127.0.0.1
/// in a short time are what these tests do, not an attack (bans and rates have tests of their
/// own).
pub const GENEROUS_LIMITS: &str = "auth_failures_before_ban = 10000\n\
    connections_per_ip_per_second = 10000\n\
    messages_per_client_per_second = 100000\n";

/// A [`Setup`] with [`GENEROUS_LIMITS`].
pub fn enforcement_setup(pki: &Pki) -> Setup<'_> {
    let mut setup = Setup::new(pki);
    setup.limits = GENEROUS_LIMITS.to_owned();
    setup
}

/// How long a test waits for an answer that must come.
pub const ANSWER: Duration = Duration::from_secs(5);

// === Raw client ===

/// A raw MQTT connection (plain TCP or TLS) that speaks one protocol version.
pub struct Wire<S> {
    stream: S,
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
}

impl Wire<TlsStream<TcpStream>> {
    /// Connects over TLS with `config` (see [`super::client_tls`]).
    pub async fn tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        version: ProtocolVersion,
    ) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let stream = TlsConnector::from(config)
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        Self {
            stream,
            buf: Vec::new(),
            local,
            version,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    /// Writes bytes.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// One frame, or `None` at EOF, on an error, or after `limit` without one.
    pub async fn recv_within(&mut self, limit: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Ok(Some((frame, _))) =
                mqtt_inspect::split_frame(&self.buf, mqtt_inspect::MAX_PACKET_SIZE)
            {
                let f = frame.to_vec();
                self.buf.drain(..f.len());
                return Some(f);
            }
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Ok(Ok(0) | Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
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

    /// Asserts that the gateway closes the connection (EOF) without sending anything more.
    pub async fn assert_closed(&mut self) {
        if let Some(frame) = self.recv_within(ANSWER).await {
            panic!(
                "expected the connection to close, got {:?}",
                Got::from_frame(&frame, self.version)
            );
        }
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

// === The broker side ===

/// A `mosquitto_sub -v` connected straight to the broker (not through the gateway), subscribed
/// to `filter` once this returns; it exits after `count` messages or `wait_secs`.
pub async fn broker_spy(
    gw: &TestGateway,
    filter: &str,
    count: u32,
    wait_secs: u32,
) -> LiveSubscriber {
    let addr = gw.broker.addr();
    let args: Vec<String> = ["-t", filter, "-v", "-C", &count.to_string()]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        LiveSubscriber::spawn(addr, MqttVersion::V311, wait_secs, &a)
    })
    .await
    .unwrap()
    .expect("spy subscribes on the broker")
}

/// What a spy received, as `topic payload` lines.
pub async fn spy_messages(spy: LiveSubscriber) -> Vec<String> {
    let out = tokio::task::spawn_blocking(move || spy.finish())
        .await
        .unwrap()
        .unwrap();
    out.messages().iter().map(|s| (*s).to_owned()).collect()
}

/// `mosquitto_pub` straight to the broker.
pub async fn broker_pub(gw: &TestGateway, args: &[&str]) {
    let addr = gw.broker.addr();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        e2e::mosquitto_pub(addr, MqttVersion::V311, &a)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(out.success(), "mosquitto_pub to the broker: {out:?}");
}

/// One CONNECT as the broker received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tapped {
    /// Client identifier.
    pub client_id: String,
    /// User Name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Vec<u8>>,
    /// MQTT 5 Topic Alias Maximum (0 when absent).
    pub topic_alias_max: u16,
    /// MQTT 5 Will Delay Interval of the Will (`None` when absent, or no Will).
    pub will_delay: Option<u32>,
}

/// A TCP relay in front of the broker that records the CONNECT of every connection.
pub struct ConnectTap {
    /// Where the gateway should connect.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Tapped>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectTap {
    /// Listens on a free loopback port and relays every connection to `broker`.
    pub async fn start(broker: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut from, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                conns.spawn(async move {
                    let mut buf = Vec::new();
                    let len = loop {
                        if let Ok(Peek::Complete(h)) = peek_frame(&buf, u32::MAX) {
                            break h.frame_len();
                        }
                        let mut chunk = [0u8; 1024];
                        match from.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    if let Ok(c) = decode_connect(&buf[..len]) {
                        record.lock().unwrap().push(Tapped {
                            client_id: c.client_id.to_owned(),
                            username: c.username.map(str::to_owned),
                            password: c.password.map(<[u8]>::to_vec),
                            topic_alias_max: c.properties.topic_alias_maximum(),
                            will_delay: c.will.and_then(|w| {
                                w.properties.iter().find_map(|p| match p {
                                    mqtt_inspect::Property::WillDelayInterval(d) => Some(d),
                                    _ => None,
                                })
                            }),
                        });
                    }
                    let Ok(mut to) = TcpStream::connect(broker).await else {
                        return;
                    };
                    if to.write_all(&buf).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut from, &mut to).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Self { addr, seen, task }
    }

    /// The CONNECT the broker got for `client_id`.
    pub fn get(&self, client_id: &str) -> Tapped {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .find(|t| t.client_id == client_id)
            .cloned()
            .unwrap_or_else(|| panic!("the broker got no CONNECT from {client_id}"))
    }
}

impl Drop for ConnectTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the broker log has a "New client connected ... as `client_id` (...)" line, and the
/// `u'...'` part of it (`Some(None)`: connected without a user name).
pub fn broker_saw(gw: &TestGateway, client_id: &str) -> Option<Option<String>> {
    let log = gw.broker.log();
    let needle = format!(" as {client_id} (");
    let line = log
        .lines()
        .find(|l| l.contains("New client connected") && l.contains(&needle))?;
    Some(
        line.split_once("u'")
            .and_then(|(_, rest)| rest.split_once('\''))
            .map(|(user, _)| user.to_owned()),
    )
}

// === Metrics and audit ===

/// The value of the `/metrics` sample of `family` whose labels are exactly `labels` (any order).
pub async fn sample(gw: &TestGateway, family: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, body) = gw.admin_get("/metrics").await;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let (set, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((set, value)) => (set, value),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        let mut got: Vec<(String, String)> = set
            .split(',')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        got.sort();
        want.sort();
        if got == want {
            return value.trim().parse().unwrap();
        }
    }
    panic!("no sample {family}{labels:?} in /metrics")
}

/// `mqtt_gateway_acl_denied_total{action}`.
pub async fn acl_denied(gw: &TestGateway, action: &str) -> f64 {
    sample(gw, "mqtt_gateway_acl_denied_total", &[("action", action)]).await
}

/// `mqtt_gateway_auth_failures_total{listener,reason}`.
pub async fn auth_failures(gw: &TestGateway, listener: &str, reason: &str) -> f64 {
    sample(
        gw,
        "mqtt_gateway_auth_failures_total",
        &[("listener", listener), ("reason", reason)],
    )
    .await
}

/// The audit line about the connection from `peer` with `event`, `reason` and, when given, the
/// action and topic; panics when none is written within a few seconds.
pub async fn audit_of(
    gw: &TestGateway,
    peer: SocketAddr,
    event: &str,
    action: Option<&str>,
    topic: Option<&str>,
) -> serde_json::Value {
    let peer = peer.to_string();
    gw.audit_line(|v| {
        v["peer"] == peer.as_str()
            && v["event"] == event
            && action.is_none_or(|a| v["action"] == a)
            && topic.is_none_or(|t| v["topic"] == t)
    })
    .await
    .unwrap_or_else(|| {
        panic!("no audit line event={event} action={action:?} topic={topic:?} for {peer}")
    })
}

/// The 1-based line of the `[[rule]]`/`[[connect]]` header of the entry holding `marker` in
/// `policy` (how the gateway names the rule that decided).
pub fn rule_line(policy: &str, marker: &str) -> u32 {
    let lines: Vec<&str> = policy.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker} not in the policy"));
    let header = lines[..=at]
        .iter()
        .rposition(|l| l.trim_start().starts_with("[["))
        .unwrap();
    u32::try_from(header + 1).unwrap()
}

/// Asserts that an audit line names `policy.toml:<line>` as the deciding rule.
pub fn assert_rule(line: &serde_json::Value, want_line: u32) {
    let rule = line["rule"]
        .as_str()
        .unwrap_or_else(|| panic!("no rule in {line}"));
    assert!(
        rule.ends_with(&format!("policy.toml:{want_line}")),
        "rule {rule}, expected policy.toml:{want_line} ({line})"
    );
}
