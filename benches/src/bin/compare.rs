//! `compare`: issue 8's comparison, every target in one run against the same Mosquitto:
//! Mosquitto direct, the gateway's plain listener, the gateway's mTLS listener (both with a
//! 1,000-rule policy: per-device `%u` rules, receive checks on), HAProxy (mTLS + CRL) and nginx
//! stream (mTLS + CRL). Measured for each, `REPS` times (medians reported):
//!
//! - QoS 0 flood, 1 and 4 publishers to 1 subscriber, 64 B and 1 KiB: messages/s delivered and
//!   the proxy's CPU time per delivered message (`/proc/PID/stat`);
//! - proxy CPU per message at a fixed 20,000 msg/s (64 B): 20 messages every millisecond from
//!   one publisher in one write, and one message each from 20 publishers;
//! - QoS 1 latency publish → delivery (through the proxy both ways) at 2,000 msg/s for 8 s,
//!   p50/p99;
//! - mTLS handshakes per second including CONNECT/CONNACK (ECDSA P-256), 8 concurrent clients:
//!   full handshakes (the client keeps no session, as after a gateway restart or with a device
//!   that does not resume), and resumed ones (the client offers its last ticket);
//! - RSS of the proxy per idle mTLS connection at 9,900 connections (CONNECTed), and the
//!   projection to 100,000.
//!
//! The load client runs on one thread of this process, on the same two cores as the broker and
//! the proxy. Results: a table on stdout, `benches/results/compare.csv` (every run) and
//! `benches/results/compare.svg` (a chart of the medians).
//!
//! `bash scripts/bench.sh compare [REPS]` builds everything in release mode and runs it.

