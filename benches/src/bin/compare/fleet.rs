//! The fleet phase: what an IoT fleet does to a proxy. [`DEVICES`] mTLS devices stay connected,
//! each publishing one 64 B QoS 1 message every [`PERIOD`] (about 2,000 msg/s in all, spread
//! evenly, so every message arrives alone: a wake-up, a TLS record, a decode and a verdict each,
//! with nothing to batch), and one subscriber receives them all at QoS 1.
//!
//! Measured over [`WINDOW`] after one whole period of warm-up: the proxy's CPU per message (user
//! and kernel), its wake-ups (voluntary context switches) and syscalls per message (`perf stat`,
//! where it may trace), its RSS with the fleet connected, and the QoS 1 latency from a device's
//! write to the subscriber's read (p50 / p99 / p99.9). Run on a fresh proxy process, like the idle
//! phase, so that no earlier phase's memory is counted or reused.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bench::{Io, SyscallCount, Syscalls, Usage, client_tls, connect, rss_kib};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::phases::{Calls, connect_many, receive_qos1, subscribe_qos1, timestamped};
use crate::targets::Target;

/// Devices connected at once: 10,000 less what the 20,000 open files a process may hold here
/// leave room for (a proxy holds two per device).
pub(crate) const DEVICES: usize = 9_900;
/// Each device publishes once per period.
pub(crate) const PERIOD: Duration = Duration::from_secs(5);
/// The measured window, after one period of warm-up.
pub(crate) const WINDOW: Duration = Duration::from_secs(20);

/// What one fleet run measured.
#[derive(Debug, Default, Clone)]
pub(crate) struct Fleet {
    /// Messages published (and acknowledged) within the window.
    pub(crate) messages: u64,
    /// The proxy's use over the window.
    pub(crate) usage: Usage,
    /// Its syscalls over the window, when `perf` could count them.
    pub(crate) syscalls: Option<SyscallCount>,
    /// RSS (KiB) at the window's end, with the fleet connected.
    pub(crate) rss_kib: f64,
    /// QoS 1 latency samples (ns) of the messages sent within the window, sorted.
    pub(crate) samples: Vec<u64>,
}

impl Fleet {
    /// µs of CPU per message: (user, kernel).
    pub(crate) fn cpu_us(&self) -> (f64, f64) {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / self.messages.max(1) as f64;
        (per(self.usage.user), per(self.usage.kernel))
    }

    /// Wake-ups and syscalls per message.
    pub(crate) fn calls(&self) -> Calls {
        Calls::per_message(self.usage.wakeups, self.syscalls, self.messages)
    }
}

/// Runs the fleet against `t` (a proxy: its process is measured).
pub(crate) async fn fleet(t: &Target, pki: &Path) -> anyhow::Result<Fleet> {
    let pid = t.pid.context("no proxy process")?;
    let epoch = Instant::now();
    let mut sub = connect(t.addr, Some(client_tls(pki, "bench-sub")?), "fleet-sub").await?;
    subscribe_qos1(&mut sub, "bench/fleet/#").await?;
    let devices = connect_many(t, &client_tls(pki, "idle")?, DEVICES, "device").await?;

    // Device i publishes at start + i·PERIOD/DEVICES, then every PERIOD; the first period warms
    // up (every connection's first message after its CONNECT), the next WINDOW is measured.
    let start = tokio::time::Instant::now() + Duration::from_secs(1);
    let window_start = start + PERIOD;
    let window_end = window_start + WINDOW;
    let ns = |at: tokio::time::Instant| {
        at.into_std()
            .saturating_duration_since(epoch)
            .as_nanos()
            .try_into()
            .unwrap_or(u64::MAX)
    };
    let receiver = tokio::spawn(receive_qos1(
        sub,
        epoch,
        u64::MAX,
        ns(window_start)..ns(window_end),
    ));
    let acked = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(DEVICES);
    for (i, io) in devices.into_iter().enumerate() {
        let offset = PERIOD.mul_f64(i as f64 / DEVICES as f64);
        let acked = Arc::clone(&acked);
        tasks.push(tokio::spawn(device(
            io,
            format!("bench/fleet/{i}"),
            start + offset,
            window_end,
            epoch,
            acked,
        )));
    }

    tokio::time::sleep_until(window_start).await;
    let (before, acked0) = (Usage::of(pid)?, acked.load(Ordering::Relaxed));
    let perf = Syscalls::start(pid, WINDOW);
    tokio::time::sleep_until(window_end).await;
    let usage = Usage::of(pid)?.since(before);
    let messages = acked.load(Ordering::Relaxed) - acked0;
    let rss_kib = rss_kib(pid)?;
    // perf counts for WINDOW from its own start, a few ms after the window's.
    let syscalls = tokio::task::spawn_blocking(move || perf.and_then(Syscalls::finish)).await?;

    let mut failed = 0usize;
    let mut held = Vec::with_capacity(DEVICES);
    for task in tasks {
        match task.await? {
            Ok(io) => held.push(io),
            Err(_) => failed += 1,
        }
    }
    let mut samples = receiver.await??;
    drop(held);
    if failed > 0 {
        bail!("{}: {failed} of {DEVICES} devices failed", t.name);
    }
    let expected = (WINDOW.as_secs_f64() / PERIOD.as_secs_f64() * DEVICES as f64) as u64;
    if messages < expected * 9 / 10 || samples.len() < (expected * 9 / 10) as usize {
        bail!(
            "{}: {messages} messages acknowledged and {} delivered in the window, of {expected}",
            t.name,
            samples.len()
        );
    }
    samples.sort_unstable();
    Ok(Fleet {
        messages,
        usage,
        syscalls,
        rss_kib,
        samples,
    })
}

/// One device: a QoS 1 PUBLISH on `topic` at `first` and every [`PERIOD`] after it until `until`,
/// each waiting for its PUBACK (counted in `acked`). Returns the connection, still open.
async fn device(
    mut io: Box<dyn Io>,
    topic: String,
    first: tokio::time::Instant,
    until: tokio::time::Instant,
    epoch: Instant,
    acked: Arc<AtomicU64>,
) -> anyhow::Result<Box<dyn Io>> {
    let mut at = first;
    let mut id: u16 = 0;
    let mut frame = Vec::with_capacity(128);
    let mut ack = [0u8; 4];
    while at < until {
        tokio::time::sleep_until(at).await;
        id = id.checked_add(1).unwrap_or(1);
        frame.clear();
        timestamped(&mut frame, &topic, id, epoch)?;
        io.write_all(&frame).await?;
        io.read_exact(&mut ack).await?;
        if ack != [0x40, 2, (id >> 8) as u8, id as u8] {
            bail!("{topic}: expected PUBACK {id}, got {ack:?}");
        }
        acked.fetch_add(1, Ordering::Relaxed);
        at += PERIOD;
    }
    Ok(io)
}
