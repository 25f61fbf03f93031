//! PURE per-packet inspection: one frame in, one [`Verdict`] out. No I/O, no clock, no await:
//! the relay (`relay.rs`) owns the sockets and carries out the verdict.
//!
//! Client to broker: topic aliases are resolved before the publish decision; a denied PUBLISH is
//! dropped (QoS 0) or answered by the gateway (QoS 1 PUBACK, QoS 2 PUBREC then PUBCOMP; MQTT 5 with
//! reason 0x87), or closes the connection when `on_publish_deny = "disconnect"`; an MQTT 5 Response
//! Topic must be a topic the requester may receive; each SUBSCRIBE filter is judged by containment
//! (`$share/<group>/<filter>` by `<filter>`), denied filters are removed and answered in position.
//! Broker to client: every PUBLISH (retained ones too) is judged as receive; a denied one is not
//! delivered and, at QoS 1/2, acknowledged to the broker by the gateway.

use mqtt_inspect::{
    Ack, AckKind, DecodeError, Direction, Packet, PacketType, Property, ProtocolVersion, Publish,
    QoS, ReasonCode, StreamState, Suback, Subscribe,
};

use super::last_allowed::LastAllowed;
use super::state::{
    AliasState, GatewayQos2, MAX_TOPIC_ALIASES, PendingSuback, SessionShared, Subscriptions,
};

/// User Properties one packet may carry (each costs the broker memory per queued message).
pub const MAX_USER_PROPERTIES: u16 = 64;
/// Filters one SUBSCRIBE may carry.
pub const MAX_FILTERS_PER_SUBSCRIBE: usize = 64;
use crate::close::CloseReason;
use crate::config::OnPublishDeny;
use crate::metrics::AclAction;
use crate::policy::{ClientPolicy, Decision, RuleRef};

/// What the relay does with one frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the original bytes.
    Forward,
    /// Forward these bytes instead.
    Replace(Vec<u8>),
    /// Forward nothing.
    Drop,
    /// Forward nothing; send these bytes back to the sender.
    Reply(Vec<u8>),
    /// Close the connection.
    Close(CloseReason),
    /// An MQTT 5 re-authentication (AUTH 0x19 with the session's Authentication Method) carrying
    /// this token: forwarded to nobody; the session verifies it and answers AUTH 0x00, or ends
    /// ([`CloseReason::ReauthenticationFailed`]).
    Reauthenticate(Vec<u8>),
}

/// A policy refusal, for the audit log and `acl_denied_total`; or, with `quota`, a filter refused
/// by `max_subscriptions_per_client` (audited as `quota_exceeded`, not an ACL decision).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// [`AclAction::Publish`], [`AclAction::Subscribe`] or [`AclAction::Receive`].
    pub action: AclAction,
    /// The topic or filter that was judged.
    pub topic: String,
    /// The rule that decided, if one did.
    pub rule: Option<RuleRef>,
    /// Refused by a quota, not by the policy.
    pub quota: bool,
}

/// The result of inspecting one frame.
#[derive(Debug)]
pub struct Inspected {
    /// The packet type, when the frame decoded.
    pub packet_type: Option<PacketType>,
    /// What to do.
    pub verdict: Verdict,
}

fn malformed(direction: Direction, error: DecodeError) -> Inspected {
    Inspected {
        packet_type: None,
        verdict: Verdict::Close(CloseReason::Malformed { direction, error }),
    }
}

/// What one frame is judged under: the policy of `generation`, the session's state shared by both
/// directions, and where the frame's denials go (for the metrics and the audit log).
pub struct Under<'a> {
    /// The generation `policy` was resolved in.
    pub generation: u64,
    /// The client's policy.
    pub policy: &'a ClientPolicy,
    /// State both directions read and write (pending SUBACKs, the CONNACK seen, aliases granted).
    pub shared: &'a SessionShared,
    /// Denials of this frame, drained by the caller.
    pub denials: &'a mut Vec<Denial>,
}