#![allow(
    clippy::as_conversions,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)] // report arithmetic on counts and times, not input

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bench::proxies::{start_haproxy, start_nginx_workers};
use bench::{
    Io, client_tls, connect, connect_from, count_publishes, cpu_time, gateway_bin, publish_batch,
    rss_kib, subscribe, wait_port,
};
use e2e::{Mosquitto, free_port, scratch_dir, sigterm, workspace_root};
use mqtt_gateway::pki::Ca;
use mqtt_inspect::{PacketId, Properties, ProtocolVersion, Publish, QoS, split_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BATCH: usize = 256;
const IDLE_CONNECTIONS: usize = 9_900;
const PUBLISHERS_MAX: usize = 4;

/// One thing measured.
struct Target {
    name: &'static str,
    addr: SocketAddr,
    tls: bool,
    /// The proxy process (none for Mosquitto direct).
    pid: Option<u32>,
    /// How to start a fresh one (idle memory).
    kind: Kind,
}

impl Target {
    /// Whether idle memory is measured: for mTLS targets, and not for those that differ from
    /// another only by a Unix socket upstream (an idle connection sends nothing upstream).
    fn measures_idle(&self) -> bool {
        self.tls
            && !matches!(
                self.kind,
                Kind::Gateway(_, Up::Unix) | Kind::Haproxy(Up::Unix) | Kind::Nginx(_, Up::Unix)
            )
    }
}

/// How a proxy reaches the broker.
#[derive(Clone, Copy)]
enum Up {
    /// `127.0.0.1:port`.
    Tcp,
    /// The broker's Unix socket.
    Unix,
}

/// The broker address a proxy is given for `up`.
fn upstream_of(broker: &Mosquitto, up: Up) -> String {
    match up {
        Up::Tcp => broker.addr().to_string(),
        Up::Unix => format!("unix:{}", broker.unix_socket().display()),
    }
}

/// What a target is, to start a fresh process of it.
#[derive(Clone, Copy)]
enum Kind {
    Direct,
    /// The gateway; `Some(n)` runs its runtime on n threads (`TOKIO_WORKER_THREADS`), `None` on
    /// one per core (the default).
    Gateway(Option<usize>, Up),
    Haproxy(Up),
    /// nginx; `true`: `worker_processes auto` under a master (Debian's default), `false`: one
    /// process.
    Nginx(bool, Up),
}

/// What one repetition measured for one target.
#[derive(Default, Clone)]
struct Row {
    /// (publishers, payload) → (msgs/s, proxy µs/msg).
    flood: Vec<(f64, Option<f64>)>,
    fixed_cpu: Option<f64>,
    /// The same rate from 20 publishers, one message per write each.
    fixed_cpu_fleet: Option<f64>,
    latency: (f64, f64),
    /// Full handshakes/s: no resumption offered.
    handshakes: Option<f64>,
    /// Handshakes/s with the client resuming (TLS 1.3 tickets, where the proxy issues them).
    resumed: Option<f64>,
    idle_kib: Option<f64>,
    idle_base_kib: Option<f64>,
}

const FLOODS: [(usize, usize); 4] = [(1, 64), (4, 64), (1, 1024), (4, 1024)];

fn policy_1000() -> String {
    let mut s = String::from(
        "version = 1\n[[connect]]\nwho = { any = true }\nclient_ids = [\"*\"]\n\
         [[connect]]\nwho = { anonymous = true }\nclient_ids = [\"*\"]\n\
         [[rule]]\nwho = { anonymous = true }\nallow = [\"publish\", \"subscribe\", \"receive\"]\ntopics = [\"bench/#\"]\n\
         [[rule]]\nwho = { any = true }\nallow = [\"publish\", \"subscribe\", \"receive\"]\ntopics = [\"bench/#\"]\n\
         [[rule]]\nwho = { any = true }\ndeny = [\"receive\"]\ntopics = [\"bench/secret/#\"]\n\
         [[rule]]\nwho = { principals = [\"bench-*\"] }\nallow = [\"publish\", \"subscribe\", \"receive\"]\ntopics = [\"devices/%u/#\"]\n",
    );
    for n in 0..996 {
        let _ = write!(
            s,
            "[[rule]]\nwho = {{ principals = [\"device-{n}\"] }}\nallow = [\"publish\", \"receive\"]\ntopics = [\"fleet/{n}/%u/#\", \"fleet/{n}/status\"]\n"
        );
    }
    s
}

/// Starts the gateway with its files in `work` (created) and the certificates in `pki`.
fn start_gateway(
    work: &Path,
    pki: &Path,
    broker: &str,
    threads: Option<usize>,
) -> anyhow::Result<(Child, SocketAddr, SocketAddr)> {
    std::fs::create_dir_all(work)?;
    std::fs::write(work.join("policy.toml"), policy_1000())?;
    let (tls_port, plain_port) = (free_port(), free_port());
    let config = format!(
        r#"[upstream]
address = "{broker}"
[[listener]]
name = "mqtts"
bind = "127.0.0.1:{tls_port}"
[listener.tls]
cert = "{pki}/gateway.pem"
key = "{pki}/gateway.key"
client_ca = "{pki}/ca.pem"
crl = ["{pki}/ca.crl"]
[[listener]]
name = "plain"
bind = "127.0.0.1:{plain_port}"
[auth]
allow_anonymous = true
principal_from = "cert_cn"
cert_is_credential = true
[policy]
file = "policy.toml"
[limits]
# A benchmark is a flood by design: lift the per-client and per-address limits.
max_connections_per_ip = 100000
connections_per_ip_per_second = 1000000
messages_per_client_per_second = 100000000
bytes_per_client_per_second = "1GiB"
auth_failures_before_ban = 1000000
[log]
audit_file = "audit.jsonl"
"#,
        pki = pki.display()
    );
    std::fs::write(work.join("gateway.toml"), config)?;
    let mut cmd = Command::new(gateway_bin()?);
    cmd.args(["run", "--config"])
        .arg(work.join("gateway.toml"))
        .current_dir(work)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null());
    if let Some(n) = threads {
        cmd.env("TOKIO_WORKER_THREADS", n.to_string());
    }
    let child = cmd.spawn()?;
    let tls = wait_port(tls_port)?;
    Ok((child, tls, wait_port(plain_port)?))
}

fn tls_for(
    t: &Target,
    pki: &Path,
    name: &str,
) -> anyhow::Result<Option<Arc<rustls::ClientConfig>>> {
    t.tls.then(|| client_tls(pki, name)).transpose()
}

