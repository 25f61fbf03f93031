//! The upstream connection: dial the broker under `upstream.connect_timeout` and send it the
//! client's CONNECT, unchanged (`credentials = "passthrough"`) or with the username replaced by the
//! principal and the password removed (`credentials = "principal"`: the broker never sees secrets).
//!
//! With several brokers (`upstream.addresses`, the nodes of a cluster) each client tries them in
//! its own rendezvous order: every node is scored by a hash of (node, client id) and the highest
//! score goes first. The same client id therefore reaches the same node while it is up (its
//! session state is there), different ids spread evenly, and when a node is down its clients
//! spread over the others instead of all landing on one neighbour. Two gateway instances with the
//! same list agree, so it does not matter which one a load balancer picked.

use std::io;
use std::time::Duration;

use mqtt_inspect::{Connect, Properties, Property, PropertyContext, encode_properties};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::timeout;

use super::state::MAX_TOPIC_ALIASES;
use crate::config::Credentials;
use crate::config::UpstreamAddress;
use crate::transport::broker_stream::BrokerStream;

/// Why the broker could not be reached; the `upstream_errors_total` reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Connection refused (or the address did not resolve).
    Refused,
    /// No answer within `upstream.connect_timeout`.
    Timeout,
}

impl UpstreamError {
    /// Its `upstream_errors_total` label.
    #[must_use]
    pub const fn label(self) -> crate::metrics::UpstreamFailure {
        match self {
            Self::Refused => crate::metrics::UpstreamFailure::Refused,
            Self::Timeout => crate::metrics::UpstreamFailure::Timeout,
        }
    }

    /// The metric label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        self.label().as_str()
    }
}

/// FNV-1a over `parts` with a separator, then a 64-bit finaliser (splitmix64) so that near
/// keys spread: stable across builds and instances, unlike `std`'s hasher.
fn score(node: &str, key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.as_bytes().iter().chain(&[0xff]).chain(key) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The order in which a client with `key` (its client id) tries `nodes`.
#[must_use]
pub fn rendezvous_order<'a>(nodes: impl Iterator<Item = &'a str>, key: &[u8]) -> Vec<&'a str> {
    let mut ranked: Vec<(u64, &str)> = nodes.map(|n| (score(n, key), n)).collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.into_iter().map(|(_, n)| n).collect()
}

/// Dials the first reachable broker in the client's rendezvous order (see the module notes);
/// each failed attempt is counted in `upstream_errors_total{reason}` and logged with its cause.
/// When every node refused at once, the round is tried once more after [`RETRY_AFTER`] if the
/// deadline allows: a broker restarting (or a listen backlog overflowing in a reconnect storm)
/// refuses for a moment, and the client should not be turned away for that.
///
/// # Errors
/// The last node's [`UpstreamError`] when none could be reached.
pub async fn dial_any<'a>(
    nodes: impl Iterator<Item = &'a str>,
    key: &[u8],
    limit: Duration,
) -> Result<(BrokerStream, &'a str), UpstreamError> {
    let deadline = tokio::time::Instant::now() + limit;
    let order = rendezvous_order(nodes, key);
    let mut last = UpstreamError::Refused;
    for round in 0..2 {
        if round == 1 {
            if last != UpstreamError::Refused
                || tokio::time::Instant::now() + RETRY_AFTER >= deadline
            {
                break;
            }
            tokio::time::sleep(RETRY_AFTER).await;
        }
        for node in &order {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match dial(node, left).await {
                Ok(s) => return Ok((s, node)),
                Err((e, cause)) => {
                    metrics::counter!(crate::metrics::UPSTREAM_ERRORS_TOTAL, "reason" => e.label().as_str())
                        .increment(1);
                    tracing::warn!(broker = *node, error = e.as_str(), %cause, "upstream broker unreachable");
                    last = e;
                }
            }
        }
    }
    Err(last)
}

/// Pause before the second round of [`dial_any`].
pub const RETRY_AFTER: Duration = Duration::from_millis(200);

