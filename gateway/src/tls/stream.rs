//! The server side of one TLS connection on rustls' unbuffered API, with buffers that are
//! released when the connection is idle.
//!
//! Why not tokio-rustls: its buffered `ServerConnection` keeps a 4 KiB record buffer for the whole
//! life of the connection (`prepare_read` never shrinks it below 4,096 bytes), which was a quarter
//! of the memory of an idle mTLS connection (BENCHMARKS.md, issue 8). Here the stream owns its
//! buffers:
//! - `incoming` holds ciphertext not yet processed; it is reserved only once the socket is
//!   readable, and released when the socket has nothing more and every byte has been processed;
//! - `outgoing` holds records to send; it is released once they are sent;
//! - `plain` holds decrypted bytes that the reader has not taken yet (a reader with a small
//!   buffer, or a record that arrived while the writer needed rustls' write state).
//!
//! So an idle connection holds no buffer at all. Limits: `incoming` never exceeds
//! [`MAX_INCOMING`] (a handshake message may be up to 64 KiB, joined from several records;
//! application records up to 16 KiB plus overhead); `outgoing` accepts new plaintext only while
//! less than [`MAX_UNSENT`] bytes wait to be sent (backpressure to the writer).
//!
//! A fatal TLS error is answered with rustls' alert (sent without waiting) and returned as an
//! `io::Error` carrying the `rustls::Error`, as tokio-rustls does, so [`super::classify`] reads it.

use std::fmt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, BytesMut};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use rustls::{CommonState, ServerConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The largest `incoming` may grow: a 64 KiB handshake message joined from records, plus one
/// more record of 16 KiB and its overhead.
pub const MAX_INCOMING: usize = 0xffff + 16 * 1024 + 2048 + 5;
/// Bytes reserved for one socket read (more when a longer record is known to be on its way).
const READ_CHUNK: usize = 4096;
/// The writer waits while this many encrypted bytes are still unsent.
pub const MAX_UNSENT: usize = 64 * 1024;
/// Plaintext encrypted per `poll_write` (rustls cuts it into records of at most 16 KiB).
const WRITE_CHUNK: usize = 4 * 16 * 1024;
/// A TLS record header: type, version, length.
const HEADER: usize = 5;

/// What the caller of [`TlsStream::drive`] wants rustls to get to.
enum Want<'a> {
    /// Decrypt what is there; stop when more bytes are needed.
    Read,
    /// Encrypt these bytes (or a first part of them) into `outgoing`.
    Write(&'a [u8]),
    /// Queue a `close_notify` alert into `outgoing`.
    CloseNotify,
}

/// Where [`TlsStream::drive`] stopped.
enum Stop {
    /// rustls needs more bytes from the peer.
    NeedInput,
    /// `n` bytes of plaintext were encrypted (or the close_notify queued: `n` = 0).
    Wrote(usize),
    /// Both sides sent close_notify.
    Closed,
}

/// A server-side TLS stream over TCP.
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    incoming: Vec<u8>,
    outgoing: Vec<u8>,
    sent: usize,
    plain: BytesMut,
    /// The peer sent close_notify.
    peer_closed: bool,
    /// The socket reached end of file.
    tcp_eof: bool,
    close_sent: bool,
    /// A fatal error: every later call returns it.
    failed: Option<rustls::Error>,
    /// The reader waiting for bytes: woken when the writer decrypts a record for it.
    read_waker: Option<Waker>,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("tcp", &self.tcp)
            .field("incoming", &self.incoming.len())
            .field("unsent", &(self.outgoing.len() - self.sent))
            .field("plain", &self.plain.len())
            .finish_non_exhaustive()
    }
}

/// The part of `out` from `start` on (empty if `start` is past the end).
fn tail(out: &mut [u8], start: usize) -> &mut [u8] {
    out.get_mut(start..).unwrap_or_default()
}

/// Why [`TlsStream::drive`] stopped short.
enum Failure {
    /// A TLS error: the stream is failed and the peer gets rustls' alert.
    Tls(rustls::Error),
    /// Anything else (encoding into our own buffer).
    Io(io::Error),
}

/// Why a write into the room [`append`] gave did not happen.
enum Room {
    /// It needs this many bytes.
    Needs(usize),
    Failed(String),
}