fn cpu_per_msg(
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
async fn flood(
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
/// usual case).
async fn fixed_rate(t: &Target, pki: &Path, publishers: usize) -> anyhow::Result<Option<f64>> {
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
    let before = t.pid.map(cpu_time).transpose()?;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..TICKS {
        tick.tick().await;
        for p in &mut pubs {
            p.write_all(&batch).await?;
        }
    }
    let (delivered, _) = counter.await??;
    let cpu = cpu_per_msg(t.pid, before, delivered)?;
    if delivered < want {
        eprintln!("{}: fixed rate delivered {delivered} of {want}", t.name);
    }
    Ok(cpu)
}

/// A QoS 1 SUBSCRIBE to `filter`, waiting for the SUBACK.
async fn subscribe_qos1(io: &mut Box<dyn Io>, filter: &str) -> anyhow::Result<()> {
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
/// 16,000 samples, so that the p99 is the 160th slowest message rather than the 40th of a 2 s
/// run, whose repetitions differed by up to 5× on this shared machine.
async fn latency(t: &Target, pki: &Path) -> anyhow::Result<(f64, f64)> {
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
    let want = TICKS * 2;
    let receiver = tokio::spawn(async move {
        let mut samples = Vec::with_capacity(want as usize);
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
                        samples.push(now.saturating_sub(u64::from_be_bytes(ts)));
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
        anyhow::Ok(samples)
    });
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut id: u16 = 0;
    for _ in 0..TICKS {
        tick.tick().await;
        let mut out = Vec::new();
        for _ in 0..2 {
            id = id.checked_add(1).unwrap_or(1);
            let mut payload = (epoch.elapsed().as_nanos() as u64).to_be_bytes().to_vec();
            payload.resize(64, b'x');
            Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "bench/lat/x",
                packet_id: PacketId::new(id),
                properties: Properties::EMPTY,
                payload: &payload,
            }
            .encode(ProtocolVersion::V311, &mut out)?;
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
    let pct = |p: f64| {
        samples
            .get(((samples.len() - 1) as f64 * p) as usize)
            .map_or(f64::NAN, |ns| *ns as f64 / 1e3)
    };
    Ok((pct(0.50), pct(0.99)))
}

/// Complete mTLS connections (TCP + TLS + CONNECT/CONNACK) per second, 8 concurrent clients, 5 s;
/// full handshakes, or with `resume` the client offering the ticket of its previous connection.
async fn handshakes(t: &Target, pki: &Path, resume: bool) -> anyhow::Result<f64> {
    let mut config = (*client_tls(pki, "bench-hs")?).clone();
    if !resume {
        // rustls' client keeps sessions by default: every connection after the first would
        // resume with a ticket, skipping the certificate signature and both chain checks.
        config.resumption = rustls::client::Resumption::disabled();
    }
    let tls = Arc::new(config);
    let done = Arc::new(AtomicU64::new(0));
    // 5 s: a 3 s window moved with whatever else the two cores were doing.
    let stop = Instant::now() + Duration::from_secs(5);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..8 {
        let (tls, done, addr) = (Arc::clone(&tls), Arc::clone(&done), t.addr);
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < stop {
                let from = IpAddr::V4(Ipv4Addr::new(127, 0, 2, (c + 1) as u8));
                if connect_from(
                    addr,
                    Some(from),
                    Some(Arc::clone(&tls)),
                    &format!("hs-{c}-{i}"),
                )
                .await
                .is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// RSS of the proxy per idle, CONNECTed mTLS connection at [`IDLE_CONNECTIONS`]; also returns
/// the RSS before them.
async fn idle(t: &Target, pki: &Path) -> anyhow::Result<(f64, f64)> {
    let pid = t.pid.context("no proxy process")?;
    let tls = client_tls(pki, "idle")?;
    let before = rss_kib(pid)?;
    let mut held: Vec<Box<dyn Io>> = Vec::with_capacity(IDLE_CONNECTIONS);
    let mut next = 0usize;
    while next < IDLE_CONNECTIONS {
        let mut wave = Vec::new();
        for i in next..(next + 32).min(IDLE_CONNECTIONS) {
            let (tls, addr) = (Arc::clone(&tls), t.addr);
            let from = IpAddr::V4(Ipv4Addr::new(127, 0, 3, (i % 32 + 1) as u8));
            wave.push(tokio::spawn(async move {
                connect_from(addr, Some(from), Some(tls), &format!("idle-{i}")).await
            }));
        }
        next = (next + 32).min(IDLE_CONNECTIONS);
        for w in wave {
            held.push(
                w.await?
                    .with_context(|| format!("{}: idle connection {}", t.name, held.len()))?,
            );
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kib(pid)?;
    drop(held);
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(((after - before) / IDLE_CONNECTIONS as f64, before))
}

/// Which measurements run: `COMPARE_ONLY=fixed,latency` (of `flood`, `fixed`, `latency`,
/// `handshakes`, `idle`) narrows a run for profiling; unset runs all of them.
fn wanted(what: &str) -> bool {
    std::env::var("COMPARE_ONLY").map_or(true, |only| only.split(',').any(|w| w.trim() == what))
}

/// Which targets run: `COMPARE_TARGETS=gateway,nginx` keeps the targets whose name contains one
/// of the words; unset runs all of them.
fn target_wanted(name: &str) -> bool {
    std::env::var("COMPARE_TARGETS").map_or(true, |only| {
        only.split(',')
            .any(|w| !w.trim().is_empty() && name.contains(w.trim()))
    })
}

async fn measure(t: &Target, pki: &Path) -> anyhow::Result<Row> {
    let mut row = Row::default();
    if wanted("flood") {
        for (pubs, payload) in FLOODS {
            row.flood.push(flood(t, pki, pubs, payload).await?);
        }
    }
    if wanted("fixed") {
        row.fixed_cpu = fixed_rate(t, pki, 1).await?;
        row.fixed_cpu_fleet = fixed_rate(t, pki, 20).await?;
    }
    if wanted("latency") {
        row.latency = latency(t, pki).await?;
    }
    if t.tls && wanted("handshakes") {
        row.handshakes = Some(handshakes(t, pki, false).await?);
        row.resumed = Some(handshakes(t, pki, true).await?);
    }
    Ok(row)
}

/// Idle memory is measured on a fresh process per repetition: a process that has already held
/// thousands of connections reuses the memory they freed, and would report next to nothing.
async fn idle_fresh(
    kind: Kind,
    name: &'static str,
    dir: &Path,
    broker: &Mosquitto,
) -> anyhow::Result<(f64, f64)> {
    let pki = dir.join("pki");
    let (mut child, addr) = match kind {
        Kind::Gateway(threads, up) => start_gateway(
            &dir.join("gw-idle"),
            &pki,
            &upstream_of(broker, up),
            threads,
        )
        .map(|(c, tls, _)| (c, tls))?,
        Kind::Haproxy(up) => start_haproxy(dir, &upstream_of(broker, up))?,
        Kind::Nginx(auto, up) => start_nginx_workers(dir, &upstream_of(broker, up), auto)?,
        Kind::Direct => bail!("no proxy to measure"),
    };
    let t = Target {
        name,
        addr,
        tls: true,
        pid: Some(child.id()),
        kind,
    };
    let result = idle(&t, &pki).await;
    sigterm(child.id())?;
    let _ = child.wait();
    result
}

fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn fmt(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "-".to_owned()
    }
}

/// A bar chart of two series per target, side by side, as SVG text.
fn svg(names: &[&str], panels: &[(&str, Vec<f64>)]) -> String {
    let (w, h, pad) = (360.0, 240.0, 40.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"10\">\n",
        w * panels.len() as f64,
        h + 100.0
    );
    let colors = [
        "#555", "#1f77b4", "#2ca02c", "#17becf", "#d62728", "#9467bd", "#ff7f0e",
    ];
    for (p, (title, values)) in panels.iter().enumerate() {
        let x0 = w * p as f64;
        let max = values
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            .max(1e-9);
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"16\" font-size=\"12\">{title}</text>",
            x0 + pad
        );
        let bw = (w - 2.0 * pad) / values.len() as f64;
        for (i, v) in values.iter().enumerate() {
            let v = if v.is_finite() { *v } else { 0.0 };
            let bh = (h - pad) * v / max;
            let x = x0 + pad + bw * i as f64;
            let _ = writeln!(
                s,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{bh:.1}\" fill=\"{}\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\" transform=\"rotate(30 {:.1} {:.1})\">{}</text>",
                h - bh,
                bw * 0.8,
                colors.get(i % colors.len()).copied().unwrap_or("#555"),
                x,
                h - bh - 3.0,
                if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                },
                x,
                h + 12.0,
                x,
                h + 12.0,
                names.get(i).copied().unwrap_or("")
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

fn main() -> anyhow::Result<()> {
    let reps: usize = std::env::args()
        .nth(1)
        .map_or(Ok(3), |s| s.parse())
        .context("REPS")?;
    let dir = scratch_dir("compare")?;
    let pki = dir.join("pki");
    let ca = Ca::init(&pki, "bench CA", 30)?;
    ca.issue(
        "gateway",
        None,
        30,
        true,
        &["localhost".into(), "127.0.0.1".into()],
    )?;
    for name in ["bench-sub", "bench-hs", "idle"] {
        ca.issue(name, None, 30, false, &[])?;
    }
    for i in 0..PUBLISHERS_MAX {
        ca.issue(&format!("bench-pub-{i}"), None, 30, false, &[])?;
    }
    let broker = Mosquitto::start()?;
    // nginx's workers run as `nobody`: let them reach the broker's socket too.
    std::fs::set_permissions(
        broker.unix_socket(),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )?;
    let (tcp, unix) = (
        upstream_of(&broker, Up::Tcp),
        upstream_of(&broker, Up::Unix),
    );
    let (mut gateway, gw_tls, gw_plain) = start_gateway(&dir.join("gw"), &pki, &tcp, None)?;
    let (mut gateway1, gw1_tls, _) = start_gateway(&dir.join("gw-1thread"), &pki, &tcp, Some(1))?;
    let (mut gateway_unix, gwu_tls, _) = start_gateway(&dir.join("gw-unix"), &pki, &unix, None)?;
    let (mut haproxy, ha_addr) = start_haproxy(&dir, &tcp)?;
    let (mut nginx, ng_addr) = start_nginx_workers(&dir, &tcp, false)?;
    let (mut nginx_unix, ngu_addr) = start_nginx_workers(&dir, &unix, false)?;
    let (mut nginx_auto, nga_addr) = start_nginx_workers(&dir, &tcp, true)?;
    let targets = [
        ("mosquitto direct", broker.addr(), false, None, Kind::Direct),
        (
            "gateway plain",
            gw_plain,
            false,
            Some(gateway.id()),
            Kind::Gateway(None, Up::Tcp),
        ),
        (
            "gateway mTLS",
            gw_tls,
            true,
            Some(gateway.id()),
            Kind::Gateway(None, Up::Tcp),
        ),
        (
            "gateway mTLS, 1 thread",
            gw1_tls,
            true,
            Some(gateway1.id()),
            Kind::Gateway(Some(1), Up::Tcp),
        ),
        (
            "gateway mTLS, unix upstream",
            gwu_tls,
            true,
            Some(gateway_unix.id()),
            Kind::Gateway(None, Up::Unix),
        ),
        (
            "HAProxy mTLS",
            ha_addr,
            true,
            Some(haproxy.id()),
            Kind::Haproxy(Up::Tcp),
        ),
        (
            "nginx mTLS, 1 worker",
            ng_addr,
            true,
            Some(nginx.id()),
            Kind::Nginx(false, Up::Tcp),
        ),
        (
            "nginx mTLS, 1 worker, unix upstream",
            ngu_addr,
            true,
            Some(nginx_unix.id()),
            Kind::Nginx(false, Up::Unix),
        ),
        (
            "nginx mTLS, auto workers",
            nga_addr,
            true,
            Some(nginx_auto.id()),
            Kind::Nginx(true, Up::Tcp),
        ),
    ]
    .map(|(name, addr, tls, pid, kind)| Target {
        name,
        addr,
        tls,
        pid,
        kind,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut runs: Vec<Vec<Row>> = Vec::new();
    let mut csv = String::from("rep,target,metric,value\n");
    for rep in 0..reps {
        let mut rows = Vec::new();
        for t in &targets {
            if !target_wanted(t.name) {
                rows.push(Row::default());
                continue;
            }
            eprintln!("rep {}/{reps}: {}", rep + 1, t.name);
            let row = runtime.block_on(measure(t, &pki)).with_context(|| t.name)?;
            for ((pubs, payload), (rate, cpu)) in FLOODS.iter().zip(&row.flood) {
                let _ = writeln!(
                    csv,
                    "{rep},{},flood_{pubs}x{payload}B_msgs_per_s,{rate:.0}",
                    t.name
                );
                if let Some(c) = cpu {
                    let _ = writeln!(
                        csv,
                        "{rep},{},flood_{pubs}x{payload}B_cpu_us_per_msg,{c:.3}",
                        t.name
                    );
                }
            }
            if let Some(c) = row.fixed_cpu {
                let _ = writeln!(csv, "{rep},{},fixed_20k_cpu_us_per_msg,{c:.3}", t.name);
            }
            if let Some(c) = row.fixed_cpu_fleet {
                let _ = writeln!(
                    csv,
                    "{rep},{},fixed_20k_20pubs_cpu_us_per_msg,{c:.3}",
                    t.name
                );
            }
            let _ = writeln!(csv, "{rep},{},qos1_p50_us,{:.0}", t.name, row.latency.0);
            let _ = writeln!(csv, "{rep},{},qos1_p99_us,{:.0}", t.name, row.latency.1);
            if let Some(h) = row.handshakes {
                let _ = writeln!(csv, "{rep},{},handshakes_per_s,{h:.0}", t.name);
            }
            if let Some(h) = row.resumed {
                let _ = writeln!(csv, "{rep},{},resumed_handshakes_per_s,{h:.0}", t.name);
            }
            rows.push(row);
        }
        runs.push(rows);
    }
    for child in [
        &mut gateway,
        &mut gateway1,
        &mut gateway_unix,
        &mut haproxy,
        &mut nginx,
        &mut nginx_unix,
        &mut nginx_auto,
    ] {
        sigterm(child.id())?;
        let _ = child.wait();
    }
    if wanted("idle") {
        for (rep, rows) in runs.iter_mut().enumerate() {
            for (i, row) in rows.iter_mut().enumerate() {
                let Some(t) = targets.get(i) else { continue };
                if !t.measures_idle() || !target_wanted(t.name) {
                    continue;
                }
                eprintln!("rep {}/{reps}: {} idle, fresh process", rep + 1, t.name);
                let (per, base) = runtime
                    .block_on(idle_fresh(t.kind, t.name, &dir, &broker))
                    .with_context(|| t.name)?;
                let _ = writeln!(csv, "{rep},{},idle_kib_per_conn,{per:.2}", t.name);
                let _ = writeln!(csv, "{rep},{},idle_base_kib,{base:.0}", t.name);
                row.idle_kib = Some(per);
                row.idle_base_kib = Some(base);
            }
        }
    }

    // Medians over the repetitions.
    let med = |f: &dyn Fn(&Row) -> Option<f64>, i: usize| {
        median(
            runs.iter()
                .filter_map(|rows| rows.get(i).and_then(f))
                .collect(),
        )
    };
    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "medians of {reps} runs; load client, broker and proxy on the same 2 cores\n"
    );
    let _ = writeln!(
        out,
        "| target | {} | fixed 20k/s µs/msg: 1 pub × 20 / 20 pubs × 1 | QoS 1 p50 / p99 µs | handshakes/s full / resumed | idle KiB/conn | 100k idle (GiB) |",
        FLOODS
            .iter()
            .map(|(p, b)| format!("{p}×{b} B msg/s (µs/msg)"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(out, "|{}", " --- |".repeat(6 + FLOODS.len()));
    for (i, t) in targets.iter().enumerate() {
        let mut cells = Vec::new();
        for f in 0..FLOODS.len() {
            let rate = med(&|r: &Row| r.flood.get(f).map(|x| x.0), i);
            let cpu = med(&|r: &Row| r.flood.get(f).and_then(|x| x.1), i);
            cells.push(format!("{} ({})", fmt(rate, 0), fmt(cpu, 2)));
        }
        let idle = med(&|r: &Row| r.idle_kib, i);
        let base = med(&|r: &Row| r.idle_base_kib, i);
        let projection = (base + idle * 100_000.0) / (1024.0 * 1024.0);
        let _ = writeln!(
            out,
            "| {} | {} | {} / {} | {} / {} | {} / {} | {} | {} |",
            t.name,
            cells.join(" | "),
            fmt(med(&|r: &Row| r.fixed_cpu, i), 2),
            fmt(med(&|r: &Row| r.fixed_cpu_fleet, i), 2),
            fmt(med(&|r: &Row| Some(r.latency.0), i), 0),
            fmt(med(&|r: &Row| Some(r.latency.1), i), 0),
            fmt(med(&|r: &Row| r.handshakes, i), 0),
            fmt(med(&|r: &Row| r.resumed, i), 0),
            fmt(idle, 1),
            fmt(projection, 2),
        );
    }
    // Ratios from the medians: the gateway's mTLS listener against the others.
    let _ = writeln!(out);
    let at = |name: &str| targets.iter().position(|t| t.name == name).unwrap_or(0);
    for (ours, other) in [
        ("gateway mTLS", "HAProxy mTLS"),
        ("gateway mTLS", "nginx mTLS, 1 worker"),
        ("gateway mTLS", "nginx mTLS, auto workers"),
        ("gateway mTLS, 1 thread", "nginx mTLS, 1 worker"),
        (
            "gateway mTLS, unix upstream",
            "nginx mTLS, 1 worker, unix upstream",
        ),
        ("gateway mTLS, unix upstream", "gateway mTLS"),
        ("gateway mTLS", "mosquitto direct"),
    ] {
        let label = format!("{ours} / {other}");
        let (ours, other) = (at(ours), at(other));
        let ratio = |f: &dyn Fn(&Row) -> Option<f64>, other: usize| med(f, ours) / med(f, other);
        let _ = writeln!(
            out,
            "{label}: flood 1×64 B msg/s {}, 4×64 B msg/s {}, fixed-rate CPU {} (20 publishers: {}), p99 {}, handshakes/s {} (resumed {}), idle KiB/conn {}",
            fmt(ratio(&|r: &Row| r.flood.first().map(|x| x.0), other), 2),
            fmt(ratio(&|r: &Row| r.flood.get(1).map(|x| x.0), other), 2),
            fmt(ratio(&|r: &Row| r.fixed_cpu, other), 2),
            fmt(ratio(&|r: &Row| r.fixed_cpu_fleet, other), 2),
            fmt(ratio(&|r: &Row| Some(r.latency.1), other), 2),
            fmt(ratio(&|r: &Row| r.handshakes, other), 2),
            fmt(ratio(&|r: &Row| r.resumed, other), 2),
            fmt(ratio(&|r: &Row| r.idle_kib, other), 2),
        );
    }
    print!("{out}");
    if std::env::var_os("COMPARE_ONLY").is_some() || std::env::var_os("COMPARE_TARGETS").is_some() {
        eprintln!(
            "a narrowed run (COMPARE_ONLY / COMPARE_TARGETS): benches/results left as they are"
        );
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }

    let results = workspace_root().join("benches/results");
    std::fs::create_dir_all(&results)?;
    std::fs::write(results.join("compare.csv"), csv)?;
    std::fs::write(results.join("compare.md"), &out)?;
    let chart = svg(
        &names,
        &[
            (
                "QoS 0 msg/s, 1 publisher, 64 B",
                (0..targets.len())
                    .map(|i| med(&|r: &Row| r.flood.first().map(|x| x.0), i))
                    .collect(),
            ),
            (
                "proxy CPU µs/msg, flood 1×64 B",
                (0..targets.len())
                    .map(|i| med(&|r: &Row| r.flood.first().and_then(|x| x.1), i))
                    .collect(),
            ),
            (
                "proxy CPU µs/msg at 20,000 msg/s, 1 publisher × 20",
                (0..targets.len())
                    .map(|i| med(&|r: &Row| r.fixed_cpu, i))
                    .collect(),
            ),
            (
                "proxy CPU µs/msg at 20,000 msg/s, 20 publishers × 1",
                (0..targets.len())
                    .map(|i| med(&|r: &Row| r.fixed_cpu_fleet, i))
                    .collect(),
            ),
        ],
    );
    std::fs::write(results.join("compare.svg"), chart)?;
    let _ = std::fs::remove_dir_all(&dir);
    let _: PathBuf = results;
    Ok(())
}
