//! Property tests for mqtt-inspect (issue 2).
//!
//! 1. Nothing panics on arbitrary input: framing, decoding in every version, the stream state in
//!    both directions, property lists in every context, topic validation and matching, aliases.
//! 2. Framing: every strict prefix of a valid frame is `Incomplete`, the whole frame `Complete`.
//! 3. decode ∘ encode is the identity on GENERATED packets of every type in every version, and
//!    encode ∘ decode gives the same bytes back.
//! 4. Topics: `matches` agrees with a reference implementation written here, and `contains` is
//!    sound (`contains(a, b)` and `matches(b, t)` imply `matches(a, t)`).

// Strategies and helpers live outside #[test] fns, where the workspace lints would flag them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;

use mqtt_inspect::topic::{contains, matches};
use mqtt_inspect::{
    Ack, AckKind, Auth, Connack, ConnackCode, Connect, ConnectReturnCode, DecodeError, Direction,
    Disconnect, MAX_PACKET_SIZE, Packet, PacketId, PacketType, Peek, Properties, Property,
    PropertyContext, ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, StreamState,
    Suback, SubscriptionOptions, TopicAliases, TopicFilter, TopicName, Unsuback, Will, decode,
    encode_properties, peek_frame, split_frame, varint_len,
};
use proptest::prelude::*;
use proptest::sample::{select, subsequence};

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

const CONTEXTS: [PropertyContext; 11] = [
    PropertyContext::Connect,
    PropertyContext::Will,
    PropertyContext::Connack,
    PropertyContext::Publish,
    PropertyContext::Ack,
    PropertyContext::Subscribe,
    PropertyContext::Suback,
    PropertyContext::Unsubscribe,
    PropertyContext::Unsuback,
    PropertyContext::Disconnect,
    PropertyContext::Auth,
];

fn version() -> impl Strategy<Value = ProtocolVersion> {
    select(VERSIONS.to_vec())
}

fn context() -> impl Strategy<Value = PropertyContext> {
    select(CONTEXTS.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Strings, topics and filters
// ---------------------------------------------------------------------------------------------

/// A UTF-8 Encoded String the codec accepts: no control characters, no non-characters.
fn mqtt_string(max: usize) -> BoxedStrategy<String> {
    proptest::string::string_regex(&format!("[a-zA-Z0-9 _./:+#$é€😀\u{a0}-]{{0,{max}}}"))
        .unwrap()
        .boxed()
}

/// One level of a topic name: no '/', '+', '#'.
fn topic_level() -> BoxedStrategy<String> {
    prop_oneof![
        3 => "[a-z0-9]{1,6}",
        1 => Just(String::new()),
        1 => "[A-Z_é€😀 -]{1,4}",
        1 => Just("$SYS".to_owned()),
    ]
    .boxed()
}

fn topic_name() -> BoxedStrategy<String> {
    proptest::collection::vec(topic_level(), 1..6)
        .prop_map(|levels| levels.join("/"))
        .prop_filter("a topic name is not empty", |t| !t.is_empty())
        .boxed()
}

fn plain_filter() -> BoxedStrategy<String> {
    let level = prop_oneof![3 => topic_level(), 1 => Just("+".to_owned())];
    (proptest::collection::vec(level, 1..5), any::<bool>())
        .prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#".to_owned());
            }
            levels.join("/")
        })
        .prop_filter("a topic filter is not empty", |f| !f.is_empty())
        .boxed()
}

fn topic_filter() -> BoxedStrategy<String> {
    prop_oneof![
        4 => plain_filter(),
        1 => ("[a-z0-9_]{1,5}", plain_filter()).prop_map(|(g, f)| format!("$share/{g}/{f}")),
        1 => Just("#".to_owned()),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// An owned property value, so that strategies can produce it; [`OwnedProp::get`] borrows it as
/// the codec's [`Property`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum OwnedProp {
    Byte(u8, u8),
    Two(u8, u16),
    Four(u8, u32),
    Var(u8, u32),
    Str(u8, String),
    Bin(u8, Vec<u8>),
    User(String, String),
}

impl OwnedProp {
    fn get(&self) -> Property<'_> {
        use OwnedProp as O;
        use Property as P;
        match self {
            O::Byte(0x01, v) => P::PayloadFormatIndicator(*v),
            O::Byte(0x17, v) => P::RequestProblemInformation(*v),
            O::Byte(0x19, v) => P::RequestResponseInformation(*v),
            O::Byte(0x24, v) => P::MaximumQos(*v),
            O::Byte(0x25, v) => P::RetainAvailable(*v),
            O::Byte(0x28, v) => P::WildcardSubscriptionAvailable(*v),
            O::Byte(0x29, v) => P::SubscriptionIdentifierAvailable(*v),
            O::Byte(0x2a, v) => P::SharedSubscriptionAvailable(*v),
            O::Four(0x02, v) => P::MessageExpiryInterval(*v),
            O::Four(0x11, v) => P::SessionExpiryInterval(*v),
            O::Four(0x18, v) => P::WillDelayInterval(*v),
            O::Four(0x27, v) => P::MaximumPacketSize(*v),
            O::Two(0x13, v) => P::ServerKeepAlive(*v),
            O::Two(0x21, v) => P::ReceiveMaximum(*v),
            O::Two(0x22, v) => P::TopicAliasMaximum(*v),
            O::Two(0x23, v) => P::TopicAlias(*v),
            O::Var(0x0b, v) => P::SubscriptionIdentifier(*v),
            O::Str(0x03, v) => P::ContentType(v),
            O::Str(0x08, v) => P::ResponseTopic(v),
            O::Str(0x12, v) => P::AssignedClientIdentifier(v),
            O::Str(0x15, v) => P::AuthenticationMethod(v),
            O::Str(0x1a, v) => P::ResponseInformation(v),
            O::Str(0x1c, v) => P::ServerReference(v),
            O::Str(0x1f, v) => P::ReasonString(v),
            O::Bin(0x09, v) => P::CorrelationData(v),
            O::Bin(0x16, v) => P::AuthenticationData(v),
            O::User(k, v) => P::UserProperty(k, v),
            other => panic!("no such property: {other:?}"),
        }
    }
}

