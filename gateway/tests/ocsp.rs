//! `[listener.tls] ocsp`, end to end (issue 23 item 2): a real OCSP responder (Debian's
//! `openssl ocsp -index ... -port ...` over an `openssl ca` database written here), a real
//! Mosquitto, real TLS. A device revoked at the responder while connected is cut with
//! DISCONNECT 0x98 by the background refresh and refused afterwards, the bystander stays;
//! `hard` refuses and `soft` admits while the responder is down (and `soft` cuts once it comes
//! back saying revoked); a responder that signs with a key the CA never delegated, an answer for
//! another serial, garbage, a huge body and a responder that never answers are each refused
//! with their reason, and the gateway stays up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mqtt_inspect::{ProtocolVersion, ReasonCode};
use support::reload::{connected, disconnected_with, still_served, tls13};
use support::{Flaw, Issued, Pki, Setup, TestGateway, connect_frame, sample};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The metrics registry is global to this test binary: one gateway at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An `openssl ca` database line of `cert` (valid, or revoked).
fn index_line(cert: &Issued, cn: &str, revoked: bool) -> String {
    let digits: Vec<u8> = cert
        .serial
        .iter()
        .copied()
        .skip_while(|b| *b == 0)
        .collect();
    let serial: String = if digits.is_empty() {
        "00".to_owned()
    } else {
        digits.iter().map(|b| format!("{b:02X}")).collect()
    };
    if revoked {
        format!("R\t351231235959Z\t260101000000Z\t{serial}\tunknown\t/CN={cn}\n")
    } else {
        format!("V\t351231235959Z\t\t{serial}\tunknown\t/CN={cn}\n")
    }
}

fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], e2e::free_port()))
}

/// `openssl ocsp` answering for the intermediate CA's certificates from an index file.
struct Responder {
    child: Option<Child>,
    dir: tempfile::TempDir,
    addr: SocketAddr,
    signer: (PathBuf, PathBuf),
    ca: PathBuf,
}

impl Responder {
    /// Not started yet: [`Self::start`]. Signs with `signer` (certificate, key).
    fn new(pki: &Pki, signer: Option<(PathBuf, PathBuf)>) -> Self {
        let (ca, ca_key) = pki.write_inter_ca();
        Self {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            addr: free_port(),
            signer: signer.unwrap_or((ca.clone(), ca_key)),
            ca,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn index(&self) -> PathBuf {
        self.dir.path().join("index.txt")
    }

    /// Writes the database (a temporary file renamed over it, as `openssl ca` does). A running
    /// `openssl ocsp` (3.0) reads it again when its modification time changes, which has a
    /// one-second resolution there: the new file is dated a minute ahead, so that a rewrite
    /// within the second of the last one is seen too.
    fn write_index(&self, lines: &[String]) {
        let tmp = self.dir.path().join("index.txt.new");
        std::fs::write(&tmp, lines.concat()).unwrap();
        let f = std::fs::File::options().write(true).open(&tmp).unwrap();
        f.set_modified(std::time::SystemTime::now() + Duration::from_secs(60))
            .unwrap();
        drop(f);
        std::fs::rename(&tmp, self.index()).unwrap();
    }

    fn start(&mut self) {
        let mut child = Command::new("openssl")
            .arg("ocsp")
            .arg("-index")
            .arg(self.index())
            .arg("-CA")
            .arg(&self.ca)
            .arg("-rsigner")
            .arg(&self.signer.0)
            .arg("-rkey")
            .arg(&self.signer.1)
            .args(["-nmin", "10", "-ignore_err", "-port"])
            .arg(self.addr.port().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl runs");
        // Listening once it says `ACCEPT`. (Not probed with a connection: `openssl ocsp` serves
        // one connection at a time, and one closed without a request stalls it.)
        let stdout = child.stdout.take().unwrap();
        self.child = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if line.starts_with("ACCEPT")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("openssl ocsp did not listen on {}", self.addr));
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The responder's answer for `serial` (DER), asked with `openssl ocsp` as a client.
    fn answer_for(&self, serial: &[u8], out: &Path) -> Vec<u8> {
        let hex: String = serial.iter().map(|b| format!("{b:02X}")).collect();
        let status = Command::new("openssl")
            .arg("ocsp")
            .arg("-issuer")
            .arg(&self.ca)
            .arg("-serial")
            .arg(format!("0x{hex}"))
            .arg("-url")
            .arg(self.url())
            .arg("-noverify")
            .arg("-respout")
            .arg(out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl ocsp as a client");
        std::fs::read(out).unwrap()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a hostile or broken responder does.
#[derive(Clone)]
enum Canned {
    Body(Vec<u8>),
    Never,
}

/// An HTTP server answering every request with `canned` (or never answering).
async fn canned_server(canned: Canned) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let canned = canned.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                match canned {
                    Canned::Body(body) => {
                        let mut out = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/ocsp-response\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        out.extend_from_slice(&body);
                        let _ = s.write_all(&out).await;
                        let _ = s.shutdown().await;
                    }
                    Canned::Never => std::future::pending::<()>().await,
                }
            });
        }
    });
    (addr, task)
}

