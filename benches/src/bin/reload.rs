//! `reload`: time from a policy file write to enforcement, with 10, 10,000 and 100,000 rules,
//! and from a CRL file write to the revoked client's disconnection, with CRLs of 1 to 300,000
//! entries; and whether the relay stalls meanwhile (issue 7).
//!
//! The release gateway runs as its own process with a plain listener; an anonymous client (the
//! policy lets anonymous clients publish to `bench/#`) publishes QoS 1 to `bench/x` every
//! millisecond. The policy file is then replaced atomically by one that no longer grants it, and
//! the time until the first PUBACK 0x87 is taken; the longest gap between two PUBACKs during the
//! reload shows whether the relay stalled.
//!
//! CRLs: the gateway's mTLS listener reads a CRL of N revoked serials made by `openssl ca
//! -gencrl` (the operator's tool) with the project CA's key; a "victim" client is connected and
//! a bystander publishes QoS 1 every millisecond. The CRL is replaced by one with the same N
//! entries plus the victim's serial; the time until the victim's connection is closed is taken,
//! and the longest gap between the bystander's PUBACKs.
//!
//! Run through `scripts/bench.sh`, then `target/release/reload`.

#![allow(clippy::as_conversions, clippy::cast_precision_loss)] // report arithmetic on counts, not input

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bench::{client_tls, connect, gateway_bin, wait_port};
use e2e::{Mosquitto, free_port, scratch_dir, sigterm};
use mqtt_inspect::split_frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
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