/// The properties each context allows, from MQTT 5.0 §2.2.2.2 Table 2-4 (User Property, allowed
/// everywhere, is added separately). Written from the specification, not from the crate's table.
fn allowed_ids(ctx: PropertyContext) -> &'static [u8] {
    use PropertyContext as C;
    match ctx {
        C::Connect => &[0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x27],
        C::Will => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x18],
        C::Connack => &[
            0x11, 0x12, 0x13, 0x15, 0x16, 0x1a, 0x1c, 0x1f, 0x21, 0x22, 0x24, 0x25, 0x27, 0x28,
            0x29, 0x2a,
        ],
        C::Publish => &[0x01, 0x02, 0x03, 0x08, 0x09, 0x0b, 0x23],
        C::Ack | C::Suback | C::Unsuback => &[0x1f],
        C::Subscribe => &[0x0b],
        C::Unsubscribe => &[],
        C::Disconnect => &[0x11, 0x1c, 0x1f],
        C::Auth => &[0x15, 0x16, 0x1f],
    }
}

/// Every property identifier MQTT 5 defines.
const ALL_IDS: [u8; 27] = [
    0x01, 0x02, 0x03, 0x08, 0x09, 0x0b, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1c,
    0x1f, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2a,
];

fn subscription_identifier() -> BoxedStrategy<u32> {
    prop_oneof![1u32..128, 128u32..=268_435_455].boxed()
}

/// A valid value for property `id`.
fn value_for(id: u8) -> BoxedStrategy<OwnedProp> {
    match id {
        0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28..=0x2a => {
            (0u8..=1).prop_map(move |v| OwnedProp::Byte(id, v)).boxed()
        }
        0x02 | 0x11 | 0x18 => any::<u32>()
            .prop_map(move |v| OwnedProp::Four(id, v))
            .boxed(),
        0x27 => (1u32..).prop_map(move |v| OwnedProp::Four(id, v)).boxed(),
        0x13 | 0x22 => any::<u16>()
            .prop_map(move |v| OwnedProp::Two(id, v))
            .boxed(),
        0x21 | 0x23 => (1u16..).prop_map(move |v| OwnedProp::Two(id, v)).boxed(),
        0x0b => subscription_identifier()
            .prop_map(move |v| OwnedProp::Var(id, v))
            .boxed(),
        0x08 => topic_name()
            .prop_map(move |v| OwnedProp::Str(id, v))
            .boxed(),
        0x03 | 0x12 | 0x15 | 0x1a | 0x1c | 0x1f => mqtt_string(12)
            .prop_map(move |v| OwnedProp::Str(id, v))
            .boxed(),
        0x09 | 0x16 => proptest::collection::vec(any::<u8>(), 0..16)
            .prop_map(move |v| OwnedProp::Bin(id, v))
            .boxed(),
        0x26 => user_property(),
        other => panic!("no such property 0x{other:02x}"),
    }
}

fn user_property() -> BoxedStrategy<OwnedProp> {
    (mqtt_string(8), mqtt_string(8))
        .prop_map(|(k, v)| OwnedProp::User(k, v))
        .boxed()
}

/// A generated property list, and its encoding (without the length prefix).
#[derive(Debug, Clone)]
struct Props {
    list: Vec<OwnedProp>,
    raw: Vec<u8>,
}

impl Props {
    fn empty() -> Self {
        Self {
            list: Vec::new(),
            raw: Vec::new(),
        }
    }

    fn from_list(list: Vec<OwnedProp>) -> Self {
        let props: Vec<Property<'_>> = list.iter().map(OwnedProp::get).collect();
        let mut raw = Vec::new();
        encode_properties(&props, &mut raw).unwrap();
        Self { list, raw }
    }

    fn parse(&self, ctx: PropertyContext) -> Properties<'_> {
        Properties::parse(&self.raw, ctx)
            .unwrap_or_else(|e| panic!("generated {ctx:?} properties refused: {e:?} {self:?}"))
    }

    fn has_topic_alias(&self) -> bool {
        self.list
            .iter()
            .any(|p| matches!(p, OwnedProp::Two(0x23, _)))
    }

    fn has_subscription_identifier(&self) -> bool {
        self.list
            .iter()
            .any(|p| matches!(p, OwnedProp::Var(0x0b, _)))
    }
}

/// A valid property list for `ctx`: each allowed property at most once, in any order, plus User
/// Properties and (in PUBLISH only) repeated Subscription Identifiers.
fn properties(ctx: PropertyContext) -> BoxedStrategy<Props> {
    let ids = allowed_ids(ctx).to_vec();
    let n = ids.len();
    let singles = subsequence(ids, 0..=n)
        .prop_flat_map(|ids| ids.into_iter().map(value_for).collect::<Vec<_>>());
    let users = proptest::collection::vec(user_property(), 0..3);
    let repeated_ids = if ctx == PropertyContext::Publish {
        proptest::collection::vec(
            subscription_identifier().prop_map(|v| OwnedProp::Var(0x0b, v)),
            0..2,
        )
        .boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (singles, users, repeated_ids)
        .prop_map(|(mut a, b, c)| {
            a.extend(b);
            a.extend(c);
            a
        })
        .prop_shuffle()
        .prop_map(Props::from_list)
        .boxed()
}

/// Properties for `ctx` in `version`: always empty before MQTT 5.
fn properties_for(version: ProtocolVersion, ctx: PropertyContext) -> BoxedStrategy<Props> {
    if version.is_v5() {
        prop_oneof![1 => Just(Props::empty()), 3 => properties(ctx)].boxed()
    } else {
        Just(Props::empty()).boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// Packets
// ---------------------------------------------------------------------------------------------

fn packet_id() -> BoxedStrategy<PacketId> {
    (1u16..).prop_map(|v| PacketId::new(v).unwrap()).boxed()
}

fn qos() -> BoxedStrategy<QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]).boxed()
}

fn reason(codes: &[u8]) -> BoxedStrategy<ReasonCode> {
    select(codes.to_vec())
        .prop_map(|b| ReasonCode::from_u8(b).unwrap())
        .boxed()
}

#[derive(Debug, Clone)]
struct WillSpec {
    qos: QoS,
    retain: bool,
    props: Props,
    topic: String,
    payload: Vec<u8>,
}

