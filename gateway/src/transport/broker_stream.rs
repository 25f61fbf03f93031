//! `BrokerStream`: the connection to the broker, TCP (`host:port`) or a Unix domain socket
//! (`unix:/path`), behind one type so that the session and the relay are written once; and its
//! two owned halves for the relay's two directions (`tokio_util`'s `Either` forwards reads and
//! writes to whichever transport it holds).
//!
//! A Unix socket suits a broker on the gateway's own host. It closes the local bypass a loopback
//! listener leaves open: any process on the host (or in a container sharing its network
//! namespace) can connect to `127.0.0.1:1883` and skip every check, while a socket file is
//! reachable only by the users its permissions name. It lowers latency (Mosquitto keeps Nagle's
//! algorithm on its TCP sockets) but costs more CPU per message when the broker delivers bursts,
//! which over TCP arrive coalesced (BENCHMARKS.md, 2026-12-06).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream, tcp, unix};
use tokio_util::either::Either;

use crate::transport::io::ReadReady;

/// A connection to the broker.
#[derive(Debug)]
pub enum BrokerStream {
    /// `host:port`.
    Tcp(TcpStream),
    /// `unix:/path`.
    Unix(UnixStream),
}

/// The reading half of a [`BrokerStream`]: TCP on the left, a Unix socket on the right.
pub type BrokerReader = Either<tcp::OwnedReadHalf, unix::OwnedReadHalf>;

/// The writing half of a [`BrokerStream`]: TCP on the left, a Unix socket on the right.
pub type BrokerWriter = Either<tcp::OwnedWriteHalf, unix::OwnedWriteHalf>;

impl BrokerStream {
    /// The reading and the writing half, each owned, so that the relay's two directions hold one
    /// each without a lock.
    #[must_use]
    pub fn into_split(self) -> (BrokerReader, BrokerWriter) {
        match self {
            Self::Tcp(s) => {
                let (r, w) = s.into_split();
                (Either::Left(r), Either::Left(w))
            }
            Self::Unix(s) => {
                let (r, w) = s.into_split();
                (Either::Right(r), Either::Right(w))
            }
        }
    }
}

impl ReadReady for BrokerStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Tcp(s) => s.poll_read_ready(cx),
            Self::Unix(s) => s.poll_read_ready(cx),
        }
    }
}

impl AsyncRead for BrokerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BrokerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl ReadReady for BrokerReader {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Either::Left(r) => r.as_ref().poll_read_ready(cx),
            Either::Right(r) => r.as_ref().poll_read_ready(cx),
        }
    }
}
