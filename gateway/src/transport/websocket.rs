//! MQTT over WebSocket (`protocol = "websocket"` on a listener; RFC 6455, MQTT 3.1.1 / 5.0 §6),
//! plain (`ws://`) or after the listener's TLS handshake (`wss://`).
//!
//! The HTTP upgrade is checked before it is accepted: the request path must be the listener's
//! `websocket_path` (404 otherwise), a browser's `Origin` must be in `websocket_origins` or name
//! the same host and port as the request's `Host` (403 otherwise; a request without `Origin`,
//! from a non-browser client, is let through: see [`same_origin`]), and the client must
//! offer the `mqtt` subprotocol (or the MQTT 3.1 era `mqttv3.1`), which is echoed back (400
//! otherwise) [MQTT-6.0.0-3] [MQTT-6.0.0-4]. Frame and message sizes are bounded by the
//! listener's `max_packet_size` plus framing slack, and the read and write buffers are small.
//!
//! [`WsStream`] then turns the message stream into bytes for the MQTT framer: binary messages
//! may hold several or partial MQTT packets [MQTT-6.0.0-2]; a text message ends the connection
//! [MQTT-6.0.0-1]; pings are answered by tungstenite; a close frame is the end of the stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::tls::stream::fill;
use crate::transport::io::ClientStream;

/// Subprotocols accepted, in order of preference.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];
/// Room for WebSocket framing over the largest MQTT packet in one message.
const FRAMING_SLACK: usize = 1024;

/// What a WebSocket listener accepts.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// The request path (`websocket_path`, default `/mqtt`).
    pub path: String,
    /// Allowed `Origin` values (`websocket_origins`); a request with another Origin is refused
    /// unless it is the request's own ([`same_origin`]).
    pub origins: Vec<String>,
    /// `wss://` (the listener has TLS): a `Host` without a port means 443, else 80.
    pub secure: bool,
}

/// Whether `origin` (an `Origin` header: `scheme://host[:port]`) names the same host and port as
/// `host` (the `Host` header: `host[:port]`, its port by default 443 on a `secure` listener,
/// else 80). The Origin's default port follows its scheme: http and ws 80, https and wss 443;
/// another scheme, `null`, a path, user info or a malformed port is never the same origin.
///
/// This is what clients that are not a web page send: paho-mqtt (Python) says `Origin:
/// https://HOST:PORT` for the very host and port it connects to. It does not weaken the guard
/// against a foreign web page using the browser's client certificate: such a page can make its
/// Origin equal the Host only by pointing its own name at the gateway (DNS rebinding), and over
/// TLS, where a browser has certificates to offer, the gateway's certificate does not match that
/// name, so the browser never gets that far.
#[must_use]
pub fn same_origin(origin: &str, host: &str, secure: bool) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false;
    };
    let origin_default = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => 80,
        "https" | "wss" => 443,
        _ => return false,
    };
    let host_default = if secure { 443 } else { 80 };
    match (
        host_and_port(authority, origin_default),
        host_and_port(host, host_default),
    ) {
        (Some((a, a_port)), Some((b, b_port))) => a.eq_ignore_ascii_case(b) && a_port == b_port,
        _ => false,
    }
}

/// `host[:port]` or `[v6]:port` split, with `default` for a missing port; `None` when malformed.
fn host_and_port(authority: &str, default: u16) -> Option<(&str, u16)> {
    if authority.is_empty() || authority.contains(['/', '@', '?', '#', ' ']) {
        return None;
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        match after {
            "" => (v6, None),
            p => (v6, Some(p.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => default,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
        Some(_) => return None,
    };
    (!host.is_empty()).then_some((host, port))
}

/// Why an upgrade was refused; the audit `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsRefusal {
    /// Another path.
    Path,
    /// A browser Origin not in the allow-list.
    Origin,
    /// No `mqtt` subprotocol offered.
    Subprotocol,
    /// Not a valid WebSocket upgrade (or the connection failed during it).
    Handshake,
}

impl WsRefusal {
    /// The audit reason.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Path => "websocket_path",
            Self::Origin => "websocket_origin",
            Self::Subprotocol => "websocket_subprotocol",
            Self::Handshake => "websocket_handshake",
        }
    }
}

impl WsRefusal {
    /// The HTTP answer to a refused upgrade.
    fn answer(self) -> ErrorResponse {
        let (status, text) = match self {
            Self::Path => (StatusCode::NOT_FOUND, "no MQTT endpoint here"),
            Self::Origin => (StatusCode::FORBIDDEN, "origin not allowed"),
            Self::Subprotocol | Self::Handshake => {
                (StatusCode::BAD_REQUEST, "the mqtt subprotocol is required")
            }
        };
        let mut r = ErrorResponse::new(Some(text.to_owned()));
        *r.status_mut() = status;
        r
    }
}