/// An owned description of one packet, from which [`Spec::packet`] builds the codec's view.
#[derive(Debug, Clone)]
enum Spec {
    Connect {
        version: ProtocolVersion,
        clean_start: bool,
        keep_alive: u16,
        props: Props,
        client_id: String,
        will: Option<WillSpec>,
        username: Option<String>,
        password: Option<Vec<u8>>,
        bridge: bool,
    },
    Connack {
        session_present: bool,
        code: ConnackCode,
        props: Props,
    },
    Publish {
        dup: bool,
        qos: QoS,
        retain: bool,
        topic: String,
        packet_id: Option<PacketId>,
        props: Props,
        payload: Vec<u8>,
    },
    Ack {
        kind: AckKind,
        packet_id: PacketId,
        reason: ReasonCode,
        props: Props,
    },
    /// SUBSCRIBE and UNSUBSCRIBE keep their filters as validated wire bytes and have no public
    /// constructor: their bytes are written by hand here ([`hand_encode`]) and decoded.
    Subscribe {
        packet_id: PacketId,
        props: Props,
        filters: Vec<(String, SubscriptionOptions)>,
    },
    Suback {
        packet_id: PacketId,
        props: Props,
        codes: Vec<u8>,
    },
    Unsubscribe {
        packet_id: PacketId,
        props: Props,
        filters: Vec<String>,
    },
    Unsuback {
        packet_id: PacketId,
        props: Props,
        codes: Vec<u8>,
    },
    Pingreq,
    Pingresp,
    Disconnect {
        reason: ReasonCode,
        props: Props,
    },
    Auth {
        reason: ReasonCode,
        props: Props,
    },
}

impl Spec {
    /// The packet as the codec's view, for the types that can be built directly.
    fn packet(&self) -> Option<Packet<'_>> {
        use PropertyContext as C;
        Some(match self {
            Self::Connect {
                version,
                clean_start,
                keep_alive,
                props,
                client_id,
                will,
                username,
                password,
                bridge,
            } => Packet::Connect(Connect {
                version: *version,
                clean_start: *clean_start,
                keep_alive: *keep_alive,
                properties: props.parse(C::Connect),
                client_id,
                will: will.as_ref().map(|w| Will {
                    qos: w.qos,
                    retain: w.retain,
                    properties: w.props.parse(C::Will),
                    topic: &w.topic,
                    payload: &w.payload,
                }),
                username: username.as_deref(),
                password: password.as_deref(),
                bridge: *bridge,
            }),
            Self::Connack {
                session_present,
                code,
                props,
            } => Packet::Connack(Connack {
                session_present: *session_present,
                code: *code,
                properties: props.parse(C::Connack),
            }),
            Self::Publish {
                dup,
                qos,
                retain,
                topic,
                packet_id,
                props,
                payload,
            } => Packet::Publish(Publish {
                dup: *dup,
                qos: *qos,
                retain: *retain,
                topic,
                packet_id: *packet_id,
                properties: props.parse(C::Publish),
                payload,
            }),
            Self::Ack {
                kind,
                packet_id,
                reason,
                props,
            } => Packet::Ack(Ack {
                kind: *kind,
                packet_id: *packet_id,
                reason: *reason,
                properties: props.parse(C::Ack),
            }),
            Self::Suback {
                packet_id,
                props,
                codes,
            } => Packet::Suback(Suback {
                packet_id: *packet_id,
                properties: props.parse(C::Suback),
                codes,
            }),
            Self::Unsuback {
                packet_id,
                props,
                codes,
            } => Packet::Unsuback(Unsuback {
                packet_id: *packet_id,
                properties: props.parse(C::Unsuback),
                codes,
            }),
            Self::Pingreq => Packet::Pingreq,
            Self::Pingresp => Packet::Pingresp,
            Self::Disconnect { reason, props } => Packet::Disconnect(Disconnect {
                reason: *reason,
                properties: props.parse(C::Disconnect),
            }),
            Self::Auth { reason, props } => Packet::Auth(Auth {
                reason: *reason,
                properties: props.parse(C::Auth),
            }),
            Self::Subscribe { .. } | Self::Unsubscribe { .. } => return None,
        })
    }

    /// Who may send it: `None` for packets both sides send.
    fn sender(&self) -> Option<Direction> {
        match self {
            Self::Connect { .. } | Self::Subscribe { .. } | Self::Unsubscribe { .. } => {
                Some(Direction::ClientToServer)
            }
            Self::Pingreq => Some(Direction::ClientToServer),
            Self::Connack { .. } | Self::Suback { .. } | Self::Unsuback { .. } => {
                Some(Direction::ServerToClient)
            }
            Self::Pingresp => Some(Direction::ServerToClient),
            Self::Publish { .. }
            | Self::Ack { .. }
            | Self::Disconnect { .. }
            | Self::Auth { .. } => None,
        }
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&u16::try_from(s.len()).unwrap().to_be_bytes());
    out.extend_from_slice(s.as_bytes());
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

/// Writes SUBSCRIBE and UNSUBSCRIBE by hand from MQTT 5.0 §3.8 and §3.10.
fn hand_encode(spec: &Spec, version: ProtocolVersion) -> Vec<u8> {
    let (first, packet_id, props) = match spec {
        Spec::Subscribe {
            packet_id, props, ..
        } => (0x82, packet_id, props),
        Spec::Unsubscribe {
            packet_id, props, ..
        } => (0xa2, packet_id, props),
        other => panic!("not hand-encoded: {other:?}"),
    };
    let mut body = packet_id.get().to_be_bytes().to_vec();
    if version.is_v5() {
        put_varint(&mut body, props.raw.len());
        body.extend_from_slice(&props.raw);
    }
    match spec {
        Spec::Subscribe { filters, .. } => {
            for (f, o) in filters {
                put_str(&mut body, f);
                body.push(o.to_byte());
            }
        }
        Spec::Unsubscribe { filters, .. } => {
            for f in filters {
                put_str(&mut body, f);
            }
        }
        _ => {}
    }
    let mut frame = vec![first];
    put_varint(&mut frame, body.len());
    frame.extend_from_slice(&body);
    frame
}

