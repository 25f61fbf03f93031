//! `clustercost`: what `[cluster] redis` costs a CONNECT (issue 26). Two release gateways as
//! their own processes in front of one Mosquitto, alike but for `[cluster]`: one stand-alone, one
//! with a `redis-server` (Debian package) on loopback. For each: `CONNECTS` logins by `CLIENTS`
//! concurrent clients (connect, CONNECT, CONNACK, DISCONNECT), accepted ones (a password that
//! matches: Redis is never asked) and refused ones (a wrong password: one Lua script in Redis per
//! failure, within the 200 ms timeout). Prints CONNECTs per second and p50/p99 latency (TCP connect
//! to CONNACK).
//!
//! `bash scripts/bench.sh clustercost` builds it; run `target/release/clustercost [CONNECTS]
//! [CLIENTS]` (default 4000 and 8). `GATEWAY_BIN=path` measures another build.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::{Mosquitto, free_port, scratch_dir, sigterm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn connect_frame(password: &[u8]) -> Vec<u8> {
    bench::connect_v311("", Some("alice"), Some(password))
}

/// One login; its latency. `want` is the CONNACK return code expected.
async fn login(addr: SocketAddr, frame: &[u8], want: u8) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(frame).await?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await?;
    let took = t0.elapsed();
    if ack != [0x20, 2, 0, want] {
        bail!("CONNACK {ack:?}, wanted return code {want}");
    }
    if want == 0 {
        s.write_all(&[0xe0, 0]).await?;
    }
    s.shutdown().await?;
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    Ok(took)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = sigterm(self.0.id());
        let _ = self.0.wait();
    }
}

fn start_gateway(
    dir: &std::path::Path,
    name: &str,
    broker: &Mosquitto,
    cluster: Option<&str>,
) -> anyhow::Result<(Killed, SocketAddr)> {
    let port = free_port();
    let cluster = cluster.map_or_else(String::new, |url| format!("[cluster]\nredis = \"{url}\"\n"));
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[upstream]\naddress = \"{broker}\"\n\
             [[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:{port}\"\n\
             [auth]\nallow_anonymous = false\nprincipal_from = \"username\"\npassword_file = \"passwords\"\n\
             [policy]\nfile = \"policy.toml\"\n\
             [limits]\nauth_failures_before_ban = 100000000\nconnections_per_ip_per_second = 1000000\nmax_connections_per_ip = 10000\n\
             [log]\naudit_file = \"{name}.jsonl\"\n{cluster}",
            broker = broker.addr()
        ),
    )?;
    let bin = bench::gateway_bin()?;
    let child = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| bin.display().to_string())?;
    let child = Killed(child);
    Ok((child, bench::wait_port(port)?))
}

fn main() -> anyhow::Result<()> {
    let connects: usize = bench::arg(1, 4000, "CONNECTS")?;
    let clients: usize = bench::arg(2, 8, "CLIENTS")?;
    let dir = scratch_dir("clustercost")?;
    // A cheap hash (PBKDF2, 1,000 rounds), so that the cost measured is the gateway's and Redis's,
    // not the password hash's.
    let hash = mqtt_gateway::auth::hash_mosquitto_pbkdf2(b"secret", 1000)?;
    std::fs::write(dir.join("passwords"), format!("alice:{hash}\n"))?;
    std::fs::write(
        dir.join("policy.toml"),
        "version = 1\n[[connect]]\nwho = { any = true }\nclient_ids = [\"*\"]\n",
    )?;
    let redis_port = free_port();
    let redis = Killed(
        Command::new("redis-server")
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .context("redis-server (Debian package redis-server)")?,
    );
    bench::wait_port(redis_port)?;
    let broker = Mosquitto::start()?;
    let (alone, alone_addr) = start_gateway(&dir, "alone", &broker, None)?;
    let url = format!("redis://127.0.0.1:{redis_port}/0");
    let (clustered, clustered_addr) = start_gateway(&dir, "clustered", &broker, Some(&url))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // Wait until the clustered gateway reached Redis: its first failure lands there.
    rt.block_on(async {
        for _ in 0..200 {
            let _ = login(clustered_addr, &connect_frame(b"wrong"), 4).await;
            if redis_keys(redis_port).await.unwrap_or(0) > 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the clustered gateway never wrote to Redis")
    })?;
    println!(
        "gateway {}; {connects} CONNECTs by {clients} concurrent clients per row, loopback, 2 cores shared by clients, gateways, Redis and Mosquitto",
        bench::gateway_bin()?.display()
    );
    println!("| gateway | CONNECT | CONNECTs/s | p50 (ms) | p99 (ms) |");
    println!("| --- | --- | --- | --- | --- |");
    for (label, addr) in [
        ("stand-alone", alone_addr),
        ("[cluster] redis", clustered_addr),
    ] {
        for (what, password, want) in [
            ("accepted", &b"secret"[..], 0u8),
            ("wrong password", &b"wrong"[..], 4u8),
        ] {
            let frame = Arc::new(connect_frame(password));
            // Warm-up.
            rt.block_on(run(addr, &frame, want, clients, clients * 10))?;
            let t0 = Instant::now();
            let mut lat = rt.block_on(run(addr, &frame, want, clients, connects))?;
            let wall = t0.elapsed();
            lat.sort_unstable();
            // The p-th per-mille latency, in ms.
            let pct = |per_mille: usize| {
                let i = (lat.len().saturating_sub(1) * per_mille) / 1000;
                lat.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
            };
            let n = u32::try_from(lat.len()).unwrap_or(u32::MAX);
            println!(
                "| {label} | {what} | {:.0} | {:.2} | {:.2} |",
                f64::from(n) / wall.as_secs_f64().max(1e-9),
                pct(500),
                pct(990)
            );
        }
    }
    drop(clustered);
    drop(alone);
    drop(broker);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

async fn run(
    addr: SocketAddr,
    frame: &Arc<Vec<u8>>,
    want: u8,
    clients: usize,
    total: usize,
) -> anyhow::Result<Vec<Duration>> {
    let per = total / clients.max(1);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let frame = Arc::clone(frame);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                lat.push(login(addr, &frame, want).await?);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// DBSIZE of the Redis on `port` (a bare RESP exchange).
async fn redis_keys(port: u16) -> anyhow::Result<u64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"DBSIZE\r\n").await?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await?;
    let text = std::str::from_utf8(buf.get(..n).unwrap_or_default())?;
    Ok(text.trim().trim_start_matches(':').parse()?)
}