/// One direction's inspector: a frame is decoded in that direction's stream state, then judged.
/// [`Inspect::inspect`] is the one entry point: frame bytes and state in, verdict out.
pub trait Inspect {
    /// Who sends the frames this inspector sees.
    const DIR: Direction;

    /// Decodes one complete frame against the stream's state.
    ///
    /// # Errors
    /// The frame is malformed or forbidden here.
    fn decode<'f>(&mut self, frame: &'f [u8]) -> Result<Packet<'f>, DecodeError>;

    /// The verdict on a decoded packet.
    ///
    /// # Errors
    /// A protocol violation that only the packet's meaning shows (the connection is closed as
    /// malformed).
    fn judge(&mut self, packet: Packet<'_>, under: &mut Under<'_>) -> Result<Verdict, DecodeError>;

    /// Inspects one complete frame.
    fn inspect(&mut self, frame: &[u8], under: &mut Under<'_>) -> Inspected {
        let packet = match self.decode(frame) {
            Ok(p) => p,
            Err(e) => return malformed(Self::DIR, e),
        };
        let packet_type = Some(packet.packet_type());
        match self.judge(packet, under) {
            Ok(verdict) => Inspected {
                packet_type,
                verdict,
            },
            Err(e) => malformed(Self::DIR, e),
        }
    }
}

fn encode_or_close(
    direction: Direction,
    f: impl FnOnce(&mut Vec<u8>) -> Result<(), mqtt_inspect::EncodeError>,
) -> Result<Vec<u8>, Verdict> {
    let mut out = Vec::new();
    f(&mut out).map(|()| out).map_err(|_| {
        Verdict::Close(CloseReason::Malformed {
            direction,
            error: DecodeError::ProtocolViolation("packet cannot be re-encoded"),
        })
    })
}

/// The bytes `f` encodes, sent back to the sender (or a close if they cannot be encoded).
fn reply(
    direction: Direction,
    f: impl FnOnce(&mut Vec<u8>) -> Result<(), mqtt_inspect::EncodeError>,
) -> Verdict {
    encode_or_close(direction, f).map_or_else(|v| v, Verdict::Reply)
}

/// The bytes `f` encodes, forwarded instead of the original frame.
fn replace(
    direction: Direction,
    f: impl FnOnce(&mut Vec<u8>) -> Result<(), mqtt_inspect::EncodeError>,
) -> Verdict {
    encode_or_close(direction, f).map_or_else(|v| v, Verdict::Replace)
}

fn deny(action: AclAction, topic: &str, d: &Decision, denials: &mut Vec<Denial>) {
    denials.push(Denial {
        action,
        topic: topic.to_owned(),
        rule: d.rule.clone(),
        quota: false,
    });
}

/// The SUBACK code refusing a filter for `reason`: the MQTT 5 reason itself, or before MQTT 5 the
/// one refusal there is, 0x80 Failure (3.1.1 §3.9.3), the byte of MQTT 5's Unspecified error.
fn suback_refusal(version: ProtocolVersion, reason: ReasonCode) -> u8 {
    if version.is_v5() {
        reason
    } else {
        ReasonCode::UnspecifiedError
    }
    .to_u8()
}

/// Rewrites a PUBLISH with its topic written out (its alias kept, so the binding is renewed).
/// An allowed PUBLISH: forwarded as it came, or with `topic` written out (and its alias kept)
/// when the receiver does not know the alias binding.
fn forward(
    p: &Publish<'_>,
    topic: Option<&str>,
    version: ProtocolVersion,
    direction: Direction,
) -> Verdict {
    topic.map_or(Verdict::Forward, |t| {
        publish_with_topic(p, t, version, direction)
    })
}

fn publish_with_topic(
    p: &Publish<'_>,
    topic: &str,
    version: ProtocolVersion,
    direction: Direction,
) -> Verdict {
    let mut full = *p;
    full.topic = topic;
    match encode_or_close(direction, |out| full.encode(version, out)) {
        Ok(bytes) => Verdict::Replace(bytes),
        Err(v) => v,
    }
}

