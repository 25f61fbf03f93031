//! MQTT 5 properties (MQTT 5.0 §2.2.2): validated once at decode, kept as a borrowed slice, read
//! through typed accessors.
//!
//! Decoding refuses unknown identifiers, a property the packet may not carry, a property that may
//! appear once appearing twice, and out-of-range values. After that the raw bytes are known to be
//! well-formed, so iteration ([`Properties::iter`]) cannot fail and a forwarded packet can re-emit
//! the original bytes unchanged.

use crate::encode::{Sink, put_binary, put_str, put_u8, put_u16, put_u32, put_varint};
use crate::error::{DecodeError, EncodeError};
use crate::reader::Reader;
use crate::topic::TopicName;

/// Which packet (or part of one) a property list belongs to: each allows a different set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropertyContext {
    /// CONNECT variable header.
    Connect,
    /// Will Properties in the CONNECT payload.
    Will,
    /// CONNACK.
    Connack,
    /// PUBLISH.
    Publish,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    Ack,
    /// SUBSCRIBE.
    Subscribe,
    /// SUBACK.
    Suback,
    /// UNSUBSCRIBE.
    Unsubscribe,
    /// UNSUBACK.
    Unsuback,
    /// DISCONNECT.
    Disconnect,
    /// AUTH.
    Auth,
}

impl PropertyContext {
    const fn bit(self) -> u16 {
        1 << match self {
            Self::Connect => 0,
            Self::Will => 1,
            Self::Connack => 2,
            Self::Publish => 3,
            Self::Ack => 4,
            Self::Subscribe => 5,
            Self::Suback => 6,
            Self::Unsubscribe => 7,
            Self::Unsuback => 8,
            Self::Disconnect => 9,
            Self::Auth => 10,
        }
    }
}