fn connect_spec(version: ProtocolVersion) -> BoxedStrategy<Spec> {
    let will = (
        qos(),
        any::<bool>(),
        properties_for(version, PropertyContext::Will),
        topic_name(),
        proptest::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(|(qos, retain, props, topic, payload)| WillSpec {
            qos,
            retain,
            props,
            topic,
            payload,
        });
    (
        any::<bool>(),
        any::<u16>(),
        properties_for(version, PropertyContext::Connect),
        mqtt_string(23),
        proptest::option::of(will),
        proptest::option::of(mqtt_string(16)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        any::<bool>(),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive,
                props,
                client_id,
                will,
                mut username,
                password,
                bridge,
            )| {
                // [MQTT-3.1.2-22]: before MQTT 5 a password needs a user name.
                if password.is_some() && username.is_none() && !version.is_v5() {
                    username = Some("user".to_owned());
                }
                Spec::Connect {
                    version,
                    clean_start,
                    keep_alive,
                    props,
                    client_id,
                    will,
                    username,
                    password,
                    bridge,
                }
            },
        )
        .boxed()
}

fn connack_spec(version: ProtocolVersion) -> BoxedStrategy<Spec> {
    let code = if version.is_v5() {
        reason(&[
            0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8c, 0x90,
            0x95, 0x97, 0x99, 0x9a, 0x9b, 0x9c, 0x9d, 0x9f,
        ])
        .prop_map(ConnackCode::V5)
        .boxed()
    } else {
        (0u8..=5)
            .prop_map(|b| ConnackCode::V3(ConnectReturnCode::from_u8(b).unwrap()))
            .boxed()
    };
    (
        any::<bool>(),
        code,
        properties_for(version, PropertyContext::Connack),
    )
        .prop_map(move |(session, code, props)| Spec::Connack {
            // No session on a refusal; MQTT 3.1 has no Session Present flag at all.
            session_present: session && code.is_success() && version != ProtocolVersion::V31,
            code,
            props,
        })
        .boxed()
}

fn publish_spec(version: ProtocolVersion) -> BoxedStrategy<Spec> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        packet_id(),
        properties_for(version, PropertyContext::Publish),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 100..400),
        ],
    )
        .prop_map(|(qos, dup, retain, topic, use_alias, id, props, payload)| {
            let at_most_once = qos == QoS::AtMostOnce;
            Spec::Publish {
                dup: dup && !at_most_once,
                qos,
                retain,
                // MQTT 5.0 §3.3.2.1: an empty topic with a Topic Alias.
                topic: if use_alias && props.has_topic_alias() {
                    String::new()
                } else {
                    topic
                },
                packet_id: (!at_most_once).then_some(id),
                props,
                payload,
            }
        })
        .boxed()
}

fn ack_spec(version: ProtocolVersion) -> BoxedStrategy<Spec> {
    let kinds = select(vec![
        AckKind::Puback,
        AckKind::Pubrec,
        AckKind::Pubrel,
        AckKind::Pubcomp,
    ]);
    (kinds, packet_id())
        .prop_flat_map(move |(kind, packet_id)| {
            let (reason, props) = if version.is_v5() {
                let codes: &[u8] = match kind {
                    AckKind::Puback | AckKind::Pubrec => {
                        &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]
                    }
                    AckKind::Pubrel | AckKind::Pubcomp => &[0x00, 0x92],
                };
                (reason(codes), properties_for(version, PropertyContext::Ack))
            } else {
                (
                    Just(ReasonCode::Success).boxed(),
                    Just(Props::empty()).boxed(),
                )
            };
            (reason, props).prop_map(move |(reason, props)| Spec::Ack {
                kind,
                packet_id,
                reason,
                props,
            })
        })
        .boxed()
}

fn subscription_options(version: ProtocolVersion) -> BoxedStrategy<SubscriptionOptions> {
    if version.is_v5() {
        (
            qos(),
            any::<bool>(),
            any::<bool>(),
            select(vec![
                RetainHandling::SendAtSubscribe,
                RetainHandling::SendIfNew,
                RetainHandling::DoNotSend,
            ]),
        )
            .prop_map(|(qos, no_local, rap, rh)| SubscriptionOptions {
                qos,
                no_local,
                retain_as_published: rap,
                retain_handling: rh,
            })
            .boxed()
    } else {
        qos().prop_map(SubscriptionOptions::qos).boxed()
    }
}

fn subscribe_spec(version: ProtocolVersion) -> BoxedStrategy<Spec> {
    let filter = (topic_filter(), subscription_options(version)).prop_map(|(f, mut o)| {
        // [MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error.
        if f.starts_with("$share/") {
            o.no_local = false;
        }
        (f, o)
    });
    (
        packet_id(),
        properties_for(version, PropertyContext::Subscribe),
        proptest::collection::vec(filter, 1..5),
    )
        .prop_map(|(packet_id, props, filters)| Spec::Subscribe {
            packet_id,
            props,
            filters,
        })
        .boxed()
}

fn unsubscribe_spec(version: ProtocolVersion) -> BoxedStrategy<Spec> {
    (
        packet_id(),
        properties_for(version, PropertyContext::Unsubscribe),
        proptest::collection::vec(topic_filter(), 1..5),
    )
        .prop_map(|(packet_id, props, filters)| Spec::Unsubscribe {
            packet_id,
            props,
            filters,
        })
        .boxed()
}

fn suback_spec(version: ProtocolVersion) -> BoxedStrategy<Spec> {
    let codes: Vec<u8> = if version.is_v5() {
        vec![
            0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8f, 0x91, 0x97, 0x9e, 0xa1, 0xa2,
        ]
    } else {
        vec![0x00, 0x01, 0x02, 0x80]
    };
    (
        packet_id(),
        properties_for(version, PropertyContext::Suback),
        proptest::collection::vec(select(codes), 1..6),
    )
        .prop_map(|(packet_id, props, codes)| Spec::Suback {
            packet_id,
            props,
            codes,
        })
        .boxed()
}

