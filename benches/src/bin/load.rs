//! `load`: QoS 0 message rates in one run, through the same client code: Mosquitto directly (the
//! physical limit) and the gateway's mTLS listener in front of the same Mosquitto, with the CPU
//! time of the proxy process per delivered message.
//!
//! Run through `bash scripts/bench.sh` (it builds the release gateway first), or
//! `cargo run --release -p bench --bin load -- [MESSAGES] [PAYLOAD_BYTES]`.

#![allow(clippy::as_conversions, clippy::cast_precision_loss)] // report arithmetic on counts, not input

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bench::proxies::{start_haproxy, start_nginx};
use bench::{
    client_tls, connect, count_publishes, cpu_time, gateway_bin, publish_batch, subscribe,
};
use e2e::{Mosquitto, free_port, scratch_dir, sigterm};
use tokio::io::AsyncWriteExt;

const BATCH: usize = 256;

struct Result {
    name: &'static str,
    delivered: u64,
    elapsed: Duration,
    proxy_cpu: Option<Duration>,
}

async fn run_one(
    name: &'static str,
    addr: SocketAddr,
    tls: Option<(Arc<rustls::ClientConfig>, Arc<rustls::ClientConfig>)>,
    messages: u64,
    payload: usize,
    proxy_pid: Option<u32>,
) -> anyhow::Result<Result> {
    let (sub_tls, pub_tls) = match tls {
        Some((s, p)) => (Some(s), Some(p)),
        None => (None, None),
    };
    let mut sub = connect(addr, sub_tls, "bench-sub").await?;
    subscribe(&mut sub, "bench/#").await?;
    let mut publ = connect(addr, pub_tls, "bench-pub").await?;
    let counter =
        tokio::spawn(
            async move { count_publishes(&mut sub, messages, Duration::from_secs(3)).await },
        );
    let batch = publish_batch("bench/load/topic", payload, BATCH)?;
    let cpu_before = proxy_pid.map(cpu_time).transpose()?;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < messages {
        publ.write_all(&batch).await?;
        sent += u64::try_from(BATCH)?;
    }
    publ.flush().await?;
    let (delivered, _) = counter.await??;
    let elapsed = started.elapsed();
    let proxy_cpu = match (proxy_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_time(pid)?.saturating_sub(before)),
        _ => None,
    };
    Ok(Result {
        name,
        delivered,
        elapsed: elapsed.saturating_sub(Duration::from_secs(0)),
        proxy_cpu,
    })
}

fn start_gateway(dir: &Path, broker: SocketAddr) -> anyhow::Result<(Child, SocketAddr)> {
    let bin = gateway_bin()?;
    let port = free_port();
    let policy = r##"version = 1
[[connect]]
who = { any = true }
client_ids = ["*"]
[[rule]]
who = { any = true }
allow = ["publish", "subscribe", "receive"]
topics = ["bench/#"]
"##;
    std::fs::write(dir.join("policy.toml"), policy)?;
    let config = bench::MtlsGateway {
        broker: &broker.to_string(),
        port,
        pki: "pki",
        listeners: r#"crl = ["pki/ca.crl"]"#,
        auth: "",
        // A benchmark client is a flood by design: lift the per-client and connection limits.
        limits: r#"messages_per_client_per_second = 100000000
bytes_per_client_per_second = "1GiB""#,
    }
    .config();
    std::fs::write(dir.join("gateway.toml"), config)?;
    let child = Command::new(bin)
        .args(["run", "--config"])
        .arg(dir.join("gateway.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok((child, addr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the gateway did not start listening on {addr}")
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let messages: u64 = args
        .next()
        .map_or(Ok(200_000), |s| s.parse())
        .context("MESSAGES")?;
    let payload: usize = args
        .next()
        .map_or(Ok(64), |s| s.parse())
        .context("PAYLOAD_BYTES")?;
    let dir = scratch_dir("bench")?;
    let pki = dir.join("pki");
    bench::bench_pki(&pki, "bench CA", &["bench-pub", "bench-sub"])?;

    let broker = Mosquitto::start()?;
    let (mut gateway, gw_addr) = start_gateway(&dir, broker.addr())?;
    let tls = (
        client_tls(&pki, "bench-sub")?,
        client_tls(&pki, "bench-pub")?,
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(async {
        let direct = run_one(
            "mosquitto direct (plain)",
            broker.addr(),
            None,
            messages,
            payload,
            None,
        )
        .await?;
        let gw = run_one(
            "gateway (mTLS + policy)",
            gw_addr,
            Some(tls.clone()),
            messages,
            payload,
            Some(gateway.id()),
        )
        .await?;
        let mut all = vec![direct, gw];
        for (name, start) in [
            (
                "haproxy (mTLS + CRL)",
                start_haproxy as fn(&Path, &str) -> anyhow::Result<(Child, SocketAddr)>,
            ),
            ("nginx stream (mTLS + CRL)", start_nginx),
        ] {
            match start(&dir, &broker.addr().to_string()) {
                Ok((mut child, addr)) => {
                    let r = run_one(
                        name,
                        addr,
                        Some(tls.clone()),
                        messages,
                        payload,
                        Some(child.id()),
                    )
                    .await;
                    let _ = child.kill();
                    let _ = child.wait();
                    all.push(r?);
                }
                Err(e) => eprintln!("{name}: skipped: {e:#}"),
            }
        }
        anyhow::Ok(all)
    })?;
    sigterm(gateway.id())?;
    let status = gateway.wait()?;

    println!(
        "QoS 0, 1 publisher -> 1 subscriber, {messages} messages of {payload} B (one run; client on the same 2 cores)"
    );
    println!(
        "{:<30} {:>10} {:>12} {:>14} {:>16}",
        "target", "delivered", "seconds", "msgs/s", "proxy CPU µs/msg"
    );
    let mut rates = Vec::new();
    for r in &results {
        let secs = r.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            r.delivered as f64 / secs
        } else {
            0.0
        };
        rates.push(rate);
        let cpu = r.proxy_cpu.map_or("-".to_owned(), |c| {
            format!("{:.2}", c.as_secs_f64() * 1e6 / r.delivered.max(1) as f64)
        });
        println!(
            "{:<30} {:>10} {:>12.3} {:>14.0} {:>16}",
            r.name, r.delivered, secs, rate, cpu
        );
    }
    if let [direct, gw, rest @ ..] = &rates[..] {
        println!("gateway / direct = {:.2}", gw / direct.max(1.0));
        for (r, rate) in results.iter().skip(2).zip(rest) {
            println!("gateway / {} = {:.2}", r.name, gw / rate.max(1.0));
        }
    }
    println!("gateway exit status after SIGTERM: {status}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
