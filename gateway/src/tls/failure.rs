//! Turns a failed TLS handshake into one of the contract's bounded
//! `reason` labels of `mqtt_gateway_tls_handshake_failures_total`.

use std::io;

use rustls::{CertificateError, Error};

crate::labels::label_enum! {
    /// Why a TLS handshake failed: the `tls_handshake_failures_total{reason}` label and the audit
    /// reason.
    pub enum HandshakeFailure {
        /// The client sent no certificate but one is required.
        NoCertificate => "no_certificate",
        /// The client certificate does not chain to a configured `client_ca`.
        UnknownCa => "unknown_ca",
        /// The client certificate (or one in its chain) is past `notAfter`.
        Expired => "expired",
        /// The client certificate (or one in its chain) is before `notBefore`.
        NotYetValid => "not_yet_valid",
        /// A CRL lists the client certificate (or, with `crl_scope = "chain"`, an intermediate).
        Revoked => "revoked",
        /// The certificate is not allowed for TLS client authentication (extended key usage).
        BadUsage => "bad_usage",
        /// The peer broke or abandoned the TLS protocol: malformed or unexpected
        /// messages, no common version or cipher suite, an alert it sent, or the
        /// connection closed/reset in the middle of the handshake.
        Protocol => "protocol",
        /// Anything else: unknown revocation status, an expired CRL, a bad signature,
        /// a local I/O error.
        Other => "other",
    }
}

/// Classifies the `io::Error` that tokio-rustls returns from a failed accept.
///
/// tokio-rustls wraps the `rustls::Error` inside the `io::Error`; that is
/// classified by [`classify_rustls`]. An `io::Error` without a rustls error
/// inside comes from the socket: end-of-file, reset, abort or broken pipe mid-handshake
/// mean the peer walked away (port scanners, load-balancer health checks, clients
/// that refused our certificate without an alert) and count as `protocol`;
/// any other socket error is `other`. A handshake deadline is not classified
/// here: it is a connection `timeout`, not a TLS failure.
#[must_use]
pub fn classify(err: &io::Error) -> HandshakeFailure {
    if let Some(rustls_err) = err.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
        return classify_rustls(rustls_err);
    }
    match err.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => HandshakeFailure::Protocol,
        _ => HandshakeFailure::Other,
    }
}

/// Classifies a rustls error (from a handshake, or from [`super::reverify`]).
#[must_use]
pub fn classify_rustls(err: &Error) -> HandshakeFailure {
    match err {
        Error::NoCertificatesPresented => HandshakeFailure::NoCertificate,
        Error::InvalidCertificate(cert) => classify_certificate(cert),
        Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::InvalidEncryptedClientHello(_)
        | Error::InvalidMessage(_)
        | Error::UnsupportedNameType
        | Error::DecryptError
        | Error::PeerIncompatible(_)
        | Error::PeerMisbehaved(_)
        | Error::AlertReceived(_)
        | Error::PeerSentOversizedRecord
        | Error::NoApplicationProtocol => HandshakeFailure::Protocol,
        _ => HandshakeFailure::Other,
    }
}

