//! `reload`: time from a policy file write to enforcement, with 10, 10,000 and 100,000 rules,
//! and whether the relay stalls meanwhile (issue 7).
//!
//! The release gateway runs as its own process with a plain listener; an anonymous client (the
//! policy lets anonymous clients publish to `bench/#`) publishes QoS 1 to `bench/x` every
//! millisecond. The policy file is then replaced atomically by one that no longer grants it, and
//! the time until the first PUBACK 0x87 is taken; the longest gap between two PUBACKs during the
//! reload shows whether the relay stalled. Run through `scripts/bench.sh`, then
//! `target/release/reload`.

#![allow(clippy::as_conversions, clippy::cast_precision_loss)] // report arithmetic on counts, not input

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::{Mosquitto, free_port, scratch_dir, sigterm, workspace_root};
use mqtt_inspect::split_frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn policy(devices: usize, grant: &str) -> String {
    let mut s = format!(
        "version = 1\n[[connect]]\nwho = {{ anonymous = true }}\nclient_ids = [\"*\"]\n\
         [[rule]]\nwho = {{ anonymous = true }}\nallow = [\"publish\"]\ntopics = [\"{grant}\"]\n"
    );
    for n in 0..devices {
        s.push_str(&format!(
            "[[rule]]\nwho = {{ principals = [\"dev-{n}\"] }}\nallow = [\"publish\"]\ntopics = [\"d/dev-{n}/#\"]\n"
        ));
    }
    s
}

async fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Vec<u8>> {
    loop {
        if let Some((f, _)) = split_frame(buf, mqtt_inspect::MAX_PACKET_SIZE)? {
            let f = f.to_vec();
            buf.drain(..f.len());
            return Ok(f);
        }
        let mut chunk = [0u8; 1024];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed");
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

async fn measure(
    addr: SocketAddr,
    policy_path: &std::path::Path,
    devices: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut buf = Vec::new();
    // CONNECT v5, anonymous, client id "bench".
    s.write_all(&[
        0x10, 18, 0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 0, 0, 5, b'b', b'e', b'n', b'c',
        b'h',
    ])
    .await?;
    let ack = read_frame(&mut s, &mut buf).await?;
    if ack.get(3) != Some(&0) {
        bail!("refused: {ack:?}");
    }
    let write = policy(devices, "other/#");
    let tmp = policy_path.with_extension("tmp");
    let mut written = None;
    let mut last_ack = Instant::now();
    let mut longest_gap = Duration::ZERO;
    for i in 0u32.. {
        let id = u16::try_from(i % 60_000 + 1)?.to_be_bytes();
        s.write_all(&[
            0x32, 12, 0, 7, b'b', b'e', b'n', b'c', b'h', b'/', b'x', id[0], id[1], 0,
        ])
        .await?;
        let a = read_frame(&mut s, &mut buf).await?;
        let now = Instant::now();
        longest_gap = longest_gap.max(now - last_ack);
        last_ack = now;
        if i == 20 {
            std::fs::write(&tmp, &write)?;
            std::fs::rename(&tmp, policy_path)?;
            written = Some(Instant::now());
        }
        if let Some(w) = written
            && a.get(4) == Some(&0x87)
        {
            return Ok((now - w, longest_gap));
        }
        if written.is_some_and(|w| w.elapsed() > Duration::from_secs(120)) {
            bail!("never enforced");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bail!("unreachable")
}

fn main() -> anyhow::Result<()> {
    let broker = Mosquitto::start()?;
    let bin = workspace_root().join("target/release/mqtt-gateway");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    println!(
        "{:>8} {:>22} {:>28}",
        "rules", "write -> enforced (ms)", "longest PUBACK gap (ms)"
    );
    for devices in [10usize, 10_000, 100_000] {
        let dir = scratch_dir("reload")?;
        std::fs::write(dir.join("policy.toml"), policy(devices, "bench/#"))?;
        let port = free_port();
        std::fs::write(
            dir.join("gateway.toml"),
            format!(
                "[upstream]\naddress = \"{}\"\n[[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:{port}\"\n[auth]\nallow_anonymous = true\n[policy]\nfile = \"policy.toml\"\n[log]\naudit_file = \"audit.jsonl\"\n",
                broker.addr()
            ),
        )?;
        let mut gw = Command::new(&bin)
            .args(["run", "--config"])
            .arg(dir.join("gateway.toml"))
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("{} (run scripts/bench.sh)", bin.display()))?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        for _ in 0..600 {
            if std::net::TcpStream::connect(addr).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (enforced, gap) = rt.block_on(measure(addr, &dir.join("policy.toml"), devices))?;
        println!(
            "{:>8} {:>22.1} {:>28.1}",
            devices + 1,
            enforced.as_secs_f64() * 1e3,
            gap.as_secs_f64() * 1e3
        );
        sigterm(gw.id())?;
        let _ = gw.wait();
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