fn setup<'a>(pki: &'a Pki, mode: &str, url: &str) -> Setup<'a> {
    let mut setup = Setup::new(pki);
    setup.tls_extra = format!(
        "ocsp = \"{mode}\"\nocsp_responder = \"{url}\"\nocsp_refresh_interval = \"1s\"\nocsp_timeout = \"1s\""
    );
    setup
}

async fn responses(gw: &TestGateway, status: &str) -> f64 {
    sample(
        gw,
        "mqtt_gateway_ocsp_responses_total",
        &[("listener", "mqtts"), ("status", status)],
    )
    .await
}

/// A CONNECT with `cert` is refused with CONNACK 0x87 (after a complete TLS handshake); the
/// refusal's audit line.
async fn refused(gw: &TestGateway, pki: &Pki, cert: &Issued, id: &str) -> serde_json::Value {
    let mut c = tls13(gw, pki, cert).await;
    c.send(&connect_frame(ProtocolVersion::V5, id, None, None))
        .await;
    let connack = c.recv().await.expect("a CONNACK");
    assert_eq!(connack[0], 0x20, "a CONNACK: {connack:?}");
    assert_eq!(connack[3], 0x87, "0x87 Not authorized: {connack:?}");
    assert!(c.recv().await.is_none(), "closed after the CONNACK");
    gw.audit_line(|v| v["event"] == "auth_failed" && v["client_id"] == id)
        .await
        .unwrap_or_else(|| panic!("no auth_failed audit line for {id}"))
}

/// Issue 23: revoking a connected device at the OCSP responder cuts its live session with 0x98
/// within the refresh interval, refuses it afterwards, and leaves the bystander.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revoked_at_the_responder_is_cut_with_0x98_and_refused_and_the_bystander_stays() {
    let _one = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    let victim_cert = pki.client("victim", None, Flaw::None);
    let other_cert = pki.client("bystander", None, Flaw::None);
    let mut responder = Responder::new(&pki, None);
    responder.write_index(&[
        index_line(&victim_cert, "victim", false),
        index_line(&other_cert, "bystander", false),
    ]);
    responder.start();

    let gw = setup(&pki, "hard", &responder.url()).start().await;
    // Every status is exported from the start (the registry is shared by this binary's
    // gateways: counters are compared with what they were, not with 0).
    let (_, metrics) = gw.admin_get("/metrics").await;
    for status in ["good", "revoked", "unknown", "error"] {
        let line =
            format!("mqtt_gateway_ocsp_responses_total{{listener=\"mqtts\",status=\"{status}\"}}");
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    assert_eq!(
        sample(&gw, "mqtt_gateway_ocsp_cache_entries", &[]).await,
        0.0
    );
    let good = responses(&gw, "good").await;
    let revoked = responses(&gw, "revoked").await;
    let cut = sample(
        &gw,
        "mqtt_gateway_sessions_revoked_total",
        &[("reason", "ocsp")],
    )
    .await;
    let mut victim = connected(&gw, &pki, &victim_cert, "victim").await;
    let mut other = connected(&gw, &pki, &other_cert, "bystander").await;
    assert!(responses(&gw, "good").await >= good + 2.0);
    assert_eq!(
        sample(&gw, "mqtt_gateway_ocsp_cache_entries", &[]).await,
        2.0
    );

    // The CA revokes the victim: its database changes, the running responder reads it again.
    responder.write_index(&[
        index_line(&victim_cert, "victim", true),
        index_line(&other_cert, "bystander", false),
    ]);
    disconnected_with(&mut victim, ReasonCode::AdministrativeAction).await;
    still_served(&mut other).await;
    let line = gw
        .audit_line(|v| v["event"] == "session_revoked" && v["client_id"] == "victim")
        .await
        .expect("a session_revoked audit line");
    assert_eq!(line["reason"], "ocsp");
    let found = gw
        .audit_line(|v| v["event"] == "ocsp_revoked" && v["detail"] != "at CONNECT")
        .await
        .expect("an ocsp_revoked audit line from the refresh");
    assert_eq!(found["url"], responder.url().as_str());
    assert_eq!(found["listener"], "mqtts");
    assert_eq!(
        sample(
            &gw,
            "mqtt_gateway_sessions_revoked_total",
            &[("reason", "ocsp")]
        )
        .await,
        cut + 1.0,
        "the victim only"
    );
    assert!(responses(&gw, "revoked").await > revoked);

    // Refused afterwards (from the cache), audited; the bystander reconnects.
    let line = refused(&gw, &pki, &victim_cert, "victim-again").await;
    assert_eq!(line["reason"], "certificate_revoked");
    gw.audit_line(|v| v["event"] == "ocsp_revoked" && v["detail"] == "at CONNECT")
        .await
        .expect("an ocsp_revoked audit line at CONNECT");
    let mut again = connected(&gw, &pki, &other_cert, "bystander-2").await;
    still_served(&mut again).await;
    still_served(&mut other).await;
}

