//! `[listener.tls] crl_urls`, end to end: a real HTTP server (`python3 -m http.server`) serving
//! CRLs made here, a real Mosquitto, real TLS, the gateway's own background fetch and reload (no
//! reload is called by hand). Issue 23 item 1: a CRL republished at its URL cuts the revoked
//! device's live session (DISCONNECT 0x98) and leaves the bystander; a bad CRL at the URL (not a
//! CRL, an HTTP error, a forgery, an older one) keeps the last good one, counted and audited; a
//! restart with the URL unreachable starts from `crl_cache_dir`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mqtt_inspect::ReasonCode;
use support::reload::{connected, disconnected_with, refused_at_handshake, still_served};
use support::{Flaw, Pki, Setup, TestGateway, sample};
use time::OffsetDateTime;

/// The gateway's metrics registry is global to this test binary and each start sets
/// `crl_fetches_total` to 0: one gateway with `crl_urls` at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `python3 -m http.server` on a free local port, serving the files of its own directory.
struct CrlServer {
    child: Child,
    dir: tempfile::TempDir,
    addr: SocketAddr,
}

impl CrlServer {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], e2e::free_port()));
        let mut child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(addr.port().to_string())
            .arg("--directory")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        // Wait for it to listen (the event itself, bounded).
        for _ in 0..600 {
            if TcpStream::connect(addr).is_ok() {
                return Self { child, dir, addr };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("python3 -m http.server did not listen on {addr}");
    }

    fn url(&self) -> String {
        format!("http://{}/inter.crl", self.addr)
    }

    fn file(&self) -> PathBuf {
        self.dir.path().join("inter.crl")
    }

    /// Publishes `body` at the URL the way a CA's publisher does: a temporary file, renamed.
    fn publish(&self, body: &[u8]) {
        let tmp = self.dir.path().join("inter.crl.new");
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, self.file()).unwrap();
    }
}

impl Drop for CrlServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `client_ca` with the intermediate beside the root: a fetched CRL must be signed by a CA of
/// `client_ca`, and the leaf CRL is the intermediate's.
fn trust_the_intermediate(pki: &Pki) {
    let (inter, _) = pki.write_inter_ca();
    let mut bundle = std::fs::read(&pki.root_path).unwrap();
    bundle.extend(std::fs::read(inter).unwrap());
    std::fs::write(&pki.root_path, bundle).unwrap();
}

fn setup<'a>(pki: &'a Pki, url: &str, cache: &Path) -> Setup<'a> {
    let mut setup = Setup::new(pki);
    setup.tls_extra = format!(
        "crl_urls = [\"{url}\"]\ncrl_cache_dir = \"{}\"\ncrl_refresh_interval = \"1s\"",
        cache.display()
    );
    setup
}

fn minutes_ago(m: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() - time::Duration::minutes(m)
}

async fn fetches(gw: &TestGateway, result: &str) -> f64 {
    sample(
        gw,
        "mqtt_gateway_crl_fetches_total",
        &[("listener", "mqtts"), ("result", result)],
    )
    .await
}

/// Waits until `crl_fetches_total{result}` is above `before`.
async fn fetched(gw: &TestGateway, result: &str, before: f64) {
    for _ in 0..600 {
        if fetches(gw, result).await > before {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, body) = gw.admin_get("/metrics").await;
    let seen: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("mqtt_gateway_crl_fetches_total"))
        .collect();
    panic!(
        "no fetch with result {result}: {seen:#?}\n{:#?}",
        gw.audit().await
    );
}

/// The only file of the cache directory, read.
fn cached(cache: &Path) -> Vec<u8> {
    let files: Vec<_> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one cached CRL and no temporary file: {files:?}"
    );
    std::fs::read(&files[0]).unwrap()
}

