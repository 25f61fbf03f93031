//! The relay of one session: both directions driven by one hand-written state machine
//! ([`Relay`]), polled by the session's task.
//!
//! Each direction (a [`Flow`]) reads, frames (within `max_packet_size`), inspects, and forwards
//! the original bytes, a rewrite, or a reply to the sender:
//! - Forwarded frames are written straight from the read buffer, in runs: all the consecutive
//!   frames of one read that are forwarded unchanged go out in one write (so one TLS record and
//!   one syscall carry many small PUBLISH). A frame that is not forwarded unchanged ends the run.
//! - Nothing is written before the frame has been decoded and judged; an oversized frame is
//!   refused from its fixed header, before its body is buffered.
//! - A flow reads again only once everything judged from its last read is written: a peer that
//!   does not take our bytes stops the flow that writes to it (TCP pushes back), never a queue.
//! - Each side's stream takes the writes of both flows (the one forwarding to it, the one
//!   replying through it), one whole write and flush at a time: a flow that finds the side in the
//!   middle of the other's write waits for it to finish.
//!
//! Why a state machine, not two `async` pumps under a `select!`: an `async` block keeps room for
//! its largest await in every state, so the two pumps, each with a write under a timeout and the
//! lock of a shared writer, were 1.7 KiB of every idle connection's memory (BENCHMARKS.md, idle
//! memory). Here an idle session holds two small [`Flow`]s and one timer; the streams are polled
//! directly, unsplit, with no lock.
//!
//! Memory: the read buffer starts empty. A read is attempted into it only when data is ready;
//! when none is and the buffer is empty, the connection is idle: the buffer is released and the
//! flow waits for the stream to be ready ([`ReadReady`]), then reserves the buffer and takes what
//! arrived in one read. So an idle connection holds no read buffer, a busy one keeps its buffer
//! from read to read (no allocation per message at a steady rate), and a wake-up costs one read,
//! not a small read followed by the rest. Packet counters are added up per read, not per packet.
//!
//! Time: one timer per session, armed at the earliest of the client's keep-alive deadline (while
//! its flow waits to read), the deadline of a write that the peer does not take, and the end of a
//! rate-limit pause. The keep-alive deadline moves with every packet, the timer does not: it stays
//! armed at an earlier deadline and, when it fires, is pushed to the current one. Arming a fresh
//! timer for each read took the runtime's timer lock twice per packet, a lock shared by every
//! session.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use mqtt_inspect::{DecodeError, Direction, Peek, peek_frame};
use tokio::io::{AsyncReadExt, AsyncWrite};
use tokio::time::{Instant, Sleep};

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

/// At most this many acknowledgements are owed at once (a QoS 2 delivery owes two, PUBREC and
/// PUBCOMP, and MQTT 5's Receive Maximum bounds the messages in flight to 65,535).
pub const MAX_ACK_CREDIT: u32 = 2 * 65_535;

/// One side's stream: the client's or the broker's.
#[derive(Debug)]
pub struct Out<W> {
    io: W,
    /// The flow whose write is under way on this stream, if one is: the other flow waits for it,
    /// and if the relay ends then, the stream holds a partial packet and nothing more may be
    /// written to it.
    writer: Option<Direction>,
}

impl<W> Out<W> {
    /// Wraps a stream.
    pub const fn new(io: W) -> Self {
        Self { io, writer: None }
    }

    /// Whether a write was cut off half-way.
    pub const fn is_dirty(&self) -> bool {
        self.writer.is_some()
    }

    /// The stream itself.
    pub fn io_mut(&mut self) -> &mut W {
        &mut self.io
    }
}

/// What a flow needs besides its streams.
#[derive(Clone, Copy)]
pub struct FlowSettings<'a> {
    /// Which direction this flow carries.
    pub direction: Direction,
    /// Largest frame accepted.
    pub max_packet_size: u32,
    /// Time allowed between two complete packets (client side: 1.5 × keep-alive); `None`: no limit.
    pub idle_limit: Option<Duration>,
    /// Time allowed for one write.
    pub write_limit: Duration,
    /// Per-packet counters of this direction.
    pub counters: &'a PacketCounters,
    /// Where packets read prove the broker alive (broker to client only): `/readyz` counts them
    /// and the prober stays away from a broker its sessions hear from.
    pub broker_seen: Option<&'a crate::shared::BrokerSeen>,
}

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
struct Flow {
    buf: BytesMut,
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
    write_deadline: Option<Instant>,
    /// What comes after the run.
    then: Then,
    /// What the last read brought is not all judged yet.
    judging: bool,
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
    reading: bool,
    /// The client's keep-alive deadline (client to broker only).
    idle_deadline: Option<Instant>,
    /// Reading stops until then: the client is over its rate.
    paused_until: Option<Instant>,
}

