//! The frame pump of one direction: read, frame (within `max_packet_size`), inspect, and forward
//! the original bytes, a rewrite, or a reply to the sender.
//!
//! Forwarded frames are written straight from the read buffer, in runs: all the consecutive frames
//! of one read that are forwarded unchanged go out in one write (so one TLS record and one syscall
//! carry many small PUBLISH). A frame that is not forwarded unchanged ends the run. Nothing is
//! written before the frame has been decoded and judged; an oversized frame is refused from its
//! fixed header, before its body is buffered.
//!
//! Each side's writer is shared by the two pumps behind a per-connection async mutex (the pump
//! that forwards to it and the pump that replies through it); a pump never holds two writers.
//! The read buffer starts empty. A read is attempted into it only when data is ready; when none
//! is and the buffer is empty, the connection is idle: the buffer is released and the pump waits
//! for the reader to be ready ([`ReadReady`]), then reserves the buffer and takes what arrived
//! in one read. So an idle connection holds no read buffer, a busy one keeps its buffer from read
//! to read (no allocation per message at a steady rate), and a wake-up costs one read, not a
//! small read followed by the rest. Packet counters are added up per read, not per packet.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use mqtt_inspect::{DecodeError, Direction, Peek, peek_frame};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout};

use super::inspect::{Denial, Inspected, Verdict};
use crate::close::CloseReason;
use crate::metrics::{PacketBatch, PacketCounters};
use crate::transport::io::ReadReady;

/// Read buffers larger than this are released as soon as they are empty.
const KEEP_BUFFER: usize = 16 * 1024;
/// The smallest read into the buffer (a busy connection's buffer is at least this large).
const MIN_READ_CHUNK: usize = 4096;
/// Grow reads up to this size while a peer keeps the buffer full.
const MAX_READ_CHUNK: usize = 64 * 1024;

/// One side's writer, shared by both pumps.
#[derive(Debug)]
pub struct Out<W> {
    io: W,
    /// True while a write is under way: if the pump is cancelled then, the stream holds a
    /// partial frame and nothing more may be written to it.
    dirty: bool,
}

impl<W: AsyncWrite + Unpin> Out<W> {
    /// Wraps a writer.
    pub const fn new(io: W) -> Self {
        Self { io, dirty: false }
    }

    /// Whether a write was cut off half-way.
    pub const fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The writer itself.
    pub fn io_mut(&mut self) -> &mut W {
        &mut self.io
    }
}

/// Writes `bytes` and flushes, within `limit`.
///
/// # Errors
/// The write failed or did not finish in time.
pub async fn send<W: AsyncWrite + Unpin>(
    out: &Mutex<Out<W>>,
    bytes: &[u8],
    limit: Duration,
) -> io::Result<()> {
    let mut g = out.lock().await;
    g.dirty = true;
    let r = timeout(limit, async {
        g.io.write_all(bytes).await?;
        g.io.flush().await
    })
    .await;
    match r {
        Ok(Ok(())) => {
            g.dirty = false;
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

/// What a pump needs besides its streams.
pub struct PumpSettings<'a> {
    /// Which direction this pump carries.
    pub direction: Direction,
    /// Largest frame accepted.
    pub max_packet_size: u32,
    /// Time allowed between two complete packets (client side: 1.5 × keep-alive); `None`: no limit.
    pub idle_limit: Option<Duration>,
    /// Time allowed for one write.
    pub write_limit: Duration,
    /// Per-packet counters of this direction.
    pub counters: &'a PacketCounters,
    /// The per-client message and byte limits (client to broker only).
    pub throttle: Option<&'a mut crate::limits::ClientThrottle>,
    /// Acknowledgements the client owes for QoS 1/2 messages delivered to it (broker to client:
    /// added; client to broker: such an acknowledgement is not charged to the client's message
    /// rate, every other packet is). Shared by the two pumps of a session.
    pub ack_credit: &'a AtomicU32,
    /// Where packets read prove the broker alive (broker to client only): `/readyz` counts them
    /// and the prober stays away from a broker its sessions hear from.
    pub broker_seen: Option<&'a crate::shared::BrokerSeen>,
}

/// At most this many acknowledgements are owed at once (a QoS 2 delivery owes two, PUBREC and
/// PUBCOMP, and MQTT 5's Receive Maximum bounds the messages in flight to 65,535).
pub const MAX_ACK_CREDIT: u32 = 2 * 65_535;

/// The acknowledgements the client will owe for `frame`, a PUBLISH delivered to it.
fn owed_for(frame: &[u8]) -> u32 {
    match frame.first().map(|b| (b >> 1) & 0x03) {
        Some(1) => 1,
        Some(2) => 2,
        _ => 0,
    }
}

/// Adds `n` owed acknowledgements, up to [`MAX_ACK_CREDIT`].
fn owe(credit: &AtomicU32, n: u32) {
    if n > 0 {
        let _ = credit.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| {
            Some(c.saturating_add(n).min(MAX_ACK_CREDIT))
        });
    }
}

/// Takes one owed acknowledgement, if any is owed.
fn settle(credit: &AtomicU32) -> bool {
    credit
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1))
        .is_ok()
}

