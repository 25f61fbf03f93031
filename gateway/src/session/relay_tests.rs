//! The relay's state machine over in-memory streams, with a judge decided by the topic (time
//! paused where a deadline is under test: it is advanced by the runtime, never slept on).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use mqtt_inspect::{DecodeError, Direction, PacketType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

use super::{FlowSettings, Judge, Relay};
use crate::close::CloseReason;
use crate::metrics::PacketCounters;
use crate::session::inspect::{Denial, Inspected, Verdict};
use crate::transport::io::ReadReady;

/// An in-memory stream; ready to read whenever asked (the read itself then waits).
struct Mem(DuplexStream);

impl AsyncRead for Mem {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Mem {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, b)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl ReadReady for Mem {
    fn poll_read_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// An MQTT 3.1.1 QoS 0 PUBLISH of `topic` with an 8-byte payload.
fn publish(topic: &str) -> Vec<u8> {
    let t = topic.as_bytes();
    let mut p = vec![0x30, u8::try_from(2 + t.len() + 8).unwrap(), 0];
    p.push(u8::try_from(t.len()).unwrap());
    p.extend_from_slice(t);
    p.extend_from_slice(b"payload!");
    p
}

const REPLY: &[u8] = &[0x40, 0x02, 0x00, 0x01];

/// `deny/…`: answered with [`REPLY`]; `drop/…`: dropped; `close/…`: the session ends;
/// `swap/…`: replaced by `publish("swapped")`; anything else: forwarded.
struct ByTopic;

impl Judge for ByTopic {
    fn judge(&mut self, _: Direction, frame: &[u8], _: &mut Vec<Denial>) -> Inspected {
        let topic = frame.get(4..).unwrap_or_default();
        let verdict = if topic.starts_with(b"deny") {
            Verdict::Reply(REPLY.to_vec())
        } else if topic.starts_with(b"drop") {
            Verdict::Drop
        } else if topic.starts_with(b"close") {
            Verdict::Close(CloseReason::PublishDenied)
        } else if topic.starts_with(b"swap") {
            Verdict::Replace(publish("swapped"))
        } else {
            Verdict::Forward
        };
        Inspected {
            packet_type: Some(PacketType::Publish),
            verdict,
        }
    }

    fn denied(&mut self, _: &mut Vec<Denial>) {}
}

struct Ends {
    client: DuplexStream,
    broker: DuplexStream,
}

/// Runs a relay between two in-memory pipes of `capacity` bytes while `script` plays both
/// peers; returns why the relay ended and what is left unread on each peer's side.
async fn relay<F, Fut>(capacity: usize, idle_limit: Option<Duration>, script: F) -> CloseReason
where
    F: FnOnce(Ends) -> Fut,
    Fut: Future<Output = ()>,
{
    relay_until(capacity, idle_limit, None, script).await
}

/// [`relay`] with its alarm set to `alarm`.
async fn relay_until<F, Fut>(
    capacity: usize,
    idle_limit: Option<Duration>,
    alarm: Option<tokio::time::Instant>,
    script: F,
) -> CloseReason
where
    F: FnOnce(Ends) -> Fut,
    Fut: Future<Output = ()>,
{
    let (client, client_near) = tokio::io::duplex(capacity);
    let (broker, broker_near) = tokio::io::duplex(capacity);
    let c2b = PacketCounters::new(Direction::ClientToServer);
    let b2c = PacketCounters::new(Direction::ServerToClient);
    let up = FlowSettings {
        direction: Direction::ClientToServer,
        max_packet_size: 1024,
        idle_limit,
        write_limit: Duration::from_secs(30),
        counters: &c2b,
        broker_seen: None,
    };
    let down = FlowSettings {
        direction: Direction::ServerToClient,
        idle_limit: None,
        counters: &b2c,
        ..up
    };
    let throttle = crate::limits::ClientThrottle::new(
        &crate::config::LimitsConfig::default(),
        std::time::Instant::now(),
    );
    let mut relay = Relay::new(
        (Mem(client_near), Mem(broker_near)),
        BytesMut::new(),
        (up, down),
        throttle,
    );
    relay.set_alarm(alarm);
    let run = std::future::poll_fn(|cx| relay.poll_relay(cx, &mut ByTopic));
    tokio::select! {
        reason = run => reason,
        () = async { script(Ends { client, broker }).await; std::future::pending().await } => unreachable!(),
    }
}

/// A frame that is answered, dropped or replaced is never forwarded; the frames around it are,
/// in order, and the answer reaches the sender. The regression: an answered frame at the start
/// of a read was forwarded with the run after it.
#[tokio::test]
async fn only_frames_judged_forward_are_forwarded_in_order() {
    let cases: &[(&[&str], &[&str], usize)] = &[
        (&["a/1", "deny/x", "a/2"], &["a/1", "a/2"], 1),
        (&["deny/x", "a/1"], &["a/1"], 1),
        (&["a/1", "a/2", "deny/x"], &["a/1", "a/2"], 1),
        (&["drop/x", "a/1", "drop/y"], &["a/1"], 0),
        (&["deny/x", "deny/y", "a/1"], &["a/1"], 2),
        (&["swap/x", "a/1"], &["swapped", "a/1"], 0),
        (&["a/1", "a/2", "a/3"], &["a/1", "a/2", "a/3"], 0),
    ];
    for &(sent, forwarded, replies) in cases {
        let bytes: Vec<u8> = sent.iter().flat_map(|t| publish(t)).collect();
        let expected: Vec<u8> = forwarded.iter().flat_map(|t| publish(t)).collect();
        let reason = relay(4096, None, |mut e| async move {
            // All in one write, so that one read holds them all.
            e.client.write_all(&bytes).await.unwrap();
            let mut got = vec![0; expected.len()];
            e.broker.read_exact(&mut got).await.unwrap();
            assert_eq!(got, expected, "{sent:?}");
            let mut answers = vec![0; REPLY.len() * replies];
            e.client.read_exact(&mut answers).await.unwrap();
            assert_eq!(answers, REPLY.repeat(replies), "{sent:?}");
            // The client leaves; nothing more may have reached the broker.
            drop(e.client);
            let mut rest = Vec::new();
            e.broker.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty(), "{sent:?}: also forwarded {rest:?}");
        })
        .await;
        assert_eq!(reason, CloseReason::ClientClosed, "{sent:?}");
    }
}

/// A frame that ends the session: what came before it is forwarded, it and what follows are
/// not. A `Close` verdict, and a malformed frame ([MQTT-1.5.5-1]: a Remaining Length of more than
/// four bytes), which ends the session as malformed.
#[tokio::test]
async fn a_frame_that_ends_the_session_forwards_the_run_before_it_and_nothing_after() {
    let mut closing = publish("close/x");
    closing.extend_from_slice(&publish("a/2"));
    let mut malformed = vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x01];
    malformed.extend_from_slice(&publish("a/2"));
    for (tail, ends) in [
        (closing, CloseReason::PublishDenied),
        (
            malformed,
            CloseReason::Malformed {
                direction: Direction::ClientToServer,
                error: DecodeError::MalformedVarInt("remaining length"),
            },
        ),
    ] {
        let mut bytes = publish("a/1");
        bytes.extend_from_slice(&tail);
        let reason = relay(4096, None, |mut e| async move {
            e.client.write_all(&bytes).await.unwrap();
            let mut got = Vec::new();
            e.broker.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, publish("a/1"));
        })
        .await;
        assert_eq!(reason, ends);
    }
}