fn unsuback_spec(version: ProtocolVersion) -> BoxedStrategy<Spec> {
    let codes = if version.is_v5() {
        proptest::collection::vec(select(vec![0x00, 0x11, 0x80, 0x83, 0x87, 0x8f, 0x91]), 1..6)
            .boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (
        packet_id(),
        properties_for(version, PropertyContext::Unsuback),
        codes,
    )
        .prop_map(|(packet_id, props, codes)| Spec::Unsuback {
            packet_id,
            props,
            codes,
        })
        .boxed()
}

fn disconnect_spec(version: ProtocolVersion) -> BoxedStrategy<Spec> {
    if !version.is_v5() {
        return Just(Spec::Disconnect {
            reason: ReasonCode::Success,
            props: Props::empty(),
        })
        .boxed();
    }
    let mut codes = vec![0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8b];
    codes.extend(0x8d..=0x90);
    codes.extend(0x93..=0xa2);
    (
        reason(&codes),
        properties_for(version, PropertyContext::Disconnect),
    )
        .prop_map(|(reason, props)| Spec::Disconnect { reason, props })
        .boxed()
}

fn auth_spec() -> BoxedStrategy<Spec> {
    (
        reason(&[0x00, 0x18, 0x19]),
        properties_for(ProtocolVersion::V5, PropertyContext::Auth),
    )
        .prop_map(|(reason, props)| Spec::Auth { reason, props })
        .boxed()
}

/// Any valid packet of `version`.
fn spec(version: ProtocolVersion) -> BoxedStrategy<Spec> {
    let mut choices = vec![
        connect_spec(version),
        connack_spec(version),
        publish_spec(version),
        publish_spec(version),
        ack_spec(version),
        subscribe_spec(version),
        suback_spec(version),
        unsubscribe_spec(version),
        unsuback_spec(version),
        Just(Spec::Pingreq).boxed(),
        Just(Spec::Pingresp).boxed(),
        disconnect_spec(version),
    ];
    if version.is_v5() {
        choices.push(auth_spec());
    }
    proptest::strategy::Union::new(choices).boxed()
}

fn version_and_spec() -> BoxedStrategy<(ProtocolVersion, Spec)> {
    version().prop_flat_map(|v| (Just(v), spec(v))).boxed()
}

/// Encodes a spec: through the codec's encoder when the packet can be built, else by hand.
fn frame_of(spec: &Spec, version: ProtocolVersion) -> Vec<u8> {
    match spec.packet() {
        Some(p) => {
            let mut out = Vec::new();
            p.encode(version, &mut out)
                .unwrap_or_else(|e| panic!("generated {p:?} does not encode: {e:?}"));
            out
        }
        None => hand_encode(spec, version),
    }
}

fn encode(p: &Packet<'_>, version: ProtocolVersion) -> Vec<u8> {
    let mut out = Vec::new();
    p.encode(version, &mut out).unwrap();
    out
}

/// A valid CONNECT of `version`, to put a [`StreamState`] past its first packet.
fn connect_frame(version: ProtocolVersion) -> Vec<u8> {
    let connect = Connect {
        version,
        clean_start: true,
        keep_alive: 30,
        properties: Properties::EMPTY,
        client_id: "c",
        will: None,
        username: None,
        password: None,
        bridge: false,
    };
    encode(&Packet::Connect(connect), version)
}

/// Bytes shaped like a frame: any first byte, a correct Remaining Length, any body. Random bytes
/// alone almost never get past the fixed header; these reach every packet decoder.
fn framed_bytes() -> BoxedStrategy<Vec<u8>> {
    (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..64))
        .prop_map(|(first, body)| {
            let mut frame = vec![first];
            put_varint(&mut frame, body.len());
            frame.extend_from_slice(&body);
            frame
        })
        .boxed()
}

/// A valid frame with a few bytes overwritten: near-misses of every rule.
fn mutated_frame() -> BoxedStrategy<Vec<u8>> {
    (
        version_and_spec(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    )
        .prop_map(|((v, s), edits)| {
            let mut frame = frame_of(&s, v);
            for (i, b) in edits {
                let at = i.index(frame.len());
                frame[at] = b;
            }
            frame
        })
        .boxed()
}

fn hostile_bytes() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        framed_bytes(),
        mutated_frame(),
    ]
    .boxed()
}

/// Checks what `peek_frame` and `split_frame` say about `buf` against each other and the buffer.
fn check_framing(buf: &[u8], max: u32) {
    let peek = peek_frame(buf, max);
    let split = split_frame(buf, max);
    match peek {
        Ok(Peek::Complete(h)) => {
            assert!(h.frame_len() <= buf.len());
            assert!((2..=5).contains(&h.header_len));
            assert_eq!(h.first_byte, buf[0]);
            let (frame, rest) = split.unwrap().unwrap();
            assert_eq!(frame.len(), h.frame_len());
            assert_eq!(frame.len() + rest.len(), buf.len());
        }
        Ok(Peek::Incomplete { needed, header }) => {
            assert!(needed > 0);
            match header {
                Some(h) => assert_eq!(buf.len() + needed, h.frame_len()),
                None => assert!(buf.len() < 5),
            }
            assert_eq!(split, Ok(None));
        }
        Err(e) => assert_eq!(split, Err(e)),
    }
}

/// Decodes `bytes` in every way the crate offers. If a decode succeeds, the packet re-encodes and
/// decodes back to itself.
fn decode_every_way(bytes: &[u8]) {
    for max in [MAX_PACKET_SIZE, 16] {
        check_framing(bytes, max);
    }
    for version in VERSIONS {
        if let Ok(p) = decode(bytes, version) {
            let again = encode(&p, version);
            assert_eq!(decode(&again, version), Ok(p));
        }
    }
    let _ = StreamState::new().decode_client(bytes);
    let _ = StreamState::new().decode_server(bytes);
    for version in VERSIONS {
        let connect = connect_frame(version);
        let mut state = StreamState::new();
        state.decode_client(&connect).unwrap();
        let mut server = state;
        let _ = state.decode_client(bytes);
        let _ = server.decode_server(bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// Topics: a reference matcher and validator written from the specification
// ---------------------------------------------------------------------------------------------

/// MQTT 5.0 §4.7, recursively over levels.
fn reference_matches(filter: &str, topic: &str) -> bool {
    fn go(f: &[&str], t: &[&str]) -> bool {
        match (f.split_first(), t.split_first()) {
            // '#' is the last level and matches the parent and any number of children.
            (Some((&"#", _)), _) => true,
            (None, None) => true,
            (Some((&"+", fr)), Some((_, tr))) => go(fr, tr),
            (Some((fl, fr)), Some((tl, tr))) => fl == tl && go(fr, tr),
            _ => false,
        }
    }
    // [MQTT-4.7.2-1]
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    go(&f, &t)
}

fn reference_plain_filter_ok(s: &str) -> bool {
    if s.is_empty() || s.len() > 65_535 || s.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = s.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| {
        if l.contains('#') {
            *l == "#" && i + 1 == levels.len()
        } else {
            !l.contains('+') || *l == "+"
        }
    })
}

fn reference_filter_ok(s: &str) -> bool {
    match s.strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((group, filter)) => {
                !group.is_empty()
                    && !group.contains(['+', '#'])
                    && reference_plain_filter_ok(filter)
            }
            None => false,
        },
        None => reference_plain_filter_ok(s),
    }
}

