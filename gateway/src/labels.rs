//! The closed label sets of the metric families: one enum per label, each with the exact value it
//! is exported under ([`as_str`](ConnectOutcome::as_str)) and every value it can take (`ALL`,
//! which `metrics::init` exports at 0 from start-up). The values are the contract's
//! (`../shared/spec/README.md`, "Metrics"): dashboards and alert rules match on them.
//!
//! Each enum is declared with `label_enum!`, which writes `ALL` from the same list as the
//! variants: a new variant cannot be missing from the start-up series.

/// Declares a fieldless enum whose variants are metric label values: the enum, `as_str()` and
/// `ALL` (every variant, in declaration order), from one list.
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $label:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        $vis enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: [Self; [$(stringify!($variant)),+].len()] = [$(Self::$variant),+];

            /// The label value, exactly as exported.
            #[must_use]
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $label, )+
                }
            }
        }
    };
}
pub(crate) use label_enum;

label_enum! {
    /// `connections_total{outcome}`: how a connection's connect phase ended (exactly one per
    /// connection).
    pub enum ConnectOutcome {
        /// The CONNECT was admitted and the broker reached.
        Accepted => "accepted",
        /// The TLS handshake failed (`tls_handshake_failures_total` says why).
        TlsFailed => "tls_failed",
        /// Authentication failed (`auth_failures_total` says why).
        AuthFailed => "auth_failed",
        /// The policy refused the client (connect rule, Will, WebSocket origin).
        Denied => "denied",
        /// A connection limit refused it before TLS.
        RateLimited => "rate_limited",
        /// A ban refused it.
        Banned => "banned",
        /// The broker could not be reached.
        UpstreamFailed => "upstream_failed",
        /// The connect deadline passed, or the client left before its CONNECT.
        Timeout => "timeout",
        /// The first bytes were not an acceptable CONNECT (or PROXY header, or upgrade).
        Malformed => "malformed",
    }
}

label_enum! {
    /// `auth_failures_total{reason}`: why authentication refused a CONNECT.
    pub enum AuthFailure {
        /// A wrong password, a certificate naming nobody or another account, an unsupported
        /// authentication method.
        BadCredentials => "bad_credentials",
        /// No such user (or no password file).
        UnknownUser => "unknown_user",
        /// No credentials and `allow_anonymous = false`.
        Anonymous => "anonymous",
        /// The connect rule refused the client id.
        ClientId => "client_id",
        /// A ban on the address, account or certificate.
        Banned => "banned",
        /// A JWT device token whose `exp` has passed.
        TokenExpired => "token_expired",
        /// A token whose signature does not verify, that is not a compact JWS, or whose
        /// algorithm is not accepted (`none`, `HS*`, one off the allow-list).
        TokenSignature => "token_signature",
        /// A token signed by a key (`kid`) the JWKS does not hold.
        TokenUnknownKey => "token_unknown_key",
        /// A token whose claims are refused (issuer, audience, lifetime, `nbf`, principal).
        TokenClaims => "token_claims",
        /// A credential of a kind the listener does not accept (`[[listener]] auth`).
        MethodNotAllowed => "method_not_allowed",
        /// The client certificate's OCSP responder answered `revoked` (`crate::ocsp`).
        CertificateRevoked => "certificate_revoked",
        /// `ocsp = "hard"` and no good OCSP answer (unreachable responder, `unknown`, an
        /// answer that does not validate).
        OcspNoAnswer => "ocsp_no_answer",
    }
}

label_enum! {
    /// `reauthentications_total{result}`: an MQTT 5 re-authentication (AUTH 0x19).
    pub enum ReauthResult {
        /// A fresh token for the same principal: the session's end moved.
        Ok => "ok",
        /// A token refused, or one for another principal: the session ended (0x87).
        Failed => "failed",
    }
}

label_enum! {
    /// `acl_denied_total{action}`: what a policy denial refused.
    pub enum AclAction {
        /// The CONNECT itself (connect rule, `allow_anonymous` after a reload).
        Connect => "connect",
        /// A PUBLISH by the client.
        Publish => "publish",
        /// A subscription filter.
        Subscribe => "subscribe",
        /// A PUBLISH to the client.
        Receive => "receive",
        /// The client's Will (its topic or Response Topic).
        Will => "will",
    }
}

label_enum! {
    /// `rate_limited_total{limit}`: which rate limit refused or slowed a client.
    pub enum RateLimit {
        /// A connection cap or the per-address connection rate.
        Connections => "connections",
        /// `messages_per_client_per_second`.
        Messages => "messages",
        /// `bytes_per_client_per_second`.
        Bytes => "bytes",
    }
}

label_enum! {
    /// `upstream_errors_total{reason}`: how the broker failed a connection.
    pub enum UpstreamFailure {
        /// Connection refused (or the address did not resolve).
        Refused => "refused",
        /// No answer within `upstream.connect_timeout`.
        Timeout => "timeout",
        /// An established broker connection failed.
        Closed => "closed",
    }
}

label_enum! {
    /// `reloads_total{source}`: what a reload re-read.
    pub enum ReloadSource {
        /// The configuration file.
        Config => "config",
        /// The policy file.
        Policy => "policy",
        /// The password file.
        Passwords => "passwords",
        /// The CRL files.
        Crl => "crl",
        /// The certificates and keys.
        Certs => "certs",
        /// The JWKS of `[auth.token]`.
        Jwks => "jwks",
        /// The admin API's `api_tokens_file`.
        AdminTokens => "admin_tokens",
    }
}

