//! Packets: [`Packet<'a>`], a borrowed view of one decoded frame, and [`decode`].
//!
//! One file per packet type, decoder and encoder side by side. A view borrows every string and
//! payload from the frame; decoding a PUBLISH allocates nothing.

mod auth;
mod connack;
mod connect;
mod disconnect;
mod ping;
mod puback;
mod publish;
mod suback;
mod subscribe;
mod unsubscribe;

use core::num::NonZeroU16;

pub use auth::Auth;
pub use connack::{Connack, ConnackCode};
pub use connect::{Connect, Will};
pub use disconnect::Disconnect;
pub use puback::{Ack, AckKind};
pub use publish::Publish;
pub use suback::{Suback, Unsuback};
pub use subscribe::{RetainHandling, Subscribe, SubscribeFilters, SubscriptionOptions};
pub use unsubscribe::{Unsubscribe, UnsubscribeFilters};

use crate::encode::{Sink, put_u16};
use crate::error::{DecodeError, EncodeError};
use crate::framing::{MAX_PACKET_SIZE, Peek, peek_frame};
use crate::properties::{Properties, PropertyContext};
use crate::reader::Reader;
use crate::version::ProtocolVersion;

/// A Packet Identifier: never 0 ([MQTT-2.2.1-3]).
pub type PacketId = NonZeroU16;

/// The 15 MQTT control packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the names are the specification's
pub enum PacketType {
    Connect,
    Connack,
    Publish,
    Puback,
    Pubrec,
    Pubrel,
    Pubcomp,
    Subscribe,
    Suback,
    Unsubscribe,
    Unsuback,
    Pingreq,
    Pingresp,
    Disconnect,
    Auth,
}

impl PacketType {
    /// All types, in wire-number order (1 to 15).
    pub const ALL: [Self; 15] = [
        Self::Connect,
        Self::Connack,
        Self::Publish,
        Self::Puback,
        Self::Pubrec,
        Self::Pubrel,
        Self::Pubcomp,
        Self::Subscribe,
        Self::Suback,
        Self::Unsubscribe,
        Self::Unsuback,
        Self::Pingreq,
        Self::Pingresp,
        Self::Disconnect,
        Self::Auth,
    ];

    /// The type for the high nibble of the first byte.
    #[must_use]
    pub fn from_nibble(n: u8) -> Option<Self> {
        Self::ALL.get(usize::from(n.checked_sub(1)?)).copied()
    }

    /// Position in [`PacketType::ALL`] (the wire number minus one), for per-type tables.
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Self::Connect => 0,
            Self::Connack => 1,
            Self::Publish => 2,
            Self::Puback => 3,
            Self::Pubrec => 4,
            Self::Pubrel => 5,
            Self::Pubcomp => 6,
            Self::Subscribe => 7,
            Self::Suback => 8,
            Self::Unsubscribe => 9,
            Self::Unsuback => 10,
            Self::Pingreq => 11,
            Self::Pingresp => 12,
            Self::Disconnect => 13,
            Self::Auth => 14,
        }
    }

    /// The lower-case name, as used for metric labels ("connect", "publish", ...).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Connack => "connack",
            Self::Publish => "publish",
            Self::Puback => "puback",
            Self::Pubrec => "pubrec",
            Self::Pubrel => "pubrel",
            Self::Pubcomp => "pubcomp",
            Self::Subscribe => "subscribe",
            Self::Suback => "suback",
            Self::Unsubscribe => "unsubscribe",
            Self::Unsuback => "unsuback",
            Self::Pingreq => "pingreq",
            Self::Pingresp => "pingresp",
            Self::Disconnect => "disconnect",
            Self::Auth => "auth",
        }
    }
}

/// Quality of Service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QoS {
    /// 0: at most once.
    AtMostOnce,
    /// 1: at least once.
    AtLeastOnce,
    /// 2: exactly once.
    ExactlyOnce,
}

impl QoS {
    /// The QoS for two bits; 3 is malformed ([MQTT-3.3.1-4]).
    pub(crate) fn from_bits(bits: u8, what: &'static str) -> Result<Self, DecodeError> {
        match bits {
            0 => Ok(Self::AtMostOnce),
            1 => Ok(Self::AtLeastOnce),
            2 => Ok(Self::ExactlyOnce),
            _ => Err(DecodeError::InvalidQos(what)),
        }
    }

