//! `StreamState`: the rules that span packets of one connection: the first packet is CONNECT, there
//! is no second CONNECT, each side sends only its own packet types, and the version the CONNECT chose
//! decodes everything after it.

use crate::error::DecodeError;
use crate::packet::{Connect, Packet, PacketType, decode, decode_connect};
use crate::version::ProtocolVersion;

/// Who sent a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the MQTT client to the broker.
    ClientToServer,
    /// From the broker to the MQTT client.
    ServerToClient,
}

impl Direction {
    /// The metric label ("client_to_broker" / "broker_to_client").
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ClientToServer => "client_to_broker",
            Self::ServerToClient => "broker_to_client",
        }
    }
}

/// Protocol state of one connection, as seen by a relay that decodes both directions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamState {
    version: Option<ProtocolVersion>,
    connack_seen: bool,
}

impl StreamState {
    /// A connection on which nothing has been seen yet.
    #[must_use]
    pub const fn new() -> Self {
        Self {
            version: None,
            connack_seen: false,
        }
    }

    /// A connection whose CONNECT (of `version`) has been decoded, before its CONNACK.
    #[must_use]
    pub const fn after_connect(version: ProtocolVersion) -> Self {
        Self {
            version: Some(version),
            connack_seen: false,
        }
    }

    /// A connection whose CONNECT and CONNACK have both been seen.
    #[must_use]
    pub const fn after_connack(version: ProtocolVersion) -> Self {
        Self {
            version: Some(version),
            connack_seen: true,
        }
    }

    /// The version of the connection, once its CONNECT has been decoded.
    #[must_use]
    pub const fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Decodes the first packet, which must be a CONNECT ([MQTT-3.1.0-1]), and fixes the version.
    ///
    /// # Errors
    /// A second CONNECT ([MQTT-3.1.0-2]), another packet type, or a malformed CONNECT.
    pub fn decode_connect<'a>(&mut self, frame: &'a [u8]) -> Result<Connect<'a>, DecodeError> {
        if self.version.is_some() {
            return Err(DecodeError::ProtocolViolation("a second CONNECT"));
        }
        let connect = decode_connect(frame)?;
        self.version = Some(connect.version);
        Ok(connect)
    }

    /// Decodes a frame the client sent.
    ///
    /// # Errors
    /// Anything [`decode`] refuses; a first packet that is not CONNECT; a second CONNECT
    /// ([MQTT-3.1.0-2]); a packet only a server sends; a PUBLISH carrying a Subscription Identifier
    /// ([MQTT-3.3.4-6]).
    pub fn decode_client<'a>(&mut self, frame: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let Some(version) = self.version else {
            return self.decode_connect(frame).map(Packet::Connect);
        };
        let packet = decode(frame, version)?;
        match packet.packet_type() {
            PacketType::Connect => return Err(DecodeError::ProtocolViolation("a second CONNECT")),
            PacketType::Connack
            | PacketType::Suback
            | PacketType::Unsuback
            | PacketType::Pingresp => {
                return Err(DecodeError::ProtocolViolation(
                    "a server packet sent by a client",
                ));
            }
            _ => {}
        }
        if let Packet::Publish(p) = &packet
            && p.properties.has_subscription_identifier()
        {
            return Err(DecodeError::ProtocolViolation(
                "a Subscription Identifier from a client",
            ));
        }
        Ok(packet)
    }

    /// Decodes a frame the broker sent.
    ///
    /// # Errors
    /// Anything [`decode`] refuses; a broker packet before the client's CONNECT; a packet only a
    /// client sends; anything but CONNACK (or AUTH) first ([MQTT-3.2.0-1]).
    pub fn decode_server<'a>(&mut self, frame: &'a [u8]) -> Result<Packet<'a>, DecodeError> {
        let Some(version) = self.version else {
            return Err(DecodeError::ProtocolViolation(
                "a server packet before CONNECT",
            ));
        };
        let packet = decode(frame, version)?;
        match packet.packet_type() {
            PacketType::Connect
            | PacketType::Subscribe
            | PacketType::Unsubscribe
            | PacketType::Pingreq => {
                return Err(DecodeError::ProtocolViolation(
                    "a client packet sent by a server",
                ));
            }
            PacketType::Connack if self.connack_seen => {
                return Err(DecodeError::ProtocolViolation("a second CONNACK"));
            }
            PacketType::Connack => self.connack_seen = true,
            PacketType::Auth => {}
            _ if !self.connack_seen => {
                return Err(DecodeError::ProtocolViolation(
                    "a server packet before CONNACK",
                ));
            }
            _ => {}
        }
        Ok(packet)
    }
}