/// A client that does not read what the broker sends it holds the relay's write for at most
/// the write limit, then the session ends as `write_timeout`; a client that reads gets it all.
#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_cut_off_at_the_write_limit() {
    let burst: Vec<u8> = (0..40).flat_map(|i| publish(&format!("a/{i}"))).collect();
    let n = burst.len();
    // Good: the client reads everything, then leaves.
    let b2 = burst.clone();
    let reason = relay(64, None, |mut e| async move {
        let mut got = vec![0; n];
        let (w, r) = tokio::join!(e.broker.write_all(&b2), e.client.read_exact(&mut got));
        w.unwrap();
        r.unwrap();
        assert_eq!(got, b2);
        drop(e.client);
    })
    .await;
    assert_eq!(reason, CloseReason::ClientClosed);
    // Bad: it never reads; the broker's burst fills the pipe, and the relay's write waits.
    let start = tokio::time::Instant::now();
    let reason = relay(64, None, |e| async move {
        // Held open, never read.
        let Ends {
            client: _unread,
            mut broker,
        } = e;
        broker.write_all(&burst).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    assert_eq!(reason, CloseReason::WriteTimeout(Direction::ServerToClient));
    assert!(start.elapsed() >= Duration::from_secs(30));
}

/// The client's keep-alive: a client that sends a packet within each 1.5 × keep-alive stays,
/// one that falls silent for longer is cut off, counted from its last packet.
#[tokio::test(start_paused = true)]
async fn a_silent_client_is_cut_off_at_its_keep_alive_deadline() {
    let limit = Duration::from_millis(1500);
    let last = std::sync::Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
    let l2 = std::sync::Arc::clone(&last);
    let reason = relay(4096, Some(limit), |mut e| async move {
        for i in 0..5 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            e.client
                .write_all(&publish(&format!("a/{i}")))
                .await
                .unwrap();
            *l2.lock().unwrap() = tokio::time::Instant::now();
            let mut got = vec![0; publish("a/0").len()];
            e.broker.read_exact(&mut got).await.unwrap();
        }
        std::future::pending::<()>().await;
    })
    .await;
    assert_eq!(reason, CloseReason::KeepAliveTimeout);
    let silent = last.lock().unwrap().elapsed();
    assert!(silent >= limit, "cut off {silent:?} after the last packet");
}

/// The alarm (the credential's end) ends the session at its time, also while packets keep
/// flowing both ways and the task never waits long.
#[tokio::test(start_paused = true)]
async fn the_alarm_ends_a_busy_session_at_its_time() {
    let start = tokio::time::Instant::now();
    let at = start + Duration::from_secs(10);
    let reason = relay_until(4096, None, Some(at), |mut e| async move {
        let p = publish("a/1");
        let mut got = vec![0; p.len()];
        for _ in 0..1000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            e.client.write_all(&p).await.unwrap();
            e.broker.read_exact(&mut got).await.unwrap();
            e.broker.write_all(&p).await.unwrap();
            e.client.read_exact(&mut got).await.unwrap();
        }
    })
    .await;
    assert_eq!(reason, CloseReason::CredentialExpired);
    assert!(tokio::time::Instant::now() >= at);
    assert!(tokio::time::Instant::now() < at + Duration::from_secs(1));
}