/// One property, borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the variants are the specification's names (MQTT 5.0 §2.2.2.2)
pub enum Property<'a> {
    PayloadFormatIndicator(u8),
    MessageExpiryInterval(u32),
    ContentType(&'a str),
    ResponseTopic(&'a str),
    CorrelationData(&'a [u8]),
    SubscriptionIdentifier(u32),
    SessionExpiryInterval(u32),
    AssignedClientIdentifier(&'a str),
    ServerKeepAlive(u16),
    AuthenticationMethod(&'a str),
    AuthenticationData(&'a [u8]),
    RequestProblemInformation(u8),
    WillDelayInterval(u32),
    RequestResponseInformation(u8),
    ResponseInformation(&'a str),
    ServerReference(&'a str),
    ReasonString(&'a str),
    ReceiveMaximum(u16),
    TopicAliasMaximum(u16),
    TopicAlias(u16),
    MaximumQos(u8),
    RetainAvailable(u8),
    UserProperty(&'a str, &'a str),
    MaximumPacketSize(u32),
    WildcardSubscriptionAvailable(u8),
    SubscriptionIdentifierAvailable(u8),
    SharedSubscriptionAvailable(u8),
}

use PropertyContext as C;

/// Which contexts allow a property identifier (MQTT 5.0 §2.2.2.2, Table 2-4).
const fn allowed(id: u8) -> Option<u16> {
    let all_acks = C::Connack.bit()
        | C::Ack.bit()
        | C::Suback.bit()
        | C::Unsuback.bit()
        | C::Disconnect.bit()
        | C::Auth.bit();
    Some(match id {
        0x01..=0x03 | 0x08 | 0x09 => C::Publish.bit() | C::Will.bit(),
        0x0b => C::Publish.bit() | C::Subscribe.bit(),
        0x11 => C::Connect.bit() | C::Connack.bit() | C::Disconnect.bit(),
        0x12 | 0x13 | 0x1a | 0x24 | 0x25 | 0x28..=0x2a => C::Connack.bit(),
        0x15 | 0x16 => C::Connect.bit() | C::Connack.bit() | C::Auth.bit(),
        0x17 | 0x19 => C::Connect.bit(),
        0x18 => C::Will.bit(),
        0x1c => C::Connack.bit() | C::Disconnect.bit(),
        0x1f => all_acks,
        0x21 | 0x22 | 0x27 => C::Connect.bit() | C::Connack.bit(),
        0x23 => C::Publish.bit(),
        0x26 => {
            all_acks
                | C::Connect.bit()
                | C::Will.bit()
                | C::Publish.bit()
                | C::Subscribe.bit()
                | C::Unsubscribe.bit()
        }
        _ => return None,
    })
}

/// A validated property list, borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Properties<'a> {
    raw: &'a [u8],
    topic_alias: Option<u16>,
    user_properties: u16,
}

impl<'a> Properties<'a> {
    /// No properties.
    pub const EMPTY: Properties<'static> = Properties {
        raw: &[],
        topic_alias: None,
        user_properties: 0,
    };

    /// Reads a property length and the properties after it, validating them for `ctx`.
    pub(crate) fn decode(r: &mut Reader<'a>, ctx: PropertyContext) -> Result<Self, DecodeError> {
        let len = r.varint("property length")?;
        let raw = r.take(crate::framing::usize_from_u32(len), "properties")?;
        Self::parse(raw, ctx)
    }

    /// Validates `raw` (the bytes after the property length) as the properties of `ctx`.
    ///
    /// # Errors
    /// Any of the property rules of MQTT 5.0 §2.2.2 and the value rules of each property.
    pub fn parse(raw: &'a [u8], ctx: PropertyContext) -> Result<Self, DecodeError> {
        let mut r = Reader::new(raw);
        let mut seen: u64 = 0;
        let mut out = Self {
            raw,
            topic_alias: None,
            user_properties: 0,
        };
        while !r.is_empty() {
            let id = r.varint("property identifier")?;
            let id = u8::try_from(id).map_err(|_| DecodeError::UnknownProperty(0xff))?;
            let mask = allowed(id).ok_or(DecodeError::UnknownProperty(id))?;
            if mask & ctx.bit() == 0 {
                return Err(DecodeError::PropertyNotAllowed(id));
            }
            let repeatable = id == 0x26 || (id == 0x0b && ctx == C::Publish);
            let bit = 1u64 << id;
            if !repeatable && seen & bit != 0 {
                return Err(DecodeError::DuplicateProperty(id));
            }
            seen |= bit;
            let prop = read_value(&mut r, id, false)?;
            check_value(prop)?;
            match prop {
                Property::TopicAlias(a) => out.topic_alias = Some(a),
                Property::UserProperty(..) => {
                    out.user_properties = out.user_properties.saturating_add(1);
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// The raw property bytes (without the length prefix), as they were on the wire.
    #[must_use]
    pub const fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// True when there are no properties.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Iterates over the properties in wire order.
    #[must_use]
    pub fn iter(&self) -> PropertyIter<'a> {
        PropertyIter {
            r: Reader::new(self.raw),
        }
    }

    /// The Topic Alias (0x23), if present.
    #[must_use]
    pub const fn topic_alias(&self) -> Option<u16> {
        self.topic_alias
    }

    /// Number of User Properties (0x26), saturating at 65,535.
    #[must_use]
    pub const fn user_property_count(&self) -> u16 {
        self.user_properties
    }

    /// The Response Topic (0x08), if present.
    #[must_use]
    pub fn response_topic(&self) -> Option<&'a str> {
        self.iter().find_map(|p| match p {
            Property::ResponseTopic(t) => Some(t),
            _ => None,
        })
    }

    /// The Authentication Method (0x15), if present.
    #[must_use]
    pub fn authentication_method(&self) -> Option<&'a str> {
        self.iter().find_map(|p| match p {
            Property::AuthenticationMethod(m) => Some(m),
            _ => None,
        })
    }

    /// The Authentication Data (0x16), if present.
    #[must_use]
    pub fn authentication_data(&self) -> Option<&'a [u8]> {
        self.iter().find_map(|p| match p {
            Property::AuthenticationData(d) => Some(d),
            _ => None,
        })
    }

    /// The Topic Alias Maximum (0x22); absent means 0 (no aliases).
    #[must_use]
    pub fn topic_alias_maximum(&self) -> u16 {
        self.iter()
            .find_map(|p| match p {
                Property::TopicAliasMaximum(m) => Some(m),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// True when any Subscription Identifier (0x0B) is present.
    #[must_use]
    pub fn has_subscription_identifier(&self) -> bool {
        self.iter()
            .any(|p| matches!(p, Property::SubscriptionIdentifier(_)))
    }

    /// Writes the property length and the raw bytes.
    pub(crate) fn write(&self, s: &mut dyn Sink) -> Result<(), EncodeError> {
        let len = u32::try_from(self.raw.len()).map_err(|_| EncodeError::PacketTooLarge)?;
        put_varint(s, len)?;
        s.put(self.raw);
        Ok(())
    }
}

/// Iterator over validated properties. See [`Properties::iter`].
#[derive(Debug, Clone)]
pub struct PropertyIter<'a> {
    r: Reader<'a>,
}

impl<'a> Iterator for PropertyIter<'a> {
    type Item = Property<'a>;

    fn next(&mut self) -> Option<Property<'a>> {
        if self.r.is_empty() {
            return None;
        }
        let id = self.r.varint("property identifier").ok()?;
        read_value(&mut self.r, u8::try_from(id).ok()?, true).ok()
    }
}

/// A string property: fully checked while validating, well-formedness only when iterating an
/// already validated list.
fn string<'a>(
    r: &mut Reader<'a>,
    trusted: bool,
    what: &'static str,
) -> Result<&'a str, DecodeError> {
    if trusted {
        r.utf8_trusted(what)
    } else {
        r.utf8(what)
    }
}

fn read_value<'a>(r: &mut Reader<'a>, id: u8, trusted: bool) -> Result<Property<'a>, DecodeError> {
    use Property as P;
    Ok(match id {
        0x01 => P::PayloadFormatIndicator(r.u8("payload format indicator")?),
        0x02 => P::MessageExpiryInterval(r.u32("message expiry interval")?),
        0x03 => P::ContentType(string(r, trusted, "content type")?),
        0x08 => P::ResponseTopic(string(r, trusted, "response topic")?),
        0x09 => P::CorrelationData(r.binary("correlation data")?),
        0x0b => P::SubscriptionIdentifier(r.varint("subscription identifier")?),
        0x11 => P::SessionExpiryInterval(r.u32("session expiry interval")?),
        0x12 => P::AssignedClientIdentifier(string(r, trusted, "assigned client identifier")?),
        0x13 => P::ServerKeepAlive(r.u16("server keep alive")?),
        0x15 => P::AuthenticationMethod(string(r, trusted, "authentication method")?),
        0x16 => P::AuthenticationData(r.binary("authentication data")?),
        0x17 => P::RequestProblemInformation(r.u8("request problem information")?),
        0x18 => P::WillDelayInterval(r.u32("will delay interval")?),
        0x19 => P::RequestResponseInformation(r.u8("request response information")?),
        0x1a => P::ResponseInformation(string(r, trusted, "response information")?),
        0x1c => P::ServerReference(string(r, trusted, "server reference")?),
        0x1f => P::ReasonString(string(r, trusted, "reason string")?),
        0x21 => P::ReceiveMaximum(r.u16("receive maximum")?),
        0x22 => P::TopicAliasMaximum(r.u16("topic alias maximum")?),
        0x23 => P::TopicAlias(r.u16("topic alias")?),
        0x24 => P::MaximumQos(r.u8("maximum qos")?),
        0x25 => P::RetainAvailable(r.u8("retain available")?),
        0x26 => P::UserProperty(
            string(r, trusted, "user property name")?,
            string(r, trusted, "user property value")?,
        ),
        0x27 => P::MaximumPacketSize(r.u32("maximum packet size")?),
        0x28 => P::WildcardSubscriptionAvailable(r.u8("wildcard subscription available")?),
        0x29 => P::SubscriptionIdentifierAvailable(r.u8("subscription identifier available")?),
        0x2a => P::SharedSubscriptionAvailable(r.u8("shared subscription available")?),
        other => return Err(DecodeError::UnknownProperty(other)),
    })
}

fn check_value(p: Property<'_>) -> Result<(), DecodeError> {
    use Property as P;
    let boolean = |v: u8, what| {
        if v <= 1 {
            Ok(())
        } else {
            Err(DecodeError::InvalidValue(what))
        }
    };
    match p {
        P::PayloadFormatIndicator(v) => boolean(v, "payload format indicator"),
        P::RequestProblemInformation(v) => boolean(v, "request problem information"),
        P::RequestResponseInformation(v) => boolean(v, "request response information"),
        P::MaximumQos(v) => boolean(v, "maximum qos"),
        P::RetainAvailable(v) => boolean(v, "retain available"),
        P::WildcardSubscriptionAvailable(v) => boolean(v, "wildcard subscription available"),
        P::SubscriptionIdentifierAvailable(v) => boolean(v, "subscription identifier available"),
        P::SharedSubscriptionAvailable(v) => boolean(v, "shared subscription available"),
        P::ReceiveMaximum(0) => Err(DecodeError::InvalidValue("receive maximum 0")),
        P::MaximumPacketSize(0) => Err(DecodeError::InvalidValue("maximum packet size 0")),
        // [MQTT-3.3.2-8]: a Topic Alias of 0 is not permitted.
        P::TopicAlias(0) => Err(DecodeError::TopicAliasInvalid),
        // [MQTT-3.8.2.1.2]: a Subscription Identifier of 0 is a Protocol Error.
        P::SubscriptionIdentifier(0) => Err(DecodeError::InvalidValue("subscription identifier 0")),
        // [MQTT-3.3.2-14]: the Response Topic is a Topic Name (no wildcards).
        P::ResponseTopic(t) => TopicName::new(t).map(|_| ()),
        _ => Ok(()),
    }
}

impl Property<'_> {
    /// The property identifier.
    #[must_use]
    pub const fn id(&self) -> u8 {
        use Property as P;
        match self {
            P::PayloadFormatIndicator(_) => 0x01,
            P::MessageExpiryInterval(_) => 0x02,
            P::ContentType(_) => 0x03,
            P::ResponseTopic(_) => 0x08,
            P::CorrelationData(_) => 0x09,
            P::SubscriptionIdentifier(_) => 0x0b,
            P::SessionExpiryInterval(_) => 0x11,
            P::AssignedClientIdentifier(_) => 0x12,
            P::ServerKeepAlive(_) => 0x13,
            P::AuthenticationMethod(_) => 0x15,
            P::AuthenticationData(_) => 0x16,
            P::RequestProblemInformation(_) => 0x17,
            P::WillDelayInterval(_) => 0x18,
            P::RequestResponseInformation(_) => 0x19,
            P::ResponseInformation(_) => 0x1a,
            P::ServerReference(_) => 0x1c,
            P::ReasonString(_) => 0x1f,
            P::ReceiveMaximum(_) => 0x21,
            P::TopicAliasMaximum(_) => 0x22,
            P::TopicAlias(_) => 0x23,
            P::MaximumQos(_) => 0x24,
            P::RetainAvailable(_) => 0x25,
            P::UserProperty(..) => 0x26,
            P::MaximumPacketSize(_) => 0x27,
            P::WildcardSubscriptionAvailable(_) => 0x28,
            P::SubscriptionIdentifierAvailable(_) => 0x29,
            P::SharedSubscriptionAvailable(_) => 0x2a,
        }
    }

    /// Appends the identifier and the value.
    ///
    /// # Errors
    /// A string or binary value over 65,535 bytes, or a subscription identifier over the
    /// Variable Byte Integer range.
    pub fn encode<S: Sink + ?Sized>(&self, s: &mut S) -> Result<(), EncodeError> {
        use Property as P;
        put_u8(s, self.id());
        match *self {
            P::PayloadFormatIndicator(v)
            | P::RequestProblemInformation(v)
            | P::RequestResponseInformation(v)
            | P::MaximumQos(v)
            | P::RetainAvailable(v)
            | P::WildcardSubscriptionAvailable(v)
            | P::SubscriptionIdentifierAvailable(v)
            | P::SharedSubscriptionAvailable(v) => put_u8(s, v),
            P::MessageExpiryInterval(v)
            | P::SessionExpiryInterval(v)
            | P::WillDelayInterval(v)
            | P::MaximumPacketSize(v) => put_u32(s, v),
            P::ServerKeepAlive(v)
            | P::ReceiveMaximum(v)
            | P::TopicAliasMaximum(v)
            | P::TopicAlias(v) => {
                put_u16(s, v);
            }
            P::SubscriptionIdentifier(v) => put_varint(s, v)?,
            P::ContentType(v)
            | P::ResponseTopic(v)
            | P::AssignedClientIdentifier(v)
            | P::AuthenticationMethod(v)
            | P::ResponseInformation(v)
            | P::ServerReference(v)
            | P::ReasonString(v) => put_str(s, v, "property")?,
            P::CorrelationData(v) | P::AuthenticationData(v) => put_binary(s, v, "property")?,
            P::UserProperty(k, v) => {
                put_str(s, k, "user property name")?;
                put_str(s, v, "user property value")?;
            }
        }
        Ok(())
    }
}

/// Encodes a list of properties into `out` (without the length prefix), ready for
/// [`Properties::parse`]. Used to build the properties of packets the gateway originates.
///
/// # Errors
/// As [`Property::encode`].
pub fn encode_properties(props: &[Property<'_>], out: &mut Vec<u8>) -> Result<(), EncodeError> {
    for p in props {
        p.encode(out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(props: &[Property<'_>]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_properties(props, &mut v).unwrap();
        v
    }

    #[test]
    fn round_trip_and_accessors() {
        let bytes = raw(&[
            Property::TopicAlias(7),
            Property::UserProperty("k", "v"),
            Property::UserProperty("k", "w"),
            Property::ResponseTopic("reply/to"),
            Property::SubscriptionIdentifier(300),
            Property::SubscriptionIdentifier(4),
        ]);
        let p = Properties::parse(&bytes, PropertyContext::Publish).unwrap();
        assert_eq!(p.topic_alias(), Some(7));
        assert_eq!(p.user_property_count(), 2);
        assert_eq!(p.response_topic(), Some("reply/to"));
        assert!(p.has_subscription_identifier());
        assert_eq!(p.iter().count(), 6);
        assert_eq!(raw(&p.iter().collect::<Vec<_>>()), bytes);
    }

    #[test]
    fn duplicates_refused_except_user_property_and_publish_subscription_ids() {
        let twice = raw(&[Property::TopicAlias(1), Property::TopicAlias(2)]);
        assert_eq!(
            Properties::parse(&twice, PropertyContext::Publish),
            Err(DecodeError::DuplicateProperty(0x23))
        );
        let sub_ids = raw(&[
            Property::SubscriptionIdentifier(1),
            Property::SubscriptionIdentifier(2),
        ]);
        assert!(Properties::parse(&sub_ids, PropertyContext::Publish).is_ok());
        assert_eq!(
            Properties::parse(&sub_ids, PropertyContext::Subscribe),
            Err(DecodeError::DuplicateProperty(0x0b))
        );
    }

    #[test]
    fn unknown_and_misplaced_refused() {
        assert_eq!(
            Properties::parse(&[0x04, 0x00], PropertyContext::Publish),
            Err(DecodeError::UnknownProperty(0x04))
        );
        assert_eq!(
            Properties::parse(&[0x2b, 0x00], PropertyContext::Connack),
            Err(DecodeError::UnknownProperty(0x2b))
        );
        // Topic Alias in CONNECT, Session Expiry in PUBLISH, Will Delay outside the Will.
        for (p, ctx) in [
            (Property::TopicAlias(1), PropertyContext::Connect),
            (Property::SessionExpiryInterval(1), PropertyContext::Publish),
            (Property::WillDelayInterval(1), PropertyContext::Connect),
            (Property::ReasonString("x"), PropertyContext::Publish),
            (Property::ServerKeepAlive(1), PropertyContext::Connect),
        ] {
            assert_eq!(
                Properties::parse(&raw(&[p]), ctx),
                Err(DecodeError::PropertyNotAllowed(p.id())),
                "{p:?} in {ctx:?}"
            );
        }
    }

    #[test]
    fn value_ranges() {
        for p in [
            Property::PayloadFormatIndicator(2),
            Property::ReceiveMaximum(0),
            Property::MaximumPacketSize(0),
            Property::SubscriptionIdentifier(0),
        ] {
            let ctx = match p {
                Property::PayloadFormatIndicator(_) | Property::SubscriptionIdentifier(_) => {
                    PropertyContext::Publish
                }
                _ => PropertyContext::Connect,
            };
            assert!(
                matches!(
                    Properties::parse(&raw(&[p]), ctx),
                    Err(DecodeError::InvalidValue(_))
                ),
                "{p:?}"
            );
        }
        assert_eq!(
            Properties::parse(&raw(&[Property::TopicAlias(0)]), PropertyContext::Publish),
            Err(DecodeError::TopicAliasInvalid)
        );
        assert!(matches!(
            Properties::parse(
                &raw(&[Property::ResponseTopic("a/+")]),
                PropertyContext::Publish
            ),
            Err(DecodeError::InvalidTopicName(_))
        ));
        // Truncated value.
        assert_eq!(
            Properties::parse(&[0x23, 0x00], PropertyContext::Publish),
            Err(DecodeError::UnexpectedEnd("topic alias"))
        );
    }
}
