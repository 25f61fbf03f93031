//! # mqtt-inspect
//!
//! A strict, zero-copy codec for MQTT 3.1 ("MQIsdp", level 3), 3.1.1 (level 4) and 5.0 (level 5),
//! written for a security gateway that must read every packet of a connection in both directions
//! before forwarding a byte of it.
//!
//! - **Framing** ([`peek_frame`], [`split_frame`]): incremental; a frame larger than the caller's
//!   maximum is refused as soon as its fixed header is complete, before its body is buffered.
//! - **Decoding** ([`decode`], [`StreamState`]): all 15 packet types into borrowed views
//!   ([`Packet`]); nothing is copied and decoding a PUBLISH does not allocate.
//! - **Strictness**: reserved flag bits, QoS 3, packet identifier 0, ill-formed UTF-8, U+0000, control
//!   characters and non-characters in strings, wildcards in topic names or misplaced in filters,
//!   unknown, duplicate or misplaced properties, lengths that disagree with the Remaining Length, a
//!   second CONNECT. Every refusal is a [`DecodeError`] that maps to the MQTT 5 reason code to send.
//! - **Encoding**: every packet type, including the ones a gateway originates or rewrites (CONNACK,
//!   SUBACK, PUBACK/PUBREC/PUBREL/PUBCOMP, DISCONNECT, a CONNECT with other credentials, a SUBSCRIBE
//!   without some of its filters: [`Subscribe::encode_filtered`]).
//! - **Topics** ([`topic`]): matching, containment, `$share/<group>/<filter>`.
//! - **Topic aliases** ([`TopicAliases`]): one bounded table per direction.
//!
//! No I/O: no sockets, no clock, no files, no async runtime. Nothing here panics on input.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod alias;
mod encode;
mod error;
mod framing;
mod packet;
mod properties;
mod reader;
mod reason;
mod stream;
pub mod topic;
mod version;

pub use alias::TopicAliases;
pub use encode::{Counter, Sink};
pub use error::{DecodeError, EncodeError};
pub use framing::{
    FixedHeader, MAX_PACKET_SIZE, MAX_REMAINING_LENGTH, Peek, peek_frame, split_frame, varint_len,
};
pub use packet::{
    Ack, AckKind, Auth, Connack, ConnackCode, Connect, Disconnect, Packet, PacketId, PacketType,
    Publish, QoS, RetainHandling, Suback, Subscribe, SubscribeFilters, SubscriptionOptions,
    Unsuback, Unsubscribe, UnsubscribeFilters, Will, check_connect_first_byte, decode,
    decode_connect,
};
pub use properties::{Properties, Property, PropertyContext, PropertyIter, encode_properties};
pub use reader::check_utf8;
pub use reason::{ConnectReturnCode, ReasonCode};
pub use stream::{Direction, StreamState};
pub use topic::{TopicFilter, TopicName};
pub use version::ProtocolVersion;