/// Runs one direction until the connection must close, and says why.
///
/// `inspect` judges one complete frame; `on_denials` is called with the policy refusals of each
/// frame (for metrics and the audit log).
#[allow(clippy::manual_async_fn)] // deliberate: see the first comment in the body
pub fn pump<R, F, B, I, D>(
    mut settings: PumpSettings<'_>,
    reader: &mut R,
    forward: &Mutex<Out<F>>,
    back: &Mutex<Out<B>>,
    mut inspect: I,
    mut on_denials: D,
) -> impl Future<Output = CloseReason>
where
    R: ReadReady,
    F: AsyncWrite + Unpin,
    B: AsyncWrite + Unpin,
    I: FnMut(&[u8], &mut Vec<Denial>) -> Inspected,
    D: FnMut(&mut Vec<Denial>),
{
    // An async block rather than an async fn: the captures are used in place, where an async fn
    // keeps a second copy of every argument in the session's long-lived future.
    async move {
        let dir = settings.direction;
        let (fwd_err, back_err) = match dir {
            Direction::ClientToServer => (Direction::ServerToClient, Direction::ClientToServer),
            Direction::ServerToClient => (Direction::ClientToServer, Direction::ServerToClient),
        };
        let mut buf = BytesMut::new();
        let mut chunk = 0usize;
        let mut denials = Vec::new();
        let mut batch = PacketBatch::default();
        let mut deadline = settings.idle_limit.map(|d| Instant::now() + d);
        // One keep-alive timer for the session, armed at the first deadline and pushed forward only
        // when it fires (see `read_until`).
        let mut timer = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        loop {
            // Room for the next read: what the pending frame needs, or a chunk that adapts to the rate.
            let want = match peek_frame(&buf, settings.max_packet_size) {
                Ok(Peek::Incomplete { needed, .. }) => needed.max(chunk).max(MIN_READ_CHUNK),
                Ok(Peek::Complete(_)) => chunk.max(MIN_READ_CHUNK),
                Err(error) => {
                    settings.counters.malformed();
                    return CloseReason::Malformed {
                        direction: dir,
                        error,
                    };
                }
            };
            // An empty buffer is read into only when data is ready: when nothing is, the connection
            // is idle, and it waits without a read buffer (a few bytes on the stack), so that idle
            // connections hold none while a busy one keeps its buffer from read to read.
            let mut spare = 0;
            let mut ready = None;
            if buf.capacity() > 0 || !buf.is_empty() {
                if buf.capacity() - buf.len() < want {
                    buf.reserve(want);
                }
                spare = buf.capacity() - buf.len();
                ready = reader.read_buf(&mut buf).now_or_never();
                if ready.is_none() && buf.is_empty() {
                    buf = BytesMut::new();
                    chunk = 0;
                }
            }
            let result = match ready {
                Some(r) => r,
                None if buf.is_empty() => {
                    // Idle: wait for data without a buffer, then read all of it at once.
                    let ready =
                        std::future::poll_fn(|cx| reader.poll_read_ready(cx).map_ok(|()| 0));
                    let Some(r) = read_until(ready, &mut timer, deadline).await else {
                        return CloseReason::KeepAliveTimeout;
                    };
                    if r.is_err() {
                        r
                    } else {
                        buf.reserve(want);
                        spare = buf.capacity() - buf.len();
                        match reader.read_buf(&mut buf).now_or_never() {
                            Some(r) => r,
                            // Nothing after all (half a TLS record): wait again, without it.
                            None => {
                                buf = BytesMut::new();
                                continue;
                            }
                        }
                    }
                }
                None => {
                    // Inside a frame: wait for its rest with the buffer.
                    let read = reader.read_buf(&mut buf);
                    let Some(r) = read_until(read, &mut timer, deadline).await else {
                        return CloseReason::KeepAliveTimeout;
                    };
                    r
                }
            };
            let n = match result {
                Ok(0) => {
                    return if buf.is_empty() {
                        eof_reason(dir)
                    } else {
                        // EOF inside a frame: the peer sent a truncated packet.
                        settings.counters.malformed();
                        CloseReason::Malformed {
                            direction: dir,
                            error: DecodeError::UnexpectedEnd("connection closed inside a packet"),
                        }
                    };
                }
                Ok(n) => n,
                Err(_) => return CloseReason::Io(dir),
            };
            chunk = if n >= spare {
                (chunk.max(2048) * 2).min(MAX_READ_CHUNK)
            } else {
                chunk / 2
            };

            // Judge every complete frame; forward runs of unchanged frames in one write.
            let mut run_start = 0usize;
            let mut pos = 0usize;
            let mut saw_packet = false;
            // Packets charged to the client's message rate.
            let mut charged = 0u32;
            loop {
                let rest = buf.get(pos..).unwrap_or_default();
                let header = match peek_frame(rest, settings.max_packet_size) {
                    Ok(Peek::Complete(h)) => h,
                    Ok(Peek::Incomplete { .. }) => break,
                    Err(error) => {
                        settings.counters.malformed();
                        // Forward what was judged before the bad frame, then close.
                        let _ = flush(forward, &buf, run_start, pos, settings.write_limit).await;
                        return CloseReason::Malformed {
                            direction: dir,
                            error,
                        };
                    }
                };
                let end = pos + header.frame_len();
                let frame = buf.get(pos..end).unwrap_or_default();
                let inspected = inspect(frame, &mut denials);
                if !denials.is_empty() {
                    on_denials(&mut denials);
                    denials.clear();
                }
                match inspected.packet_type {
                    Some(t) => {
                        use mqtt_inspect::PacketType as T;
                        match dir {
                            // A delivered QoS 1/2 message: its acknowledgements are owed.
                            Direction::ServerToClient
                                if t == T::Publish
                                    && matches!(
                                        inspected.verdict,
                                        Verdict::Forward | Verdict::Replace(_)
                                    ) =>
                            {
                                owe(settings.ack_credit, owed_for(frame));
                            }
                            Direction::ClientToServer
                                if matches!(t, T::Puback | T::Pubrec | T::Pubcomp)
                                    && settle(settings.ack_credit) => {}
                            Direction::ClientToServer => charged = charged.saturating_add(1),
                            Direction::ServerToClient => {}
                        }
                        batch.add(t, frame.len());
                    }
                    None => settings.counters.malformed(),
                }
                saw_packet = true;
                match inspected.verdict {
                    Verdict::Forward => {}
                    other => {
                        if flush(forward, &buf, run_start, pos, settings.write_limit)
                            .await
                            .is_err()
                        {
                            return CloseReason::Io(fwd_err);
                        }
                        run_start = end;
                        match other {
                            Verdict::Replace(bytes) => {
                                if send(forward, &bytes, settings.write_limit).await.is_err() {
                                    return CloseReason::Io(fwd_err);
                                }
                            }
                            Verdict::Reply(bytes) => {
                                if send(back, &bytes, settings.write_limit).await.is_err() {
                                    return CloseReason::Io(back_err);
                                }
                            }
                            Verdict::Close(reason) => return reason,
                            // The session turns these into a reply or a close before they get
                            // here; one that did not is refused (fail closed).
                            Verdict::Reauthenticate(_) => {
                                return CloseReason::ReauthenticationFailed;
                            }
                            Verdict::Drop | Verdict::Forward => {}
                        }
                    }
                }
                pos = end;
            }
            settings.counters.add(&batch);
            batch = PacketBatch::default();
            if flush(forward, &buf, run_start, pos, settings.write_limit)
                .await
                .is_err()
            {
                return CloseReason::Io(fwd_err);
            }
            buf.advance(pos);
            // Over the client's rate: stop reading (TCP pushes back) until it conforms, or close if
            // it stays over for too long.
            if let Some(t) = settings.throttle.as_deref_mut() {
                let (mut m, mut b) = (charged, pos);
                loop {
                    match t.account(m, b, std::time::Instant::now()) {
                        crate::limits::Throttle::Go => break,
                        crate::limits::Throttle::Wait(d, limit, first) => {
                            if first {
                                metrics::counter!(crate::metrics::RATE_LIMITED_TOTAL, "limit" => limit.label().as_str()).increment(1);
                            }
                            tokio::time::sleep(d).await;
                            (m, b) = (0, 0);
                        }
                        crate::limits::Throttle::Close(limit) => {
                            metrics::counter!(crate::metrics::RATE_LIMITED_TOTAL, "limit" => limit.label().as_str()).increment(1);
                            return CloseReason::RateLimited(limit);
                        }
                    }
                }
            }
            if saw_packet && let Some(seen) = settings.broker_seen {
                seen.record();
            }
            if saw_packet && let Some(limit) = settings.idle_limit {
                deadline = Some(Instant::now() + limit);
            }
            if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
                // After a burst: let the large buffer go.
                buf = BytesMut::new();
            }
        }
    }
}