// === impl ClientInspector ===

/// Inspection of the client-to-broker direction.
#[derive(Debug)]
pub struct ClientInspector {
    stream: StreamState,
    version: ProtocolVersion,
    aliases: AliasState,
    qos2: GatewayQos2,
    on_publish_deny: OnPublishDeny,
    last_allowed: LastAllowed,
    subscriptions: Subscriptions,
    /// The Authentication Method the client connected with (a token's `auth_method`): AUTH
    /// re-authentications with it are handed to the session.
    auth_method: Option<Box<str>>,
}

/// The token of a client's re-authentication: AUTH with reason 0x19 and the Authentication Method
/// of its CONNECT [MQTT-4.12.1-1]. Anything else (0x00 or 0x18 from the client, with no exchange
/// under way; another method) is a Protocol Error.
///
/// # Errors
/// The protocol violation.
pub fn reauthentication<'a>(
    auth: &mqtt_inspect::Auth<'a>,
    method: Option<&str>,
) -> Result<&'a [u8], DecodeError> {
    if auth.reason != ReasonCode::ReAuthenticate {
        return Err(DecodeError::ProtocolViolation(
            "AUTH from the client must start a re-authentication (0x19)",
        ));
    }
    if auth.properties.authentication_method().is_none()
        || auth.properties.authentication_method() != method
    {
        return Err(DecodeError::ProtocolViolation(
            "AUTH with another Authentication Method than the CONNECT's",
        ));
    }
    Ok(auth.properties.authentication_data().unwrap_or_default())
}

impl ClientInspector {
    /// For a connection whose CONNECT (of `version`) has been accepted, that may hold at most
    /// `max_subscriptions` filters at once.
    #[must_use]
    pub fn new(
        version: ProtocolVersion,
        on_publish_deny: OnPublishDeny,
        max_subscriptions: u32,
        auth_method: Option<&str>,
    ) -> Self {
        Self {
            subscriptions: Subscriptions::new(max_subscriptions),
            stream: StreamState::after_connect(version),
            version,
            aliases: AliasState::default(),
            qos2: GatewayQos2::default(),
            on_publish_deny,
            last_allowed: LastAllowed::default(),
            auth_method: auth_method.map(Box::from),
        }
    }
}

