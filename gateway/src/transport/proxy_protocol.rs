//! PROXY protocol (HAProxy's v1 text and v2 binary headers) on listeners behind a load balancer,
//! and the v2 header the gateway can send upstream.
//!
//! Inbound: the header is read before anything else (before TLS), byte-exact: nothing after it is
//! consumed, so the TLS handshake or the MQTT CONNECT that follows reaches the session untouched.
//! v2: the 16-byte fixed part, then exactly the length it announces (bounded by
//! [`MAX_V2_PAYLOAD`]); v1: one line of at most [`V1_MAX`] bytes. Parsing is `ppp`'s. The caller
//! bounds the time and checks who may send a header at all (`proxy_protocol_from`).

use std::io;
use std::net::SocketAddr;

use ppp::v2;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest v1 header, CRLF included (the spec's bound).
pub const V1_MAX: usize = 107;
/// The largest v2 address + TLV block accepted. The format allows 65,535 bytes; load balancers
/// send addresses and a few TLVs, and a peer announcing more is refused before it is read.
pub const MAX_V2_PAYLOAD: usize = 4096;
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Why a connection's PROXY header was refused; the audit `reason`.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The connection did not start with a PROXY header.
    #[error("no PROXY protocol header")]
    Missing,
    /// A header that does not parse.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(String),
    /// A v2 header announcing more than [`MAX_V2_PAYLOAD`] bytes.
    #[error("PROXY protocol v2 header of {0} bytes (at most {MAX_V2_PAYLOAD})")]
    TooLarge(usize),
    /// The peer closed or the read failed.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

impl ProxyError {
    /// The audit `reason` label.
    #[must_use]
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Missing => "proxy_header_missing",
            Self::Malformed(_) | Self::TooLarge(_) => "proxy_header_malformed",
            Self::Io(_) => "proxy_header_incomplete",
        }
    }
}

/// Reads one PROXY header from `tcp`. Returns the client address it carries, or `None` for a
/// connection the load balancer made on its own behalf (v2 LOCAL, v1 UNKNOWN: health checks),
/// which then keeps the balancer's address.
///
/// # Errors
/// [`ProxyError`]; the caller closes the connection.
pub async fn read_header(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    let mut head = [0u8; 16];
    tcp.read_exact(&mut head[..6]).await?;
    if head[..6] == *b"PROXY " {
        return read_v1(tcp).await;
    }
    if head[..6] != V2_SIGNATURE[..6] {
        return Err(ProxyError::Missing);
    }
    tcp.read_exact(&mut head[6..]).await?;
    if head[..12] != V2_SIGNATURE {
        return Err(ProxyError::Missing);
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > MAX_V2_PAYLOAD {
        return Err(ProxyError::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).await?;
    let mut header = Vec::with_capacity(16 + len);
    header.extend_from_slice(&head);
    header.extend_from_slice(&payload);
    let parsed = v2::Header::try_from(header.as_slice())
        .map_err(|e| ProxyError::Malformed(e.to_string()))?;
    Ok(match (parsed.command, parsed.addresses) {
        (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        // LOCAL, or PROXY over UNIX sockets / unspecified families: no client address to use.
        _ => None,
    })
}

async fn read_v1(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    let mut line = Vec::with_capacity(V1_MAX);
    line.extend_from_slice(b"PROXY ");
    // The whole line normally arrives in one segment: peek it and read exactly its length;
    // otherwise read a byte at a time (never past the CRLF).
    let mut peeked = [0u8; V1_MAX];
    let n = tcp.peek(&mut peeked).await?;
    let window = peeked.get(..n).unwrap_or_default();
    if let Some(end) = window.windows(2).position(|w| w == b"\r\n") {
        let mut rest = vec![0u8; end + 2];
        tcp.read_exact(&mut rest).await?;
        line.extend_from_slice(&rest);
    } else {
        while !line.ends_with(b"\r\n") {
            if line.len() >= V1_MAX {
                return Err(ProxyError::Malformed(
                    "v1 line longer than 107 bytes".into(),
                ));
            }
            line.push(tcp.read_u8().await?);
        }
    }
    if line.len() > V1_MAX {
        return Err(ProxyError::Malformed(
            "v1 line longer than 107 bytes".into(),
        ));
    }
    let text = std::str::from_utf8(&line).map_err(|e| ProxyError::Malformed(e.to_string()))?;
    let parsed =
        ppp::v1::Header::try_from(text).map_err(|e| ProxyError::Malformed(e.to_string()))?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v1::Addresses::Tcp6(a) => {
            Some(SocketAddr::new(a.source_address.into(), a.source_port))
        }
        ppp::v1::Addresses::Unknown => None,
    })
}

/// PP2_TYPE_SSL and its sub-types (the PROXY protocol spec, section 2.2.5).
const PP2_TYPE_SSL: u8 = 0x20;
const PP2_SUBTYPE_SSL_VERSION: u8 = 0x21;
const PP2_SUBTYPE_SSL_CN: u8 = 0x22;
const PP2_CLIENT_SSL: u8 = 0x01;
const PP2_CLIENT_CERT_CONN: u8 = 0x02;
/// A custom TLV (0xE0–0xEF are reserved for applications): the authenticated principal,
/// whatever it came from (certificate or password).
pub const PP2_TYPE_PRINCIPAL: u8 = 0xE0;

/// What the gateway tells the broker about a client in its upstream v2 header.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamInfo<'a> {
    /// The client's address (after any inbound PROXY header).
    pub client: SocketAddr,
    /// The gateway listener's address the client reached.
    pub listener: SocketAddr,
    /// TLS version, when the client came over TLS.
    pub tls_version: Option<&'a str>,
    /// The client certificate's common name, when one was verified.
    pub cert_cn: Option<&'a str>,
    /// The authenticated principal.
    pub principal: Option<&'a str>,
}