    /// The two-bit value.
    #[must_use]
    pub const fn bits(self) -> u8 {
        match self {
            Self::AtMostOnce => 0,
            Self::AtLeastOnce => 1,
            Self::ExactlyOnce => 2,
        }
    }
}

/// One decoded packet, borrowing from its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet<'a> {
    Connect(Connect<'a>),
    Connack(Connack<'a>),
    Publish(Publish<'a>),
    /// PUBACK, PUBREC, PUBREL or PUBCOMP ([`Ack::kind`] says which).
    Ack(Ack<'a>),
    Subscribe(Subscribe<'a>),
    Suback(Suback<'a>),
    Unsubscribe(Unsubscribe<'a>),
    Unsuback(Unsuback<'a>),
    Pingreq,
    Pingresp,
    Disconnect(Disconnect<'a>),
    Auth(Auth<'a>),
}

impl Packet<'_> {
    /// The packet type.
    #[must_use]
    pub const fn packet_type(&self) -> PacketType {
        match self {
            Self::Connect(_) => PacketType::Connect,
            Self::Connack(_) => PacketType::Connack,
            Self::Publish(_) => PacketType::Publish,
            Self::Ack(a) => a.kind.packet_type(),
            Self::Subscribe(_) => PacketType::Subscribe,
            Self::Suback(_) => PacketType::Suback,
            Self::Unsubscribe(_) => PacketType::Unsubscribe,
            Self::Unsuback(_) => PacketType::Unsuback,
            Self::Pingreq => PacketType::Pingreq,
            Self::Pingresp => PacketType::Pingresp,
            Self::Disconnect(_) => PacketType::Disconnect,
            Self::Auth(_) => PacketType::Auth,
        }
    }

    /// Encodes the packet for `version` (CONNECT carries its own version and ignores it).
    ///
    /// # Errors
    /// A field too long for the wire format, or a value `version` cannot express.
    pub fn encode(&self, version: ProtocolVersion, out: &mut dyn Sink) -> Result<(), EncodeError> {
        match self {
            Self::Connect(p) => p.encode(out),
            Self::Connack(p) => p.encode(version, out),
            Self::Publish(p) => p.encode(version, out),
            Self::Ack(p) => p.encode(version, out),
            Self::Subscribe(p) => p.encode(version, out),
            Self::Suback(p) => p.encode(version, out),
            Self::Unsubscribe(p) => p.encode(version, out),
            Self::Unsuback(p) => p.encode(version, out),
            Self::Pingreq => ping::encode(PacketType::Pingreq, out),
            Self::Pingresp => ping::encode(PacketType::Pingresp, out),
            Self::Disconnect(p) => p.encode(version, out),
            Self::Auth(p) => p.encode(version, out),
        }
    }
}

/// Decodes one complete frame (fixed header included) spoken in `version`.
///
/// A CONNECT is decoded whatever `version` says (it announces its own); [`decode_connect`] is the
/// same for the first packet of a connection, when no version is known yet.
///
/// # Errors
/// Any rule of the specification the frame breaks; the frame must be exactly one packet.
pub fn decode(frame: &[u8], version: ProtocolVersion) -> Result<Packet<'_>, DecodeError> {
    let (first_byte, body) = split_header(frame)?;
    let flags = first_byte & 0x0f;
    let Some(kind) = PacketType::from_nibble(first_byte >> 4) else {
        return Err(DecodeError::InvalidPacketType(first_byte >> 4));
    };
    let fixed_flags = |expected: u8, what: &'static str| {
        // [MQTT-2.2.2-2]: flags other than PUBLISH's are fixed.
        if flags == expected {
            Ok(())
        } else {
            Err(DecodeError::ReservedFlags(what))
        }
    };
    let mut r = Reader::new(body);
    let packet = match kind {
        PacketType::Connect => {
            fixed_flags(0, "CONNECT")?;
            Packet::Connect(Connect::decode(&mut r)?)
        }
        PacketType::Connack => {
            fixed_flags(0, "CONNACK")?;
            Packet::Connack(Connack::decode(&mut r, version)?)
        }
        PacketType::Publish => Packet::Publish(Publish::decode(flags, &mut r, version)?),
        PacketType::Puback | PacketType::Pubrec | PacketType::Pubrel | PacketType::Pubcomp => {
            let ack_kind = AckKind::from_packet_type(kind)
                .ok_or(DecodeError::InvalidPacketType(first_byte >> 4))?;
            fixed_flags(ack_kind.flags(), ack_kind.name())?;
            Packet::Ack(Ack::decode(ack_kind, &mut r, version)?)
        }
        PacketType::Subscribe => {
            fixed_flags(0b0010, "SUBSCRIBE")?;
            Packet::Subscribe(Subscribe::decode(&mut r, version)?)
        }
        PacketType::Suback => {
            fixed_flags(0, "SUBACK")?;
            Packet::Suback(Suback::decode(&mut r, version)?)
        }
        PacketType::Unsubscribe => {
            fixed_flags(0b0010, "UNSUBSCRIBE")?;
            Packet::Unsubscribe(Unsubscribe::decode(&mut r, version)?)
        }
        PacketType::Unsuback => {
            fixed_flags(0, "UNSUBACK")?;
            Packet::Unsuback(Unsuback::decode(&mut r, version)?)
        }
        PacketType::Pingreq => {
            fixed_flags(0, "PINGREQ")?;
            r.finish("PINGREQ")?;
            Packet::Pingreq
        }
        PacketType::Pingresp => {
            fixed_flags(0, "PINGRESP")?;
            r.finish("PINGRESP")?;
            Packet::Pingresp
        }
        PacketType::Disconnect => {
            fixed_flags(0, "DISCONNECT")?;
            Packet::Disconnect(Disconnect::decode(&mut r, version)?)
        }
        PacketType::Auth => {
            if !version.is_v5() {
                // Type 15 is reserved before MQTT 5.
                return Err(DecodeError::InvalidPacketType(15));
            }
            fixed_flags(0, "AUTH")?;
            Packet::Auth(Auth::decode(&mut r)?)
        }
    };
    Ok(packet)
}

/// Judges the first byte of a connection's first packet before its body has arrived: it must be
/// a CONNECT's, type 1 with the reserved flags 0 ([MQTT-3.1.0-1], [MQTT-2.2.2-2]). A server can
/// then close a connection that cannot be MQTT at once, instead of waiting for a body that may
/// never come.
///
/// # Errors
/// `ProtocolViolation` for another packet type, `ReservedFlags` for a CONNECT type with flags.
pub const fn check_connect_first_byte(byte: u8) -> Result<(), DecodeError> {
    match byte {
        0x10 => Ok(()),
        b if b >> 4 == 1 => Err(DecodeError::ReservedFlags("CONNECT")),
        _ => Err(DecodeError::ProtocolViolation(
            "the first packet must be CONNECT",
        )),
    }
}

/// Decodes the first packet of a connection, which must be a CONNECT ([MQTT-3.1.0-1]).
///
/// # Errors
/// [`DecodeError::ProtocolViolation`] for any other packet type, or a malformed CONNECT.
pub fn decode_connect(frame: &[u8]) -> Result<Connect<'_>, DecodeError> {
    match frame.first() {
        Some(b) if b >> 4 == 1 => {}
        _ => {
            return Err(DecodeError::ProtocolViolation(
                "the first packet must be CONNECT",
            ));
        }
    }
    match decode(frame, ProtocolVersion::V311)? {
        Packet::Connect(c) => Ok(c),
        _ => Err(DecodeError::ProtocolViolation(
            "the first packet must be CONNECT",
        )),
    }
}

/// Splits a frame into its first byte and its body, checking that the Remaining Length covers
/// exactly the rest of the frame.
fn split_header(frame: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    match peek_frame(frame, MAX_PACKET_SIZE)? {
        Peek::Complete(h) => {
            if frame.len() != h.frame_len() {
                return Err(DecodeError::TrailingBytes("frame"));
            }
            let body = frame
                .get(usize::from(h.header_len)..)
                .ok_or(DecodeError::UnexpectedEnd("fixed header"))?;
            Ok((h.first_byte, body))
        }
        Peek::Incomplete { .. } => Err(DecodeError::UnexpectedEnd("frame")),
    }
}

/// Reads a non-zero Packet Identifier.
pub(crate) fn read_packet_id(
    r: &mut Reader<'_>,
    what: &'static str,
) -> Result<PacketId, DecodeError> {
    PacketId::new(r.u16(what)?).ok_or(DecodeError::ZeroPacketId(what))
}

/// The packets whose variable header is a Packet Identifier and, in MQTT 5, properties, followed
/// by a list: what [`read_id_and_properties`] and [`read_entries`] call them in errors.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ListPacket {
    Subscribe,
    Suback,
    Unsubscribe,
}

impl ListPacket {
    /// The Packet Identifier's name in errors.
    const fn id_name(self) -> &'static str {
        match self {
            Self::Subscribe => "SUBSCRIBE packet identifier",
            Self::Suback => "SUBACK packet identifier",
            Self::Unsubscribe => "UNSUBSCRIBE packet identifier",
        }
    }

    const fn context(self) -> PropertyContext {
        match self {
            Self::Subscribe => PropertyContext::Subscribe,
            Self::Suback => PropertyContext::Suback,
            Self::Unsubscribe => PropertyContext::Unsubscribe,
        }
    }

    /// The protocol violation of an empty list.
    const fn empty(self) -> &'static str {
        match self {
            Self::Subscribe => "SUBSCRIBE without a topic filter",
            Self::Suback => "SUBACK without a return code",
            Self::Unsubscribe => "UNSUBSCRIBE without a topic filter",
        }
    }
}

/// Reads the variable header of `packet`: a non-zero Packet Identifier, then in MQTT 5 the
/// properties.
pub(crate) fn read_id_and_properties<'a>(
    r: &mut Reader<'a>,
    version: ProtocolVersion,
    packet: ListPacket,
) -> Result<(PacketId, Properties<'a>), DecodeError> {
    let packet_id = read_packet_id(r, packet.id_name())?;
    let properties = if version.is_v5() {
        Properties::decode(r, packet.context())?
    } else {
        Properties::EMPTY
    };
    Ok((packet_id, properties))
}

/// The validated entries of a SUBSCRIBE or UNSUBSCRIBE: their bytes, read again without
/// checks when iterated, and how many there are (at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entries<'a> {
    bytes: &'a [u8],
    count: usize,
}

