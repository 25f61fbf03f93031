//! `CloseReason`: exactly one per connection, saying who ended it and why. It decides the
//! `connections_total` outcome of a refused connect phase, the MQTT 5 DISCONNECT reason the client
//! gets (when the protocol allows one), and the audit event.

use mqtt_inspect::{DecodeError, Direction, ReasonCode};

/// Who ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// The client (DISCONNECT, EOF, or a packet it should not have sent).
    Client,
    /// The broker.
    Broker,
    /// The gateway (policy, limits, shutdown, revocation).
    Gateway,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent DISCONNECT or closed its side.
    ClientClosed,
    /// The broker closed its side (after its own DISCONNECT, or a restart).
    BrokerClosed,
    /// A malformed or forbidden packet in `direction`.
    Malformed {
        /// Who sent it.
        direction: Direction,
        /// What was wrong with it.
        error: DecodeError,
    },
    /// No packet from the client within 1.5 × its keep-alive.
    KeepAliveTimeout,
    /// A peer did not take our bytes within the write timeout.
    WriteTimeout(Direction),
    /// An I/O error on one side.
    Io(Direction),
    /// A PUBLISH was denied and `policy.on_publish_deny = "disconnect"`.
    PublishDenied,
    /// An AUTH exchange the gateway does not support (re-authentication).
    AuthNotSupported,
    /// Too much state held for this client (pending SUBACKs, QoS 2 ids, aliases).
    QuotaExceeded,
    /// A live session whose credentials were revoked (`crl`, `policy`, `password`).
    Revoked(&'static str),
    /// Over its message or byte rate for too long.
    RateLimited(crate::limits::ClientLimit),
    /// The gateway is shutting down.
    Shutdown,
}

impl CloseReason {
    /// Who ended the connection.
    #[must_use]
    pub const fn initiator(&self) -> Initiator {
        match self {
            Self::ClientClosed => Initiator::Client,
            Self::Malformed {
                direction: Direction::ClientToServer,
                ..
            }
            | Self::Io(Direction::ClientToServer)
            | Self::WriteTimeout(Direction::ServerToClient) => Initiator::Client,
            Self::BrokerClosed
            | Self::Malformed {
                direction: Direction::ServerToClient,
                ..
            }
            | Self::Io(Direction::ServerToClient)
            | Self::WriteTimeout(Direction::ClientToServer) => Initiator::Broker,
            Self::KeepAliveTimeout
            | Self::PublishDenied
            | Self::AuthNotSupported
            | Self::QuotaExceeded
            | Self::Revoked(_)
            | Self::RateLimited(_)
            | Self::Shutdown => Initiator::Gateway,
        }
    }

    /// The MQTT 5 DISCONNECT reason to send the client before closing, if one should be sent.
    #[must_use]
    pub fn disconnect_reason(&self) -> Option<ReasonCode> {
        match self {
            Self::ClientClosed
            | Self::Io(Direction::ClientToServer)
            | Self::WriteTimeout(Direction::ServerToClient) => None,
            // A malformed packet in either direction: 0x81 (or the error's own code) first.
            Self::Malformed { error, .. } => Some(error.reason_code()),
            // The broker went away without a DISCONNECT of its own (restart, crash).
            Self::BrokerClosed
            | Self::Io(Direction::ServerToClient)
            | Self::WriteTimeout(Direction::ClientToServer) => Some(ReasonCode::ServerShuttingDown),
            Self::KeepAliveTimeout => Some(ReasonCode::KeepAliveTimeout),
            Self::PublishDenied => Some(ReasonCode::NotAuthorized),
            // 0x8C cannot appear in a DISCONNECT; a client that announced no Authentication
            // Method must not send AUTH at all (MQTT 5.0 §4.12): a Protocol Error.
            Self::AuthNotSupported => Some(ReasonCode::ProtocolError),
            Self::QuotaExceeded => Some(ReasonCode::QuotaExceeded),
            Self::Revoked(_) => Some(ReasonCode::AdministrativeAction),
            Self::RateLimited(crate::limits::ClientLimit::Messages) => {
                Some(ReasonCode::MessageRateTooHigh)
            }
            Self::RateLimited(crate::limits::ClientLimit::Bytes) => Some(ReasonCode::QuotaExceeded),
            Self::Shutdown => Some(ReasonCode::ServerShuttingDown),
        }
    }

    /// A short label for logs.
    #[must_use]
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::BrokerClosed => "broker_closed",
            Self::Malformed { .. } => "malformed",
            Self::KeepAliveTimeout => "keepalive_timeout",
            Self::WriteTimeout(_) => "write_timeout",
            Self::Io(_) => "io_error",
            Self::PublishDenied => "publish_denied",
            Self::AuthNotSupported => "auth_not_supported",
            Self::QuotaExceeded => "quota_exceeded",
            Self::Revoked(_) => "revoked",
            Self::RateLimited(_) => "rate_limited",
            Self::Shutdown => "shutdown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::ClientLimit;
    use crate::metrics::CLOSE_REASONS;

    /// Every close reason has its `sessions_closed_total` series, exported at 0 from start-up, and
    /// no two reasons share one.
    #[test]
    fn every_close_reason_has_its_metric_label() {
        let all = [
            CloseReason::ClientClosed,
            CloseReason::BrokerClosed,
            CloseReason::Malformed {
                direction: Direction::ClientToServer,
                error: DecodeError::UnexpectedEnd("test"),
            },
            CloseReason::KeepAliveTimeout,
            CloseReason::WriteTimeout(Direction::ServerToClient),
            CloseReason::Io(Direction::ClientToServer),
            CloseReason::PublishDenied,
            CloseReason::AuthNotSupported,
            CloseReason::QuotaExceeded,
            CloseReason::Revoked("crl"),
            CloseReason::RateLimited(ClientLimit::Messages),
            CloseReason::Shutdown,
        ];
        // No wildcard: a new variant stops this from compiling until it is added to `all`.
        for r in &all {
            match r {
                CloseReason::ClientClosed
                | CloseReason::BrokerClosed
                | CloseReason::Malformed { .. }
                | CloseReason::KeepAliveTimeout
                | CloseReason::WriteTimeout(_)
                | CloseReason::Io(_)
                | CloseReason::PublishDenied
                | CloseReason::AuthNotSupported
                | CloseReason::QuotaExceeded
                | CloseReason::Revoked(_)
                | CloseReason::RateLimited(_)
                | CloseReason::Shutdown => {}
            }
        }
        let labels: std::collections::BTreeSet<&str> =
            all.iter().map(CloseReason::as_str).collect();
        assert_eq!(labels.len(), all.len(), "two reasons share a label");
        let exported: std::collections::BTreeSet<&str> = CLOSE_REASONS.into_iter().collect();
        assert_eq!(labels, exported);
    }
}