/// `hard` vs `soft` with the responder down: refused vs admitted; the admitted session is cut
/// once the responder comes back saying revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_responder_down_hard_refuses_and_soft_admits_until_it_says_revoked() {
    let _one = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    let mut responder = Responder::new(&pki, None);
    // No ocsp_responder here: the responder is the one the certificate names (AIA).
    let device = pki.client_with_ocsp_url("device", &responder.url());
    responder.write_index(&[index_line(&device, "device", true)]);
    let setup = |mode: &str| {
        let mut s = Setup::new(&pki);
        s.tls_extra =
            format!("ocsp = \"{mode}\"\nocsp_refresh_interval = \"1s\"\nocsp_timeout = \"1s\"");
        s
    };

    let hard = setup("hard").start().await;
    let errors = responses(&hard, "error").await;
    let line = refused(&hard, &pki, &device, "device-hard").await;
    assert_eq!(line["reason"], "ocsp_no_answer");
    assert_eq!(line["detail"], "network");
    assert_eq!(responses(&hard, "error").await, errors + 1.0);
    hard.running.shutdown().await;

    let soft = setup("soft").start().await;
    let errors = responses(&soft, "error").await;
    let mut c = connected(&soft, &pki, &device, "device-soft").await;
    still_served(&mut c).await;
    assert!(responses(&soft, "error").await > errors);
    responder.start();
    disconnected_with(&mut c, ReasonCode::AdministrativeAction).await;
    let line = refused(&soft, &pki, &device, "device-soft-again").await;
    assert_eq!(line["reason"], "certificate_revoked");
}

