//! The upstream connection: dial the broker under `upstream.connect_timeout` and send it the
//! client's CONNECT, unchanged (`credentials = "passthrough"`) or with the username replaced by the
//! principal and the password removed (`credentials = "principal"`: the broker never sees secrets).

use std::io;
use std::time::Duration;

use mqtt_inspect::Connect;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::Credentials;

/// Why the broker could not be reached; the `upstream_errors_total` reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Connection refused (or the address did not resolve).
    Refused,
    /// No answer within `upstream.connect_timeout`.
    Timeout,
}

impl UpstreamError {
    /// The metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Timeout => "timeout",
        }
    }
}

/// Dials the broker.
///
/// # Errors
/// [`UpstreamError`].
pub async fn dial(address: &str, limit: Duration) -> Result<TcpStream, UpstreamError> {
    match timeout(limit, TcpStream::connect(address)).await {
        Err(_) => Err(UpstreamError::Timeout),
        Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => Err(UpstreamError::Timeout),
        Ok(Err(_)) => Err(UpstreamError::Refused),
        Ok(Ok(s)) => {
            // MQTT is latency-sensitive and the gateway batches its own writes.
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

/// The CONNECT to send upstream: `None` means forward the original bytes.
///
/// # Errors
/// The re-encoding failed (a field too long), which cannot happen for a CONNECT that decoded.
pub fn upstream_connect(
    connect: &Connect<'_>,
    credentials: Credentials,
    principal: Option<&str>,
) -> Result<Option<Vec<u8>>, mqtt_inspect::EncodeError> {
    match credentials {
        Credentials::Passthrough => Ok(None),
        Credentials::Principal => {
            let mut rewritten = *connect;
            rewritten.username = principal;
            rewritten.password = None;
            let mut out = Vec::new();
            rewritten.encode(&mut out)?;
            Ok(Some(out))
        }
    }
}
