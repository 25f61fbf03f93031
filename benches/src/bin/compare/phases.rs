//! The measurements, each run against one target: floods, fixed-rate CPU, QoS 1 latency,
//! handshakes and idle memory.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bench::{
    Io, SyscallCount, Syscalls, Usage, client_tls, connect, connect_from, count_publishes,
    cpu_time, publish_batch, rss_kib, subscribe,
};
use mqtt_inspect::{PacketId, Properties, ProtocolVersion, Publish, QoS, split_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::targets::Target;

const BATCH: usize = 256;
const IDLE_CONNECTIONS: usize = 9_900;
pub(crate) const PUBLISHERS_MAX: usize = 4;

/// What one repetition measured for one target.
#[derive(Default, Clone)]
pub(crate) struct Row {
    /// (publishers, payload) → (msgs/s, proxy µs/msg).
    pub(crate) flood: Vec<(f64, Option<f64>)>,
    pub(crate) fixed_cpu: Option<f64>,
    /// The same rate from 20 publishers, one message per write each.
    pub(crate) fixed_cpu_fleet: Option<f64>,
    /// The kernel's (system) part of `fixed_cpu` and `fixed_cpu_fleet`.
    pub(crate) fixed_kernel: Option<f64>,
    pub(crate) fixed_kernel_fleet: Option<f64>,
    /// Wake-ups and syscalls per message in the two fixed-rate phases.
    pub(crate) fixed_calls: Option<Calls>,
    pub(crate) fixed_calls_fleet: Option<Calls>,
    pub(crate) latency: (f64, f64),
    /// Every QoS 1 latency sample of this repetition (ns), for percentiles pooled over all.
    pub(crate) latency_samples: Vec<u64>,
    /// Full handshakes/s: no resumption offered.
    pub(crate) handshakes: Option<f64>,
    /// Handshakes/s with the client resuming (TLS 1.3 tickets, where the proxy issues them).
    pub(crate) resumed: Option<f64>,
    pub(crate) idle_kib: Option<f64>,
    pub(crate) idle_base_kib: Option<f64>,
    /// The fleet phase (a fresh process).
    pub(crate) fleet: Option<crate::fleet::Fleet>,
}

pub(crate) const FLOODS: [(usize, usize); 4] = [(1, 64), (4, 64), (1, 1024), (4, 1024)];

pub(crate) fn tls_for(
    t: &Target,
    pki: &Path,
    name: &str,
) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    t.tls.then(|| client_tls(pki, name)).transpose()
}

pub(crate) fn cpu_per_msg(
    pid: Option<u32>,
    before: Option<Duration>,
    delivered: u64,
) -> anyhow::Result<Option<f64>> {
    Ok(match (pid, before) {
        (Some(pid), Some(b)) => {
            let used = cpu_time(pid)?.saturating_sub(b);
            Some(used.as_secs_f64() * 1e6 / delivered.max(1) as f64)
        }
        _ => None,
    })
}

/// QoS 0 flood: `pubs` publishers, `payload` bytes, to one subscriber.
pub(crate) async fn flood(
    t: &Target,
    pki: &Path,
    pubs: usize,
    payload: usize,
) -> anyhow::Result<(f64, Option<f64>)> {
    let messages: u64 = if payload <= 64 { 200_000 } else { 100_000 };
    let mut sub = connect(t.addr, tls_for(t, pki, "bench-sub")?, "bench-sub").await?;
    subscribe(&mut sub, "bench/#").await?;
    let mut publishers = Vec::new();
    for i in 0..pubs {
        let name = format!("bench-pub-{i}");
        publishers.push(connect(t.addr, tls_for(t, pki, &name)?, &name).await?);
    }
    let counter =
        tokio::spawn(
            async move { count_publishes(&mut sub, messages, Duration::from_secs(3)).await },
        );
    let batch = publish_batch("bench/load/topic", payload, BATCH)?;
    let per_pub = messages / pubs as u64;
    let before = t.pid.map(cpu_time).transpose()?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for mut p in publishers {
        let batch = batch.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while sent < per_pub {
                p.write_all(&batch).await?;
                sent += BATCH as u64;
            }
            p.flush().await?;
            // Keep the connection until the subscriber is done.
            tokio::time::sleep(Duration::from_secs(1)).await;
            anyhow::Ok(p)
        }));
    }
    let (delivered, _) = counter.await??;
    let elapsed = started.elapsed();
    let cpu = cpu_per_msg(t.pid, before, delivered)?;
    for task in tasks {
        drop(task.await??);
    }
    Ok((delivered as f64 / elapsed.as_secs_f64(), cpu))
}

