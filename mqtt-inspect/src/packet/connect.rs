//! CONNECT (MQTT 5.0 §3.1, 3.1.1 §3.1, 3.1 "MQIsdp"): every flag rule, the Will, credentials and
//! the MQTT 5 properties; and the re-encoding the gateway needs to replace the credentials.

use core::fmt;

use super::QoS;
use crate::encode::{Sink, put_binary, put_packet, put_str, put_u8, put_u16};
use crate::error::{DecodeError, EncodeError};
use crate::properties::{Properties, PropertyContext};
use crate::reader::Reader;
use crate::topic::TopicName;
use crate::version::ProtocolVersion;

/// A decoded CONNECT. Its `Debug` never shows the password.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Connect<'a> {
    /// The protocol the client speaks.
    pub version: ProtocolVersion,
    /// Clean Session (3.x) / Clean Start (5).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// MQTT 5 CONNECT properties (empty before 5).
    pub properties: Properties<'a>,
    /// The Client Identifier (may be empty).
    pub client_id: &'a str,
    /// The Will message, when the Will Flag is set.
    pub will: Option<Will<'a>>,
    /// User Name, when its flag is set.
    pub username: Option<&'a str>,
    /// Password, when its flag is set.
    pub password: Option<&'a [u8]>,
    /// The bridge bit: the protocol level's high bit (0x83, 0x84, 0x85), which Mosquitto sets
    /// for a bridge connection (`try_private`, its default) and understands. Not part of the
    /// OASIS specifications; the level without it must be one the gateway speaks.
    pub bridge: bool,
}

/// The Will of a CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Will<'a> {
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// MQTT 5 Will Properties.
    pub properties: Properties<'a>,
    /// Will Topic (a valid topic name).
    pub topic: &'a str,
    /// Will Payload.
    pub payload: &'a [u8],
}

impl fmt::Debug for Connect<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connect")
            .field("version", &self.version)
            .field("clean_start", &self.clean_start)
            .field("keep_alive", &self.keep_alive)
            .field("properties", &self.properties)
            .field("client_id", &self.client_id)
            .field("will", &self.will)
            .field("username", &self.username)
            .field("password", &self.password.map(|_| "<redacted>"))
            .field("bridge", &self.bridge)
            .finish()
    }
}

/// The high bit of the protocol level that marks a Mosquitto bridge.
const BRIDGE_BIT: u8 = 0x80;

impl<'a> Connect<'a> {
    pub(crate) fn decode(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let name = r.utf8("protocol name")?;
        if name != "MQTT" && name != "MQIsdp" {
            return Err(DecodeError::InvalidProtocolName);
        }
        let level = r.u8("protocol level")?;
        let bridge = level & BRIDGE_BIT != 0;
        let version = ProtocolVersion::from_name_and_level(name, level & !BRIDGE_BIT)
            .ok_or(DecodeError::UnsupportedProtocolVersion(level))?;
        let flags = r.u8("connect flags")?;
        // [MQTT-3.1.2-3]: the reserved flag is 0.
        if flags & 0x01 != 0 {
            return Err(DecodeError::InvalidConnectFlags("reserved flag set"));
        }
        let clean_start = flags & 0x02 != 0;
        let will_flag = flags & 0x04 != 0;
        let will_qos_bits = (flags >> 3) & 0x03;
        let will_retain = flags & 0x20 != 0;
        let has_password = flags & 0x40 != 0;
        let has_username = flags & 0x80 != 0;
        if !will_flag && (will_qos_bits != 0 || will_retain) {
            // [MQTT-3.1.2-11] [MQTT-3.1.2-13]
            return Err(DecodeError::InvalidConnectFlags(
                "will QoS or retain without a will",
            ));
        }
        // [MQTT-3.1.2-12]: Will QoS 3 is malformed.
        let will_qos = QoS::from_bits(will_qos_bits, "will QoS")?;
        if has_password && !has_username && !version.is_v5() {
            // MQTT 3.1.1 [MQTT-3.1.2-22]: a password needs a user name (lifted in MQTT 5).
            return Err(DecodeError::InvalidConnectFlags(
                "password without user name",
            ));
        }
        let keep_alive = r.u16("keep alive")?;
        let properties = if version.is_v5() {
            Properties::decode(r, PropertyContext::Connect)?
        } else {
            Properties::EMPTY
        };
        let client_id = r.utf8("client identifier")?;
        let will = if will_flag {
            let properties = if version.is_v5() {
                Properties::decode(r, PropertyContext::Will)?
            } else {
                Properties::EMPTY
            };
            let topic = r.utf8("will topic")?;
            // [MQTT-3.1.3-11]: the Will Topic is a valid topic name.
            TopicName::new(topic)?;
            let payload = r.binary("will payload")?;
            Some(Will {
                qos: will_qos,
                retain: will_retain,
                properties,
                topic,
                payload,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.utf8("user name")?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary("password")?)
        } else {
            None
        };
        r.finish("CONNECT")?;
        Ok(Self {
            version,
            clean_start,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
            bridge,
        })
    }

    /// Encodes this CONNECT. To forward it with other credentials, copy it, change `username` and
    /// `password`, and encode the copy.
    ///
    /// # Errors
    /// A field over 65,535 bytes, or a password without a user name before MQTT 5.
    pub fn encode(&self, out: &mut dyn Sink) -> Result<(), EncodeError> {
        if self.password.is_some() && self.username.is_none() && !self.version.is_v5() {
            return Err(EncodeError::InvalidValue(
                "password without user name before MQTT 5",
            ));
        }
        put_packet(out, 0x10, |s| {
            put_str(s, self.version.protocol_name(), "protocol name")?;
            put_u8(
                s,
                self.version.level() | if self.bridge { BRIDGE_BIT } else { 0 },
            );
            let mut flags = 0u8;
            if self.clean_start {
                flags |= 0x02;
            }
            if let Some(w) = &self.will {
                flags |= 0x04 | (w.qos.bits() << 3);
                if w.retain {
                    flags |= 0x20;
                }
            }
            if self.password.is_some() {
                flags |= 0x40;
            }
            if self.username.is_some() {
                flags |= 0x80;
            }
            put_u8(s, flags);
            put_u16(s, self.keep_alive);
            if self.version.is_v5() {
                self.properties.write(s)?;
            }
            put_str(s, self.client_id, "client identifier")?;
            if let Some(w) = &self.will {
                if self.version.is_v5() {
                    w.properties.write(s)?;
                }
                put_str(s, w.topic, "will topic")?;
                put_binary(s, w.payload, "will payload")?;
            }
            if let Some(u) = self.username {
                put_str(s, u, "user name")?;
            }
            if let Some(p) = self.password {
                put_binary(s, p, "password")?;
            }
            Ok(())
        })
    }
}
