//! `[enrollment]`: the EST (RFC 7030) listener (`crate::enroll`).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigError;
use super::locate::{KeyPath, Source};

/// `[enrollment]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentConfig {
    /// Address of the EST listener (TLS, HTTP/1.1).
    pub bind: SocketAddr,
    /// The `mqtt-gateway pki` directory that issues (CA, index, CRL, tokens).
    pub pki_dir: PathBuf,
    /// Validity of an issued certificate in days (1 to 3650). Default 7.
    #[serde(default = "default_cert_days")]
    pub cert_days: NonZeroU32,
    /// Concurrent EST connections; one more is closed as soon as it is accepted. Default 64.
    #[serde(default = "default_max_connections")]
    pub max_connections: NonZeroU32,
    /// Requests one client address (IPv6: its /64) may make per minute, every path together;
    /// more are answered 429. Default 30.
    #[serde(default = "default_requests_per_ip")]
    pub requests_per_ip_per_minute: NonZeroU32,
    /// `[enrollment.tls]`: the EST server's certificate.
    pub tls: EnrollmentTls,
}

/// `[enrollment.tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollmentTls {
    /// Server certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
}

const fn default_cert_days() -> NonZeroU32 {
    NonZeroU32::MIN.saturating_add(6)
}

const fn default_max_connections() -> NonZeroU32 {
    NonZeroU32::MIN.saturating_add(63)
}

const fn default_requests_per_ip() -> NonZeroU32 {
    NonZeroU32::MIN.saturating_add(29)
}

/// The longest `cert_days`.
pub(super) const MAX_CERT_DAYS: u32 = 3650;
/// The most `max_connections`.
pub(super) const MAX_EST_CONNECTIONS: u32 = 10_000;

pub(super) fn check(e: Option<&EnrollmentConfig>, src: &Source<'_>) -> Result<(), ConfigError> {
    let Some(e) = e else { return Ok(()) };
    let key = KeyPath::new("enrollment");
    if e.cert_days.get() > MAX_CERT_DAYS {
        return Err(src.invalid(
            &key.key("cert_days"),
            format!("at most {MAX_CERT_DAYS}: enrollment is for short-lived certificates"),
        ));
    }
    if e.max_connections.get() > MAX_EST_CONNECTIONS {
        return Err(src.invalid(
            &key.key("max_connections"),
            format!("at most {MAX_EST_CONNECTIONS}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    const BASE: &str = "[upstream]\naddress = \"127.0.0.1:1883\"\n[[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:1884\"\n[policy]\nfile = \"policy.toml\"\n";

    fn parse(extra: &str) -> Result<Config, crate::config::ConfigError> {
        Config::from_str(&format!("{BASE}{extra}"), Path::new("/etc/gw/gateway.toml"))
    }

    /// The contract's `[enrollment]` (spec lifecycle.md), relative paths resolved; defaults.
    #[test]
    fn enrollment_keys_defaults_and_bounds() {
        let c = parse(
            "[enrollment]\nbind = \"0.0.0.0:8443\"\npki_dir = \"pki\"\ncert_days = 7\n\
             [enrollment.tls]\ncert = \"est.pem\"\nkey = \"est.key\"\n",
        )
        .unwrap();
        let e = c.enrollment.unwrap();
        assert_eq!(e.pki_dir, Path::new("/etc/gw/pki"));
        assert_eq!(e.tls.key, Path::new("/etc/gw/est.key"));
        assert_eq!(e.cert_days.get(), 7);
        assert_eq!(e.max_connections.get(), 64);
        assert_eq!(e.requests_per_ip_per_minute.get(), 30);
        assert!(parse("").unwrap().enrollment.is_none());
        let tls = "[enrollment.tls]\ncert = \"a\"\nkey = \"b\"\n";
        let too_long =
            format!("[enrollment]\nbind = \"0.0.0.0:1\"\npki_dir = \"p\"\ncert_days = 3651\n{tls}");
        let err = parse(&too_long).unwrap_err().to_string();
        assert!(err.contains("enrollment.cert_days"), "{err}");
        let zero =
            format!("[enrollment]\nbind = \"0.0.0.0:1\"\npki_dir = \"p\"\ncert_days = 0\n{tls}");
        assert!(parse(&zero).is_err());
        let unknown =
            format!("[enrollment]\nbind = \"0.0.0.0:1\"\npki_dir = \"p\"\nfoo = 1\n{tls}");
        assert!(parse(&unknown).is_err());
        let no_tls = "[enrollment]\nbind = \"0.0.0.0:1\"\npki_dir = \"p\"\n";
        assert!(parse(no_tls).is_err(), "TLS is not optional");
    }
}