impl ClientInspector {
    fn publish(&mut self, p: &Publish<'_>, under: &mut Under<'_>) -> Verdict {
        const DIR: Direction = Direction::ClientToServer;
        let Under {
            generation,
            policy,
            shared,
            ref mut denials,
        } = *under;
        if let Some(id) = p.packet_id {
            // A client reuses an identifier only once its last flow is over: a QoS 2 flow the
            // gateway answered with this identifier is finished, and a later PUBREL belongs to
            // this PUBLISH (to the broker, when it is forwarded).
            self.qos2.remove(id.get());
        }
        let alias = p.properties.topic_alias();
        let had_topic = !p.topic.is_empty();
        let version = self.version;
        let needs_topic = self.aliases.needs_topic(alias, had_topic);
        let topic = match self
            .aliases
            .resolve(p.topic, alias, shared.client_alias_max(), DIR)
        {
            Ok(t) => t,
            Err(close) => return Verdict::Close(close),
        };
        let mut decision = self
            .last_allowed
            .decide(generation, topic, |t| policy.publish(t));
        let mut judged: &str = topic;
        if decision.allowed
            && let Some(response) = p.properties.response_topic()
        {
            // The requester must be allowed to receive the answer it asks for.
            let r = policy.receive(response);
            if !r.allowed {
                decision = r;
                judged = response;
            }
        }
        if decision.allowed {
            // The broker does not know this binding (its PUBLISH was dropped): write the topic out.
            let verdict = forward(p, needs_topic.then_some(topic), version, DIR);
            self.aliases.forwarded(alias);
            return verdict;
        }
        deny(AclAction::Publish, judged, &decision, denials);
        self.aliases.dropped(alias, had_topic);
        if self.on_publish_deny == OnPublishDeny::Disconnect {
            return Verdict::Close(CloseReason::PublishDenied);
        }
        let reason = if version.is_v5() {
            ReasonCode::NotAuthorized
        } else {
            ReasonCode::Success
        };
        let ack = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) | (_, None) => return Verdict::Drop,
            (QoS::AtLeastOnce, Some(id)) => Ack::new(AckKind::Puback, id, reason),
            (QoS::ExactlyOnce, Some(id)) => {
                if version.is_v5() {
                    // A PUBREC with a reason of 0x80 or more ends the flow (MQTT 5.0 §4.3.3): a
                    // client need not send PUBREL (one that does is answered here), so this
                    // entry must never cut the client off.
                    self.qos2.insert_evicting(id.get());
                } else if !self.qos2.insert(id.get()) {
                    return Verdict::Close(CloseReason::QuotaExceeded);
                }
                Ack::new(AckKind::Pubrec, id, reason)
            }
        };
        reply(DIR, |out| ack.encode(version, out))
    }

    fn subscribe(&mut self, s: &Subscribe<'_>, under: &mut Under<'_>) -> Verdict {
        const DIR: Direction = Direction::ClientToServer;
        let (policy, shared, denials) = (under.policy, under.shared, &mut *under.denials);
        let denied_code = suback_refusal(self.version, ReasonCode::NotAuthorized);
        let quota_code = suback_refusal(self.version, ReasonCode::QuotaExceeded);
        let mut codes: Vec<Option<u8>> = Vec::with_capacity(s.len());
        for (filter, _) in s.filters() {
            // As sent: `subscribe` takes a `$share/<group>/` prefix off (once) itself.
            let d = policy.subscribe(filter.as_str());
            if !d.allowed {
                deny(AclAction::Subscribe, filter.as_str(), &d, denials);
                codes.push(Some(denied_code));
            } else if self.subscriptions.add(filter.as_str()) {
                codes.push(None);
            } else {
                denials.push(Denial {
                    action: AclAction::Subscribe,
                    topic: filter.as_str().to_owned(),
                    rule: None,
                    quota: true,
                });
                codes.push(Some(quota_code));
            }
        }
        if codes.iter().all(Option::is_none) {
            return Verdict::Forward;
        }
        let version = self.version;
        if codes.iter().all(Option::is_some) {
            // Nothing left to subscribe: the gateway answers itself.
            let all: Vec<u8> = codes.iter().map(|c| c.unwrap_or(denied_code)).collect();
            let suback = Suback {
                packet_id: s.packet_id,
                properties: mqtt_inspect::Properties::EMPTY,
                codes: &all,
            };
            return reply(DIR, |out| suback.encode(version, out));
        }
        let rewritten = encode_or_close(DIR, |out| {
            s.encode_filtered(version, |i| matches!(codes.get(i), Some(None)), out)
        });
        let bytes = match rewritten {
            Ok(b) => b,
            Err(v) => return v,
        };
        if !shared.push_pending(PendingSuback {
            packet_id: s.packet_id.get(),
            codes,
        }) {
            return Verdict::Close(CloseReason::QuotaExceeded);
        }
        Verdict::Replace(bytes)
    }
}

impl Inspect for ClientInspector {
    const DIR: Direction = Direction::ClientToServer;

