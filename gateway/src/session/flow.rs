//! One direction of the relay ([`Flow`]) and its step: finish its writes, judge what it read,
//! settle the client's rate and keep-alive, or read. [`super::relay::Relay`] steps both flows of a
//! session; the rules of a step are in that module's documentation.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use mqtt_inspect::{DecodeError, Direction, Peek, peek_frame};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::time::Instant;

use super::inspect::Verdict;
use super::relay::{FlowSettings, Judge, Out};
use crate::close::CloseReason;
use crate::metrics::PacketBatch;
use crate::transport::io::ReadReady;

/// Read buffers larger than this are released as soon as they are empty.
const KEEP_BUFFER: usize = 16 * 1024;
/// The smallest read into the buffer (a busy connection's buffer is at least this large).
const MIN_READ_CHUNK: usize = 4096;
/// Grow reads up to this size while a peer keeps the buffer full.
const MAX_READ_CHUNK: usize = 64 * 1024;

/// At most this many acknowledgements are owed at once (a QoS 2 delivery owes two, PUBREC and
/// PUBCOMP, and MQTT 5's Receive Maximum bounds the messages in flight to 65,535).
pub(super) const MAX_ACK_CREDIT: u32 = 2 * 65_535;

/// Where a flow's owned bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum To {
    /// On, to the other side (a rewritten packet).
    Forward,
    /// Back to the sender (a reply).
    Back,
}

/// What a flow does once the run before a frame not forwarded unchanged is written.
#[derive(Debug, Default)]
enum Then {
    /// Go on judging, then reading.
    #[default]
    GoOn,
    /// Write these bytes (a rewrite or a reply), then go on.
    Write(To, Vec<u8>),
    /// End the session (if the run could not be written: for that).
    End(CloseReason),
    /// End the session for this, even if the run could not be written (a malformed frame).
    EndAnyway(CloseReason),
}

/// One direction of the relay.
#[derive(Debug, Default)]
pub(super) struct Flow {
    pub(super) buf: BytesMut,
    /// Adapts the size of reads to the rate.
    chunk: u32,
    /// `buf[run..run_end]`: frames forwarded unchanged, not written yet.
    run: usize,
    run_end: usize,
    /// `buf[..judged]` is judged.
    judged: usize,
    /// Bytes of the current write (the run, then `owned`) taken by the stream so far.
    written: usize,
    /// A write that did not finish at once: the time by which it must.
    pub(super) write_deadline: Option<Instant>,
    /// What comes after the run.
    then: Then,
    /// What the last read brought is not all judged yet.
    pub(super) judging: bool,
    /// Everything of the last read is judged and written: left to do, the rate account and the
    /// bookkeeping.
    settling: bool,
    /// Packets of the last read charged to the client's message rate.
    charged: u32,
    /// Bytes of the last read to charge to the client's rate (0 after a pause).
    charged_bytes: usize,
    /// The last read held at least one packet.
    saw_packet: bool,
    /// Waiting for more bytes (what the keep-alive deadline applies to).
    pub(super) reading: bool,
    /// The client's keep-alive deadline (client to broker only).
    pub(super) idle_deadline: Option<Instant>,
    /// Reading stops until then: the client is over its rate.
    pub(super) paused_until: Option<Instant>,
}

impl Flow {
    /// The client's flow, with `rest`, the bytes it sent after its CONNECT, to judge first, and
    /// its first keep-alive deadline. `rest` is copied: it shares the connect phase's read
    /// buffer, which would otherwise stay allocated for the session's life.
    pub(super) fn from_client(rest: &[u8], idle_deadline: Option<Instant>) -> Self {
        Self {
            judging: !rest.is_empty(),
            buf: if rest.is_empty() {
                BytesMut::new()
            } else {
                BytesMut::from(rest)
            },
            idle_deadline,
            ..Self::default()
        }
    }
}

/// Where a flow's step stopped.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// It did something; step again.
    Progress,
    /// It waits for its stream, the other flow, or the timer.
    Wait,
    /// The session must end.
    End(CloseReason),
}