impl<'a> Entries<'a> {
    pub(crate) const fn len(&self) -> usize {
        self.count
    }

    /// A reader over the entries.
    pub(crate) const fn reader(&self) -> Reader<'a> {
        Reader::new(self.bytes)
    }
}

/// The rest of `packet` (SUBSCRIBE or UNSUBSCRIBE): its entries, each read and checked by
/// `entry`; none at all is a protocol violation ([MQTT-3.8.3-2], [MQTT-3.10.3-2]).
pub(crate) fn read_entries<'a>(
    r: &mut Reader<'a>,
    packet: ListPacket,
    entry: impl FnMut(&mut Reader<'_>) -> Result<(), DecodeError>,
) -> Result<Entries<'a>, DecodeError> {
    let bytes = r.rest();
    count_entries(bytes, packet.empty(), entry).map(|count| Entries { bytes, count })
}

/// Writes the variable header of SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK: the Packet
/// Identifier, then in MQTT 5 the properties.
pub(crate) fn put_id_and_properties(
    s: &mut dyn Sink,
    version: ProtocolVersion,
    packet_id: PacketId,
    properties: &Properties<'_>,
) -> Result<(), EncodeError> {
    put_u16(s, packet_id.get());
    if version.is_v5() {
        properties.write(s)?;
    }
    Ok(())
}