/// Checks an upgrade request against `settings`; on success the response carries the chosen
/// subprotocol.
///
/// # Errors
/// Why it is refused.
pub fn check_request(
    settings: &WsSettings,
    request: &Request,
    mut response: Response,
) -> Result<Response, WsRefusal> {
    if request.uri().path() != settings.path {
        return Err(WsRefusal::Path);
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let allowed = origin.to_str().is_ok_and(|o| {
            settings.origins.iter().any(|a| a == o)
                || host.is_some_and(|h| same_origin(o, h, settings.secure))
        });
        if !allowed {
            return Err(WsRefusal::Origin);
        }
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(str::trim))
        .collect();
    let Some(chosen) = SUBPROTOCOLS.iter().find(|p| offered.contains(p)) else {
        return Err(WsRefusal::Subprotocol);
    };
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(chosen),
    );
    Ok(response)
}

/// Performs the WebSocket upgrade on an accepted (and, for `wss`, TLS-terminated) connection.
///
/// # Errors
/// Why it was refused (the HTTP answer has been sent when there was one to send).
pub async fn accept(
    stream: ClientStream,
    settings: &WsSettings,
    max_packet_size: usize,
) -> Result<WsStream, WsRefusal> {
    let limit = max_packet_size.saturating_add(FRAMING_SLACK);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(limit.saturating_mul(2))
        .max_message_size(Some(limit))
        .max_frame_size(Some(limit));
    let mut refused = None;
    // The signature is tungstenite's `Callback`; its error type is an HTTP response.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        check_request(settings, request, response).map_err(|why| {
            refused = Some(why);
            why.answer()
        })
    };
    match tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await {
        Ok(ws) => Ok(WsStream {
            inner: ws,
            chunk: Bytes::new(),
            ended: false,
        }),
        Err(_) => Err(refused.unwrap_or(WsRefusal::Handshake)),
    }
}

/// A WebSocket connection read and written as a byte stream of MQTT packets.
#[derive(Debug)]
pub struct WsStream {
    inner: WebSocketStream<ClientStream>,
    /// The rest of the last binary message not yet read.
    chunk: Bytes,
    /// The peer closed (a Close message or the end of the stream).
    ended: bool,
}

