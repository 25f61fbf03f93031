//! Reason codes: the MQTT 5 [`ReasonCode`] table and the MQTT 3.x [`ConnectReturnCode`], with the one
//! mapping between them that a gateway refusing a CONNECT needs.

/// An MQTT 5 reason code (MQTT 5.0 §2.4, Table 2-6).
///
/// The numeric value is the wire byte. Codes that share a number (0x00 is Success, Normal
/// disconnection and Granted QoS 0) share a variant: the packet gives the meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReasonCode {
    /// 0x00 Success / Normal disconnection / Granted QoS 0.
    Success,
    /// 0x01 Granted QoS 1.
    GrantedQos1,
    /// 0x02 Granted QoS 2.
    GrantedQos2,
    /// 0x04 Disconnect with Will Message.
    DisconnectWithWill,
    /// 0x10 No matching subscribers.
    NoMatchingSubscribers,
    /// 0x11 No subscription existed.
    NoSubscriptionExisted,
    /// 0x18 Continue authentication.
    ContinueAuthentication,
    /// 0x19 Re-authenticate.
    ReAuthenticate,
    /// 0x80 Unspecified error.
    UnspecifiedError,
    /// 0x81 Malformed Packet.
    MalformedPacket,
    /// 0x82 Protocol Error.
    ProtocolError,
    /// 0x83 Implementation specific error.
    ImplementationSpecificError,
    /// 0x84 Unsupported Protocol Version.
    UnsupportedProtocolVersion,
    /// 0x85 Client Identifier not valid.
    ClientIdentifierNotValid,
    /// 0x86 Bad User Name or Password.
    BadUserNameOrPassword,
    /// 0x87 Not authorized.
    NotAuthorized,
    /// 0x88 Server unavailable.
    ServerUnavailable,
    /// 0x89 Server busy.
    ServerBusy,
    /// 0x8A Banned.
    Banned,
    /// 0x8B Server shutting down.
    ServerShuttingDown,
    /// 0x8C Bad authentication method.
    BadAuthenticationMethod,
    /// 0x8D Keep Alive timeout.
    KeepAliveTimeout,
    /// 0x8E Session taken over.
    SessionTakenOver,
    /// 0x8F Topic Filter invalid.
    TopicFilterInvalid,
    /// 0x90 Topic Name invalid.
    TopicNameInvalid,
    /// 0x91 Packet Identifier in use.
    PacketIdentifierInUse,
    /// 0x92 Packet Identifier not found.
    PacketIdentifierNotFound,
    /// 0x93 Receive Maximum exceeded.
    ReceiveMaximumExceeded,
    /// 0x94 Topic Alias invalid.
    TopicAliasInvalid,
    /// 0x95 Packet too large.
    PacketTooLarge,
    /// 0x96 Message rate too high.
    MessageRateTooHigh,
    /// 0x97 Quota exceeded.
    QuotaExceeded,
    /// 0x98 Administrative action.
    AdministrativeAction,
    /// 0x99 Payload format invalid.
    PayloadFormatInvalid,
    /// 0x9A Retain not supported.
    RetainNotSupported,
    /// 0x9B QoS not supported.
    QosNotSupported,
    /// 0x9C Use another server.
    UseAnotherServer,
    /// 0x9D Server moved.
    ServerMoved,
    /// 0x9E Shared Subscriptions not supported.
    SharedSubscriptionsNotSupported,
    /// 0x9F Connection rate exceeded.
    ConnectionRateExceeded,
    /// 0xA0 Maximum connect time.
    MaximumConnectTime,
    /// 0xA1 Subscription Identifiers not supported.
    SubscriptionIdentifiersNotSupported,
    /// 0xA2 Wildcard Subscriptions not supported.
    WildcardSubscriptionsNotSupported,
}

/// (code, byte) pairs: the single table both directions of the mapping are read from.
const TABLE: [(ReasonCode, u8); 43] = [
    (ReasonCode::Success, 0x00),
    (ReasonCode::GrantedQos1, 0x01),
    (ReasonCode::GrantedQos2, 0x02),
    (ReasonCode::DisconnectWithWill, 0x04),
    (ReasonCode::NoMatchingSubscribers, 0x10),
    (ReasonCode::NoSubscriptionExisted, 0x11),
    (ReasonCode::ContinueAuthentication, 0x18),
    (ReasonCode::ReAuthenticate, 0x19),
    (ReasonCode::UnspecifiedError, 0x80),
    (ReasonCode::MalformedPacket, 0x81),
    (ReasonCode::ProtocolError, 0x82),
    (ReasonCode::ImplementationSpecificError, 0x83),
    (ReasonCode::UnsupportedProtocolVersion, 0x84),
    (ReasonCode::ClientIdentifierNotValid, 0x85),
    (ReasonCode::BadUserNameOrPassword, 0x86),
    (ReasonCode::NotAuthorized, 0x87),
    (ReasonCode::ServerUnavailable, 0x88),
    (ReasonCode::ServerBusy, 0x89),
    (ReasonCode::Banned, 0x8a),
    (ReasonCode::ServerShuttingDown, 0x8b),
    (ReasonCode::BadAuthenticationMethod, 0x8c),
    (ReasonCode::KeepAliveTimeout, 0x8d),
    (ReasonCode::SessionTakenOver, 0x8e),
    (ReasonCode::TopicFilterInvalid, 0x8f),
    (ReasonCode::TopicNameInvalid, 0x90),
    (ReasonCode::PacketIdentifierInUse, 0x91),
    (ReasonCode::PacketIdentifierNotFound, 0x92),
    (ReasonCode::ReceiveMaximumExceeded, 0x93),
    (ReasonCode::TopicAliasInvalid, 0x94),
    (ReasonCode::PacketTooLarge, 0x95),
    (ReasonCode::MessageRateTooHigh, 0x96),
    (ReasonCode::QuotaExceeded, 0x97),
    (ReasonCode::AdministrativeAction, 0x98),
    (ReasonCode::PayloadFormatInvalid, 0x99),
    (ReasonCode::RetainNotSupported, 0x9a),
    (ReasonCode::QosNotSupported, 0x9b),
    (ReasonCode::UseAnotherServer, 0x9c),
    (ReasonCode::ServerMoved, 0x9d),
    (ReasonCode::SharedSubscriptionsNotSupported, 0x9e),
    (ReasonCode::ConnectionRateExceeded, 0x9f),
    (ReasonCode::MaximumConnectTime, 0xa0),
    (ReasonCode::SubscriptionIdentifiersNotSupported, 0xa1),
    (ReasonCode::WildcardSubscriptionsNotSupported, 0xa2),
];