fn classify_certificate(err: &CertificateError) -> HandshakeFailure {
    match err {
        CertificateError::UnknownIssuer => HandshakeFailure::UnknownCa,
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            HandshakeFailure::Expired
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            HandshakeFailure::NotYetValid
        }
        CertificateError::Revoked => HandshakeFailure::Revoked,
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            HandshakeFailure::BadUsage
        }
        // UnknownRevocationStatus, ExpiredRevocationList*, BadSignature, BadEncoding,
        // UnhandledCriticalExtension, unsupported algorithms, ...
        _ => HandshakeFailure::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::UnixTime;
    use rustls::{
        AlertDescription, ContentType, ExtendedKeyPurpose, HandshakeType, InvalidMessage,
        PeerIncompatible, PeerMisbehaved,
    };
    use std::time::Duration;

    fn t(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    #[test]
    fn labels_are_the_contract_ones() {
        let labels: Vec<&str> = HandshakeFailure::ALL.iter().map(|f| f.as_str()).collect();
        // As the contract's table writes them (`spec/README.md`, "Metrics").
        assert_eq!(
            labels.join(", "),
            "no_certificate, unknown_ca, expired, not_yet_valid, revoked, bad_usage, protocol, other"
        );
    }

    #[test]
    fn rustls_errors_map_to_labels() {
        use HandshakeFailure as F;
        let cert = |e: CertificateError| Error::InvalidCertificate(e);
        let cases = [
            (Error::NoCertificatesPresented, F::NoCertificate),
            (cert(CertificateError::UnknownIssuer), F::UnknownCa),
            (cert(CertificateError::Expired), F::Expired),
            (
                cert(CertificateError::ExpiredContext {
                    time: t(2),
                    not_after: t(1),
                }),
                F::Expired,
            ),
            (cert(CertificateError::NotValidYet), F::NotYetValid),
            (
                cert(CertificateError::NotValidYetContext {
                    time: t(1),
                    not_before: t(2),
                }),
                F::NotYetValid,
            ),
            (cert(CertificateError::Revoked), F::Revoked),
            (cert(CertificateError::InvalidPurpose), F::BadUsage),
            (
                cert(CertificateError::InvalidPurposeContext {
                    required: ExtendedKeyPurpose::ClientAuth,
                    presented: vec![ExtendedKeyPurpose::ServerAuth],
                }),
                F::BadUsage,
            ),
            (cert(CertificateError::UnknownRevocationStatus), F::Other),
            (cert(CertificateError::ExpiredRevocationList), F::Other),
            (
                cert(CertificateError::ExpiredRevocationListContext {
                    time: t(2),
                    next_update: t(1),
                }),
                F::Other,
            ),
            (cert(CertificateError::BadSignature), F::Other),
            (cert(CertificateError::BadEncoding), F::Other),
            (
                Error::AlertReceived(AlertDescription::BadCertificate),
                F::Protocol,
            ),
            (
                Error::PeerIncompatible(PeerIncompatible::Tls13RequiredForQuic),
                F::Protocol,
            ),
            (
                Error::PeerMisbehaved(PeerMisbehaved::TooMuchEarlyDataReceived),
                F::Protocol,
            ),
            (
                Error::InvalidMessage(InvalidMessage::InvalidContentType),
                F::Protocol,
            ),
            (
                Error::InappropriateHandshakeMessage {
                    expect_types: vec![HandshakeType::ClientHello],
                    got_type: HandshakeType::Finished,
                },
                F::Protocol,
            ),
            (
                Error::InappropriateMessage {
                    expect_types: vec![ContentType::Handshake],
                    got_type: ContentType::ApplicationData,
                },
                F::Protocol,
            ),
            (Error::DecryptError, F::Protocol),
            (Error::General("x".into()), F::Other),
            (Error::FailedToGetRandomBytes, F::Other),
        ];
        for (err, want) in cases {
            assert_eq!(classify_rustls(&err), want, "{err:?}");
            // The same error wrapped the way tokio-rustls wraps it.
            let wrapped = io::Error::new(io::ErrorKind::InvalidData, err);
            assert_eq!(classify(&wrapped), want, "{wrapped:?}");
        }
    }

    #[test]
    fn socket_errors_without_rustls_inside() {
        use io::ErrorKind as K;
        for kind in [
            K::UnexpectedEof,
            K::ConnectionReset,
            K::ConnectionAborted,
            K::BrokenPipe,
        ] {
            assert_eq!(
                classify(&io::Error::from(kind)),
                HandshakeFailure::Protocol,
                "{kind:?}"
            );
        }
        for kind in [K::TimedOut, K::PermissionDenied, K::OutOfMemory] {
            assert_eq!(
                classify(&io::Error::from(kind)),
                HandshakeFailure::Other,
                "{kind:?}"
            );
        }
        // An io::Error carrying some other error type is not mistaken for rustls.
        let other = io::Error::new(K::InvalidData, "not rustls");
        assert_eq!(classify(&other), HandshakeFailure::Other);
    }
}