/// Dials the broker (`host:port` or `unix:/path`); on failure, the class and the cause.
///
/// # Errors
/// [`UpstreamError`] and the I/O error (or the timeout).
pub async fn dial(address: &str, limit: Duration) -> Result<BrokerStream, (UpstreamError, String)> {
    let dialled = match UpstreamAddress::parse(address) {
        UpstreamAddress::Unix(path) => timeout(limit, UnixStream::connect(path))
            .await
            .map(|r| r.map(BrokerStream::Unix)),
        UpstreamAddress::Tcp(address) => timeout(limit, TcpStream::connect(address))
            .await
            .map(|r| r.map(BrokerStream::Tcp)),
    };
    match dialled {
        Err(_) => Err((
            UpstreamError::Timeout,
            format!("no answer within {limit:?}"),
        )),
        Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => {
            Err((UpstreamError::Timeout, e.to_string()))
        }
        Ok(Err(e)) => Err((UpstreamError::Refused, e.to_string())),
        Ok(Ok(BrokerStream::Tcp(s))) if connected_to_itself(&s) => Err((
            UpstreamError::Refused,
            "the socket connected to itself: nothing listens on that port".to_owned(),
        )),
        Ok(Ok(BrokerStream::Tcp(s))) => {
            // MQTT is latency-sensitive and the gateway batches its own writes.
            let _ = s.set_nodelay(true);
            Ok(BrokerStream::Tcp(s))
        }
        Ok(Ok(s)) => Ok(s),
    }
}

/// The client id of the readiness probe's MQTT connections (`admin::probe_upstream`), so that a
/// broker's log and its `$SYS` client counts show them for what they are.
pub const PROBE_CLIENT_ID: &str = "mqtt-gateway-readyz-probe";

/// The probe's CONNECT: MQTT 3.1.1 (every broker speaks it), clean session (it leaves no state),
/// no credentials, no Will.
fn probe_connect() -> Vec<u8> {
    let connect = Connect {
        version: mqtt_inspect::ProtocolVersion::V311,
        clean_start: true,
        keep_alive: 30,
        properties: Properties::EMPTY,
        client_id: PROBE_CLIENT_ID,
        will: None,
        username: None,
        password: None,
        bridge: false,
    };
    let mut out = Vec::new();
    // A fixed, short CONNECT always encodes.
    let _ = connect.encode(&mut out);
    out
}