impl ReasonCode {
    /// The wire byte.
    #[must_use]
    pub fn to_u8(self) -> u8 {
        TABLE
            .iter()
            .find(|(code, _)| *code == self)
            .map_or(0x80, |(_, byte)| *byte)
    }

    /// The code for a wire byte, if MQTT 5 defines one.
    #[must_use]
    pub fn from_u8(byte: u8) -> Option<Self> {
        TABLE
            .iter()
            .find(|(_, b)| *b == byte)
            .map(|(code, _)| *code)
    }

    /// True for 0x80 and above: the operation failed.
    #[must_use]
    pub fn is_error(self) -> bool {
        self.to_u8() >= 0x80
    }

    /// The MQTT 3.1/3.1.1 CONNACK return code closest to this MQTT 5 CONNACK reason, as the
    /// specification's own correspondence suggests (MQTT 5.0 §3.2.2.2 and §3.1.1 Table 3.1):
    /// bad credentials → 4, banned / not authorized / quota → 5, unavailable → 3.
    #[must_use]
    pub fn to_connect_return_code(self) -> ConnectReturnCode {
        match self {
            Self::Success => ConnectReturnCode::Accepted,
            Self::UnsupportedProtocolVersion => ConnectReturnCode::UnacceptableProtocolVersion,
            Self::ClientIdentifierNotValid => ConnectReturnCode::IdentifierRejected,
            Self::ServerUnavailable
            | Self::ServerBusy
            | Self::ServerShuttingDown
            | Self::UseAnotherServer
            | Self::ServerMoved => ConnectReturnCode::ServerUnavailable,
            Self::BadUserNameOrPassword => ConnectReturnCode::BadUserNameOrPassword,
            _ => ConnectReturnCode::NotAuthorized,
        }
    }
}

/// The CONNACK return code of MQTT 3.1 and 3.1.1 (§3.2.2.3, Table 3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectReturnCode {
    /// 0 Connection accepted.
    Accepted,
    /// 1 Unacceptable protocol version.
    UnacceptableProtocolVersion,
    /// 2 Identifier rejected.
    IdentifierRejected,
    /// 3 Server unavailable.
    ServerUnavailable,
    /// 4 Bad user name or password.
    BadUserNameOrPassword,
    /// 5 Not authorized.
    NotAuthorized,
}

impl ConnectReturnCode {
    /// The wire byte.
    #[must_use]
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::Accepted => 0,
            Self::UnacceptableProtocolVersion => 1,
            Self::IdentifierRejected => 2,
            Self::ServerUnavailable => 3,
            Self::BadUserNameOrPassword => 4,
            Self::NotAuthorized => 5,
        }
    }

    /// The return code for a wire byte; 6..=255 are reserved.
    #[must_use]
    pub const fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Accepted,
            1 => Self::UnacceptableProtocolVersion,
            2 => Self::IdentifierRejected,
            3 => Self::ServerUnavailable,
            4 => Self::BadUserNameOrPassword,
            5 => Self::NotAuthorized,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_a_bijection() {
        for (code, byte) in TABLE {
            assert_eq!(code.to_u8(), byte);
            assert_eq!(ReasonCode::from_u8(byte), Some(code));
        }
        let defined = (0..=255u8)
            .filter(|b| ReasonCode::from_u8(*b).is_some())
            .count();
        assert_eq!(defined, TABLE.len());
        assert_eq!(ReasonCode::from_u8(0x03), None);
        assert_eq!(ReasonCode::from_u8(0xa3), None);
    }

    #[test]
    fn connack_refusals_map_to_311_codes() {
        assert_eq!(
            ReasonCode::BadUserNameOrPassword
                .to_connect_return_code()
                .to_u8(),
            4
        );
        assert_eq!(
            ReasonCode::NotAuthorized.to_connect_return_code().to_u8(),
            5
        );
        assert_eq!(ReasonCode::Banned.to_connect_return_code().to_u8(), 5);
        assert_eq!(
            ReasonCode::QuotaExceeded.to_connect_return_code().to_u8(),
            5
        );
        assert_eq!(
            ReasonCode::ServerUnavailable
                .to_connect_return_code()
                .to_u8(),
            3
        );
        for b in 0..=5 {
            assert_eq!(
                ConnectReturnCode::from_u8(b).map(ConnectReturnCode::to_u8),
                Some(b)
            );
        }
        assert_eq!(ConnectReturnCode::from_u8(6), None);
    }
}