fn reference_name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 65_535 && !s.contains(['+', '#', '\0'])
}

/// Small alphabets, so that random filters and topics collide often.
fn small_topic() -> BoxedStrategy<String> {
    proptest::collection::vec(select(vec!["a", "b", "", "$s"]), 1..5)
        .prop_map(|l| l.join("/"))
        .prop_filter("not empty", |t| !t.is_empty())
        .boxed()
}

fn small_filter() -> BoxedStrategy<String> {
    (
        proptest::collection::vec(select(vec!["a", "b", "", "$s", "+"]), 1..4),
        any::<bool>(),
    )
        .prop_map(|(mut l, hash)| {
            if hash {
                l.push("#");
            }
            l.join("/")
        })
        .prop_filter("not empty", |f| !f.is_empty())
        .boxed()
}

/// A filter derived from `inner` by generalising it: levels replaced by '+', a tail cut and
/// replaced by '#'. Such an outer filter usually contains `inner`, so the soundness property is
/// exercised on many true `contains` answers, not only on the easy false ones.
fn generalised(inner: &str, plus: &[bool], cut: Option<usize>) -> String {
    let mut levels: Vec<&str> = inner
        .split('/')
        .enumerate()
        .map(|(i, l)| {
            if plus.get(i).copied().unwrap_or(false) && l != "#" {
                "+"
            } else {
                l
            }
        })
        .collect();
    if let Some(c) = cut {
        levels.truncate(c % (levels.len() + 1));
        levels.push("#");
    }
    levels.join("/")
}

/// A topic that `filter` matches (when not empty): '+' replaced by a level, '#' by 0 to 2 levels.
fn instance(filter: &str, fill: &[&str]) -> String {
    let mut fills = fill.iter().copied().cycle();
    let mut out: Vec<&str> = Vec::new();
    for l in filter.split('/') {
        match l {
            "+" => out.push(fills.next().unwrap_or("x")),
            "#" => {
                for _ in 0..(fill.len() % 3) {
                    out.push(fills.next().unwrap_or("x"));
                }
            }
            other => out.push(other),
        }
    }
    // Empty when the filter is `#`, `/#` or `+` and no level was put in: the caller skips it.
    out.join("/")
}

// ---------------------------------------------------------------------------------------------
// The properties
// ---------------------------------------------------------------------------------------------