/// Encodes the v2 PROXY header sent to the broker first (`upstream.proxy_protocol = true`).
///
/// # Errors
/// A value too long for a TLV (not reachable with MQTT-sized principals).
pub fn encode_upstream(info: &UpstreamInfo<'_>) -> io::Result<Vec<u8>> {
    let (client, listener) = match (info.client, info.listener) {
        (SocketAddr::V4(c), SocketAddr::V4(l)) => (SocketAddr::V4(c), SocketAddr::V4(l)),
        // Mixed families: say both in IPv6 (IPv4-mapped).
        (c, l) => (
            SocketAddr::new(to_v6(c.ip()).into(), c.port()),
            SocketAddr::new(to_v6(l.ip()).into(), l.port()),
        ),
    };
    let mut builder = v2::Builder::with_addresses(
        v2::Version::Two | v2::Command::Proxy,
        v2::Protocol::Stream,
        (client, listener),
    );
    if let Some(version) = info.tls_version {
        let client_flags = if info.cert_cn.is_some() {
            PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN
        } else {
            PP2_CLIENT_SSL
        };
        let mut ssl = vec![client_flags];
        // verify: 0 = the client certificate (if any) was verified successfully.
        ssl.extend_from_slice(&0u32.to_be_bytes());
        push_tlv(&mut ssl, PP2_SUBTYPE_SSL_VERSION, version.as_bytes())?;
        if let Some(cn) = info.cert_cn {
            push_tlv(&mut ssl, PP2_SUBTYPE_SSL_CN, cn.as_bytes())?;
        }
        builder = builder.write_tlv(PP2_TYPE_SSL, &ssl)?;
    }
    if let Some(p) = info.principal {
        builder = builder.write_tlv(PP2_TYPE_PRINCIPAL, p.as_bytes())?;
    }
    builder.build()
}

fn to_v6(ip: std::net::IpAddr) -> std::net::Ipv6Addr {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    }
}

fn push_tlv(out: &mut Vec<u8>, kind: u8, value: &[u8]) -> io::Result<()> {
    let len = u16::try_from(value.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "TLV value too long"))?;
    out.push(kind);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_header_parses_back_with_addresses_and_identity() {
        let info = UpstreamInfo {
            client: "203.0.113.7:51000".parse().unwrap(),
            listener: "10.0.0.2:8883".parse().unwrap(),
            tls_version: Some("TLSv1.3"),
            cert_cn: Some("sensor-1"),
            principal: Some("sensor-1"),
        };
        let bytes = encode_upstream(&info).unwrap();
        let h = v2::Header::try_from(bytes.as_slice()).unwrap();
        assert_eq!(h.command, v2::Command::Proxy);
        let v2::Addresses::IPv4(a) = h.addresses else {
            panic!("{:?}", h.addresses)
        };
        assert_eq!(a.source_address.to_string(), "203.0.113.7");
        assert_eq!(a.source_port, 51000);
        assert_eq!(a.destination_port, 8883);
        let tlvs: Vec<_> = h.tlvs().map(Result::unwrap).collect();
        assert_eq!(tlvs.len(), 2);
        assert_eq!(tlvs[0].kind, PP2_TYPE_SSL);
        assert_eq!(tlvs[0].value[0], PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN);
        assert!(tlvs[0].value.windows(8).any(|w| w == b"sensor-1"));
        assert_eq!(tlvs[1].kind, PP2_TYPE_PRINCIPAL);
        assert_eq!(&*tlvs[1].value, b"sensor-1");
        // Mixed families are sent as IPv6.
        let mixed = UpstreamInfo {
            listener: "[::1]:8883".parse().unwrap(),
            ..info
        };
        let h2 = encode_upstream(&mixed).unwrap();
        assert!(matches!(
            v2::Header::try_from(h2.as_slice()).unwrap().addresses,
            v2::Addresses::IPv6(_)
        ));
    }
}