/// Proxy CPU per message at a fixed 20,000 msg/s (64 B), for 10 seconds, to one subscriber:
/// every millisecond either one publisher writes 20 messages at once (`publishers` = 1: a
/// gateway or bridge forwarding a batch), or each of 20 publishers writes one (`publishers` =
/// 20: a fleet of devices, one TLS record and one wake-up per message — the costlier and more
/// usual case). Returns (total, kernel) µs per message.
pub(crate) async fn fixed_rate(
    t: &Target,
    pki: &Path,
    publishers: usize,
) -> anyhow::Result<Option<Fixed>> {
    const PER_TICK: usize = 20;
    const TICKS: u64 = 10_000;
    let mut sub = connect(t.addr, tls_for(t, pki, "bench-sub")?, "bench-sub").await?;
    subscribe(&mut sub, "bench/#").await?;
    let mut pubs = Vec::new();
    for i in 0..publishers {
        let name = format!("bench-pub-{}", i % PUBLISHERS_MAX);
        pubs.push(connect(t.addr, tls_for(t, pki, &name)?, &format!("fixed-{i}")).await?);
    }
    let want = TICKS * PER_TICK as u64;
    let counter =
        tokio::spawn(async move { count_publishes(&mut sub, want, Duration::from_secs(3)).await });
    let batch = publish_batch("bench/fixed/topic", 64, PER_TICK / publishers.max(1))?;
    let before = t.pid.map(Usage::of).transpose()?;
    let perf = t
        .pid
        .and_then(|pid| Syscalls::start(pid, Duration::from_millis(TICKS)));
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..TICKS {
        tick.tick().await;
        for p in &mut pubs {
            p.write_all(&batch).await?;
        }
    }
    let (delivered, _) = counter.await??;
    let syscalls = tokio::task::spawn_blocking(move || perf.and_then(Syscalls::finish)).await?;
    if delivered < want {
        eprintln!("{}: fixed rate delivered {delivered} of {want}", t.name);
    }
    let (Some(pid), Some(before)) = (t.pid, before) else {
        return Ok(None);
    };
    let used = Usage::of(pid)?.since(before);
    let per_msg = |d: Duration| d.as_secs_f64() * 1e6 / delivered.max(1) as f64;
    Ok(Some(Fixed {
        total: per_msg(used.user + used.kernel),
        kernel: per_msg(used.kernel),
        calls: Calls::per_message(used.wakeups, syscalls, delivered),
    }))
}

/// What one fixed-rate run cost the proxy per message.
pub(crate) struct Fixed {
    /// CPU µs (user + kernel).
    pub(crate) total: f64,
    /// Of which the kernel's.
    pub(crate) kernel: f64,
    pub(crate) calls: Calls,
}

/// Wake-ups and syscalls per message.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Calls {
    /// Voluntary context switches of the proxy's threads.
    pub(crate) wakeups: f64,
    /// Syscall entries, when `perf` could count them.
    pub(crate) syscalls: Option<f64>,
    /// `epoll_wait`/`epoll_pwait` entries, likewise.
    pub(crate) epoll: Option<f64>,
}

impl Calls {
    pub(crate) fn per_message(wakeups: u64, syscalls: Option<SyscallCount>, messages: u64) -> Self {
        let m = messages.max(1) as f64;
        Self {
            wakeups: wakeups as f64 / m,
            syscalls: syscalls.map(|s| s.all as f64 / m),
            epoll: syscalls.map(|s| s.epoll as f64 / m),
        }
    }
}