/// The reason for `flow`'s write that did not finish in time.
pub(super) fn write_timeout(flow: &Flow, direction: Direction) -> CloseReason {
    // A run goes on; owned bytes go on or back. `WriteTimeout` names the direction of the bytes.
    let back = flow.run == flow.run_end && matches!(flow.then, Then::Write(To::Back, _));
    CloseReason::WriteTimeout(if back { flip(direction) } else { direction })
}

const fn flip(d: Direction) -> Direction {
    match d {
        Direction::ClientToServer => Direction::ServerToClient,
        Direction::ServerToClient => Direction::ClientToServer,
    }
}

/// The side whose stream failed, as [`CloseReason::Io`] names it: the client's
/// (`ClientToServer`) or the broker's (`ServerToClient`).
const fn io_side(direction: Direction, to: To) -> Direction {
    match to {
        To::Forward => flip(direction),
        To::Back => direction,
    }
}

/// One step of `flow`: finish its writes, judge, settle, or read.
pub(super) fn step<S, T>(
    flow: &mut Flow,
    (own, other): (&mut Out<S>, &mut Out<T>),
    settings: &FlowSettings<'_>,
    (throttle, ack_credit): (Option<&mut crate::limits::ClientThrottle>, &mut u32),
    judge: &mut impl Judge,
    cx: &mut Context<'_>,
) -> Step
where
    S: ReadReady + AsyncWrite,
    T: ReadReady + AsyncWrite,
{
    let dir = settings.direction;
    flow.reading = false;
    // The run of unchanged frames, on to the other side.
    if flow.run < flow.run_end {
        let run = flow.buf.get(flow.run..flow.run_end).unwrap_or_default();
        let progress = (&mut flow.written, &mut flow.write_deadline);
        match poll_write_all(other, dir, run, progress, settings.write_limit, cx) {
            Poll::Ready(Ok(())) => {
                flow.run = flow.judged;
                flow.run_end = flow.judged;
                return Step::Progress;
            }
            Poll::Ready(Err(_)) => return failed(flow, io_side(dir, To::Forward)),
            Poll::Pending => return Step::Wait,
        }
    }
    match std::mem::take(&mut flow.then) {
        Then::GoOn => {}
        Then::Write(to, bytes) => {
            let progress = (&mut flow.written, &mut flow.write_deadline);
            let written = match to {
                To::Forward => {
                    poll_write_all(other, dir, &bytes, progress, settings.write_limit, cx)
                }
                To::Back => poll_write_all(own, dir, &bytes, progress, settings.write_limit, cx),
            };
            return match written {
                Poll::Ready(Ok(())) => Step::Progress,
                Poll::Ready(Err(_)) => Step::End(CloseReason::Io(io_side(dir, to))),
                Poll::Pending => {
                    flow.then = Then::Write(to, bytes);
                    Step::Wait
                }
            };
        }
        Then::End(reason) | Then::EndAnyway(reason) => return Step::End(reason),
    }
    if flow.judging {
        judge_frames(flow, settings, ack_credit, judge);
        return Step::Progress;
    }
    if flow.settling {
        return settle(flow, settings, throttle);
    }
    read(flow, own, settings, cx)
}

/// A write of `flow` failed on `side`: the session ends for that, or for the reason it was
/// already ending with.
fn failed(flow: &mut Flow, side: Direction) -> Step {
    match std::mem::take(&mut flow.then) {
        Then::EndAnyway(reason) => Step::End(reason),
        _ => Step::End(CloseReason::Io(side)),
    }
}

/// Writes and flushes `bytes` (of which `written` are written already) on `out`, unless the
/// other flow's write is under way there. A write that has to wait gets a `deadline`.
fn poll_write_all<W: AsyncWrite + Unpin>(
    out: &mut Out<W>,
    me: Direction,
    bytes: &[u8],
    (written, deadline): (&mut usize, &mut Option<Instant>),
    limit: Duration,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    match out.writer {
        // The other flow's write finishes first; its progress is seen in the same relay loop.
        Some(w) if w != me => return Poll::Pending,
        _ => out.writer = Some(me),
    }
    let r = loop {
        let Some(rest) = bytes.get(*written..).filter(|r| !r.is_empty()) else {
            break Pin::new(&mut out.io).poll_flush(cx);
        };
        match Pin::new(&mut out.io).poll_write(cx, rest) {
            Poll::Ready(Ok(0)) => break Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => *written += n,
            other => break other.map_ok(|_| ()),
        }
    };
    match r {
        Poll::Ready(Ok(())) => {
            out.writer = None;
            *written = 0;
            *deadline = None;
            Poll::Ready(Ok(()))
        }
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => {
            if deadline.is_none() {
                *deadline = Some(Instant::now() + limit);
            }
            Poll::Pending
        }
    }
}

