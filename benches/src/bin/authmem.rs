//! `authmem`: the gateway's resident memory after many failed argon2id logins (issue 20, item 3).
//!
//! One run: Mosquitto from `upstream-broker/`, the release gateway as its own process with a plain
//! listener and an argon2id password file (the `passwd` default: m = 19456 KiB, t = 2, p = 1), bans
//! and rate limits raised out of the way so that every attempt is hashed. One good login, then
//! `ATTEMPTS` wrong-password CONNECTs, `PARALLEL` at a time (half for the real user, half for
//! unknown users: both cost one argon2id hash), then a pause. Prints the gateway's `VmRSS` and
//! `VmHWM` (from `/proc/PID/status`) at each step.
//!
//! `bash scripts/bench.sh` builds it; run `target/release/authmem [ATTEMPTS] [PARALLEL]`
//! (default 2000 and 8). `GATEWAY_BIN=path` measures another build.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use e2e::{Mosquitto, free_port, scratch_dir, sigterm};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn connect_frame(user: &str, password: &[u8]) -> Vec<u8> {
    bench::connect_v311("x", Some(user), Some(password))
}

/// One CONNECT; the CONNACK's return code.
async fn login(addr: SocketAddr, user: &str, password: &[u8]) -> anyhow::Result<u8> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&connect_frame(user, password)).await?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await?;
    if ack.get(..3) != Some(&[0x20, 2, 0][..]) {
        bail!("not a CONNACK: {ack:?}");
    }
    Ok(ack[3])
}

/// `VmRSS` and `VmHWM` of `pid`, in KiB.
fn memory(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {name}"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn main() -> anyhow::Result<()> {
    let attempts: usize = bench::arg(1, 2000, "ATTEMPTS")?;
    let parallel: usize = bench::arg(2, 8, "PARALLEL")?;
    let dir = scratch_dir("authmem")?;
    bench::write_alice_and_policy(&dir, "\"publish\"", "\"x\"")?;
    let broker = Mosquitto::start()?;
    let port = free_port();
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            "[upstream]\naddress = \"{}\"\n[[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:{port}\"\n[auth]\nprincipal_from = \"username\"\npassword_file = \"passwords\"\n[policy]\nfile = \"policy.toml\"\n[limits]\nauth_failures_before_ban = 1000000\nconnections_per_ip_per_second = 100000\nmax_connections_per_ip = 10000\n[log]\naudit_file = \"audit.jsonl\"\n",
            broker.addr()
        ),
    )?;
    let bin = bench::gateway_bin()?;
    let mut gw = bench::spawn_gateway(&dir.join("gateway.toml"))?;
    let pid = gw.id();
    let addr = bench::wait_port(port)?;
    let rt = bench::runtime()?;
    let (start, _) = memory(pid)?;
    let good = rt.block_on(login(addr, "alice", b"secret"))?;
    let (after_good, _) = memory(pid)?;
    let started = Instant::now();
    let refused = Arc::new(AtomicUsize::new(0));
    rt.block_on(async {
        let next = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..parallel {
            let next = Arc::clone(&next);
            let refused = Arc::clone(&refused);
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= attempts {
                        return;
                    }
                    let user = if i.is_multiple_of(2) {
                        "alice".to_owned()
                    } else {
                        format!("nobody-{i}")
                    };
                    if login(addr, &user, b"wrong").await.ok() == Some(4) {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    });
    let secs = started.elapsed().as_secs_f64();
    let (after, hwm) = memory(pid)?;
    std::thread::sleep(Duration::from_secs(5));
    let (idle, _) = memory(pid)?;
    let good_after = rt.block_on(login(addr, "alice", b"secret"))?;
    let refused = refused.load(Ordering::Relaxed);
    println!("gateway {}", bin.display());
    println!("good login: return code {good} before, {good_after} after");
    println!(
        "{attempts} wrong-password CONNECTs, {parallel} in parallel: {refused} refused with code 4 in {secs:.1} s ({:.0}/s)",
        f64::from(u32::try_from(refused).unwrap_or(u32::MAX)) / secs.max(1e-9)
    );
    println!("VmRSS at start            {:>8} KiB", start);
    println!("VmRSS after 1 good login  {:>8} KiB", after_good);
    println!("VmRSS after the failures  {:>8} KiB", after);
    println!("VmRSS 5 s later           {:>8} KiB", idle);
    println!("VmHWM (peak)              {:>8} KiB", hwm);
    sigterm(pid)?;
    let _ = gw.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
