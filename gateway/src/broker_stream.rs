//! `BrokerStream`: the connection to the broker, TCP (`host:port`) or a Unix domain socket
//! (`unix:/path`), behind one type so that the session and the relay are written once; and its
//! two owned halves for the relay's two directions.
//!
//! A Unix socket is the recommended upstream when the broker runs on the gateway's host (the
//! deployment the gateway is designed for). It closes the local bypass a loopback listener
//! leaves open: any process on the host (or in a container sharing its network namespace) can
//! connect to `127.0.0.1:1883` and skip every check, while a socket file is reachable only by
//! the users its permissions name. It is also cheaper: a message relayed over it costs no TCP
//! segment, no ACK and no loopback softirq (see BENCHMARKS.md).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream, tcp, unix};

use crate::io::ReadReady;

/// The prefix of a broker address that names a Unix domain socket: `unix:/run/mosquitto/mqtt.sock`.
pub const UNIX_PREFIX: &str = "unix:";

/// The socket path of a `unix:/path` broker address, `None` for `host:port`.
#[must_use]
pub fn unix_path(address: &str) -> Option<&str> {
    address.strip_prefix(UNIX_PREFIX)
}

/// A connection to the broker.
#[derive(Debug)]
pub enum BrokerStream {
    /// `host:port`.
    Tcp(TcpStream),
    /// `unix:/path`.
    Unix(UnixStream),
}

impl BrokerStream {
    /// The reading and the writing half, each owned, so that the relay's two directions hold one
    /// each without a lock.
    #[must_use]
    pub fn into_split(self) -> (BrokerReader, BrokerWriter) {
        match self {
            Self::Tcp(s) => {
                let (r, w) = s.into_split();
                (BrokerReader::Tcp(r), BrokerWriter::Tcp(w))
            }
            Self::Unix(s) => {
                let (r, w) = s.into_split();
                (BrokerReader::Unix(r), BrokerWriter::Unix(w))
            }
        }
    }
}

/// The reading half of a [`BrokerStream`].
#[derive(Debug)]
pub enum BrokerReader {
    /// Over TCP.
    Tcp(tcp::OwnedReadHalf),
    /// Over a Unix socket.
    Unix(unix::OwnedReadHalf),
}

/// The writing half of a [`BrokerStream`].
#[derive(Debug)]
pub enum BrokerWriter {
    /// Over TCP.
    Tcp(tcp::OwnedWriteHalf),
    /// Over a Unix socket.
    Unix(unix::OwnedWriteHalf),
}

impl AsyncRead for BrokerReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            Self::Unix(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl ReadReady for BrokerReader {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Tcp(r) => r.as_ref().poll_read_ready(cx),
            Self::Unix(r) => r.as_ref().poll_read_ready(cx),
        }
    }
}

impl AsyncWrite for BrokerWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_write(cx, buf),
            Self::Unix(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_write_vectored(cx, bufs),
            Self::Unix(w) => Pin::new(w).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(w) => w.is_write_vectored(),
            Self::Unix(w) => w.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_flush(cx),
            Self::Unix(w) => Pin::new(w).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(w) => Pin::new(w).poll_shutdown(cx),
            Self::Unix(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}