/// Judges the frames of the last read, from `flow.judged` on, until one is not forwarded
/// unchanged (its writes are then due before the rest is judged) or none is complete.
fn judge_frames(
    flow: &mut Flow,
    settings: &FlowSettings<'_>,
    ack_credit: &mut u32,
    judge: &mut impl Judge,
) {
    let dir = settings.direction;
    let mut batch = PacketBatch::default();
    let mut denials = Vec::new();
    loop {
        let pos = flow.judged;
        let rest = flow.buf.get(pos..).unwrap_or_default();
        let header = match peek_frame(rest, settings.max_packet_size) {
            Ok(Peek::Complete(h)) => h,
            Ok(Peek::Incomplete { .. }) => {
                flow.run_end = pos;
                flow.judging = false;
                flow.settling = true;
                break;
            }
            Err(error) => {
                settings.counters.malformed();
                // Forward what was judged before the bad frame, then close.
                flow.run_end = pos;
                flow.judging = false;
                flow.then = Then::EndAnyway(CloseReason::Malformed {
                    direction: dir,
                    error,
                });
                break;
            }
        };
        let end = pos + header.frame_len();
        let frame = flow.buf.get(pos..end).unwrap_or_default();
        let inspected = judge.judge(dir, frame, &mut denials);
        if !denials.is_empty() {
            judge.denied(&mut denials);
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
                        *ack_credit = ack_credit
                            .saturating_add(owed_for(frame))
                            .min(MAX_ACK_CREDIT);
                    }
                    Direction::ClientToServer
                        if matches!(t, T::Puback | T::Pubrec | T::Pubcomp) && *ack_credit > 0 =>
                    {
                        *ack_credit -= 1;
                    }
                    Direction::ClientToServer => flow.charged = flow.charged.saturating_add(1),
                    Direction::ServerToClient => {}
                }
                batch.add(t, frame.len());
            }
            None => settings.counters.malformed(),
        }
        flow.saw_packet = true;
        flow.judged = end;
        match inspected.verdict {
            Verdict::Forward => continue,
            Verdict::Replace(bytes) => flow.then = Then::Write(To::Forward, bytes),
            Verdict::Reply(bytes) => flow.then = Then::Write(To::Back, bytes),
            Verdict::Close(reason) => flow.then = Then::End(reason),
            // The session turns these into a reply or a close before they get here; one that
            // did not is refused (fail closed).
            Verdict::Reauthenticate(_) => {
                flow.then = Then::End(CloseReason::ReauthenticationFailed);
            }
            Verdict::Drop => {}
        }
        // The run ends before this frame; it is written (and the next one starts after this
        // frame), then what the verdict asks.
        if flow.run == pos {
            (flow.run, flow.run_end) = (end, end);
        } else {
            flow.run_end = pos;
        }
        break;
    }
    settings.counters.add(&batch);
}

