//! `authflood`: how many wrong-password CONNECTs per second the gateway absorbs while a good
//! client's QoS 1 round trip stays close to its idle value (issue 5).
//!
//! One run: Mosquitto from `upstream-broker/`, the release gateway as its own process with a plain
//! listener, a password file (argon2id, the `passwd` default) and the default `[limits]`. A good
//! client measures QoS 1 publish → delivery round trips idle, then while attackers hammer the
//! gateway with wrong passwords, first from a few addresses (the bans catch them), then each
//! attempt from a fresh address (only the hashing cap and the per-address rate stand in the way).
//!
//! `bash scripts/bench.sh` builds it; run `target/release/authflood [SECONDS] [ATTACKERS]`.

#![allow(clippy::as_conversions, clippy::cast_precision_loss)] // report arithmetic on counts, not input

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use e2e::{Mosquitto, free_port, scratch_dir, sigterm};
use mqtt_inspect::split_frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn connect_frame(id: &str, user: &str, password: &[u8]) -> Vec<u8> {
    bench::connect_v311(id, Some(user), Some(password))
}

async fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Vec<u8>> {
    loop {
        if let Some((f, _)) = split_frame(buf, mqtt_inspect::MAX_PACKET_SIZE)? {
            let f = f.to_vec();
            buf.drain(..f.len());
            return Ok(f);
        }
        let mut chunk = [0u8; 2048];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed");
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// QoS 1 round trips of the good client: publish to `lat/x`, wait for the delivery.
async fn latencies(addr: SocketAddr, samples: usize) -> anyhow::Result<Vec<Duration>> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut buf = Vec::new();
    s.write_all(&connect_frame("good", "alice", b"secret"))
        .await?;
    let ack = read_frame(&mut s, &mut buf).await?;
    if ack != [0x20, 2, 0, 0] {
        bail!("good client refused: {ack:?}");
    }
    s.write_all(&[0x82, 10, 0, 1, 0, 5, b'l', b'a', b't', b'/', b'#', 1])
        .await?;
    read_frame(&mut s, &mut buf).await?;
    let mut out = Vec::with_capacity(samples);
    for i in 0..samples {
        let id = u16::try_from(i % 60_000 + 1)?.to_be_bytes();
        let started = Instant::now();
        s.write_all(&[
            0x32, 11, 0, 5, b'l', b'a', b't', b'/', b'x', id[0], id[1], b'h', b'i',
        ])
        .await?;
        // PUBACK and the delivery, in either order.
        let mut delivered = false;
        while !delivered {
            let f = read_frame(&mut s, &mut buf).await?;
            if f.first().is_some_and(|b| b >> 4 == 3) {
                delivered = true;
                if let (Some(&a), Some(&b)) = (f.get(9), f.get(10)) {
                    s.write_all(&[0x40, 2, a, b]).await?;
                }
            }
        }
        out.push(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(out)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

/// Attackers: `workers` tasks sending wrong-password CONNECTs; `fresh_addresses` picks a new
/// loopback source address for every attempt.
async fn flood(
    addr: SocketAddr,
    workers: usize,
    fresh_addresses: bool,
    stop: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
) {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let stop = Arc::clone(&stop);
        let attempts = Arc::clone(&attempts);
        tasks.push(tokio::spawn(async move {
            let mut n: u32 = 0;
            while !stop.load(Ordering::Relaxed) {
                n = n.wrapping_add(1);
                let w8 = u8::try_from(w % 200).unwrap_or(0);
                let ip = if fresh_addresses {
                    let [_, b, c, d] =
                        (n.wrapping_mul(40_503) ^ (u32::from(w8) << 16)).to_be_bytes();
                    Ipv4Addr::new(127, b | 1, c, d.max(1))
                } else {
                    Ipv4Addr::new(127, 9, 0, w8.max(1))
                };
                let Ok(sock) = TcpSocket::new_v4() else {
                    continue;
                };
                if sock.bind(SocketAddr::new(IpAddr::V4(ip), 0)).is_err() {
                    continue;
                }
                let Ok(Ok(mut s)) =
                    tokio::time::timeout(Duration::from_secs(2), sock.connect(addr)).await
                else {
                    continue;
                };
                let _ = s.write_all(&connect_frame("x", "alice", b"wrong")).await;
                let mut buf = [0u8; 16];
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
                attempts.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

fn metric(admin: SocketAddr, series: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(admin) else {
        return f64::NAN;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.trim().parse().ok()))
        .unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    let seconds: u64 = bench::arg(1, 10, "SECONDS")?;
    let attackers: usize = bench::arg(2, 64, "ATTACKERS")?;
    let dir = scratch_dir("authflood")?;
    bench::write_alice_and_policy(&dir, "\"publish\", \"subscribe\", \"receive\"", "\"lat/#\"")?;
    let broker = Mosquitto::start()?;
    let (port, admin_port) = (free_port(), free_port());
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n[upstream]\naddress = \"{}\"\n[[listener]]\nname = \"plain\"\nbind = \"0.0.0.0:{port}\"\n[auth]\nprincipal_from = \"username\"\npassword_file = \"passwords\"\n[policy]\nfile = \"policy.toml\"\n[log]\naudit_file = \"audit.jsonl\"\n",
            broker.addr()
        ),
    )?;
    let mut gw = bench::spawn_gateway(&dir.join("gateway.toml"))?;
    let addr = bench::wait_port(port)?;
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse()?;
    let rt = bench::runtime()?;
    let samples = usize::try_from(seconds * 25)?;
    let report = rt.block_on(async {
        let mut idle = latencies(addr, samples).await?;
        let mut rows = Vec::new();
        for (label, fresh) in [
            ("attackers on fixed addresses (bans apply)", false),
            ("a fresh address per attempt", true),
        ] {
            let stop = Arc::new(AtomicBool::new(false));
            let attempts = Arc::new(AtomicU64::new(0));
            let hashed_before = metric(
                admin,
                "mqtt_gateway_auth_failures_total{listener=\"plain\",reason=\"bad_credentials\"}",
            );
            let started = Instant::now();
            let f = tokio::spawn(flood(
                addr,
                attackers,
                fresh,
                Arc::clone(&stop),
                Arc::clone(&attempts),
            ));
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut under = latencies(addr, samples).await?;
            stop.store(true, Ordering::Relaxed);
            let _ = f.await;
            let secs = started.elapsed().as_secs_f64();
            let hashed = metric(
                admin,
                "mqtt_gateway_auth_failures_total{listener=\"plain\",reason=\"bad_credentials\"}",
            ) - hashed_before;
            rows.push((
                label,
                attempts.load(Ordering::Relaxed) as f64 / secs,
                hashed / secs,
                pct(&mut under, 0.5),
                pct(&mut under, 0.99),
            ));
        }
        anyhow::Ok((pct(&mut idle, 0.5), pct(&mut idle, 0.99), rows))
    })?;
    let (p50, p99, rows) = report;
    println!("{attackers} concurrent attackers, {seconds} s per phase");
    println!(
        "good client QoS 1 round trip, idle: p50 {:.2} ms, p99 {:.2} ms",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
    println!(
        "{:<44} {:>14} {:>16} {:>10} {:>10} {:>8}",
        "flood", "CONNECTs/s", "verified wrong/s", "p50 ms", "p99 ms", "p50 x"
    );
    for (label, rate, hashed, u50, u99) in rows {
        println!(
            "{label:<44} {rate:>14.0} {hashed:>16.1} {:>10.2} {:>10.2} {:>8.2}",
            u50.as_secs_f64() * 1e3,
            u99.as_secs_f64() * 1e3,
            u50.as_secs_f64() / p50.as_secs_f64().max(1e-9)
        );
    }
    sigterm(gw.id())?;
    let _ = gw.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