/// Awaits `read`, or `None` once `deadline` has passed without it completing.
///
/// The deadline moves with every packet, but the timer does not: it stays armed at an earlier
/// deadline and, when it fires, is pushed to the current one (or ends the wait if that has
/// passed). Arming a fresh timer for each read, as `timeout_at` does, took the runtime's timer
/// lock twice per packet — once to register, once to cancel — a lock shared by every session.
async fn read_until<F>(
    read: F,
    timer: &mut Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    deadline: Option<Instant>,
) -> Option<io::Result<usize>>
where
    F: std::future::Future<Output = io::Result<usize>>,
{
    let (Some(timer), Some(deadline)) = (timer.as_mut(), deadline) else {
        return Some(read.await);
    };
    let mut read = std::pin::pin!(read);
    loop {
        tokio::select! {
            biased;
            r = &mut read => return Some(r),
            () = timer.as_mut() => {
                if Instant::now() >= deadline {
                    return None;
                }
                timer.as_mut().reset(deadline);
            }
        }
    }
}

async fn flush<W: AsyncWrite + Unpin>(
    out: &Mutex<Out<W>>,
    buf: &BytesMut,
    start: usize,
    end: usize,
    limit: Duration,
) -> io::Result<()> {
    match buf.get(start..end) {
        Some(run) if !run.is_empty() => send(out, run, limit).await,
        _ => Ok(()),
    }
}

const fn eof_reason(dir: Direction) -> CloseReason {
    match dir {
        Direction::ClientToServer => CloseReason::ClientClosed,
        Direction::ServerToClient => CloseReason::BrokerClosed,
    }
}