/// A QoS 1 SUBSCRIBE to `filter`, waiting for the SUBACK.
pub(crate) async fn subscribe_qos1(io: &mut Box<dyn Io>, filter: &str) -> anyhow::Result<()> {
    let mut body = vec![0x00, 0x01];
    body.extend_from_slice(&u16::try_from(filter.len())?.to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(1);
    let mut frame = vec![0x82, u8::try_from(body.len())?];
    frame.extend_from_slice(&body);
    io.write_all(&frame).await?;
    let mut b = [0u8; 5];
    io.read_exact(&mut b).await?;
    if b[0] != 0x90 {
        bail!("expected SUBACK, got {b:?}");
    }
    Ok(())
}

/// QoS 1 latency from the publisher's write to the subscriber's read, at 2,000 msg/s for 8 s:
/// 16,000 samples (ns, sorted), so that the p99 is the 160th slowest message rather than the 40th
/// of a 2 s run, whose repetitions differed by up to 5× on this shared machine.
pub(crate) async fn latency(t: &Target, pki: &Path) -> anyhow::Result<Vec<u64>> {
    const TICKS: u64 = 8_000;
    let epoch = Instant::now();
    let mut sub = connect(t.addr, tls_for(t, pki, "bench-sub")?, "bench-sub").await?;
    subscribe_qos1(&mut sub, "bench/lat/#").await?;
    let publ = connect(t.addr, tls_for(t, pki, "bench-pub-0")?, "bench-pub-0").await?;
    let (mut pub_rd, mut pub_wr) = tokio::io::split(publ);
    // Drain the PUBACKs.
    let drain = tokio::spawn(async move {
        let mut b = [0u8; 4096];
        while matches!(pub_rd.read(&mut b).await, Ok(n) if n > 0) {}
    });
    let receiver = tokio::spawn(receive_qos1(sub, epoch, TICKS * 2, 0..u64::MAX));
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut id: u16 = 0;
    for _ in 0..TICKS {
        tick.tick().await;
        let mut out = Vec::new();
        for _ in 0..2 {
            id = id.checked_add(1).unwrap_or(1);
            timestamped(&mut out, "bench/lat/x", id, epoch)?;
        }
        pub_wr.write_all(&out).await?;
    }
    let mut samples = receiver.await??;
    drop(pub_wr);
    drain.abort();
    if samples.is_empty() {
        bail!("no latency samples");
    }
    samples.sort_unstable();
    Ok(samples)
}

/// Reads QoS 1 deliveries from `sub`, acknowledging each, until `want` samples were taken or
/// nothing arrived for 3 s; a sample is the time from the publisher's write (the first 8 bytes of
/// the payload: ns since `epoch`) to the read, kept for messages sent within `sent` (ns).
pub(crate) async fn receive_qos1(
    mut sub: Box<dyn Io>,
    epoch: Instant,
    want: u64,
    sent: std::ops::Range<u64>,
) -> anyhow::Result<Vec<u64>> {
    let mut samples = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while (samples.len() as u64) < want {
        let n = match tokio::time::timeout(Duration::from_secs(3), sub.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        let now = epoch.elapsed().as_nanos() as u64;
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        let mut acks = Vec::new();
        let mut rest: &[u8] = &buf;
        while let Some((frame, tail)) = split_frame(rest, mqtt_inspect::MAX_PACKET_SIZE)? {
            if let Ok(mqtt_inspect::Packet::Publish(p)) =
                mqtt_inspect::decode(frame, ProtocolVersion::V311)
            {
                if let Some(ts) = p.payload.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
                    let ts = u64::from_be_bytes(ts);
                    if sent.contains(&ts) {
                        samples.push(now.saturating_sub(ts));
                    }
                }
                if let Some(id) = p.packet_id {
                    acks.extend_from_slice(&[0x40, 2]);
                    acks.extend_from_slice(&id.get().to_be_bytes());
                }
            }
            rest = tail;
        }
        let consumed = buf.len() - rest.len();
        buf.drain(..consumed);
        sub.write_all(&acks).await?;
    }
    Ok(samples)
}

/// A QoS 1 PUBLISH on `topic` with packet id `id`, carrying the time since `epoch` (ns) in the
/// first 8 of its 64 payload bytes, appended to `out`.
pub(crate) fn timestamped(
    out: &mut Vec<u8>,
    topic: &str,
    id: u16,
    epoch: Instant,
) -> anyhow::Result<()> {
    let mut payload = [b'x'; 64];
    if let Some(head) = payload.get_mut(..8) {
        head.copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_be_bytes());
    }
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic,
        packet_id: PacketId::new(id),
        properties: Properties::EMPTY,
        payload: &payload,
    }
    .encode(ProtocolVersion::V311, out)?;
    Ok(())
}

/// The `p` quantile (0..=1) of sorted nanosecond samples, in µs; NaN when there are none.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> f64 {
    let last = sorted.len().saturating_sub(1);
    sorted
        .get((last as f64 * p) as usize)
        .map_or(f64::NAN, |ns| *ns as f64 / 1e3)
}

/// Complete mTLS connections (TCP + TLS + CONNECT/CONNACK) per second, 8 concurrent clients, 5 s;
/// full handshakes, or with `resume` the client offering the ticket of its previous connection.
pub(crate) async fn handshakes(t: &Target, pki: &Path, resume: bool) -> anyhow::Result<f64> {
    let mut config = (*client_tls(pki, "bench-hs")?).clone();
    if !resume {
        // rustls' client keeps sessions by default: every connection after the first would
        // resume with a ticket, skipping the certificate signature and both chain checks.
        config.resumption = rustls::client::Resumption::disabled();
    }
    let tls = Arc::new(config);
    bench::handshake_rate(t.addr, vec![tls; 8]).await
}