/// After a read is judged and written: the client's rate, the keep-alive deadline, the buffer.
fn settle(
    flow: &mut Flow,
    settings: &FlowSettings<'_>,
    throttle: Option<&mut crate::limits::ClientThrottle>,
) -> Step {
    if flow.judged > 0 {
        flow.buf.advance(flow.judged);
        flow.charged_bytes = flow.judged;
        (flow.run, flow.run_end, flow.judged) = (0, 0, 0);
    }
    // Over the client's rate: stop reading (TCP pushes back) until it conforms, or close if it
    // stays over for too long.
    if let Some(t) = throttle {
        if flow.paused_until.is_some() {
            return Step::Wait;
        }
        let (m, b) = (flow.charged, flow.charged_bytes);
        (flow.charged, flow.charged_bytes) = (0, 0);
        match t.account(m, b, std::time::Instant::now()) {
            crate::limits::Throttle::Go => {}
            crate::limits::Throttle::Wait(d, limit, first) => {
                if first {
                    metrics::counter!(crate::metrics::RATE_LIMITED_TOTAL, "limit" => limit.label().as_str()).increment(1);
                }
                flow.paused_until = Some(Instant::now() + d);
                return Step::Wait;
            }
            crate::limits::Throttle::Close(limit) => {
                metrics::counter!(crate::metrics::RATE_LIMITED_TOTAL, "limit" => limit.label().as_str()).increment(1);
                return Step::End(CloseReason::RateLimited(limit));
            }
        }
    }
    flow.settling = false;
    if flow.saw_packet {
        flow.saw_packet = false;
        if let Some(seen) = settings.broker_seen {
            seen.record();
        }
        if let Some(limit) = settings.idle_limit {
            flow.idle_deadline = Some(Instant::now() + limit);
        }
    }
    if flow.buf.is_empty() && flow.buf.capacity() > KEEP_BUFFER {
        // After a burst: let the large buffer go.
        flow.buf = BytesMut::new();
    }
    Step::Progress
}

/// Reads what is there into `flow`'s buffer.
fn read<S: ReadReady>(
    flow: &mut Flow,
    own: &mut Out<S>,
    settings: &FlowSettings<'_>,
    cx: &mut Context<'_>,
) -> Step {
    let dir = settings.direction;
    let chunk = usize::try_from(flow.chunk).unwrap_or(MAX_READ_CHUNK);
    // Room for the next read: what the pending frame needs, or a chunk that adapts to the rate.
    let want = match peek_frame(&flow.buf, settings.max_packet_size) {
        Ok(Peek::Incomplete { needed, .. }) => needed.max(chunk).max(MIN_READ_CHUNK),
        Ok(Peek::Complete(_)) => chunk.max(MIN_READ_CHUNK),
        Err(error) => {
            settings.counters.malformed();
            return Step::End(CloseReason::Malformed {
                direction: dir,
                error,
            });
        }
    };
    // An empty buffer is read into only when data is ready: when nothing is, the connection is
    // idle, and it waits without a read buffer.
    if flow.buf.capacity() == 0 && flow.buf.is_empty() {
        match own.io.poll_read_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(_)) => return Step::End(CloseReason::Io(dir)),
            Poll::Pending => {
                flow.reading = true;
                return Step::Wait;
            }
        }
    }
    if flow.buf.capacity() - flow.buf.len() < want {
        flow.buf.reserve(want);
    }
    let spare = flow.buf.capacity() - flow.buf.len();
    let read = std::pin::pin!(own.io.read_buf(&mut flow.buf)).poll(cx);
    let n = match read {
        Poll::Pending => {
            if flow.buf.is_empty() {
                // Nothing after all (half a TLS record, or idle): wait without the buffer.
                flow.buf = BytesMut::new();
                flow.chunk = 0;
            }
            flow.reading = true;
            return Step::Wait;
        }
        Poll::Ready(Err(_)) => return Step::End(CloseReason::Io(dir)),
        Poll::Ready(Ok(0)) => {
            return Step::End(if flow.buf.is_empty() {
                eof_reason(dir)
            } else {
                // EOF inside a frame: the peer sent a truncated packet.
                settings.counters.malformed();
                CloseReason::Malformed {
                    direction: dir,
                    error: DecodeError::UnexpectedEnd("connection closed inside a packet"),
                }
            });
        }
        Poll::Ready(Ok(n)) => n,
    };
    let chunk = if n >= spare {
        (chunk.max(2048) * 2).min(MAX_READ_CHUNK)
    } else {
        chunk / 2
    };
    flow.chunk = u32::try_from(chunk).unwrap_or(u32::MAX);
    flow.judging = true;
    Step::Progress
}

/// The acknowledgements the client will owe for `frame`, a PUBLISH delivered to it.
fn owed_for(frame: &[u8]) -> u32 {
    match frame.first().map(|b| (b >> 1) & 0x03) {
        Some(1) => 1,
        Some(2) => 2,
        _ => 0,
    }
}

const fn eof_reason(dir: Direction) -> CloseReason {
    match dir {
        Direction::ClientToServer => CloseReason::ClientClosed,
        Direction::ServerToClient => CloseReason::BrokerClosed,
    }
}