    fn decode<'f>(&mut self, frame: &'f [u8]) -> Result<Packet<'f>, DecodeError> {
        self.stream.decode_client(frame)
    }

    fn judge(&mut self, packet: Packet<'_>, under: &mut Under<'_>) -> Result<Verdict, DecodeError> {
        Ok(match packet {
            Packet::Publish(p) if p.properties.user_property_count() > MAX_USER_PROPERTIES => {
                Verdict::Close(CloseReason::QuotaExceeded)
            }
            Packet::Subscribe(s) if s.len() > MAX_FILTERS_PER_SUBSCRIBE => {
                Verdict::Close(CloseReason::QuotaExceeded)
            }
            Packet::Publish(p) => self.publish(&p, under),
            Packet::Subscribe(s) => self.subscribe(&s, under),
            Packet::Unsubscribe(u) => {
                for filter in u.filters() {
                    self.subscriptions.remove(filter.as_str());
                }
                Verdict::Forward
            }
            Packet::Ack(a) if a.kind == AckKind::Pubrel && self.qos2.remove(a.packet_id.get()) => {
                reply(Self::DIR, |out| {
                    Ack::new(AckKind::Pubcomp, a.packet_id, ReasonCode::Success)
                        .encode(self.version, out)
                })
            }
            // No enhanced authentication method was accepted at CONNECT, so there is nothing to
            // re-authenticate with; an AUTH can never change the identity bound to this session.
            Packet::Auth(_) if self.auth_method.is_none() => {
                Verdict::Close(CloseReason::AuthNotSupported)
            }
            Packet::Auth(a) => {
                Verdict::Reauthenticate(reauthentication(&a, self.auth_method.as_deref())?.to_vec())
            }
            _ => Verdict::Forward,
        })
    }
}

// === impl BrokerInspector ===

/// Inspection of the broker-to-client direction.
#[derive(Debug)]
pub struct BrokerInspector {
    stream: StreamState,
    version: ProtocolVersion,
    aliases: AliasState,
    qos2: GatewayQos2,
    /// The Topic Alias Maximum the client announced in CONNECT.
    alias_max: u16,
    /// The keep-alive to announce in CONNACK (MQTT 5), when the gateway capped the client's.
    server_keep_alive: Option<u16>,
    /// The keep-alive the gateway enforces on the client (it cuts the client off after 1.5 × it
    /// without a packet): a broker's Server Keep Alive is never let through above it.
    enforced_keep_alive: u16,
    last_allowed: LastAllowed,
    /// The Authentication Method the client connected with: the broker never saw it, so the
    /// gateway puts it in the CONNACK ([MQTT-3.2.2.3.17], §4.12).
    auth_method: Option<Box<str>>,
}

impl BrokerInspector {
    /// For a connection whose CONNECT (of `version`, announcing `alias_max`) was forwarded, whose
    /// keep-alive the gateway enforces as `enforced_keep_alive` (announced as `server_keep_alive`
    /// when it differs from the client's own).
    #[must_use]
    pub fn new(
        version: ProtocolVersion,
        alias_max: u16,
        enforced_keep_alive: u16,
        server_keep_alive: Option<u16>,
        auth_method: Option<&str>,
    ) -> Self {
        Self {
            stream: StreamState::after_connect(version),
            version,
            aliases: AliasState::default(),
            qos2: GatewayQos2::default(),
            alias_max,
            server_keep_alive,
            enforced_keep_alive,
            last_allowed: LastAllowed::default(),
            auth_method: auth_method.map(Box::from),
        }
    }
}