/// RSS of the proxy per idle, CONNECTed mTLS connection at [`IDLE_CONNECTIONS`]; also returns
/// the RSS before them.
pub(crate) async fn idle(t: &Target, pki: &Path) -> anyhow::Result<(f64, f64)> {
    let pid = t.pid.context("no proxy process")?;
    let tls = client_tls(pki, "idle")?;
    let before = rss_kib(pid)?;
    let held = connect_many(t, &tls, IDLE_CONNECTIONS, "idle").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;
    drop(held);
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(((after - before) / IDLE_CONNECTIONS as f64, before))
}

/// `n` mTLS connections to `t`, CONNECTed as `{prefix}-{i}`, 32 at a time, from 32 loopback
/// addresses (one address's ephemeral ports would not do for 10,000 connections to one proxy and
/// its 10,000 to the broker).
pub(crate) async fn connect_many(
    t: &Target,
    tls: &Arc<rustls::ClientConfig>,
    n: usize,
    prefix: &str,
) -> anyhow::Result<Vec<Box<dyn Io>>> {
    let mut held: Vec<Box<dyn Io>> = Vec::with_capacity(n);
    let mut next = 0usize;
    while next < n {
        let mut wave = Vec::new();
        for i in next..(next + 32).min(n) {
            let (tls, addr) = (Arc::clone(tls), t.addr);
            let from = IpAddr::V4(Ipv4Addr::new(127, 0, 3, (i % 32 + 1) as u8));
            let id = format!("{prefix}-{i}");
            wave.push(tokio::spawn(async move {
                connect_from(addr, Some(from), Some(tls), &id).await
            }));
        }
        next = (next + 32).min(n);
        for w in wave {
            held.push(
                w.await?
                    .with_context(|| format!("{}: {prefix} connection {}", t.name, held.len()))?,
            );
        }
    }
    Ok(held)
}

/// Which measurements run: `COMPARE_ONLY=fixed,latency` (of `flood`, `fixed`, `latency`,
/// `handshakes`, `idle`, `fleet`; `batched` or `pubs20` for one of the two fixed-rate phases)
/// narrows a run for profiling; unset runs all of them.
pub(crate) fn wanted(what: &str) -> bool {
    std::env::var("COMPARE_ONLY").map_or(true, |only| only.split(',').any(|w| w.trim() == what))
}

/// Which targets run: `COMPARE_TARGETS=gateway,nginx` keeps the targets whose name contains one
/// of the words, `=gateway mTLS` the one so named (names hold commas: `=` takes the rest of the
/// variable, so it comes last); unset runs all of them.
pub(crate) fn target_wanted(name: &str) -> bool {
    std::env::var("COMPARE_TARGETS").map_or(true, |only| {
        let (words, exact) = only.split_once('=').unwrap_or((&only, ""));
        (!exact.trim().is_empty() && name == exact.trim())
            || words
                .split(',')
                .any(|w| !w.trim().is_empty() && name.contains(w.trim()))
    })
}

pub(crate) async fn measure(t: &Target, pki: &Path) -> anyhow::Result<Row> {
    let mut row = Row::default();
    if wanted("flood") {
        for (pubs, payload) in FLOODS {
            row.flood.push(flood(t, pki, pubs, payload).await?);
        }
    }
    if wanted("fixed") || wanted("batched") {
        let f = fixed_rate(t, pki, 1).await?;
        row.fixed_cpu = f.as_ref().map(|f| f.total);
        row.fixed_kernel = f.as_ref().map(|f| f.kernel);
        row.fixed_calls = f.map(|f| f.calls);
    }
    if wanted("fixed") || wanted("pubs20") {
        let f = fixed_rate(t, pki, 20).await?;
        row.fixed_cpu_fleet = f.as_ref().map(|f| f.total);
        row.fixed_kernel_fleet = f.as_ref().map(|f| f.kernel);
        row.fixed_calls_fleet = f.map(|f| f.calls);
    }
    if wanted("latency") {
        let samples = latency(t, pki).await?;
        row.latency = (percentile(&samples, 0.50), percentile(&samples, 0.99));
        row.latency_samples = samples;
    }
    if t.tls && wanted("handshakes") {
        row.handshakes = Some(handshakes(t, pki, false).await?);
        row.resumed = Some(handshakes(t, pki, true).await?);
    }
    Ok(row)
}