/// Connects to the broker at `address` as [`PROBE_CLIENT_ID`] and reads its CONNACK, all within
/// `limit`; after an accepting CONNACK, says DISCONNECT. Any CONNACK proves the broker alive and
/// speaking MQTT, a refusing one too (a broker that forbids anonymous clients answers 5, Not
/// authorized): its return code is returned.
///
/// # Errors
/// Why no CONNACK came: not reachable, no answer in time, closed, or an answer that is not one.
pub async fn probe(address: &str, limit: Duration, proxy_header: bool) -> Result<u8, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// A CONNACK is 4 bytes in 3.1.1; a broker's answer is read no further than this.
    const MAX_ANSWER: u32 = 64;
    let deadline = tokio::time::Instant::now() + limit;
    let mut stream = dial(address, limit).await.map_err(|(_, cause)| cause)?;
    // With `upstream.proxy_protocol`, a PROXY v2 header first, naming the probe's own connection:
    // the gateway is the client here. (Not the LOCAL command that the PROXY protocol suggests for
    // health checks: Mosquitto 2.1 rejects LOCAL connections.)
    let mut hello = Vec::new();
    if proxy_header {
        let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
        let (from, to) = match &stream {
            BrokerStream::Tcp(s) => (
                s.local_addr().unwrap_or(unspecified),
                s.peer_addr().unwrap_or(unspecified),
            ),
            BrokerStream::Unix(_) => (unspecified, unspecified),
        };
        hello = crate::transport::proxy_protocol::encode_upstream(
            &crate::transport::proxy_protocol::UpstreamInfo {
                client: from,
                listener: to,
                tls_version: None,
                cert_cn: None,
                principal: None,
            },
        )
        .map_err(|e| e.to_string())?;
    }
    let answer = async {
        hello.extend_from_slice(&probe_connect());
        stream.write_all(&hello).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(64);
        loop {
            match mqtt_inspect::peek_frame(&buf, MAX_ANSWER) {
                Ok(mqtt_inspect::Peek::Complete(h)) => {
                    let frame = buf.get(..h.frame_len()).unwrap_or_default();
                    return match mqtt_inspect::decode(frame, mqtt_inspect::ProtocolVersion::V311) {
                        Ok(mqtt_inspect::Packet::Connack(c)) => Ok(c.code),
                        _ => {
                            Err("the broker answered the probe's CONNECT with no CONNACK"
                                .to_owned())
                        }
                    };
                }
                Ok(mqtt_inspect::Peek::Incomplete { .. }) => {
                    if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                        return Err(
                            "the broker closed the probe's connection unanswered".to_owned()
                        );
                    }
                }
                Err(e) => return Err(format!("the broker's answer is not MQTT: {e}")),
            }
        }
    };
    let code = tokio::time::timeout_at(deadline, answer)
        .await
        .map_err(|_| format!("no CONNACK within {limit:?}"))??;
    if code.is_success() {
        // DISCONNECT: a normal end, not a dropped connection, in the broker's log.
        let _ = tokio::time::timeout_at(deadline, stream.write_all(&[0xe0, 0x00])).await;
    }
    let _ = tokio::time::timeout_at(deadline, stream.shutdown()).await;
    // Until the broker closes too: an orderly end on both sides, never a reset.
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout_at(deadline, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
    Ok(code.to_u8())
}

/// Whether a dialled socket is connected to itself. Dialling a local port that nobody listens on
/// can succeed when the kernel picks that very port as the source (TCP simultaneous open): a
/// broker on a port in the ephemeral range that is down would then be "reached", and the gateway
/// would read its own CONNECT back as the broker's answer.
pub(crate) fn connected_to_itself(s: &TcpStream) -> bool {
    matches!((s.local_addr(), s.peer_addr()), (Ok(local), Ok(peer)) if local == peer)
}