/// DESIGN §3 ("Revocation reaches live sessions") with the CRL taken from its URL, and every kind
/// of bad answer at that URL keeping the last good CRL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_republished_at_its_url_cuts_the_revoked_session_and_bad_ones_are_kept_out() {
    let _one = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    trust_the_intermediate(&pki);
    let server = CrlServer::start();
    let cache = tempfile::tempdir().unwrap();
    let victim_cert = pki.client("victim", None, Flaw::None);
    let other_cert = pki.client("bystander", None, Flaw::None);
    server.publish(&pki.leaf_crl_der(&[], minutes_ago(10), 10));

    let gw = setup(&pki, &server.url(), cache.path()).start().await;
    let _reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);
    let mut victim = connected(&gw, &pki, &victim_cert, "victim").await;
    let mut other = connected(&gw, &pki, &other_cert, "bystander").await;
    let updated = fetches(&gw, "updated").await;

    // The CA publishes a new CRL revoking the victim.
    let revoking = pki.leaf_crl_der(&[&victim_cert.serial], minutes_ago(5), 11);
    server.publish(&revoking);
    fetched(&gw, "updated", updated).await;
    disconnected_with(&mut victim, ReasonCode::AdministrativeAction).await;
    still_served(&mut other).await;
    let line = gw
        .audit_line(|v| v["event"] == "session_revoked" && v["client_id"] == "victim")
        .await
        .expect("audit line for the revoked session");
    assert_eq!(line["reason"], "crl");
    assert_eq!(
        cached(cache.path()),
        revoking,
        "the new CRL is the cached one"
    );
    refused_at_handshake(&gw, &pki, &victim_cert).await;
    let _ = connected(&gw, &pki, &other_cert, "bystander-2").await;

    // Bad answers at the URL: each counted and audited, the revoking CRL stays in force (the
    // victim stays out, a forgery revoking the bystander does not lock it out).
    let forged = pki.forged_leaf_crl_der(&[&other_cert.serial], 12);
    let older = pki.leaf_crl_der(&[], minutes_ago(20), 9);
    let cases: [(&str, Option<&[u8]>); 4] = [
        (
            "not_a_crl",
            Some(b"<html><body>502 Bad Gateway</body></html>"),
        ),
        ("http_status", None),
        ("bad_signature", Some(forged.as_slice())),
        ("rollback", Some(older.as_slice())),
    ];
    for (result, body) in cases {
        let before = fetches(&gw, result).await;
        match body {
            Some(body) => server.publish(body),
            None => std::fs::remove_file(server.file()).unwrap(),
        }
        fetched(&gw, result, before).await;
        let url = server.url();
        let line = gw
            .audit_line(|v| v["event"] == "crl_fetch_failed" && v["reason"] == result)
            .await
            .unwrap_or_else(|| panic!("no crl_fetch_failed audit line for {result}"));
        assert_eq!(line["url"], url.as_str());
        assert_eq!(line["listener"], "mqtts");
        assert_eq!(
            cached(cache.path()),
            revoking,
            "{result}: the cache kept the good CRL"
        );
        refused_at_handshake(&gw, &pki, &victim_cert).await;
        let mut again = connected(&gw, &pki, &other_cert, &format!("bystander-{result}")).await;
        still_served(&mut again).await;
        still_served(&mut other).await;
    }
}

/// Issue 23: "A restart with the CRL URL unreachable starts from `crl_cache_dir`": the revoked
/// device is still refused, a good one admitted, and the failing fetch is counted and audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_the_url_unreachable_starts_from_the_cached_crl() {
    let _one = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    trust_the_intermediate(&pki);
    let server = CrlServer::start();
    let cache = tempfile::tempdir().unwrap();
    let victim_cert = pki.client("victim", None, Flaw::None);
    let good_cert = pki.client("good", None, Flaw::None);
    let revoking = pki.leaf_crl_der(&[&victim_cert.serial], minutes_ago(5), 3);
    server.publish(&revoking);
    let url = server.url();

    // First run: nothing cached, so the CRL is fetched before the listener serves.
    let first = setup(&pki, &url, cache.path()).start().await;
    assert_eq!(cached(cache.path()), revoking);
    refused_at_handshake(&first, &pki, &victim_cert).await;
    first.running.shutdown().await;

    // The CRL server goes away; the gateway restarts.
    drop(server);
    let gw = setup(&pki, &url, cache.path()).start().await;
    let _reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);
    refused_at_handshake(&gw, &pki, &victim_cert).await;
    let mut good = connected(&gw, &pki, &good_cert, "good").await;
    still_served(&mut good).await;
    fetched(&gw, "network", 0.0).await;
    let line = gw
        .audit_line(|v| v["event"] == "crl_fetch_failed" && v["reason"] == "network")
        .await
        .expect("crl_fetch_failed audit line");
    assert_eq!(line["url"], url.as_str());
    assert_eq!(
        cached(cache.path()),
        revoking,
        "a failed fetch leaves the cache alone"
    );
}