async fn read_frame(
    s: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> anyhow::Result<Vec<u8>> {
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

/// Writes a CRL of `entries` revoked serials (plus `victim`'s) signed by the CA in `pki`, with
/// `openssl ca -gencrl`, to `out`.
fn openssl_crl(pki: &Path, entries: usize, victim: Option<&str>, out: &Path) -> anyhow::Result<()> {
    let db = pki.join("openssl");
    std::fs::create_dir_all(&db)?;
    let mut index = String::with_capacity(entries * 64);
    for n in 0..entries {
        writeln!(
            index,
            "R\t301231235959Z\t250101000000Z\t{:032X}\tunknown\t/CN=retired-{n}",
            0x7000_0000_0000_0000_u128 + n as u128
        )?;
    }
    if let Some(serial) = victim {
        writeln!(
            index,
            "R\t301231235959Z\t250101000000Z\t{}\tunknown\t/CN=victim",
            serial.to_uppercase()
        )?;
    }
    std::fs::write(db.join("index.txt"), index)?;
    std::fs::write(db.join("crlnumber"), "1000\n")?;
    let cnf = db.join("ca.cnf");
    std::fs::write(
        &cnf,
        format!(
            "[ca]\ndefault_ca = gw\n[gw]\ndatabase = {}\ncrlnumber = {}\ncertificate = {}\n\
             private_key = {}\ndefault_md = sha256\ndefault_crl_days = 7\nunique_subject = no\n",
            db.join("index.txt").display(),
            db.join("crlnumber").display(),
            pki.join("ca.pem").display(),
            pki.join("ca.key").display(),
        ),
    )?;
    let status = Command::new("openssl")
        .args(["ca", "-batch", "-gencrl", "-config"])
        .arg(&cnf)
        .arg("-out")
        .arg(out)
        .stderr(Stdio::null())
        .status()
        .context("openssl")?;
    if !status.success() {
        bail!("openssl ca -gencrl failed");
    }
    Ok(())
}

fn start_tls_gateway(dir: &Path, broker: SocketAddr) -> anyhow::Result<(Child, SocketAddr)> {
    let port = free_port();
    std::fs::write(
        dir.join("policy.toml"),
        "version = 1\n[[connect]]\nwho = { any = true }\nclient_ids = [\"*\"]\n\
         [[rule]]\nwho = { any = true }\nallow = [\"publish\"]\ntopics = [\"bench/#\"]\n",
    )?;
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            "[upstream]\naddress = \"{broker}\"\n[[listener]]\nname = \"mqtts\"\nbind = \"127.0.0.1:{port}\"\n\
             [listener.tls]\ncert = \"pki/gateway.pem\"\nkey = \"pki/gateway.key\"\nclient_ca = \"pki/ca.pem\"\n\
             crl = [\"live.crl\"]\n[auth]\nprincipal_from = \"cert_cn\"\ncert_is_credential = true\n\
             [policy]\nfile = \"policy.toml\"\n[log]\naudit_file = \"audit.jsonl\"\n"
        ),
    )?;
    let child = Command::new(gateway_bin()?)
        .args(["run", "--config"])
        .arg(dir.join("gateway.toml"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()?;
    Ok((child, wait_port(port)?))
}

/// Replaces the live CRL with `next` once the bystander is publishing; returns the time until
/// the victim's connection closed and the longest PUBACK gap of the bystander meanwhile.
async fn measure_crl(
    addr: SocketAddr,
    pki: &Path,
    live: &Path,
    next: &Path,
) -> anyhow::Result<(Duration, Duration)> {
    let mut victim = connect(addr, Some(client_tls(pki, "victim")?), "victim").await?;
    let mut bystander = connect(addr, Some(client_tls(pki, "bystander")?), "bystander").await?;
    let closed = tokio::spawn(async move {
        let mut b = [0u8; 64];
        // A DISCONNECT, then EOF (or an error): the session is over.
        while !matches!(victim.read(&mut b).await, Ok(0) | Err(_)) {}
        Instant::now()
    });
    let mut buf = Vec::new();
    let mut written = None;
    let mut last_ack = Instant::now();
    let mut longest_gap = Duration::ZERO;
    for i in 0u32.. {
        let id = u16::try_from(i % 60_000 + 1)?.to_be_bytes();
        bystander
            .write_all(&[
                0x32, 12, 0, 7, b'b', b'e', b'n', b'c', b'h', b'/', b'x', id[0], id[1], 0,
            ])
            .await?;
        read_frame(&mut bystander, &mut buf).await?;
        let now = Instant::now();
        longest_gap = longest_gap.max(now - last_ack);
        last_ack = now;
        if i == 20 {
            std::fs::rename(next, live)?;
            written = Some(Instant::now());
        }
        if let Some(w) = written {
            if closed.is_finished() {
                let at = closed.await?;
                return Ok((at.saturating_duration_since(w), longest_gap));
            }
            if w.elapsed() > Duration::from_secs(120) {
                bail!("the revoked client was never disconnected");
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    bail!("unreachable")
}

fn crl_rows(broker: &Mosquitto, rt: &tokio::runtime::Runtime) -> anyhow::Result<()> {
    println!(
        "\n{:>8} {:>10} {:>30} {:>28}",
        "entries", "CRL (KiB)", "write -> victim closed (ms)", "longest PUBACK gap (ms)"
    );
    for entries in [1usize, 10_000, 100_000, 300_000] {
        let dir = scratch_dir("reload-crl")?;
        let pki = dir.join("pki");
        let ca = bench::bench_pki(&pki, "reload bench CA", &["bystander"])?;
        let victim = ca.issue("victim", None, 30, false, &[])?;
        openssl_crl(&pki, entries, None, &dir.join("live.crl"))?;
        openssl_crl(&pki, entries, Some(&victim.serial), &dir.join("next.crl"))?;
        let size = std::fs::metadata(dir.join("next.crl"))?.len();
        let (mut gw, addr) = start_tls_gateway(&dir, broker.addr())?;
        let result = rt.block_on(measure_crl(
            addr,
            &pki,
            &dir.join("live.crl"),
            &dir.join("next.crl"),
        ));
        sigterm(gw.id())?;
        let _ = gw.wait();
        let (closed, gap) = result?;
        println!(
            "{:>8} {:>10} {:>30.1} {:>28.1}",
            entries + 1,
            size / 1024,
            closed.as_secs_f64() * 1e3,
            gap.as_secs_f64() * 1e3
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let broker = Mosquitto::start()?;
    let bin = gateway_bin()?;
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
    crl_rows(&broker, &rt)
}
