//! `ocsp`: full mTLS handshakes per second (TCP + TLS + CONNECT/CONNACK, no resumption, 8
//! concurrent clients with 8 certificates, 5 s) through the release gateway with `ocsp = "off"`
//! and with `ocsp = "hard"` and a warm cache (issue 23: at least 0.9× without OCSP).
//!
//! One run: a CA from the gateway's own `pki` tool, Debian's `openssl ocsp` answering for it
//! from an index written here, Mosquitto from `upstream-broker/`; then, alternately, a gateway
//! process with each setting (`REPS` times each, default 3): with OCSP, one connection per
//! certificate first (the cache is warm: the measured handshakes never reach the responder; the
//! responder's request count is printed to show it), then the timed phase. Prints each rate and
//! the medians' ratio.
//!
//! `cargo build --release -p mqtt-gateway -p bench`, then `target/release/ocsp [REPS]`
//! (`GATEWAY_BIN=path` for another build).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bench::{arg, client_tls, connect_from, gateway_bin, wait_port};
use e2e::{Mosquitto, free_port, scratch_dir, sigterm};

const CLIENTS: usize = 8;

fn start_gateway(
    work: &Path,
    pki: &Path,
    broker: &str,
    ocsp: &str,
) -> anyhow::Result<(Child, SocketAddr)> {
    std::fs::create_dir_all(work)?;
    std::fs::write(
        work.join("policy.toml"),
        "version = 1\n[[connect]]\nwho = { any = true }\nclient_ids = [\"*\"]\n[[rule]]\nwho = { any = true }\nallow = [\"publish\", \"subscribe\", \"receive\"]\ntopics = [\"#\"]\n",
    )?;
    let port = free_port();
    let config = bench::MtlsGateway {
        broker,
        port,
        pki: &pki.display().to_string(),
        listeners: ocsp,
        auth: "",
        limits: "max_connections_per_ip = 100000
connections_per_ip_per_second = 1000000
auth_failures_before_ban = 1000000",
    }
    .config();
    std::fs::write(work.join("gateway.toml"), config)?;
    let child = Command::new(gateway_bin()?)
        .args(["run", "--config"])
        .arg(work.join("gateway.toml"))
        .current_dir(work)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()?;
    Ok((child, wait_port(port)?))
}

async fn handshakes(addr: SocketAddr, pki: &Path) -> anyhow::Result<f64> {
    let mut configs = Vec::new();
    for c in 0..CLIENTS {
        let mut config = (*client_tls(pki, &format!("hs-{c}"))?).clone();
        config.resumption = rustls::client::Resumption::disabled();
        configs.push(Arc::new(config));
    }
    bench::handshake_rate(addr, configs).await
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() -> anyhow::Result<()> {
    let reps: usize = arg(1, 3, "REPS")?;
    let dir = scratch_dir("ocsp")?;
    let pki = dir.join("pki");
    let ca = bench::bench_pki(&pki, "bench CA", &[])?;
    let mut index = String::new();
    for c in 0..CLIENTS {
        let e = ca.issue(&format!("hs-{c}"), None, 30, false, &[])?;
        index.push_str(&format!(
            "V\t351231235959Z\t\t{}\tunknown\t/CN=hs-{c}\n",
            e.serial.to_uppercase()
        ));
    }
    std::fs::write(dir.join("index.txt"), index)?;
    let responder_port = free_port();
    let mut responder = Command::new("openssl")
        .arg("ocsp")
        .arg("-index")
        .arg(dir.join("index.txt"))
        .arg("-CA")
        .arg(pki.join("ca.pem"))
        .arg("-rsigner")
        .arg(pki.join("ca.pem"))
        .arg("-rkey")
        .arg(pki.join("ca.key"))
        .args(["-nmin", "60", "-ignore_err", "-port"])
        .arg(responder_port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("openssl ocsp")?;
    // `openssl ocsp` stalls on a connection closed without a request: no port probe; it
    // listens within moments of starting.
    std::thread::sleep(Duration::from_secs(1));
    let broker = Mosquitto::start()?;
    let upstream = broker.addr().to_string();
    let runtime = bench::runtime()?;
    let ocsp_lines = format!(
        "ocsp = \"hard\"\nocsp_responder = \"http://127.0.0.1:{responder_port}\"\nocsp_refresh_interval = \"1h\""
    );
    let (mut off, mut hard) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        for (name, lines) in [("off", ""), ("hard", ocsp_lines.as_str())] {
            let work = dir.join(format!("gw-{name}-{rep}"));
            let (mut child, addr) = start_gateway(&work, &pki, &upstream, lines)?;
            let rate = runtime.block_on(async {
                // Warm: one connection per certificate (with OCSP, one query each).
                for c in 0..CLIENTS {
                    let tls = client_tls(&pki, &format!("hs-{c}"))?;
                    connect_from(addr, None, Some(tls), &format!("warm-{c}")).await?;
                }
                handshakes(addr, &pki).await
            })?;
            println!("rep {rep}: ocsp = {name}: {rate:.0} full handshakes/s");
            if name == "off" {
                off.push(rate)
            } else {
                hard.push(rate)
            }
            sigterm(child.id())?;
            let _ = child.wait();
        }
    }
    let (o, h) = (median(&mut off), median(&mut hard));
    println!(
        "median: off {o:.0}/s, hard (warm cache) {h:.0}/s, hard / off = {:.2}",
        h / o
    );
    let _ = responder.kill();
    let _ = responder.wait();
    if let Some(mut err) = responder.stderr.take() {
        let mut log = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut log);
        let requests = log.matches("Received request").count();
        println!(
            "the responder answered {requests} requests ({} warm-ups expected)",
            reps * CLIENTS
        );
    }
    Ok(())
}