/// Where a flow's step stopped.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// It did something; step again.
    Progress,
    /// It waits for its stream, the other flow, or the timer.
    Wait,
    /// The session must end.
    End(CloseReason),
}

/// The two directions of one session, their streams and their timer.
pub struct Relay<'a, C, B> {
    client: Out<C>,
    broker: Out<B>,
    up: Flow,
    down: Flow,
    /// Both flows' settings, in one (what differs: the direction, the counters, the client's
    /// keep-alive, the broker's liveness).
    settings: Shared<'a>,
    throttle: crate::limits::ClientThrottle,
    /// Acknowledgements the client owes for QoS 1/2 messages delivered to it: such an
    /// acknowledgement is not charged to the client's message rate, every other packet is.
    ack_credit: u32,
    /// When the session's credential ends (the watch's alarm, `finish::Watch`).
    alarm: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

/// The settings of both flows.
#[derive(Clone, Copy)]
struct Shared<'a> {
    max_packet_size: u32,
    idle_limit: Option<Duration>,
    write_limit: Duration,
    c2b: &'a PacketCounters,
    b2c: &'a PacketCounters,
    broker_seen: Option<&'a crate::shared::BrokerSeen>,
}

impl<'a> Shared<'a> {
    /// The settings of the flow in `direction`.
    const fn flow(&self, direction: Direction) -> FlowSettings<'a> {
        match direction {
            Direction::ClientToServer => FlowSettings {
                direction,
                max_packet_size: self.max_packet_size,
                idle_limit: self.idle_limit,
                write_limit: self.write_limit,
                counters: self.c2b,
                broker_seen: None,
            },
            Direction::ServerToClient => FlowSettings {
                direction,
                max_packet_size: self.max_packet_size,
                idle_limit: None,
                write_limit: self.write_limit,
                counters: self.b2c,
                broker_seen: self.broker_seen,
            },
        }
    }
}

/// Judges one complete frame (and collects its policy refusals).
pub trait Judge {
    /// The verdict on `frame`, read in `direction`; refusals are pushed onto `denials`.
    fn judge(&mut self, direction: Direction, frame: &[u8], denials: &mut Vec<Denial>)
    -> Inspected;
    /// Called with the refusals of each frame that had some (metrics and the audit log).
    fn denied(&mut self, denials: &mut Vec<Denial>);
}