proptest! {
    // --- nothing panics ---------------------------------------------------------------------

    #[test]
    fn framing_and_decoding_never_panic(bytes in hostile_bytes()) {
        decode_every_way(&bytes);
    }

    #[test]
    fn stream_state_never_panics(
        v in version(),
        connect_first in any::<bool>(),
        frames in proptest::collection::vec((any::<bool>(), hostile_bytes()), 0..8),
    ) {
        let mut state = StreamState::new();
        if connect_first {
            state.decode_client(&connect_frame(v)).unwrap();
            prop_assert_eq!(state.version(), Some(v));
        }
        for (from_client, frame) in &frames {
            let before = state.version();
            let _ = if *from_client {
                state.decode_client(frame)
            } else {
                state.decode_server(frame)
            };
            // Once fixed, the version never changes.
            if before.is_some() {
                prop_assert_eq!(state.version(), before);
            }
        }
    }

    #[test]
    fn properties_parse_never_panics_and_iterates_what_it_accepted(
        ctx in context(),
        raw in prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..48),
            // Known identifiers followed by random bytes.
            (select(ALL_IDS.to_vec()), proptest::collection::vec(any::<u8>(), 0..24))
                .prop_map(|(id, rest)| { let mut v = vec![id]; v.extend(rest); v }),
        ],
    ) {
        if let Ok(p) = Properties::parse(&raw, ctx) {
            let list: Vec<Property<'_>> = p.iter().collect();
            let mut again = Vec::new();
            encode_properties(&list, &mut again).unwrap();
            // Iteration sees every byte that parse accepted.
            prop_assert_eq!(&again, &raw);
            let users = list.iter().filter(|x| matches!(x, Property::UserProperty(..))).count();
            prop_assert_eq!(usize::from(p.user_property_count()), users);
            let alias = list.iter().find_map(|x| match x {
                Property::TopicAlias(a) => Some(*a),
                _ => None,
            });
            prop_assert_eq!(p.topic_alias(), alias);
        }
    }

    #[test]
    fn topic_validation_never_panics_and_agrees_with_the_reference(
        s in prop_oneof![
            any::<String>(),
            "[a+#/$\u{0}]{0,8}",
            "\\$share/[a+#/]{0,3}/[a+#/]{0,4}",
            "\\$share/[a+#/]{0,2}/\\$share/[a+#/]{0,4}",
        ],
    ) {
        let name = TopicName::new(&s);
        prop_assert_eq!(name.is_ok(), reference_name_ok(&s), "topic name {:?}", s);
        let filter = TopicFilter::new(&s);
        prop_assert_eq!(filter.is_ok(), reference_filter_ok(&s), "topic filter {:?}", s);
        if let Ok(f) = filter {
            prop_assert_eq!(f.as_str(), s.as_str());
            // The effective filter is a valid plain filter (`TopicFilter::new` would read the
            // `$share/x` of `$share/g/$share/x` as a share again, so check it as plain).
            prop_assert!(reference_plain_filter_ok(f.effective().as_str()));
            prop_assert_eq!(f.shared().is_some(), s.starts_with("$share/"));
            let _ = f.has_wildcards();
        }
    }

    #[test]
    fn matches_and_contains_never_panic(a in any::<String>(), b in any::<String>()) {
        let _ = matches(&a, &b);
        let _ = contains(&a, &b);
        let _ = contains(&b, &a);
    }

    #[test]
    fn topic_aliases_never_panic_and_follow_a_model(
        maximum in prop_oneof![0u16..6, any::<u16>()],
        ops in proptest::collection::vec(
            (prop_oneof![Just(String::new()), "[a-c/]{1,4}"],
             proptest::option::of(prop_oneof![0u16..8, any::<u16>()])),
            0..24,
        ),
    ) {
        let mut table = TopicAliases::new(maximum);
        let mut model: HashMap<u16, String> = HashMap::new();
        for (topic, alias) in &ops {
            let got = table.resolve(topic, *alias).map(str::to_owned);
            let want = match alias {
                None if topic.is_empty() => Err(()),
                None => Ok(topic.clone()),
                Some(a) if *a == 0 || *a > maximum => Err(()),
                Some(a) if topic.is_empty() => model.get(a).cloned().ok_or(()),
                Some(a) => {
                    model.insert(*a, topic.clone());
                    Ok(topic.clone())
                }
            };
            prop_assert_eq!(got.as_ref().ok(), want.as_ref().ok(), "{:?} {:?}", topic, alias);
            if let Err(e) = &got {
                prop_assert!(matches!(
                    e,
                    DecodeError::TopicAliasInvalid | DecodeError::InvalidTopicName(_)
                ));
            }
            prop_assert_eq!(table.len(), model.len());
            prop_assert!(table.len() <= usize::from(maximum));
            if let Some(a) = alias {
                prop_assert_eq!(table.get(*a), model.get(a).map(String::as_str));
            }
        }
        prop_assert_eq!(table.is_empty(), model.is_empty());
        prop_assert_eq!(table.maximum(), maximum);
    }

    // --- properties: valid lists are accepted, misplaced ones refused --------------------------

    #[test]
    fn generated_properties_parse_in_their_context(
        (ctx, props) in context().prop_flat_map(|c| (Just(c), properties(c))),
    ) {
        let parsed = props.parse(ctx);
        let want: Vec<Property<'_>> = props.list.iter().map(OwnedProp::get).collect();
        let got: Vec<Property<'_>> = parsed.iter().collect();
        prop_assert_eq!(got, want);
        prop_assert_eq!(parsed.raw(), props.raw.as_slice());
    }

    #[test]
    fn a_property_outside_its_contexts_is_refused(
        (ctx, value, valid) in (context(), select(ALL_IDS.to_vec()))
            .prop_filter("a property the context does not allow", |(ctx, id)| {
                *id != 0x26 && !allowed_ids(*ctx).contains(id)
            })
            .prop_flat_map(|(ctx, id)| (Just(ctx), value_for(id), properties(ctx))),
    ) {
        // Alone, or after a valid list for the context.
        let mut raw = Vec::new();
        encode_properties(&[value.get()], &mut raw).unwrap();
        let id = value.get().id();
        prop_assert_eq!(Properties::parse(&raw, ctx), Err(DecodeError::PropertyNotAllowed(id)));
        let mut after = valid.raw.clone();
        after.extend_from_slice(&raw);
        prop_assert_eq!(Properties::parse(&after, ctx), Err(DecodeError::PropertyNotAllowed(id)));
    }

    // --- framing ---------------------------------------------------------------------------

    #[test]
    fn every_strict_prefix_is_incomplete(
        (v, s) in version_and_spec(),
        trailing in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let frame = frame_of(&s, v);
        let Ok(Peek::Complete(h)) = peek_frame(&frame, MAX_PACKET_SIZE) else {
            panic!("whole frame not complete");
        };
        prop_assert_eq!(h.frame_len(), frame.len());
        prop_assert_eq!(h.first_byte, frame[0]);
        let body_len = frame.len() - usize::from(h.header_len);
        prop_assert_eq!(usize::from(h.header_len), 1 + varint_len(u32::try_from(body_len).unwrap()));
        for n in 0..frame.len() {
            match peek_frame(&frame[..n], MAX_PACKET_SIZE) {
                Ok(Peek::Incomplete { needed, header: Some(hp) }) => {
                    prop_assert!(n >= usize::from(h.header_len));
                    prop_assert_eq!(hp, h);
                    prop_assert_eq!(n + needed, frame.len());
                }
                Ok(Peek::Incomplete { needed, header: None }) => {
                    prop_assert!(n < usize::from(h.header_len));
                    prop_assert!(needed > 0);
                }
                other => prop_assert!(false, "prefix {} of {:?}: {:?}", n, frame, other),
            }
            prop_assert_eq!(split_frame(&frame[..n], MAX_PACKET_SIZE), Ok(None));
        }
        let mut buf = frame.clone();
        buf.extend_from_slice(&trailing);
        let (got, rest) = split_frame(&buf, MAX_PACKET_SIZE).unwrap().unwrap();
        prop_assert_eq!(got, frame.as_slice());
        prop_assert_eq!(rest, trailing.as_slice());
        // The exact maximum is enough; one byte less is too large.
        let size = u32::try_from(frame.len()).unwrap();
        prop_assert!(matches!(peek_frame(&frame, size), Ok(Peek::Complete(_))));
        let too_large = matches!(
            peek_frame(&frame, size - 1),
            Err(DecodeError::PacketTooLarge { .. })
        );
        prop_assert!(too_large);
    }

    // --- decode ∘ encode = id on generated packets -------------------------------------------

    #[test]
    fn generated_packets_round_trip((v, s) in version_and_spec()) {
        let bytes = frame_of(&s, v);
        let decoded = decode(&bytes, v)
            .unwrap_or_else(|e| panic!("generated {s:?} in {v:?} refused: {e:?} ({bytes:02x?})"));
        match s.packet() {
            // decode(encode(p)) == p
            Some(p) => prop_assert_eq!(decoded, p),
            // Hand-encoded SUBSCRIBE / UNSUBSCRIBE: the view shows what was generated.
            None => match (&s, &decoded) {
                (Spec::Subscribe { packet_id, props, filters }, Packet::Subscribe(d)) => {
                    prop_assert_eq!(d.packet_id, *packet_id);
                    prop_assert_eq!(d.properties, props.parse(PropertyContext::Subscribe));
                    prop_assert_eq!(d.len(), filters.len());
                    let got: Vec<(String, SubscriptionOptions)> =
                        d.filters().map(|(f, o)| (f.as_str().to_owned(), o)).collect();
                    prop_assert_eq!(&got, filters);
                }
                (Spec::Unsubscribe { packet_id, props, filters }, Packet::Unsubscribe(d)) => {
                    prop_assert_eq!(d.packet_id, *packet_id);
                    prop_assert_eq!(d.properties, props.parse(PropertyContext::Unsubscribe));
                    prop_assert_eq!(d.len(), filters.len());
                    let got: Vec<String> = d.filters().map(|f| f.as_str().to_owned()).collect();
                    prop_assert_eq!(&got, filters);
                }
                other => prop_assert!(false, "decoded as another type: {:?}", other),
            },
        }
        // encode(decode(bytes)) == bytes
        prop_assert_eq!(encode(&decoded, v), bytes);
        // Through the stream state, in the direction(s) that may send it.
        if let Spec::Connect { version, .. } = &s {
            let mut st = StreamState::new();
            prop_assert_eq!(st.decode_client(&frame_of(&s, v)).map(|p| p.packet_type()), Ok(PacketType::Connect));
            prop_assert_eq!(st.version(), Some(*version));
        }
    }

    #[test]
    fn a_generated_conversation_is_accepted(
        (v, packets) in version().prop_flat_map(|v| {
            (Just(v), proptest::collection::vec(spec(v), 0..10))
        }),
    ) {
        let mut state = StreamState::new();
        state.decode_client(&connect_frame(v)).unwrap();
        let connack = Connack {
            session_present: false,
            code: ConnackCode::for_version(v, ReasonCode::Success),
            properties: Properties::EMPTY,
        };
        state.decode_server(&encode(&Packet::Connack(connack), v)).unwrap();
        for s in &packets {
            let from_client = match (s, s.sender()) {
                (Spec::Connect { .. } | Spec::Connack { .. }, _) => continue,
                // [MQTT-3.3.4-6]: a client never sends a Subscription Identifier.
                (Spec::Publish { props, .. }, _) if props.has_subscription_identifier() => false,
                (_, Some(d)) => d == Direction::ClientToServer,
                (_, None) => true,
            };
            let frame = frame_of(s, v);
            let got = if from_client {
                state.decode_client(&frame)
            } else {
                state.decode_server(&frame)
            };
            prop_assert!(got.is_ok(), "{:?} from client={}: {:?}", s, from_client, got);
            if s.sender().is_none() {
                // Packets both sides send are accepted from both.
                let mut other = state;
                let again = if from_client {
                    other.decode_server(&frame)
                } else {
                    other.decode_client(&frame)
                };
                if !matches!(s, Spec::Publish { props, .. } if props.has_subscription_identifier()) {
                    prop_assert!(again.is_ok(), "{:?}: {:?}", s, again);
                }
            }
        }
    }

    // --- topics ---------------------------------------------------------------------------

    #[test]
    fn matches_agrees_with_the_reference(
        f in prop_oneof![small_filter(), topic_filter()],
        t in prop_oneof![small_topic(), topic_name()],
    ) {
        prop_assert!(TopicFilter::new(&f).is_ok(), "{}", f);
        prop_assert!(TopicName::new(&t).is_ok(), "{}", t);
        prop_assert_eq!(matches(&f, &t), reference_matches(&f, &t), "{} vs {}", f, t);
    }

    #[test]
    fn matches_holds_for_an_instance_of_the_filter(
        f in prop_oneof![small_filter(), plain_filter()],
        fill in proptest::collection::vec(select(vec!["a", "b", "", "x"]), 1..4),
    ) {
        let t = instance(&f, &fill);
        prop_assume!(TopicName::new(&t).is_ok());
        let dollar_rule = t.starts_with('$') && (f.starts_with('+') || f.starts_with('#'));
        prop_assert_eq!(matches(&f, &t), !dollar_rule, "{} vs {}", f, t);
    }

    #[test]
    fn contains_is_sound(
        inner in small_filter(),
        outer in small_filter(),
        plus in proptest::collection::vec(any::<bool>(), 4),
        cut in proptest::option::of(0usize..5),
        derive in any::<bool>(),
        fill in proptest::collection::vec(select(vec!["a", "b", "", "$s"]), 1..4),
        t in small_topic(),
    ) {
        let outer = if derive { generalised(&inner, &plus, cut) } else { outer };
        prop_assume!(TopicFilter::new(&outer).is_ok());
        for topic in [t, instance(&inner, &fill)] {
            if TopicName::new(&topic).is_err() {
                continue;
            }
            if contains(&outer, &inner) && matches(&inner, &topic) {
                prop_assert!(
                    matches(&outer, &topic),
                    "{} contains {} and {} matches {}, but not the outer",
                    outer, inner, inner, topic
                );
            }
        }
        // Containment is reflexive for every filter that cannot be told apart by '$'.
        prop_assert!(contains(&inner, &inner));
    }
}

