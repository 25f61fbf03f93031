//! The closed set of reasons a byte stream is refused, and the MQTT 5 reason code each one maps to.
//!
//! Context is always a `&'static str` naming the field that failed, never a formatted string and never
//! an `io::Error`: decoding has no I/O, and an error must not allocate.

use core::fmt;

use crate::reason::ReasonCode;

/// Why a frame or a packet was refused.
///
/// Every variant maps to the MQTT 5 reason code the gateway sends in DISCONNECT (or in CONNACK when
/// the offending packet is the CONNECT) through [`DecodeError::reason_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is larger than the caller's maximum (total bytes, fixed header included).
    PacketTooLarge {
        /// Total size announced by the fixed header.
        size: u64,
        /// The caller's maximum.
        max: u32,
    },
    /// A Remaining Length or Variable Byte Integer longer than 4 bytes or not minimally encoded.
    MalformedVarInt(&'static str),
    /// Packet type 0, or 15 (AUTH) before MQTT 5.
    InvalidPacketType(u8),
    /// Fixed header flag bits that the specification reserves ([MQTT-2.2.2-2]).
    ReservedFlags(&'static str),
    /// The packet ends before the named field.
    UnexpectedEnd(&'static str),
    /// Bytes left after the last field of the named packet.
    TrailingBytes(&'static str),
    /// A UTF-8 Encoded String that is not well-formed UTF-8 ([MQTT-1.5.4-1]).
    InvalidUtf8(&'static str),
    /// A UTF-8 string holding U+0000 ([MQTT-1.5.4-2]), a control character or a non-character.
    DisallowedCodePoint(&'static str),
    /// QoS 3 ([MQTT-3.3.1-4]) or a QoS bit set where the packet forbids it.
    InvalidQos(&'static str),
    /// Packet Identifier 0 where a non-zero one is required ([MQTT-2.2.1-3]).
    ZeroPacketId(&'static str),
    /// A Topic Name holding a wildcard ([MQTT-3.3.2-2]), or empty where it must not be.
    InvalidTopicName(&'static str),
    /// A Topic Filter with misplaced wildcards ([MQTT-4.7.1-1], [MQTT-4.7.1-2]) or empty ([MQTT-4.7.3-1]).
    InvalidTopicFilter(&'static str),
    /// A `$share/<group>/<filter>` whose group or filter is invalid ([MQTT-4.8.2-1], [MQTT-4.8.2-2]).
    InvalidSharedSubscription(&'static str),
    /// A property identifier that MQTT 5 does not define.
    UnknownProperty(u8),
    /// A property that may appear once appeared twice.
    DuplicateProperty(u8),
    /// A property that this packet may not carry.
    PropertyNotAllowed(u8),
    /// A property or field value outside its range (e.g. Receive Maximum 0, Payload Format 2).
    InvalidValue(&'static str),
    /// A reason code this packet may not carry.
    InvalidReasonCode(u8),
    /// A CONNECT whose protocol name is neither "MQTT" nor "MQIsdp".
    InvalidProtocolName,
    /// A protocol level the gateway does not speak (or that disagrees with the protocol name).
    UnsupportedProtocolVersion(u8),
    /// CONNECT flags that break the rules of [MQTT-3.1.2-3] .. [MQTT-3.1.2-22].
    InvalidConnectFlags(&'static str),
    /// A packet the sender may not send in this state or direction (a second CONNECT, a first packet
    /// that is not CONNECT, a Subscription Identifier from a client, an empty SUBSCRIBE).
    ProtocolViolation(&'static str),
    /// A topic alias of 0, above the negotiated maximum, or not yet bound ([MQTT-3.3.2-8], [MQTT-3.3.2-9]).
    TopicAliasInvalid,
}

impl DecodeError {
    /// The MQTT 5 reason code for a DISCONNECT (or CONNACK) sent because of this error.
    #[must_use]
    pub const fn reason_code(&self) -> ReasonCode {
        match self {
            Self::PacketTooLarge { .. } => ReasonCode::PacketTooLarge,
            Self::InvalidTopicName(_) => ReasonCode::TopicNameInvalid,
            Self::TopicAliasInvalid => ReasonCode::TopicAliasInvalid,
            Self::InvalidProtocolName | Self::UnsupportedProtocolVersion(_) => {
                ReasonCode::UnsupportedProtocolVersion
            }
            Self::DuplicateProperty(_)
            | Self::PropertyNotAllowed(_)
            | Self::InvalidValue(_)
            | Self::ProtocolViolation(_) => ReasonCode::ProtocolError,
            Self::MalformedVarInt(_)
            | Self::InvalidPacketType(_)
            | Self::ReservedFlags(_)
            | Self::UnexpectedEnd(_)
            | Self::TrailingBytes(_)
            | Self::InvalidUtf8(_)
            | Self::DisallowedCodePoint(_)
            | Self::InvalidQos(_)
            | Self::ZeroPacketId(_)
            | Self::InvalidTopicFilter(_)
            | Self::InvalidSharedSubscription(_)
            | Self::UnknownProperty(_)
            | Self::InvalidReasonCode(_)
            | Self::InvalidConnectFlags(_) => ReasonCode::MalformedPacket,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PacketTooLarge { size, max } => {
                write!(f, "packet of {size} bytes exceeds the maximum of {max}")
            }
            Self::MalformedVarInt(what) => write!(f, "malformed variable byte integer in {what}"),
            Self::InvalidPacketType(t) => write!(f, "invalid packet type {t}"),
            Self::ReservedFlags(what) => write!(f, "reserved flag bits set in {what}"),
            Self::UnexpectedEnd(what) => write!(f, "packet ends before {what}"),
            Self::TrailingBytes(what) => write!(f, "trailing bytes after {what}"),
            Self::InvalidUtf8(what) => write!(f, "{what} is not well-formed UTF-8"),
            Self::DisallowedCodePoint(what) => write!(f, "{what} holds a disallowed code point"),
            Self::InvalidQos(what) => write!(f, "invalid QoS in {what}"),
            Self::ZeroPacketId(what) => write!(f, "packet identifier 0 in {what}"),
            Self::InvalidTopicName(what) => write!(f, "invalid topic name: {what}"),
            Self::InvalidTopicFilter(what) => write!(f, "invalid topic filter: {what}"),
            Self::InvalidSharedSubscription(what) => {
                write!(f, "invalid shared subscription: {what}")
            }
            Self::UnknownProperty(id) => write!(f, "unknown property 0x{id:02x}"),
            Self::DuplicateProperty(id) => write!(f, "property 0x{id:02x} appears twice"),
            Self::PropertyNotAllowed(id) => {
                write!(f, "property 0x{id:02x} is not allowed in this packet")
            }
            Self::InvalidValue(what) => write!(f, "invalid value for {what}"),
            Self::InvalidReasonCode(rc) => {
                write!(f, "reason code 0x{rc:02x} is not allowed in this packet")
            }
            Self::InvalidProtocolName => f.write_str("unknown protocol name"),
            Self::UnsupportedProtocolVersion(v) => write!(f, "unsupported protocol level {v}"),
            Self::InvalidConnectFlags(what) => write!(f, "invalid CONNECT flags: {what}"),
            Self::ProtocolViolation(what) => write!(f, "protocol violation: {what}"),
            Self::TopicAliasInvalid => f.write_str("invalid topic alias"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a packet could not be encoded: a field is longer than the wire format allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// A string or binary field longer than 65,535 bytes.
    FieldTooLong(&'static str),
    /// A packet whose Remaining Length would exceed 268,435,455 bytes.
    PacketTooLarge,
    /// A value the packet cannot carry (e.g. a reason code on MQTT 3.1.1).
    InvalidValue(&'static str),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FieldTooLong(what) => write!(f, "{what} is longer than 65535 bytes"),
            Self::PacketTooLarge => f.write_str("packet exceeds the maximum remaining length"),
            Self::InvalidValue(what) => write!(f, "cannot encode {what}"),
        }
    }
}

impl std::error::Error for EncodeError {}