impl<'a, C, B> Relay<'a, C, B>
where
    C: ReadReady + AsyncWrite,
    B: ReadReady + AsyncWrite,
{
    /// A relay between `client` and `broker`. `rest`: the bytes the client sent after its
    /// CONNECT, judged before anything else is read.
    pub fn new(
        (client, broker): (C, B),
        rest: BytesMut,
        (up_settings, down_settings): (FlowSettings<'a>, FlowSettings<'a>),
        throttle: crate::limits::ClientThrottle,
    ) -> Self {
        // Copied: `rest` shares the connect phase's read buffer, which would otherwise stay
        // allocated for the session's life.
        let up = Flow {
            judging: !rest.is_empty(),
            buf: if rest.is_empty() {
                BytesMut::new()
            } else {
                BytesMut::from(&rest[..])
            },
            idle_deadline: up_settings.idle_limit.map(|d| Instant::now() + d),
            ..Flow::default()
        };
        Self {
            client: Out::new(client),
            broker: Out::new(broker),
            up,
            down: Flow::default(),
            settings: Shared {
                max_packet_size: up_settings.max_packet_size,
                idle_limit: up_settings.idle_limit,
                write_limit: up_settings.write_limit,
                c2b: up_settings.counters,
                b2c: down_settings.counters,
                broker_seen: down_settings.broker_seen,
            },
            throttle,
            ack_credit: 0,
            alarm: None,
            timer: None,
        }
    }

    /// The two streams, to say goodbye on (the client's first).
    pub fn into_streams(self) -> (Out<C>, Out<B>) {
        (self.client, self.broker)
    }

    /// The client's stream.
    pub const fn client(&self) -> &C {
        &self.client.io
    }

    /// The broker's stream, before the relay starts (to send it the CONNECT).
    pub fn broker_mut(&mut self) -> &mut B {
        &mut self.broker.io
    }

    /// Sets the alarm: at `at`, [`Self::poll_relay`] ends with [`CloseReason::CredentialExpired`].
    pub fn set_alarm(&mut self, at: Option<Instant>) {
        self.alarm = at;
    }

    /// Relays until the session must end, and says why.
    pub fn poll_relay(
        &mut self,
        cx: &mut Context<'_>,
        judge: &mut impl Judge,
    ) -> Poll<CloseReason> {
        // The deadlines that hold whatever the flows do (a write the peer does not take, the
        // alarm): looked at first, so that a direction that keeps the task busy cannot put them
        // off. The keep-alive deadline counts only once the client's flow waits for bytes.
        if let Poll::Ready(Some(reason)) = self.poll_timer(cx, false) {
            return Poll::Ready(reason);
        }
        loop {
            let up = step(
                &mut self.up,
                (&mut self.client, &mut self.broker),
                &self.settings.flow(Direction::ClientToServer),
                (Some(&mut self.throttle), &mut self.ack_credit),
                judge,
                cx,
            );
            if let Step::End(reason) = up {
                return Poll::Ready(reason);
            }
            let down = step(
                &mut self.down,
                (&mut self.broker, &mut self.client),
                &self.settings.flow(Direction::ServerToClient),
                (None, &mut self.ack_credit),
                judge,
                cx,
            );
            if let Step::End(reason) = down {
                return Poll::Ready(reason);
            }
            if up == Step::Progress || down == Step::Progress {
                continue;
            }
            match self.poll_timer(cx, true) {
                Poll::Ready(Some(reason)) => return Poll::Ready(reason),
                Poll::Ready(None) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// The earliest deadline the session waits for, if any (with `idle`, the client's
    /// keep-alive deadline while its flow waits for bytes).
    fn next_deadline(&self, idle: bool) -> Option<Instant> {
        [
            self.up.idle_deadline.filter(|_| idle && self.up.reading),
            self.up.write_deadline,
            self.down.write_deadline,
            self.up.paused_until,
            self.down.paused_until,
            self.alarm,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Waits for the earliest deadline (see [`Self::next_deadline`]). `Ready(Some)`: the session
    /// must end; `Ready(None)`: a pause ended, step again.
    fn poll_timer(&mut self, cx: &mut Context<'_>, idle: bool) -> Poll<Option<CloseReason>> {
        let Some(next) = self.next_deadline(idle) else {
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next)));
        if timer.deadline() > next {
            timer.as_mut().reset(next);
        }
        let now = loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if now < next {
                // Armed at a deadline that has moved since: on to the current one.
                timer.as_mut().reset(next);
                continue;
            }
            break now;
        };
        if idle && self.up.reading && self.up.idle_deadline.is_some_and(|d| now >= d) {
            return Poll::Ready(Some(CloseReason::KeepAliveTimeout));
        }
        for (flow, direction) in [
            (&self.up, Direction::ClientToServer),
            (&self.down, Direction::ServerToClient),
        ] {
            if flow.write_deadline.is_some_and(|d| now >= d) {
                return Poll::Ready(Some(write_timeout(flow, direction)));
            }
        }
        if self.alarm.is_some_and(|d| now >= d) {
            return Poll::Ready(Some(CloseReason::CredentialExpired));
        }
        for flow in [&mut self.up, &mut self.down] {
            if flow.paused_until.is_some_and(|d| now >= d) {
                flow.paused_until = None;
            }
        }
        Poll::Ready(None)
    }
}

/// The reason for `flow`'s write that did not finish in time.
fn write_timeout(flow: &Flow, direction: Direction) -> CloseReason {
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
fn step<S, T>(
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

/// Writes `bytes` and flushes, within `limit` (a write outside the relay: the relayed CONNECT).
///
/// # Errors
/// The write failed or did not finish in time.
pub async fn send<W: AsyncWrite + Unpin>(
    io: &mut W,
    bytes: &[u8],
    limit: Duration,
) -> io::Result<()> {
    use tokio::io::AsyncWriteExt;
    match tokio::time::timeout(limit, async {
        io.write_all(bytes).await?;
        io.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

const fn eof_reason(dir: Direction) -> CloseReason {
    match dir {
        Direction::ClientToServer => CloseReason::ClientClosed,
        Direction::ServerToClient => CloseReason::BrokerClosed,
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