/// Answers that must not be relied on: each refused (`hard`) with its reason in the refusal's
/// audit line, and the gateway still serves a good device afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_answers_are_refused_with_their_reason_and_the_gateway_stays_up() {
    let _one = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    let device = pki.client("device", None, Flaw::None);
    let neighbour = pki.client("neighbour", None, Flaw::None);
    let good = pki.client("good", None, Flaw::None);

    // A real responder whose signing certificate the CA issued without id-kp-OCSPSigning.
    let rogue = pki.client("rogue-responder", None, Flaw::None);
    let rogue_cert = pki.path("rogue-leaf.pem");
    let leaf_pem = std::fs::read_to_string(&rogue.chain_path).unwrap();
    let end = leaf_pem.find("-----END CERTIFICATE-----").unwrap() + 25;
    std::fs::write(&rogue_cert, &leaf_pem[..end]).unwrap();
    let mut undelegated = Responder::new(&pki, Some((rogue_cert, rogue.key_path.clone())));
    undelegated.write_index(&[index_line(&device, "device", false)]);
    undelegated.start();

    // A real responder's good answer for the neighbour, replayed for the device.
    let mut honest = Responder::new(&pki, None);
    honest.write_index(&[
        index_line(&neighbour, "neighbour", false),
        index_line(&good, "good", false),
    ]);
    honest.start();
    let out = honest.dir.path().join("neighbour.der");
    let neighbours_answer = honest.answer_for(&neighbour.serial, &out);

    let (garbage, _g) = canned_server(Canned::Body(b"<html>502 Bad Gateway</html>".to_vec())).await;
    let (other_serial, _o) = canned_server(Canned::Body(neighbours_answer)).await;
    let (huge, _h) = canned_server(Canned::Body(vec![0x30; 1 << 20])).await;
    let (never, _n) = canned_server(Canned::Never).await;

    let cases = [
        ("signature", undelegated.url()),
        ("other_certificate", format!("http://{other_serial}")),
        ("malformed", format!("http://{garbage}")),
        ("too_large", format!("http://{huge}")),
        ("timeout", format!("http://{never}")),
    ];
    for (i, (reason, url)) in cases.iter().enumerate() {
        let gw = setup(&pki, "hard", url).start().await;
        let (errors, goods) = (responses(&gw, "error").await, responses(&gw, "good").await);
        let line = refused(&gw, &pki, &device, &format!("device-{i}")).await;
        assert_eq!(line["reason"], "ocsp_no_answer", "{reason}");
        assert_eq!(line["detail"], *reason);
        assert_eq!(responses(&gw, "error").await, errors + 1.0, "{reason}");
        assert_eq!(responses(&gw, "good").await, goods, "{reason}");
        gw.running.shutdown().await;
    }
    // The same gateway settings with the honest responder: the good device is admitted.
    let gw = setup(&pki, "hard", &honest.url()).start().await;
    let mut c = connected(&gw, &pki, &good, "good").await;
    still_served(&mut c).await;
}

/// `openssl s_client -status` against the gateway with `client`: what it prints.
async fn s_client(gw: &TestGateway, pki: &Pki, client: &Issued) -> String {
    let (inter, _) = pki.write_inter_ca();
    let addr = gw.tls_addr();
    let (cert, key, ca) = (
        client.chain_path.clone(),
        client.key_path.clone(),
        pki.root_path.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let out = Command::new("openssl")
            .args(["s_client", "-status", "-connect"])
            .arg(addr.to_string())
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .arg("-cert_chain")
            .arg(inter)
            .arg("-CAfile")
            .arg(ca)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

/// Polls `openssl s_client -status` until its output satisfies `want` (bounded).
async fn s_client_until(
    gw: &TestGateway,
    pki: &Pki,
    client: &Issued,
    what: &str,
    want: impl Fn(&str) -> bool,
) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        last = s_client(gw, pki, client).await;
        if want(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("s_client never showed {what}:\n{last}");
}

/// Issue 23 item 3: the gateway staples a good, validated OCSP response for its own certificate
/// (a real `openssl ocsp` answers, a real `openssl s_client -status` reads it), and withdraws it
/// once the responder says revoked; a listener without `staple_ocsp` staples nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_certificate_is_stapled_while_good_and_not_once_revoked() {
    let _one = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    let device = pki.client("device", None, Flaw::None);
    let mut responder = Responder::new(&pki, None);
    responder.write_index(&[
        index_line(&pki.server, "gateway.test", false),
        index_line(&device, "device", false),
    ]);
    responder.start();

    let plain = Setup::new(&pki).start().await;
    let out = s_client(&plain, &pki, &device).await;
    assert!(
        out.contains("OCSP response: no response sent"),
        "no staple without staple_ocsp:\n{out}"
    );
    plain.running.shutdown().await;

    let mut setup = Setup::new(&pki);
    setup.tls_extra = format!(
        "staple_ocsp = true\nocsp_responder = \"{}\"\nocsp_refresh_interval = \"1s\"",
        responder.url()
    );
    let gw = setup.start().await;
    let out = s_client_until(&gw, &pki, &device, "a stapled good answer", |o| {
        o.contains("Cert Status: good")
    })
    .await;
    assert!(out.contains("OCSP Response Status: successful"), "{out}");
    assert!(out.contains("Verify return code: 0 (ok)"), "{out}");

    // The CA revokes the gateway's certificate: the staple goes (never a stale good one).
    responder.write_index(&[
        index_line(&pki.server, "gateway.test", true),
        index_line(&device, "device", false),
    ]);
    s_client_until(&gw, &pki, &device, "no staple", |o| {
        o.contains("OCSP response: no response sent")
    })
    .await;
}