impl WsStream {
    /// The connection under the WebSocket layer.
    #[must_use]
    pub fn get_ref(&self) -> &ClientStream {
        self.inner.get_ref()
    }
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl WsStream {
    /// Takes messages until one carries bytes or the stream ends: ready to be read, see
    /// [`crate::transport::io::ReadReady`].
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.chunk.is_empty() && !self.ended {
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => self.ended = true,
                Some(Ok(Message::Binary(data))) => self.chunk = data,
                // Pings are answered by tungstenite itself; pongs and raw frames carry nothing.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text WebSocket message ([MQTT-6.0.0-1]: binary only)",
                    )));
                }
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for WsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_read_ready(cx))?;
        fill(&mut this.chunk, buf);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut inner = Pin::new(&mut self.get_mut().inner);
        ready!(inner.as_mut().poll_ready(cx)).map_err(to_io)?;
        inner
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(to_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_flush(cx)
            .map_err(to_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_close(cx)
            .map_err(to_io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str, origin: Option<&str>, protocols: Option<&str>) -> Request {
        let mut r = Request::builder().uri(path);
        if let Some(o) = origin {
            r = r.header(header::ORIGIN, o);
        }
        if let Some(p) = protocols {
            r = r.header(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        r.body(()).unwrap()
    }

    #[test]
    fn upgrade_checks_path_origin_and_subprotocol() {
        let s = WsSettings {
            path: "/mqtt".into(),
            origins: vec!["https://dash.example".into()],
            secure: false,
        };
        let check = |r: &Request| check_request(&s, r, Response::new(()));
        let ok = check(&request("/mqtt", None, Some("mqtt"))).unwrap();
        assert_eq!(ok.headers()[header::SEC_WEBSOCKET_PROTOCOL], "mqtt");
        let ok = check(&request(
            "/mqtt",
            Some("https://dash.example"),
            Some("foo, mqttv3.1"),
        ))
        .unwrap();
        assert_eq!(ok.headers()[header::SEC_WEBSOCKET_PROTOCOL], "mqttv3.1");
        assert_eq!(
            check(&request("/other", None, Some("mqtt"))).unwrap_err(),
            WsRefusal::Path
        );
        assert_eq!(
            check(&request(
                "/mqtt",
                Some("https://evil.example"),
                Some("mqtt")
            ))
            .unwrap_err(),
            WsRefusal::Origin
        );
        assert_eq!(
            check(&request("/mqtt", None, None)).unwrap_err(),
            WsRefusal::Subprotocol
        );
        assert_eq!(
            check(&request("/mqtt", None, Some("chat"))).unwrap_err(),
            WsRefusal::Subprotocol
        );
    }

    fn request_to(host: &str, origin: &str) -> Request {
        Request::builder()
            .uri("/mqtt")
            .header(header::HOST, host)
            .header(header::ORIGIN, origin)
            .header(header::SEC_WEBSOCKET_PROTOCOL, "mqtt")
            .body(())
            .unwrap()
    }

    /// Issue 20, item 17: paho-mqtt's `Origin: https://HOST:PORT` for its own host and port is
    /// let through; a foreign Origin is still refused, on a listener with or without a list.
    #[test]
    fn an_origin_naming_the_request_host_and_port_is_let_through() {
        for secure in [false, true] {
            for origins in [vec![], vec!["https://dash.example".to_owned()]] {
                let s = WsSettings {
                    path: "/mqtt".into(),
                    origins,
                    secure,
                };
                let check = |host: &str, origin: &str| {
                    check_request(&s, &request_to(host, origin), Response::new(())).map(|_| ())
                };
                assert_eq!(check("gw.example:8080", "https://gw.example:8080"), Ok(()));
                assert_eq!(
                    check("gw.example:8080", "https://evil.example:8080"),
                    Err(WsRefusal::Origin)
                );
                assert_eq!(
                    check("gw.example:8080", "https://gw.example:8081"),
                    Err(WsRefusal::Origin)
                );
            }
        }
        // Without a Host header only the list counts.
        let s = WsSettings {
            path: "/mqtt".into(),
            origins: vec![],
            secure: false,
        };
        let r = Request::builder()
            .uri("/mqtt")
            .header(header::ORIGIN, "http://gw.example")
            .header(header::SEC_WEBSOCKET_PROTOCOL, "mqtt")
            .body(())
            .unwrap();
        assert_eq!(
            check_request(&s, &r, Response::new(())).map(|_| ()),
            Err(WsRefusal::Origin)
        );
    }

    #[test]
    fn same_origin_compares_host_and_port_with_default_ports() {
        for (origin, host, secure, same) in [
            ("https://gw.example:8443", "gw.example:8443", true, true),
            ("https://gw.example:8443", "gw.example:8443", false, true),
            ("http://gw.example:8080", "gw.example:8080", false, true),
            ("HTTPS://GW.example:443", "gw.EXAMPLE", true, true),
            ("https://gw.example", "gw.example:443", false, true),
            ("https://gw.example", "gw.example", true, true),
            ("http://gw.example", "gw.example", false, true),
            ("wss://gw.example", "gw.example", true, true),
            ("ws://gw.example", "gw.example:80", true, true),
            // The listener's default port: ws 80, wss 443.
            ("https://gw.example", "gw.example", false, false),
            ("http://gw.example", "gw.example", true, false),
            ("https://[::1]:8443", "[::1]:8443", true, true),
            ("https://[::1]:8443", "[::1]:8444", true, false),
            ("https://[::1]", "[::1]", true, true),
            ("https://127.0.0.1:1883", "127.0.0.1:1883", false, true),
            ("https://127.0.0.1:1883", "127.0.0.2:1883", false, false),
            ("https://evil.example:8443", "gw.example:8443", true, false),
            (
                "https://gw.example.evil:8443",
                "gw.example:8443",
                true,
                false,
            ),
            // Not an origin this rule knows: refused.
            ("null", "gw.example", true, false),
            ("file://gw.example", "gw.example", true, false),
            ("https://user@gw.example", "gw.example", true, false),
            ("https://gw.example/path", "gw.example", true, false),
            ("https://gw.example:", "gw.example:443", true, false),
            ("https://gw.example:+443", "gw.example:443", true, false),
            ("https://gw.example:99999", "gw.example:99999", true, false),
            ("https://:443", ":443", true, false),
            ("https://[::1", "[::1", true, false),
            ("https://gw.example", "", true, false),
        ] {
            assert_eq!(
                same_origin(origin, host, secure),
                same,
                "{origin} {host} secure={secure}"
            );
        }
    }
}
