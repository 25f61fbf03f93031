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

use bytes::BytesMut;
use mqtt_inspect::Direction;
use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};

use super::flow::{Flow, Step, step, write_timeout};
use super::inspect::{Denial, Inspected};
use crate::close::CloseReason;
use crate::metrics::PacketCounters;
use crate::transport::io::ReadReady;

/// One side's stream: the client's or the broker's.
#[derive(Debug)]
pub struct Out<W> {
    pub(super) io: W,
    /// The flow whose write is under way on this stream, if one is: the other flow waits for it,
    /// and if the relay ends then, the stream holds a partial packet and nothing more may be
    /// written to it.
    pub(super) writer: Option<Direction>,
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
        let up = Flow::from_client(&rest, up_settings.idle_limit.map(|d| Instant::now() + d));
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

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