fn encrypt_room(e: EncryptError) -> Room {
    match e {
        EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
            Room::Needs(required_size)
        }
        other => Room::Failed(other.to_string()),
    }
}

/// Appends to `out` what `write` puts into the room it is given: `room` bytes first, then as
/// many as `write` says it needs.
fn append(
    out: &mut Vec<u8>,
    mut room: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Room>,
) -> io::Result<()> {
    let start = out.len();
    loop {
        out.resize(start + room, 0);
        match write(tail(out, start)) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Room::Needs(needed)) if needed > room => room = needed,
            Err(Room::Needs(needed)) => {
                out.truncate(start);
                return Err(io::Error::other(format!(
                    "rustls asked for {needed} bytes of room and had {room}"
                )));
            }
            Err(Room::Failed(why)) => {
                out.truncate(start);
                return Err(io::Error::other(why));
            }
        }
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsStream {
    /// Runs the server handshake on `tcp` until it is complete (the client's certificate, when
    /// asked for, verified by `config`'s verifier) and our last flight is sent.
    ///
    /// # Errors
    /// A TLS error (carrying the `rustls::Error`, after the alert was sent), a socket error, or
    /// `UnexpectedEof` when the peer closed mid-handshake.
    pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        Self::accept_with(tcp, config).await
    }

    /// [`TlsStream::accept`] with the listener's config for this client's cipher preference:
    /// the first bytes are peeked (left in the socket for rustls) once they arrive, and the
    /// ClientHello's first AEAD picks the config ([`super::ServerTls::for_client_hello`]). A
    /// ClientHello cut before its suites, or anything else, gets the default config.
    ///
    /// # Errors
    /// As [`TlsStream::accept`].
    pub async fn accept_choosing(tcp: TcpStream, tls: &super::ServerTls) -> io::Result<Self> {
        // The suites come within the first ~50 bytes plus the list (a browser's is ~40 suites).
        let mut head = [0u8; 512];
        let n = tcp.peek(&mut head).await?;
        let config = tls.for_client_hello(head.get(..n).unwrap_or_default());
        Self::accept_with(tcp, config).await
    }

    async fn accept_with(tcp: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
        let mut stream = Self {
            tcp,
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            sent: 0,
            plain: BytesMut::new(),
            peer_closed: false,
            tcp_eof: false,
            close_sent: false,
            failed: None,
            read_waker: None,
        };
        poll_fn(|cx| stream.poll_handshake(cx)).await?;
        Ok(stream)
    }

    /// rustls' view of the connection: protocol version, peer certificates, resumption.
    #[must_use]
    pub fn common(&self) -> &CommonState {
        &self.conn
    }

    /// The capacity of the buffers the stream holds now (0 for an idle connection).
    #[must_use]
    pub fn held_bytes(&self) -> usize {
        self.incoming.capacity() + self.outgoing.capacity() + self.plain.capacity()
    }

    /// Ready when a read can make progress: decrypted bytes waiting, the end of the stream or an
    /// error to report, or a readable socket. Lets a reader wait without holding a buffer (see
    /// `transport::io::ReadReady`). Waiting on the socket cannot strand a record: every fill of
    /// `incoming` is followed by a `drive` that processes all it can.
    pub fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.plain.is_empty() || self.peer_closed || self.tcp_eof || self.failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        if self.tcp.poll_read_ready(cx)?.is_pending() {
            if self.incoming.is_empty() {
                self.incoming = Vec::new();
            }
            self.remember_reader(cx);
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    /// Keeps the waiting reader's waker, for the writer to wake when it decrypts a record.
    fn remember_reader(&mut self, cx: &Context<'_>) {
        if !self
            .read_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            self.read_waker = Some(cx.waker().clone());
        }
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let stop = self.drive(Want::Read, None)?;
            if !self.conn.is_handshaking() {
                return self.poll_send(cx);
            }
            if matches!(stop, Stop::Closed) || self.peer_closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            ready!(self.poll_send(cx))?;
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection during the TLS handshake",
                )));
            }
        }
    }

    /// Lets rustls process `incoming` until it needs more input, or until it can encrypt
    /// (`Want::Write`, `Want::CloseNotify`). Handshake and alert records go to `outgoing`,
    /// application data to `sink` (a reader's buffer, when `plain` is empty) as far as it has
    /// room, the rest to `plain`. The bytes rustls is done with are removed once, on the way out
    /// (each call is handed the buffer past them, as if they had been removed), so a read full
    /// of small records costs no more than one with a few large ones.
    fn drive(&mut self, want: Want<'_>, mut sink: Option<&mut ReadBuf<'_>>) -> io::Result<Stop> {
        if let Some(e) = &self.failed {
            return Err(tls_error(e.clone()));
        }
        let mut consumed = 0;
        let result = 'drive: loop {
            let status = self
                .conn
                .process_tls_records(tail(&mut self.incoming, consumed));
            consumed += status.discard;
            match status.state {
                Err(e) => break Err(Failure::Tls(e)),
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(record) = records.next_record() {
                        let payload = match record {
                            Ok(record) => record.payload,
                            Err(e) => break 'drive Err(Failure::Tls(e)),
                        };
                        let direct = match sink.as_deref_mut() {
                            Some(buf) if self.plain.is_empty() => {
                                let n = buf.remaining().min(payload.len());
                                buf.put_slice(payload.get(..n).unwrap_or_default());
                                n
                            }
                            _ => 0,
                        };
                        self.plain
                            .extend_from_slice(payload.get(direct..).unwrap_or_default());
                    }
                }
                Ok(ConnectionState::EncodeTlsData(mut encoder)) => {
                    if let Err(e) = append(&mut self.outgoing, 1024, |room| {
                        encoder.encode(room).map_err(|e| match e {
                            EncodeError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            }) => Room::Needs(required_size),
                            other => Room::Failed(other.to_string()),
                        })
                    }) {
                        break Err(Failure::Io(e));
                    }
                }
                // The records are queued in `outgoing` in order; they are sent before we wait
                // for input (handshake) or by the writer's flush.
                Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
                Ok(ConnectionState::BlockedHandshake) => break Ok(Stop::NeedInput),
                Ok(ConnectionState::PeerClosed) => self.peer_closed = true,
                Ok(ConnectionState::Closed) => break Ok(Stop::Closed),
                Ok(ConnectionState::WriteTraffic(mut writer)) => match want {
                    Want::Read => break Ok(Stop::NeedInput),
                    Want::Write(data) => {
                        let data = data.get(..WRITE_CHUNK).unwrap_or(data);
                        // Each record adds a header, the content type, the AEAD tag (and for
                        // TLS 1.2 an explicit nonce): 64 bytes is more than enough.
                        let room = data.len() + (data.len() / (16 * 1024) + 1) * 64;
                        break append(&mut self.outgoing, room, |room| {
                            writer.encrypt(data, room).map_err(encrypt_room)
                        })
                        .map(|()| Stop::Wrote(data.len()))
                        .map_err(Failure::Io);
                    }
                    Want::CloseNotify => {
                        let queued = append(&mut self.outgoing, 64, |room| {
                            writer.queue_close_notify(room).map_err(encrypt_room)
                        });
                        self.close_sent |= queued.is_ok();
                        break queued.map(|()| Stop::Wrote(0)).map_err(Failure::Io);
                    }
                },
                // Early data: 0-RTT is never enabled on our listeners (`max_early_data_size` is
                // 0); and any state a later rustls adds.
                Ok(_) => {
                    break Err(Failure::Tls(rustls::Error::General(
                        "unexpected TLS state".into(),
                    )));
                }
            }
        };
        self.incoming.drain(..consumed.min(self.incoming.len()));
        match result {
            Ok(stop) => Ok(stop),
            Err(Failure::Io(e)) => Err(e),
            Err(Failure::Tls(e)) => {
                self.fail(e.clone());
                Err(tls_error(e))
            }
        }
    }

    /// Records the error, queues rustls' alert and tries once to send it.
    fn fail(&mut self, e: rustls::Error) {
        self.failed = Some(e);
        // After an error, the next call hands out the alert rustls queued. Exactly one call: when
        // nothing is queued, rustls reads the input again, and a second call after a framing
        // error would queue a second fatal alert (which rustls asserts never happens). The
        // buffer passed is `incoming` itself: rustls' handshake joiner keeps offsets into it.
        let status = self.conn.process_tls_records(&mut self.incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut encoder)) = status.state {
            let _ = append(&mut self.outgoing, 64, |room| {
                encoder
                    .encode(room)
                    .map_err(|e| Room::Failed(e.to_string()))
            });
        }
        if let Some(unsent) = self.outgoing.get(self.sent..) {
            let _ = self.tcp.try_write(unsent);
        }
        self.outgoing = Vec::new();
        self.sent = 0;
    }

    /// Sends `outgoing`; releases it when all of it is sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(unsent) = self.outgoing.get(self.sent..).filter(|u| !u.is_empty()) {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, unsent))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Sends what the socket takes now of `outgoing`, without waiting or registering a waker.
    fn try_send(&mut self) -> io::Result<()> {
        while let Some(unsent) = self.outgoing.get(self.sent..).filter(|u| !u.is_empty()) {
            match self.tcp.try_write(unsent) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Ok(())
    }

    /// Reads from the socket into `incoming`, reserving room only once the socket is readable.
    /// Ready(0): end of file.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.tcp_eof {
            return Poll::Ready(Ok(0));
        }
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS message larger than the receive limit",
            )));
        }
        loop {
            if self.tcp.poll_read_ready(cx)?.is_pending() {
                if self.incoming.is_empty() {
                    self.incoming = Vec::new();
                }
                return Poll::Pending;
            }
            let want = match self.incoming.get(3..HEADER) {
                Some(&[hi, lo]) => {
                    (HEADER + usize::from(u16::from_be_bytes([hi, lo]))).max(READ_CHUNK)
                }
                _ => READ_CHUNK,
            };
            let room = want
                .saturating_sub(self.incoming.len())
                .max(READ_CHUNK)
                .min(MAX_INCOMING - self.incoming.len());
            self.incoming.reserve(room);
            // Through the socket's own `poll_read` rather than `try_read`: a read that returns
            // less than it had room for empties the socket, and tokio then forgets the readiness,
            // so the next read waits for epoll instead of costing a syscall that says EAGAIN (one
            // per message for a device that publishes one at a time).
            let read = std::pin::pin!(self.tcp.read_buf(&mut self.incoming)).poll(cx);
            match read {
                Poll::Ready(Ok(0)) => {
                    self.tcp_eof = true;
                    return Poll::Ready(Ok(0));
                }
                Poll::Ready(Ok(n)) => return Poll::Ready(Ok(n)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
    }
}

/// Moves as much of `src` as `buf` has room for into `buf` (a reader's already-decoded bytes
/// handed out by `poll_read`).
pub(crate) fn fill(src: &mut impl Buf, buf: &mut ReadBuf<'_>) {
    let n = src.remaining().min(buf.remaining());
    buf.put_slice(src.chunk().get(..n).unwrap_or_default());
    src.advance(n);
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plain.is_empty() {
                fill(&mut this.plain, buf);
                if this.plain.is_empty() {
                    this.plain = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if this.tcp_eof {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed the connection without sending TLS close_notify",
                )));
            }
            let before = buf.filled().len();
            let stop = this.drive(Want::Read, Some(buf))?;
            if buf.filled().len() > before {
                return Poll::Ready(Ok(()));
            }
            if matches!(stop, Stop::Closed) {
                return Poll::Ready(Ok(()));
            }
            if !this.plain.is_empty() || this.peer_closed {
                continue;
            }
            // Replies rustls queued while reading (a TLS 1.3 KeyUpdate, say) go out now if the
            // socket takes them; the writer's flush finishes them if not. Without registering
            // for writability: that slot belongs to the writer (after a split, possibly another
            // task), whose wake-up must not be taken over by the reader.
            this.try_send()?;
            match this.poll_fill(cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    this.remember_reader(cx);
                    return Poll::Pending;
                }
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.outgoing.len() - this.sent >= MAX_UNSENT {
            ready!(this.poll_send(cx))?;
        }
        let stop = this.drive(Want::Write(data), None);
        if !this.plain.is_empty()
            && let Some(w) = this.read_waker.take()
        {
            w.wake();
        }
        let n = match stop? {
            Stop::Wrote(n) => n,
            Stop::NeedInput => {
                return Poll::Ready(Err(io::Error::other(
                    "TLS stream not ready for application data",
                )));
            }
            Stop::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        };
        // Send now if the socket takes it; the flush finishes the rest.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent && this.failed.is_none() {
            match this.drive(Want::CloseNotify, None) {
                Ok(_) => this.close_sent = true,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[path = "stream_tests.rs"]
mod tests;
