//! `ClientStream`: the client side of a connection, plain TCP, TLS or WebSocket (over either),
//! behind one type so that the session and the relay are written once; its two halves for the
//! relay's two directions; and [`ReadReady`], waiting for data without holding a buffer.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
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

/// Splits a client connection into the relay's reader and writer. `tokio::io::split` does the
/// same but hides the stream, and the reader could then not wait for readiness. The two halves
/// are polled by one task (the relay's), so the lock is never contended.
pub fn split(stream: ClientStream) -> (ClientReader, ClientWriter) {
    let shared = Arc::new(Mutex::new(stream));
    (ClientReader(Arc::clone(&shared)), ClientWriter(shared))
}

/// The reading half of a [`split`] client connection.
#[derive(Debug)]
pub struct ClientReader(Arc<Mutex<ClientStream>>);

/// The writing half of a [`split`] client connection.
#[derive(Debug)]
pub struct ClientWriter(Arc<Mutex<ClientStream>>);

/// A panic while the stream was locked leaves nothing half-changed that the other half relies
/// on (each call is one poll), so a poisoned lock is taken as it is.
fn lock(shared: &Mutex<ClientStream>) -> MutexGuard<'_, ClientStream> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

impl AsyncRead for ClientReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_read(cx, buf)
    }
}

impl ReadReady for ClientReader {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.0).poll_read_ready(cx)
    }
}

impl AsyncWrite for ClientWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        lock(&self.0).is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_shutdown(cx)
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

/// A reader that first yields bytes already read (those that followed the CONNECT).
///
/// The prefix is split from the connect phase's read buffer and shares its allocation: it is let
/// go as soon as it is empty, or that buffer would stay allocated for the whole session.
pub struct Prefixed<'a, R> {
    prefix: bytes::BytesMut,
    inner: &'a mut R,
}

impl<'a, R> Prefixed<'a, R> {
    pub fn new(prefix: bytes::BytesMut, inner: &'a mut R) -> Self {
        let prefix = if prefix.is_empty() {
            bytes::BytesMut::new()
        } else {
            prefix
        };
        Self { prefix, inner }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Prefixed<'_, R> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            let head = this.prefix.split_to(n);
            buf.put_slice(&head);
            if this.prefix.is_empty() {
                this.prefix = bytes::BytesMut::new();
            }
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut *this.inner).poll_read(cx, buf)
    }
}

impl<R: ReadReady> ReadReady for Prefixed<'_, R> {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            self.inner.poll_read_ready(cx)
        } else {
            Poll::Ready(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::Prefixed;

    /// The bytes that followed the CONNECT come first, then the stream's; the connect phase's
    /// buffer, which the prefix shares, is let go once they are read (or at once when there are
    /// none), not held for the session's life.
    #[tokio::test]
    async fn the_prefix_comes_first_and_its_buffer_is_let_go_once_read() {
        // As `read_first_frame` leaves it: the rest split from a larger read buffer.
        let mut read = BytesMut::with_capacity(256);
        read.extend_from_slice(b"CONNECTpub");
        let rest = read.split_off(7);
        drop(read);
        let (mut far, mut near) = tokio::io::duplex(64);
        far.write_all(b"-more").await.unwrap();
        drop(far);
        let mut reader = Prefixed::new(rest, &mut near);
        let mut head = [0u8; 3];
        reader.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"pub");
        assert_eq!(
            reader.prefix.capacity(),
            0,
            "the drained prefix still holds its buffer"
        );
        let mut tail = Vec::new();
        reader.read_to_end(&mut tail).await.unwrap();
        assert_eq!(tail, b"-more");

        let mut empty_rest = BytesMut::with_capacity(256);
        empty_rest.extend_from_slice(b"CONNECT");
        let none = empty_rest.split_off(7);
        let (_far, mut near) = tokio::io::duplex(64);
        let reader = Prefixed::new(none, &mut near);
        assert_eq!(
            reader.prefix.capacity(),
            0,
            "an empty prefix still holds its buffer"
        );
    }
}