label_enum! {
    /// `reloads_total{result}`: whether a reload was applied.
    pub enum ReloadResult {
        /// Applied.
        Ok => "ok",
        /// Rejected; the snapshot in force stays.
        Rejected => "rejected",
    }
}

label_enum! {
    /// `crl_fetches_total{result}`: how one fetch of a `crl_urls` CRL ended. Only `updated` and
    /// `unchanged` are successes; every other value kept the CRL in force.
    pub enum CrlFetchResult {
        /// A newer, valid CRL was stored and swapped in.
        Updated => "updated",
        /// The CRL at the URL is the one in force.
        Unchanged => "unchanged",
        /// No connection (refused, unreachable, name not resolved) or the exchange broke.
        Network => "network",
        /// No whole answer within the fetch timeout.
        Timeout => "timeout",
        /// The server answered with a status other than 2xx.
        HttpStatus => "http_status",
        /// The body was larger than the size bound.
        TooLarge => "too_large",
        /// The body is not a CRL (PEM or DER) that parses.
        NotACrl => "not_a_crl",
        /// No CA of `client_ca` has the CRL's issuer name (or may sign CRLs).
        UnknownIssuer => "unknown_issuer",
        /// The signature does not verify with the issuer's key.
        BadSignature => "bad_signature",
        /// Older than the CRL in force (CRL number or thisUpdate): a rollback.
        Rollback => "rollback",
        /// Already past its nextUpdate.
        Stale => "stale",
        /// The CRL could not be written to `crl_cache_dir`.
        CacheError => "cache_error",
    }
}

label_enum! {
    /// `sessions_revoked_total{reason}`: why a reload ended a live session (also the `reason` of
    /// its `session_revoked` audit line).
    pub enum RevocationReason {
        /// Its certificate chain no longer verifies (a new CRL or CA).
        Crl => "crl",
        /// Its connect rule, its Will or `allow_anonymous` now refuses it.
        Policy => "policy",
        /// Its password-file entry changed or is gone.
        Password => "password",
        /// The JWKS key that signed its token was removed or replaced.
        Token => "token",
        /// Its certificate's OCSP responder answered `revoked` (`crate::ocsp`).
        Ocsp => "ocsp",
    }
}

label_enum! {
    /// `ocsp_responses_total{listener,status}`: what an OCSP query came back with.
    pub enum OcspStatus {
        /// A valid answer: not revoked.
        Good => "good",
        /// A valid answer: revoked.
        Revoked => "revoked",
        /// A valid answer: the responder does not know the certificate.
        Unknown => "unknown",
        /// No valid answer: unreachable, timeout, HTTP error, too large, garbage, a bad
        /// signature, another certificate's answer, stale or future.
        Error => "error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn labels<T: Copy, const N: usize>(
        all: [T; N],
        as_str: fn(T) -> &'static str,
    ) -> Vec<&'static str> {
        let v: Vec<&str> = all.into_iter().map(as_str).collect();
        let unique: BTreeSet<&str> = v.iter().copied().collect();
        assert_eq!(unique.len(), v.len(), "two values share a label: {v:?}");
        v
    }

    /// The label values are the contract's (`../shared/spec/README.md`, "Metrics"), in its order,
    /// each unique: dashboards and alert rules match on these strings.
    #[test]
    fn label_values_are_the_documented_ones() {
        // As the contract's table writes it (`spec/README.md`, "Metrics").
        assert_eq!(
            labels(ConnectOutcome::ALL, ConnectOutcome::as_str).join(", "),
            "accepted, tls_failed, auth_failed, denied, rate_limited, banned, upstream_failed, timeout, malformed"
        );
        // The contract's five, then issue 22's (README, "Metrics beyond the contract").
        assert_eq!(
            labels(AuthFailure::ALL, AuthFailure::as_str).join(", "),
            "bad_credentials, unknown_user, anonymous, client_id, banned, \
             token_expired, token_signature, token_unknown_key, token_claims, method_not_allowed, \
             certificate_revoked, ocsp_no_answer"
        );
        assert_eq!(
            labels(AclAction::ALL, AclAction::as_str),
            ["connect", "publish", "subscribe", "receive", "will"]
        );
        assert_eq!(
            labels(RateLimit::ALL, RateLimit::as_str),
            ["connections", "messages", "bytes"]
        );
        assert_eq!(
            labels(UpstreamFailure::ALL, UpstreamFailure::as_str),
            ["refused", "timeout", "closed"]
        );
        assert_eq!(
            labels(ReloadSource::ALL, ReloadSource::as_str).join(", "),
            "config, policy, passwords, crl, certs, jwks, admin_tokens"
        );
        assert_eq!(
            labels(ReloadResult::ALL, ReloadResult::as_str),
            ["ok", "rejected"]
        );
        // dashboards/alerts.yml matches on these (MqttGatewayCrlFetch*).
        assert_eq!(
            labels(CrlFetchResult::ALL, CrlFetchResult::as_str),
            [
                "updated",
                "unchanged",
                "network",
                "timeout",
                "http_status",
                "too_large",
                "not_a_crl",
                "unknown_issuer",
                "bad_signature",
                "rollback",
                "stale",
                "cache_error"
            ]
        );
        assert_eq!(
            labels(RevocationReason::ALL, RevocationReason::as_str),
            ["crl", "policy", "password", "token", "ocsp"]
        );
    }
}
