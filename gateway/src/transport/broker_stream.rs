//! `BrokerStream`: the connection to the broker, TCP (`host:port`) or a Unix domain socket
//! (`unix:/path`), behind one type so that the session and the relay are written once
//! (`tokio_util`'s `Either` forwards reads and writes to whichever transport it holds).
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
use tokio::net::{TcpStream, UnixStream};
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

impl BrokerStream {
    /// The transport it holds, as one type that reads and writes for either.
    fn either(&mut self) -> Either<&mut TcpStream, &mut UnixStream> {
        match self {
            Self::Tcp(s) => Either::Left(s),
            Self::Unix(s) => Either::Right(s),
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
        Pin::new(&mut self.get_mut().either()).poll_read(cx, buf)
    }
}

impl AsyncWrite for BrokerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().either()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().either()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().either()).poll_shutdown(cx)
    }
}