/// The CONNECT to send upstream: `None` means forward the original bytes.
///
/// An MQTT 5 CONNECT also tells the broker the largest packet the gateway relays to this client
/// (Maximum Packet Size, the smaller of the client's own and the gateway's `max_packet_size`):
/// the broker then skips a larger message for this client [MQTT-3.1.2-25] instead of sending
/// it, which would end the client's session at the gateway's frame limit. A Topic Alias Maximum
/// above the [`MAX_TOPIC_ALIASES`] the gateway tracks is lowered to it, so that the broker never
/// uses an alias the gateway cannot resolve [MQTT-3.3.2-10].
///
/// A Will Delay Interval above `max_will_delay` seconds is lowered to it (absent when 0, which
/// means "at once"). A delayed Will is held and published by the broker after the connection is
/// gone, out of the gateway's reach: a revocation or a policy change in between could not stop
/// it. With the delay capped, the broker publishes the Will at most `max_will_delay` after a
/// disconnection that the policy of that moment allowed (`limits.max_will_delay`, default 0).
///
/// # Errors
/// The re-encoding failed (a field too long), which cannot happen for a CONNECT that decoded.
pub fn upstream_connect(
    connect: &Connect<'_>,
    credentials: Credentials,
    principal: Option<&str>,
    max_packet_size: u32,
    max_will_delay: u32,
) -> Result<Option<Vec<u8>>, mqtt_inspect::EncodeError> {
    let announced = connect.properties.iter().find_map(|p| match p {
        Property::MaximumPacketSize(m) => Some(m),
        _ => None,
    });
    let v5 = connect.version.is_v5();
    let aliases = connect.properties.topic_alias_maximum();
    let lower_size = v5 && announced.is_none_or(|m| m > max_packet_size);
    let lower_aliases = v5 && aliases > MAX_TOPIC_ALIASES;
    let will_delay = connect.will.as_ref().and_then(|w| {
        w.properties.iter().find_map(|p| match p {
            Property::WillDelayInterval(d) => Some(d),
            _ => None,
        })
    });
    let lower_will_delay = v5 && will_delay.is_some_and(|d| d > max_will_delay);
    // A token's Authentication Method and Data are the gateway's business: the broker never
    // sees them (it would refuse a method it does not know, and the token is a credential).
    let strip_auth = v5 && connect.properties.authentication_method().is_some();
    let lower = lower_size || lower_aliases || lower_will_delay || strip_auth;
    let mut rewritten = *connect;
    let props;
    let will_props;
    if lower_will_delay && let Some(will) = &mut rewritten.will {
        let mut list: Vec<Property<'_>> = will
            .properties
            .iter()
            .filter(|p| !matches!(p, Property::WillDelayInterval(_)))
            .collect();
        if max_will_delay > 0 {
            list.push(Property::WillDelayInterval(max_will_delay));
        }
        let mut raw = Vec::new();
        encode_properties(&list, &mut raw)?;
        will_props = raw;
        will.properties = Properties::parse(&will_props, PropertyContext::Will)
            .map_err(|_| mqtt_inspect::EncodeError::InvalidValue("Will properties"))?;
    }
    let lower_connect_props = lower_size || lower_aliases || strip_auth;
    if lower_connect_props {
        let mut list: Vec<Property<'_>> = connect
            .properties
            .iter()
            .filter(|p| match p {
                Property::MaximumPacketSize(_) => !lower_size,
                Property::TopicAliasMaximum(_) => !lower_aliases,
                Property::AuthenticationMethod(_) | Property::AuthenticationData(_) => false,
                _ => true,
            })
            .collect();
        if lower_size {
            list.push(Property::MaximumPacketSize(max_packet_size));
        }
        if lower_aliases {
            list.push(Property::TopicAliasMaximum(MAX_TOPIC_ALIASES));
        }
        let mut raw = Vec::new();
        encode_properties(&list, &mut raw)?;
        props = raw;
        rewritten.properties = Properties::parse(&props, PropertyContext::Connect)
            .map_err(|_| mqtt_inspect::EncodeError::InvalidValue("CONNECT properties"))?;
    }
    match credentials {
        Credentials::Passthrough if !lower => return Ok(None),
        Credentials::Passthrough => {}
        Credentials::Principal => {
            rewritten.username = principal;
            rewritten.password = None;
        }
    }
    let mut out = Vec::new();
    rewritten.encode(&mut out)?;
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn a_socket_connected_to_itself_is_not_a_broker() {
        // Bind a port, then connect to that same port from it: Linux completes a simultaneous
        // open with itself, what a dial to a dead broker on an ephemeral port can stumble into.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let looped = socket.connect(addr).await.unwrap();
        assert!(super::connected_to_itself(&looped));
        // A real connection is not.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let real = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        assert!(!super::connected_to_itself(&real));
    }

    use super::*;

    fn connect_with(version: mqtt_inspect::ProtocolVersion, props: &[u8]) -> Connect<'_> {
        Connect {
            version,
            clean_start: true,
            keep_alive: 30,
            properties: Properties::parse(props, PropertyContext::Connect).unwrap(),
            client_id: "c",
            will: None,
            username: Some("u"),
            password: Some(b"p"),
            bridge: false,
        }
    }

    fn max_packet_of(bytes: &[u8]) -> Option<u32> {
        let c = mqtt_inspect::decode_connect(bytes).unwrap();
        c.properties.iter().find_map(|p| match p {
            Property::MaximumPacketSize(m) => Some(m),
            _ => None,
        })
    }

    #[test]
    fn the_broker_learns_the_smaller_maximum_packet_size() {
        use mqtt_inspect::ProtocolVersion::{V5, V311};
        // MQTT 5 without the property: added (passthrough keeps the credentials).
        let c = connect_with(V5, &[]);
        let out = upstream_connect(&c, Credentials::Passthrough, None, 4096, 0)
            .unwrap()
            .unwrap();
        assert_eq!(max_packet_of(&out), Some(4096));
        assert_eq!(
            mqtt_inspect::decode_connect(&out).unwrap().password,
            Some(&b"p"[..])
        );
        // A client asking for less keeps its own; passthrough then forwards the bytes as they are.
        let small = [0x27, 0, 0, 0x04, 0];
        let c = connect_with(V5, &small);
        assert!(
            upstream_connect(&c, Credentials::Passthrough, None, 4096, 0)
                .unwrap()
                .is_none()
        );
        // A client asking for more is lowered; other properties are kept.
        let big = [0x27, 0, 1, 0, 0, 0x22, 0, 10];
        let c = connect_with(V5, &big);
        let out = upstream_connect(&c, Credentials::Principal, Some("dev"), 4096, 0)
            .unwrap()
            .unwrap();
        assert_eq!(max_packet_of(&out), Some(4096));
        let d = mqtt_inspect::decode_connect(&out).unwrap();
        assert_eq!(d.properties.topic_alias_maximum(), 10);
        assert_eq!((d.username, d.password), (Some("dev"), None));
        // A Topic Alias Maximum above what the gateway tracks is lowered (and only it, when the
        // packet size needs no change): the broker may then only use aliases the gateway resolves.
        let many = [0x27, 0, 0, 0x04, 0, 0x22, 0xff, 0xff];
        let c = connect_with(V5, &many);
        let out = upstream_connect(&c, Credentials::Passthrough, None, 4096, 0)
            .unwrap()
            .unwrap();
        let d = mqtt_inspect::decode_connect(&out).unwrap();
        assert_eq!(d.properties.topic_alias_maximum(), MAX_TOPIC_ALIASES);
        assert_eq!(max_packet_of(&out), Some(1024));
        let at_cap = [0x22, 0x04, 0x00];
        let c = connect_with(V5, &at_cap);
        let out = upstream_connect(&c, Credentials::Passthrough, None, 4096, 0)
            .unwrap()
            .unwrap();
        let d = mqtt_inspect::decode_connect(&out).unwrap();
        assert_eq!(d.properties.topic_alias_maximum(), MAX_TOPIC_ALIASES);
        // MQTT 3.1.1 has no properties: passthrough forwards unchanged.
        let c = connect_with(V311, &[]);
        assert!(
            upstream_connect(&c, Credentials::Passthrough, None, 4096, 0)
                .unwrap()
                .is_none()
        );
    }

    /// lifecycle.md "On the wire": the broker never sees the Authentication Method or Data of a
    /// token CONNECT, whatever `upstream.credentials` says; every other property is kept.
    #[test]
    fn the_broker_never_sees_the_authentication_method_or_data() {
        use mqtt_inspect::ProtocolVersion::V5;
        // Authentication Method "JWT", Authentication Data "tok", Topic Alias Maximum 10, Maximum
        // Packet Size 1024.
        let props = [
            0x15, 0, 3, b'J', b'W', b'T', 0x16, 0, 3, b't', b'o', b'k', 0x22, 0, 10, 0x27, 0, 0,
            0x04, 0,
        ];
        let c = connect_with(V5, &props);
        for creds in [Credentials::Passthrough, Credentials::Principal] {
            let out = upstream_connect(&c, creds, Some("dev"), 4096, 0)
                .unwrap()
                .unwrap();
            let d = mqtt_inspect::decode_connect(&out).unwrap();
            assert_eq!(d.properties.authentication_method(), None, "{creds:?}");
            assert_eq!(d.properties.authentication_data(), None, "{creds:?}");
            assert_eq!(d.properties.topic_alias_maximum(), 10, "{creds:?}");
            assert_eq!(max_packet_of(&out), Some(1024), "{creds:?}");
        }
    }

    /// The Will Delay Interval the broker is told, for what the client asked and the cap, as a
    /// table; the Will's other properties and every other field are kept.
    #[test]
    fn the_broker_is_told_at_most_max_will_delay() {
        use mqtt_inspect::ProtocolVersion::{V5, V311};
        fn will_delay_of(bytes: &[u8]) -> Option<u32> {
            let c = mqtt_inspect::decode_connect(bytes).unwrap();
            c.will.unwrap().properties.iter().find_map(|p| match p {
                Property::WillDelayInterval(d) => Some(d),
                _ => None,
            })
        }
        // Will properties: Will Delay Interval (0x18) 3600, Content Type (0x03) "t".
        let long = [0x18, 0, 0, 0x0e, 0x10, 0x03, 0, 1, b't'];
        let short = [0x18, 0, 0, 0, 5];
        let none: [u8; 0] = [];
        // (client's Will properties, max_will_delay, credentials, what the broker gets:
        //  None = the original bytes, Some(delay) = re-encoded with that delay)
        type Row<'a> = (&'a [u8], u32, Credentials, Option<Option<u32>>);
        let rows: [Row<'_>; 7] = [
            (&long, 0, Credentials::Passthrough, Some(None)),
            (&long, 60, Credentials::Passthrough, Some(Some(60))),
            (&long, 3600, Credentials::Passthrough, None),
            (&short, 60, Credentials::Passthrough, None),
            (&short, 0, Credentials::Passthrough, Some(None)),
            (&none, 0, Credentials::Passthrough, None),
            (&long, 0, Credentials::Principal, Some(None)),
        ];
        // The CONNECT's own properties ask for less than 4096, so only the Will can change it.
        let own = [0x27, 0, 0, 0x04, 0];
        for (i, (will_props, cap, creds, want)) in rows.into_iter().enumerate() {
            let mut c = connect_with(V5, &own);
            c.will = Some(mqtt_inspect::Will {
                qos: mqtt_inspect::QoS::AtLeastOnce,
                retain: true,
                properties: Properties::parse(will_props, PropertyContext::Will).unwrap(),
                topic: "site/dev/status",
                payload: b"offline",
            });
            let out = upstream_connect(&c, creds, Some("dev"), 4096, cap).unwrap();
            match (want, out) {
                (None, None) => {}
                (Some(delay), Some(bytes)) => {
                    assert_eq!(will_delay_of(&bytes), delay, "row {i}");
                    let d = mqtt_inspect::decode_connect(&bytes).unwrap();
                    let w = d.will.unwrap();
                    assert_eq!(
                        (w.topic, w.payload, w.retain),
                        ("site/dev/status", &b"offline"[..], true)
                    );
                    let kept = w
                        .properties
                        .iter()
                        .any(|p| matches!(p, Property::ContentType("t")));
                    assert_eq!(
                        kept,
                        will_props == long,
                        "row {i}: other Will properties kept"
                    );
                    assert_eq!(max_packet_of(&bytes), Some(1024), "row {i}");
                }
                (want, got) => panic!("row {i}: want {want:?}, got {got:?}"),
            }
        }
        // MQTT 3.1.1 has no Will Delay Interval: nothing to lower.
        let mut c = connect_with(V311, &[]);
        c.will = Some(mqtt_inspect::Will {
            qos: mqtt_inspect::QoS::AtMostOnce,
            retain: false,
            properties: Properties::parse(&[], PropertyContext::Will).unwrap(),
            topic: "t",
            payload: b"x",
        });
        assert!(
            upstream_connect(&c, Credentials::Passthrough, None, 4096, 0)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn same_id_same_node_and_ids_spread_and_failover_spreads() {
        let nodes = ["10.0.0.1:1883", "10.0.0.2:1883", "10.0.0.3:1883"];
        let first = |id: &str| rendezvous_order(nodes.iter().copied(), id.as_bytes())[0];
        assert_eq!(first("sensor-17"), first("sensor-17"));
        let mut per_node = [0usize; 3];
        let mut second_choice_of_node0 = [0usize; 3];
        for i in 0..3000 {
            let id = format!("sensor-{i}");
            let order = rendezvous_order(nodes.iter().copied(), id.as_bytes());
            assert_eq!(order.len(), 3);
            let at = |n: &str| nodes.iter().position(|x| *x == n).unwrap();
            per_node[at(order[0])] += 1;
            if at(order[0]) == 0 {
                second_choice_of_node0[at(order[1])] += 1;
            }
        }
        // Even spread (each node about 1,000 of 3,000).
        assert!(
            per_node.iter().all(|n| (800..1200).contains(n)),
            "{per_node:?}"
        );
        // When node 0 is down its clients spread over both others.
        assert_eq!(second_choice_of_node0[0], 0);
        assert!(
            second_choice_of_node0[1] > 300 && second_choice_of_node0[2] > 300,
            "{second_choice_of_node0:?}"
        );
        // Removing a node moves only the clients that were on it.
        let two = &nodes[..2];
        for i in 0..500 {
            let id = format!("sensor-{i}");
            let before = rendezvous_order(nodes.iter().copied(), id.as_bytes())[0];
            let after = rendezvous_order(two.iter().copied(), id.as_bytes())[0];
            if before != nodes[2] {
                assert_eq!(before, after);
            }
        }
    }

    /// A one-connection fake broker: reads the probe's CONNECT, answers `answer`, then closes.
    async fn fake_broker(answer: &'static [u8]) -> (String, tokio::task::JoinHandle<Vec<u8>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut connect = vec![0u8; 2];
            s.read_exact(&mut connect).await.unwrap();
            let mut rest = vec![0u8; usize::from(connect[1])];
            s.read_exact(&mut rest).await.unwrap();
            connect.extend_from_slice(&rest);
            s.write_all(answer).await.unwrap();
            let mut after = Vec::new();
            // Until the probe closes: what it said after the CONNACK.
            let _ = s.read_to_end(&mut after).await;
            connect.extend_from_slice(&after);
            connect
        });
        (addr, task)
    }

    /// Any CONNACK proves the broker alive, a refusing one too (a broker that forbids anonymous
    /// clients); DISCONNECT follows an accepting one only; an answer that is not a CONNACK, or
    /// none, is a failed probe.
    #[tokio::test]
    async fn the_probe_counts_any_connack_and_nothing_else() {
        let limit = Duration::from_secs(10);
        let (addr, broker) = fake_broker(&[0x20, 2, 0, 0]).await;
        assert_eq!(probe(&addr, limit, false).await, Ok(0));
        let said = broker.await.unwrap();
        assert_eq!(said.first(), Some(&0x10), "a CONNECT");
        assert!(
            said.windows(PROBE_CLIENT_ID.len())
                .any(|w| w == PROBE_CLIENT_ID.as_bytes()),
            "under the probe's client id"
        );
        assert_eq!(
            said.get(said.len() - 2..),
            Some(&[0xe0, 0x00][..]),
            "then DISCONNECT"
        );

        let (addr, broker) = fake_broker(&[0x20, 2, 0, 5]).await;
        assert_eq!(probe(&addr, limit, false).await, Ok(5));
        let said = broker.await.unwrap();
        assert_ne!(said.last(), Some(&0x00), "no DISCONNECT after a refusal");

        let (addr, _broker) = fake_broker(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        assert!(probe(&addr, limit, false).await.is_err());
        let (addr, _broker) = fake_broker(&[0xd0, 0x00]).await;
        assert!(
            probe(&addr, limit, false).await.is_err(),
            "a PINGRESP is not a CONNACK"
        );
        // No answer: the probe gives up at its limit.
        let (addr, _broker) = fake_broker(&[]).await;
        let short = Duration::from_millis(300);
        assert!(probe(&addr, short, false).await.is_err(), "no answer");
    }
}