/// Exhaustive over a small universe: every filter of up to 3 levels over {a, "", $s, +, #} and every
/// topic of up to 4 levels over {a, b, "", $s}. `matches` equals the reference everywhere, and
/// `contains` is sound for every pair.
#[test]
fn small_universe_exhaustive() {
    fn words(alphabet: &[&str], max_levels: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut layer: Vec<Vec<&str>> = vec![Vec::new()];
        for _ in 0..max_levels {
            let mut next = Vec::new();
            for w in &layer {
                for a in alphabet {
                    let mut w2 = w.clone();
                    w2.push(a);
                    out.push(w2.join("/"));
                    next.push(w2);
                }
            }
            layer = next;
        }
        out
    }
    let filters: Vec<String> = words(&["a", "", "$s", "+", "#"], 3)
        .into_iter()
        .filter(|f| TopicFilter::new(f).is_ok())
        .collect();
    let topics: Vec<String> = words(&["a", "b", "", "$s"], 4)
        .into_iter()
        .filter(|t| TopicName::new(t).is_ok())
        .collect();
    let table: Vec<Vec<bool>> = filters
        .iter()
        .map(|f| {
            topics
                .iter()
                .map(|t| {
                    let m = matches(f, t);
                    assert_eq!(m, reference_matches(f, t), "{f} vs {t}");
                    m
                })
                .collect()
        })
        .collect();
    let mut contained = 0;
    for (o, outer) in filters.iter().enumerate() {
        for (i, inner) in filters.iter().enumerate() {
            if contains(outer, inner) {
                contained += 1;
                for (k, t) in topics.iter().enumerate() {
                    assert!(
                        !table[i][k] || table[o][k],
                        "{outer} contains {inner}, {inner} matches {t}, {outer} does not"
                    );
                }
            }
        }
    }
    assert!(
        contained > filters.len(),
        "too few containments to mean anything"
    );
}