impl BrokerInspector {
    /// Forwards the broker's CONNACK, rewritten (MQTT 5) when the client must learn the capped
    /// keep-alive (Server Keep Alive: the gateway's cap, or the broker's when lower, never above
    /// the one the gateway enforces) or a Topic Alias Maximum lower than the broker's (the gateway
    /// tracks at most [`MAX_TOPIC_ALIASES`] aliases).
    fn connack(&self, c: &mqtt_inspect::Connack<'_>) -> Verdict {
        if !self.version.is_v5() {
            return Verdict::Forward;
        }
        let alias_max = c.properties.topic_alias_maximum();
        let broker_ka = c.properties.iter().find_map(|p| match p {
            Property::ServerKeepAlive(k) => Some(k),
            _ => None,
        });
        // The client uses the Server Keep Alive instead of its own [MQTT-3.1.2-21]: one above what
        // the gateway enforces (or 0, none at all) would have the client cut off for being idle.
        let cap = self.enforced_keep_alive;
        let theirs = broker_ka.map(|k| if k == 0 || k > cap { cap } else { k });
        let keep_alive = match (self.server_keep_alive, theirs) {
            (Some(ours), Some(theirs)) => Some(ours.min(theirs)),
            (ours, theirs) => ours.or(theirs),
        };
        let auth_method = self.auth_method.as_deref().filter(|_| c.code.is_success());
        if keep_alive == broker_ka && alias_max <= MAX_TOPIC_ALIASES && auth_method.is_none() {
            return Verdict::Forward;
        }
        let mut props: Vec<Property<'_>> = c
            .properties
            .iter()
            .filter(|p| {
                !matches!(
                    p,
                    Property::ServerKeepAlive(_)
                        | Property::TopicAliasMaximum(_)
                        | Property::AuthenticationMethod(_)
                        | Property::AuthenticationData(_)
                )
            })
            .collect();
        if let Some(m) = auth_method {
            props.push(Property::AuthenticationMethod(m));
        }
        if let Some(k) = keep_alive {
            props.push(Property::ServerKeepAlive(k));
        }
        if alias_max > 0 {
            props.push(Property::TopicAliasMaximum(
                alias_max.min(MAX_TOPIC_ALIASES),
            ));
        }
        let mut raw = Vec::new();
        if mqtt_inspect::encode_properties(&props, &mut raw).is_err() {
            return Verdict::Forward;
        }
        let Ok(properties) =
            mqtt_inspect::Properties::parse(&raw, mqtt_inspect::PropertyContext::Connack)
        else {
            return Verdict::Forward;
        };
        let rewritten = mqtt_inspect::Connack { properties, ..*c };
        replace(Direction::ServerToClient, |out| {
            rewritten.encode(self.version, out)
        })
    }

    fn publish(&mut self, p: &Publish<'_>, under: &mut Under<'_>) -> Verdict {
        const DIR: Direction = Direction::ServerToClient;
        let (generation, policy, denials) = (under.generation, under.policy, &mut *under.denials);
        let alias = p.properties.topic_alias();
        let had_topic = !p.topic.is_empty();
        let version = self.version;
        let needs_topic = self.aliases.needs_topic(alias, had_topic);
        let topic = match self.aliases.resolve(p.topic, alias, self.alias_max, DIR) {
            Ok(t) => t,
            Err(close) => return Verdict::Close(close),
        };
        let decision = self
            .last_allowed
            .decide(generation, topic, |t| policy.receive(t));
        if decision.allowed {
            let verdict = forward(p, needs_topic.then_some(topic), version, DIR);
            self.aliases.forwarded(alias);
            return verdict;
        }
        deny(AclAction::Receive, topic, &decision, denials);
        self.aliases.dropped(alias, had_topic);
        // Acknowledged to the broker as delivered, so its inflight window does not fill.
        let ack = match (p.qos, p.packet_id) {
            (QoS::AtMostOnce, _) | (_, None) => return Verdict::Drop,
            (QoS::AtLeastOnce, Some(id)) => Ack::new(AckKind::Puback, id, ReasonCode::Success),
            (QoS::ExactlyOnce, Some(id)) => {
                if !self.qos2.insert(id.get()) {
                    return Verdict::Close(CloseReason::QuotaExceeded);
                }
                Ack::new(AckKind::Pubrec, id, ReasonCode::Success)
            }
        };
        reply(DIR, |out| ack.encode(version, out))
    }
}

impl Inspect for BrokerInspector {
    const DIR: Direction = Direction::ServerToClient;