/// The rest of a SUBACK or UNSUBACK: one code per filter, at least one (else `UnexpectedEnd(what)`),
/// each one that `ok` accepts.
pub(crate) fn read_codes<'a>(
    r: &mut Reader<'a>,
    what: &'static str,
    ok: impl Fn(u8) -> bool,
) -> Result<&'a [u8], DecodeError> {
    let codes = r.rest();
    if codes.is_empty() {
        return Err(DecodeError::UnexpectedEnd(what));
    }
    if let Some(&bad) = codes.iter().find(|&&c| !ok(c)) {
        return Err(DecodeError::InvalidReasonCode(bad));
    }
    Ok(codes)
}

/// Counts the entries of a SUBSCRIBE or UNSUBSCRIBE payload, each read and checked by `entry`.
/// None at all is the protocol violation `none`.
fn count_entries(
    payload: &[u8],
    none: &'static str,
    mut entry: impl FnMut(&mut Reader<'_>) -> Result<(), DecodeError>,
) -> Result<usize, DecodeError> {
    let mut r = Reader::new(payload);
    let mut count = 0usize;
    while !r.is_empty() {
        entry(&mut r)?;
        count += 1;
    }
    if count == 0 {
        return Err(DecodeError::ProtocolViolation(none));
    }
    Ok(count)
}
