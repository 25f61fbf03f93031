//! `compare`: issue 8's comparison, every target in one run against the same Mosquitto:
//! Mosquitto direct, the gateway's plain listener, the gateway's mTLS listener (both with a
//! 1,000-rule policy: per-device `%u` rules, receive checks on; its default worker count, which
//! with the broker on this host is one per core less one, and again with a worker per core),
//! HAProxy (mTLS + CRL) and nginx stream (mTLS + CRL, one worker and auto). Measured for each, `REPS` times (medians reported):
//!
//! - QoS 0 flood, 1 and 4 publishers to 1 subscriber, 64 B and 1 KiB: messages/s delivered and
//!   the proxy's CPU time per delivered message (`/proc/PID/stat`);
//! - proxy CPU per message at a fixed 20,000 msg/s (64 B): 20 messages every millisecond from
//!   one publisher in one write, and one message each from 20 publishers;
//! - QoS 1 latency publish → delivery (through the proxy both ways) at 2,000 msg/s for 8 s,
//!   p50/p99 (median of the repetitions, and pooled over every sample of every repetition);
//! - mTLS handshakes per second including CONNECT/CONNACK (ECDSA P-256), 8 concurrent clients:
//!   full handshakes (the client keeps no session, as after a gateway restart or with a device
//!   that does not resume), and resumed ones (the client offers its last ticket);
//! - RSS of the proxy per idle mTLS connection at 9,900 connections (CONNECTed), and the
//!   projection to 100,000;
//! - the fleet (`fleet.rs`): 9,900 mTLS devices each publishing a 64 B QoS 1 message every 5 s
//!   to one subscriber: CPU, wake-ups and syscalls per message, RSS, QoS 1 p50/p99/p99.9.
//!
//! Idle memory and the fleet run on a fresh process of each proxy, started anew for every
//! repetition of either.
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

mod csv;
mod fleet;
mod phases;
mod report;
mod targets;

use anyhow::Context;
use bench::proxies::{start_haproxy, start_nginx_workers};
use e2e::{Mosquitto, scratch_dir, sigterm, workspace_root};
use phases::{PUBLISHERS_MAX, Row, idle, measure, target_wanted, wanted};
use targets::{Fresh, Kind, Target, Up, start_gateway, upstream_of};

fn main() -> anyhow::Result<()> {
    let reps: usize = std::env::args()
        .nth(1)
        .map_or(Ok(3), |s| s.parse())
        .context("REPS")?;
    let dir = scratch_dir("compare")?;
    let pki = dir.join("pki");
    let ca = bench::bench_pki(&pki, "bench CA", &["bench-sub", "bench-hs", "idle"])?;
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
    // The default runs one worker per core less one for the broker on this host (one on two
    // cores); this one runs a worker per core, as the default did before issue 27.
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let (mut gateway1, gw1_tls, _) =
        start_gateway(&dir.join("gw-per-core"), &pki, &tcp, Some(cores))?;
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
            "gateway mTLS, a worker per core",
            gw1_tls,
            true,
            Some(gateway1.id()),
            Kind::Gateway(Some(cores), Up::Tcp),
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
    let mut csv = csv::Csv::new();
    for rep in 0..reps {
        let mut rows = Vec::new();
        for t in &targets {
            if !target_wanted(t.name) {
                rows.push(Row::default());
                continue;
            }
            eprintln!("rep {}/{reps}: {}", rep + 1, t.name);
            let row = runtime.block_on(measure(t, &pki)).with_context(|| t.name)?;
            csv.rows(rep, t.name, &row);
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
    // Idle memory and the fleet, each on a fresh process of every proxy (restarted before every
    // repetition of either), after the long-running ones are gone.
    for (rep, rows) in runs.iter_mut().enumerate() {
        for (i, row) in rows.iter_mut().enumerate() {
            let Some(t) = targets.get(i) else { continue };
            if !t.measures_idle() || !target_wanted(t.name) {
                continue;
            }
            if wanted("idle") {
                eprintln!("rep {}/{reps}: {} idle, fresh process", rep + 1, t.name);
                let fresh = Fresh::start(t.kind, t.name, &dir, &broker)?;
                let (per, base) = runtime
                    .block_on(idle(&fresh.target, &pki))
                    .with_context(|| t.name)?;
                drop(fresh);
                csv.idle(rep, t.name, per, base);
                row.idle_kib = Some(per);
                row.idle_base_kib = Some(base);
            }
            if wanted("fleet") {
                eprintln!("rep {}/{reps}: {} fleet, fresh process", rep + 1, t.name);
                let fresh = Fresh::start(t.kind, t.name, &dir, &broker)?;
                let f = runtime
                    .block_on(fleet::fleet(&fresh.target, &pki))
                    .with_context(|| t.name)?;
                drop(fresh);
                csv.fleet(rep, t.name, &f);
                row.fleet = Some(f);
            }
        }
    }

    let names: Vec<&str> = targets.iter().map(|t| t.name).collect();
    let out = report::table(&names, &runs, reps);
    print!("{out}");
    csv.pooled(&names, &runs);
    let csv = csv.into_string();
    if std::env::var_os("COMPARE_ONLY").is_some() || std::env::var_os("COMPARE_TARGETS").is_some() {
        // Kept out of benches/results (which hold the last full run), but kept.
        let narrowed = workspace_root().join("target/compare-narrowed.csv");
        std::fs::write(&narrowed, csv)?;
        eprintln!(
            "a narrowed run (COMPARE_ONLY / COMPARE_TARGETS): benches/results left as they are; \
             every repetition in {}",
            narrowed.display()
        );
        let _ = std::fs::remove_dir_all(&dir);
        return Ok(());
    }

    let results = workspace_root().join("benches/results");
    std::fs::create_dir_all(&results)?;
    std::fs::write(results.join("compare.csv"), csv)?;
    std::fs::write(results.join("compare.md"), &out)?;
    let chart = report::chart(&names, &runs);
    std::fs::write(results.join("compare.svg"), chart)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
