//! PINGREQ and PINGRESP (MQTT 5.0 §3.12, §3.13): a fixed header and nothing else.

use super::PacketType;
use crate::encode::{Sink, put_packet};
use crate::error::EncodeError;

pub(crate) fn encode(kind: PacketType, out: &mut dyn Sink) -> Result<(), EncodeError> {
    let first_byte = match kind {
        PacketType::Pingreq => 0xc0,
        PacketType::Pingresp => 0xd0,
        _ => return Err(EncodeError::InvalidValue("not a ping packet")),
    };
    put_packet(out, first_byte, |_| Ok(()))
}