    fn decode<'f>(&mut self, frame: &'f [u8]) -> Result<Packet<'f>, DecodeError> {
        self.stream.decode_server(frame)
    }

    fn judge(&mut self, packet: Packet<'_>, under: &mut Under<'_>) -> Result<Verdict, DecodeError> {
        let version = self.version;
        Ok(match packet {
            Packet::Connack(c) => {
                under.shared.note_connack();
                under
                    .shared
                    .set_client_alias_max(c.properties.topic_alias_maximum());
                self.connack(&c)
            }
            Packet::Publish(p) => self.publish(&p, under),
            Packet::Ack(a) if a.kind == AckKind::Pubrel && self.qos2.remove(a.packet_id.get()) => {
                reply(Self::DIR, |out| {
                    Ack::new(AckKind::Pubcomp, a.packet_id, ReasonCode::Success)
                        .encode(version, out)
                })
            }
            Packet::Suback(s) => match under.shared.take_pending(s.packet_id.get()) {
                None => Verdict::Forward,
                Some(pending) => {
                    let mut broker_codes = s.codes.iter().copied();
                    let merged: Vec<u8> = pending
                        .codes
                        .iter()
                        .map(|c| {
                            c.unwrap_or_else(|| {
                                broker_codes
                                    .next()
                                    .unwrap_or(ReasonCode::UnspecifiedError.to_u8())
                            })
                        })
                        .collect();
                    let suback = Suback {
                        packet_id: s.packet_id,
                        properties: s.properties,
                        codes: &merged,
                    };
                    replace(Self::DIR, |out| suback.encode(version, out))
                }
            },
            _ => Verdict::Forward,
        })
    }
}

#[cfg(test)]
mod tests {
    use mqtt_inspect::{Connack, Properties, PropertyContext};

    use super::*;

    /// The Server Keep Alive the client is told in the CONNACK `broker_props` turns into.
    fn told(insp: &BrokerInspector, broker_props: &[u8]) -> Option<u16> {
        let connack = Connack {
            session_present: false,
            code: mqtt_inspect::ConnackCode::V5(ReasonCode::Success),
            properties: Properties::parse(broker_props, PropertyContext::Connack).unwrap(),
        };
        let bytes = match insp.connack(&connack) {
            Verdict::Forward => {
                let mut out = Vec::new();
                connack.encode(ProtocolVersion::V5, &mut out).unwrap();
                out
            }
            Verdict::Replace(b) => b,
            other => panic!("{other:?}"),
        };
        let Ok(Packet::Connack(c)) = mqtt_inspect::decode(&bytes, ProtocolVersion::V5) else {
            panic!("{bytes:?}")
        };
        c.properties.iter().find_map(|p| match p {
            Property::ServerKeepAlive(k) => Some(k),
            _ => None,
        })
    }

    #[test]
    fn the_client_is_never_told_a_keep_alive_above_the_one_the_gateway_enforces() {
        // The client asked for 60 s and the gateway enforces 60 ([MQTT-3.1.2-21]: the client then
        // uses whatever the CONNACK says).
        let insp = BrokerInspector::new(ProtocolVersion::V5, 0, 60, None, None);
        assert_eq!(told(&insp, &[]), None, "no Server Keep Alive: none added");
        assert_eq!(told(&insp, &[0x13, 0, 30]), Some(30), "a lower one passes");
        assert_eq!(
            told(&insp, &[0x13, 0, 120]),
            Some(60),
            "a higher one is lowered"
        );
        assert_eq!(told(&insp, &[0x13, 0, 0]), Some(60), "0 (none) is replaced");
        // The gateway capped the client's 65,535 at 600: announced, or the broker's if lower.
        let capped = BrokerInspector::new(ProtocolVersion::V5, 0, 600, Some(600), None);
        assert_eq!(told(&capped, &[]), Some(600));
        assert_eq!(told(&capped, &[0x13, 0, 100]), Some(100));
        assert_eq!(told(&capped, &[0x13, 0xff, 0xff]), Some(600));
    }
}

#[cfg(test)]
#[path = "inspect_tests.rs"]
mod inspect_tests;
