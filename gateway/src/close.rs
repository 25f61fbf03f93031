//! [`CloseReason`]: why a session that got past its CONNECT ended, exactly one per session. It gives
//! the session's `sessions_closed_total{reason}` label ([`CloseKind`]) and the MQTT 5 DISCONNECT
//! reason the client gets, when the protocol allows one. The session's `finish` counts it, writes
//! the audit line of the reasons that are security decisions and says goodbye. A connect phase
//! that is refused never gets here: it ends with a `connections_total` outcome
//! ([`crate::labels::ConnectOutcome`]).

use mqtt_inspect::{DecodeError, Direction, ReasonCode};

use crate::labels::RevocationReason;
use crate::labels::label_enum;

/// Why a session ended.
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
    /// A live session whose credentials were revoked by a reload.
    Revoked(RevocationReason),
    /// Its credential ended: the client certificate's notAfter or the token's `exp` passed.
    CredentialExpired,
    /// An MQTT 5 re-authentication failed (a refused token, or one for another principal).
    ReauthenticationFailed,
    /// Over its message or byte rate for too long.
    RateLimited(crate::limits::ClientLimit),
    /// The gateway is shutting down.
    Shutdown,
    /// Kicked through the admin API (`DELETE /api/v1/sessions/{id}`).
    Kicked,
}

impl CloseReason {
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
            Self::CredentialExpired => Some(ReasonCode::MaximumConnectTime),
            // [MQTT-4.12.1-2]: a failed re-authentication ends with a DISCONNECT and a reason.
            Self::ReauthenticationFailed => Some(ReasonCode::NotAuthorized),
            Self::RateLimited(crate::limits::ClientLimit::Messages) => {
                Some(ReasonCode::MessageRateTooHigh)
            }
            Self::RateLimited(crate::limits::ClientLimit::Bytes) => Some(ReasonCode::QuotaExceeded),
            Self::Shutdown => Some(ReasonCode::ServerShuttingDown),
            Self::Kicked => Some(ReasonCode::AdministrativeAction),
        }
    }

    /// Its kind: the `sessions_closed_total` label.
    #[must_use]
    pub const fn kind(&self) -> CloseKind {
        match self {
            Self::ClientClosed => CloseKind::ClientClosed,
            Self::BrokerClosed => CloseKind::BrokerClosed,
            Self::Malformed { .. } => CloseKind::Malformed,
            Self::KeepAliveTimeout => CloseKind::KeepAliveTimeout,
            Self::WriteTimeout(_) => CloseKind::WriteTimeout,
            Self::Io(_) => CloseKind::Io,
            Self::PublishDenied => CloseKind::PublishDenied,
            Self::AuthNotSupported => CloseKind::AuthNotSupported,
            Self::QuotaExceeded => CloseKind::QuotaExceeded,
            Self::Revoked(_) => CloseKind::Revoked,
            Self::CredentialExpired => CloseKind::CredentialExpired,
            Self::ReauthenticationFailed => CloseKind::ReauthenticationFailed,
            Self::RateLimited(_) => CloseKind::RateLimited,
            Self::Shutdown => CloseKind::Shutdown,
            Self::Kicked => CloseKind::Kicked,
        }
    }

    /// The `sessions_closed_total` label (and the `reason` of logs).
    #[must_use]
    pub const fn as_str(&self) -> &'static str {
        self.kind().as_str()
    }
}

label_enum! {
    /// `sessions_closed_total{reason}`: a [`CloseReason`] without its details.
    pub enum CloseKind {
        /// [`CloseReason::ClientClosed`].
        ClientClosed => "client_closed",
        /// [`CloseReason::BrokerClosed`].
        BrokerClosed => "broker_closed",
        /// [`CloseReason::Malformed`].
        Malformed => "malformed",
        /// [`CloseReason::KeepAliveTimeout`].
        KeepAliveTimeout => "keepalive_timeout",
        /// [`CloseReason::WriteTimeout`].
        WriteTimeout => "write_timeout",
        /// [`CloseReason::Io`].
        Io => "io_error",
        /// [`CloseReason::PublishDenied`].
        PublishDenied => "publish_denied",
        /// [`CloseReason::AuthNotSupported`].
        AuthNotSupported => "auth_not_supported",
        /// [`CloseReason::QuotaExceeded`].
        QuotaExceeded => "quota_exceeded",
        /// [`CloseReason::Revoked`].
        Revoked => "revoked",
        /// [`CloseReason::CredentialExpired`].
        CredentialExpired => "credential_expired",
        /// [`CloseReason::ReauthenticationFailed`].
        ReauthenticationFailed => "reauthentication_failed",
        /// [`CloseReason::RateLimited`].
        RateLimited => "rate_limited",
        /// [`CloseReason::Shutdown`].
        Shutdown => "shutdown",
        /// [`CloseReason::Kicked`].
        Kicked => "kicked",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::ClientLimit;

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
            CloseReason::Revoked(RevocationReason::Crl),
            CloseReason::CredentialExpired,
            CloseReason::ReauthenticationFailed,
            CloseReason::RateLimited(ClientLimit::Messages),
            CloseReason::Shutdown,
            CloseReason::Kicked,
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
                | CloseReason::CredentialExpired
                | CloseReason::ReauthenticationFailed
                | CloseReason::RateLimited(_)
                | CloseReason::Shutdown
                | CloseReason::Kicked => {}
            }
        }
        let labels: std::collections::BTreeSet<&str> =
            all.iter().map(CloseReason::as_str).collect();
        assert_eq!(labels.len(), all.len(), "two reasons share a label");
        let exported: std::collections::BTreeSet<&str> =
            CloseKind::ALL.into_iter().map(CloseKind::as_str).collect();
        assert_eq!(labels, exported);
        // The values dashboards and alert rules match on (README.md, "Metrics beyond the
        // contract"), in declaration order.
        assert_eq!(
            CloseKind::ALL.map(CloseKind::as_str),
            [
                "client_closed",
                "broker_closed",
                "malformed",
                "keepalive_timeout",
                "write_timeout",
                "io_error",
                "publish_denied",
                "auth_not_supported",
                "quota_exceeded",
                "revoked",
                "credential_expired",
                "reauthentication_failed",
                "rate_limited",
                "shutdown",
                "kicked",
            ]
        );
    }
}
