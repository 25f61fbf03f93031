//! `ClientStream`: the client side of a connection, plain TCP, TLS or WebSocket (over either),
//! behind one type so that the session and the relay are written once; and [`ReadReady`],
//! waiting for data without holding a buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::tls::TlsStream;

/// A client connection after accept (and after the TLS handshake, when the listener has TLS).
#[derive(Debug)]
pub enum ClientStream {
    /// A plain TCP listener.
    Plain(TcpStream),
    /// A TLS listener; boxed because a rustls connection is large next to a socket.
    Tls(Box<TlsStream>),
    /// A WebSocket listener, over either of the above.
    Ws(Box<crate::transport::websocket::WsStream>),
}

impl ClientStream {
    /// The negotiated TLS version ("TLSv1.3"), `None` on a plain listener.
    #[must_use]
    pub fn tls_version(&self) -> Option<&'static str> {
        match self {
            Self::Plain(_) => None,
            Self::Tls(s) => s.common().protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
                _ => "TLS",
            }),
            Self::Ws(s) => s.get_ref().tls_version(),
        }
    }
}

impl ClientStream {
    /// The client's certificate chain as the TLS connection holds it (leaf first); empty
    /// without TLS or without a certificate.
    #[must_use]
    pub fn peer_chain(&self) -> &[rustls_pki_types::CertificateDer<'static>] {
        match self {
            Self::Plain(_) => &[],
            Self::Tls(s) => s.common().peer_certificates().unwrap_or_default(),
            Self::Ws(s) => s.get_ref().peer_chain(),
        }
    }
}

/// A reader that can wait for data without its caller holding a buffer meanwhile, so that an
/// idle connection holds no read buffer and a busy one reads each wake-up's bytes with one read
/// (`session::relay`).
pub trait ReadReady: AsyncRead + Unpin {
    /// Ready when a read can make progress: bytes, the end of the stream or an error to report.
    /// Pending registers the waker. A read after Ready may still find nothing (half a TLS
    /// record); the next call is then Pending until more arrives.
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl ReadReady for TcpStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Self::poll_read_ready(self, cx)
    }
}

impl ReadReady for ClientStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Plain(s) => s.poll_read_ready(cx),
            Self::Tls(s) => s.poll_read_ready(cx),
            Self::Ws(s) => s.poll_read_ready(cx),
        }
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Self::Ws(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Self::Ws(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Self::Ws(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
            Self::Ws(_) => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Self::Ws(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Self::Ws(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
