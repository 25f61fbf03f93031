//! The operator's tools against the real thing: `passwd --mosquitto` lines in a real Mosquitto
//! 2.0 and in the gateway's parser; `pki` certificates and CRLs in Mosquitto's own TLS listener;
//! `pki revoke` reaching a running `mqtt-gateway run` through its file watcher; `check` naming
//! file:line for each kind of mistake; the systemd unit of deploy/ under systemd-analyze. Every
//! refusal sits next to the case that works. Needs `mosquitto`, `mosquitto_pub` and
//! `systemd-analyze` (scripts/test.sh installs them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use e2e::{MqttVersion, free_port, mosquitto_pub};
use mqtt_gateway::auth::{PasswordFile, VerifyOutcome};
use mqtt_inspect::{ProtocolVersion, ReasonCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::wire::{Got, Next, TlsWire, connect};

const BIN: &str = env!("CARGO_BIN_EXE_mqtt-gateway");
/// How long anything is waited for (a deadline, never an assertion on speed).
const DEADLINE: Duration = Duration::from_secs(30);

// === helpers ===

fn gw(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that refuses its arguments exits before reading its input: a write that finds
    // the pipe closed is then expected, and the exit status tells the outcome.
    let written = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    if let Err(e) = written {
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe, "{e}");
    }
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

fn refused(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "expected exit 1: {text}");
    text
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn make_pki(dir: &Path, devices: &[&str]) {
    ok(&gw(&["pki", "init", s(dir)], ""));
    let server = ["pki", "issue", s(dir), "gateway", "--server"];
    ok(&gw(
        &[&server[..], &["--san", "127.0.0.1", "--san", "localhost"]].concat(),
        "",
    ));
    for d in devices {
        ok(&gw(&["pki", "issue", s(dir), d, "--ou", "devices"], ""));
    }
}

fn tls_args(pki: &Path, device: Option<&str>) -> Vec<String> {
    let mut v = vec!["--cafile".into(), s(&pki.join("ca.pem")).into()];
    if let Some(d) = device {
        v.extend([
            "--cert".into(),
            s(&pki.join(format!("{d}.pem"))).into(),
            "--key".into(),
            s(&pki.join(format!("{d}.key"))).into(),
        ]);
    }
    v
}

fn publish(addr: SocketAddr, extra: &[String], topic: &str) -> bool {
    let mut args: Vec<&str> = extra.iter().map(String::as_str).collect();
    args.extend(["-t", topic, "-m", "x", "-q", "1"]);
    mosquitto_pub(addr, MqttVersion::V311, &args)
        .unwrap()
        .success()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < end, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(pid: u32, sig: &str) {
    let st = Command::new("bash")
        .args(["-c", "kill -s \"$1\" \"$2\"", "kill", sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// A Mosquitto with a config of the test's own (password file, TLS listener) on a free port.
struct Broker {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Broker {
    fn start(dir: &Path, body: &str) -> Self {
        let port = free_port();
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let conf = dir.join(format!("mosquitto-{port}.conf"));
        let user = if root { "user root\n" } else { "" };
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\n{body}\n{user}log_dest stderr\n"),
        )
        .unwrap();
        let log = dir.join(format!("mosquitto-{port}.log"));
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let broker = Self { child, addr, log };
        wait_for("mosquitto to listen", || TcpStream::connect(addr).is_ok());
        broker
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- mosquitto log ---\n{}", self.log());
        }
    }
}

// === (a) passwd ===

/// Contract ("Command line"): "`mqtt-gateway passwd FILE USER` | ... `--mosquitto` writes a `$7$`
/// hash that Mosquitto itself accepts".
#[test]
fn passwd_mosquitto_lines_are_accepted_by_mosquitto_and_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwords");
    std::fs::write(&file, "# shared by Mosquitto and mqtt-gateway\n").unwrap();
    let f = s(&file);

    let out = ok(&gw(&["passwd", f, "alice", "--mosquitto"], "s3cret pw\n"));
    assert!(out.contains("added alice"), "{out}");
    ok(&gw(&["passwd", f, "gw-only"], "other\n"));
    let text = std::fs::read_to_string(&file).unwrap();
    let alice = text.lines().find(|l| l.starts_with("alice:")).unwrap();
    let parts: Vec<&str> = alice.split('$').collect();
    assert_eq!(parts[1..3], ["7", "210000"], "{alice}");
    let salt = base64::engine::general_purpose::STANDARD
        .decode(parts[3])
        .unwrap();
    assert_eq!(salt.len(), 12, "Mosquitto 2.0 accepts only 12-byte salts");
    assert!(text.starts_with("# shared by Mosquitto and mqtt-gateway\nalice:"));
    // Refused, and the file is untouched: a ':' in the name, an empty password, --iterations
    // without --mosquitto.
    refused(&gw(&["passwd", f, "ev:il", "--mosquitto"], "x\n"));
    refused(&gw(&["passwd", f, "bob"], "\n"));
    assert!(
        !gw(&["passwd", f, "bob", "--iterations", "5"], "x\n")
            .status
            .success()
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);

    let broker = Broker::start(
        dir.path(),
        &format!("allow_anonymous false\npassword_file {f}"),
    );
    let creds = |user: &str, pw: &str| vec!["-u".to_owned(), user.into(), "-P".into(), pw.into()];
    assert!(publish(broker.addr, &creds("alice", "s3cret pw"), "t"));
    assert!(!publish(broker.addr, &creds("alice", "s3cret pW"), "t"));
    // argon2id lines are the gateway's only: Mosquitto 2.0 drops them (with a log line) and keeps
    // the rest of the file.
    assert!(!publish(broker.addr, &creds("gw-only", "other"), "t"));
    assert!(
        broker
            .log()
            .contains("Invalid password hash type for user gw-only")
    );
    // The gateway reads the same file.
    let pf = PasswordFile::load(&file).unwrap();
    assert_eq!(pf.verify("alice", b"s3cret pw"), VerifyOutcome::Ok);
    assert_eq!(pf.verify("alice", b"s3cret pW"), VerifyOutcome::BadPassword);
    assert_eq!(pf.verify("gw-only", b"other"), VerifyOutcome::Ok);

    // Replace alice's password; Mosquitto re-reads the file on SIGHUP.
    let out = ok(&gw(
        &["passwd", f, "alice", "--mosquitto", "--iterations", "1000"],
        "n3w\n",
    ));
    assert!(out.contains("replaced alice"), "{out}");
    signal(broker.child.id(), "HUP");
    wait_for("the new password in Mosquitto", || {
        publish(broker.addr, &creds("alice", "n3w"), "t")
    });
    assert!(!publish(broker.addr, &creds("alice", "s3cret pw"), "t"));
    let pf = PasswordFile::load(&file).unwrap();
    assert_eq!(pf.verify("alice", b"n3w"), VerifyOutcome::Ok);
    assert_eq!(pf.verify("alice", b"s3cret pw"), VerifyOutcome::BadPassword);

    ok(&gw(&["passwd", f, "alice", "--delete"], ""));
    refused(&gw(&["passwd", f, "alice", "--delete"], ""));
    let pf = PasswordFile::load(&file).unwrap();
    assert!(!pf.contains("alice") && pf.contains("gw-only"));
}

// === (b) pki in Mosquitto ===

/// Contract ("Command line"): "`pki init` / `pki issue` / `pki revoke` | a small CA ...: CA, server
/// and device certificates (ECDSA P-256), and a CRL rewritten on every revoke".
#[test]
fn pki_certificates_and_crl_work_in_mosquittos_own_tls_listener() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    make_pki(&pki, &["dev-1", "dev-2"]);
    let conf = format!(
        "cafile {ca}\ncertfile {cert}\nkeyfile {key}\nrequire_certificate true\ncrlfile {crl}\nallow_anonymous true",
        ca = s(&pki.join("ca.pem")),
        cert = s(&pki.join("gateway.pem")),
        key = s(&pki.join("gateway.key")),
        crl = s(&pki.join("ca.crl")),
    );
    let broker = Broker::start(dir.path(), &conf);
    assert!(publish(broker.addr, &tls_args(&pki, Some("dev-1")), "t"));
    assert!(!publish(broker.addr, &tls_args(&pki, None), "t"));

    ok(&gw(&["pki", "revoke", s(&pki), "dev-1"], ""));
    refused(&gw(&["pki", "revoke", s(&pki), "dev-1"], ""));
    // Mosquitto reads its crlfile when it starts.
    drop(broker);
    let broker = Broker::start(dir.path(), &conf);
    assert!(!publish(broker.addr, &tls_args(&pki, Some("dev-1")), "t"));
    assert!(broker.log().contains("certificate verify failed"));
    assert!(publish(broker.addr, &tls_args(&pki, Some("dev-2")), "t"));
}

// === (c) pki revoke reaches a running gateway ===

/// `mqtt-gateway run` as a child process; killed (and its log printed on failure) when dropped.
struct Gateway {
    child: Child,
    log: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- gateway log ---\n{log}");
        }
    }
}

fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// An MQTT 5 session (the shared raw client, over TLS) with a device certificate from the pki
/// directory; the error of a handshake or CONNECT that does not succeed.
async fn open_session(addr: SocketAddr, pki: &Path, device: &str) -> std::io::Result<TlsWire> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.join("ca.pem")).unwrap())
        .unwrap();
    let chain = CertificateDer::pem_file_iter(pki.join(format!("{device}.pem")))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(pki.join(format!("{device}.key"))).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    let mut wire = TlsWire::try_tls(addr, Arc::new(config), ProtocolVersion::V5).await?;
    wire.try_send(&connect(ProtocolVersion::V5, device, None, None))
        .await?;
    match wire.read_within(DEADLINE).await {
        Next::Frame(f)
            if matches!(
                Got::from_frame(&f, wire.version),
                Got::Connack { code: 0, .. }
            ) =>
        {
            Ok(wire)
        }
        other => Err(std::io::Error::other(format!(
            "no CONNACK success: {other:?}"
        ))),
    }
}

/// Contract ("Command line"): "a CRL rewritten on every revoke, which a running gateway picks
/// up"; DESIGN §3: "Revocation reaches live sessions."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pki_revoke_reaches_a_running_gateway() {
    let upstream = tokio::task::spawn_blocking(e2e::Mosquitto::start)
        .await
        .unwrap()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    make_pki(&pki, &["dev-1", "dev-2"]);
    let (port, admin) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("policy.toml"),
        "version = 1\n[groups]\ndevices = { cert_ou = [\"devices\"] }\n\
         [[connect]]\nwho = { groups = [\"devices\"] }\nclient_ids = [\"%u\"]\n\
         [[rule]]\nwho = { groups = [\"devices\"] }\nallow = [\"publish\", \"subscribe\", \"receive\"]\ntopics = [\"devices/%u/#\"]\n",
    )
    .unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\nlisten = \"127.0.0.1:{admin}\"\n[upstream]\naddress = \"{}\"\n\
             [[listener]]\nname = \"mqtts\"\nbind = \"127.0.0.1:{port}\"\n[listener.tls]\n\
             cert = \"pki/gateway.pem\"\nkey = \"pki/gateway.key\"\nclient_ca = \"pki/ca.pem\"\ncrl = [\"pki/ca.crl\"]\n\
             [auth]\ncert_is_credential = true\n[policy]\nfile = \"policy.toml\"\n[log]\naudit_file = \"audit.jsonl\"\n",
            upstream.addr()
        ),
    )
    .unwrap();
    ok(&gw(&["check", "--config", s(&config)], ""));
    let log = dir.path().join("gateway.log");
    let mut gateway = Gateway {
        child: Command::new(BIN)
            .args(["run", "--config", s(&config)])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
        log,
    };
    let admin = SocketAddr::from((Ipv4Addr::LOCALHOST, admin));
    tokio::task::spawn_blocking(move || {
        wait_for("/readyz", || {
            http_get(admin, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200"))
        });
    })
    .await
    .unwrap();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));

    // The gateway accepts what `pki issue` made (and nothing without a certificate).
    let (p, a) = (pki.clone(), addr);
    let (with, without) = tokio::task::spawn_blocking(move || {
        let id = ["-i".to_owned(), "dev-1".to_owned()];
        (
            publish(
                a,
                &[tls_args(&p, Some("dev-1")), id.to_vec()].concat(),
                "devices/dev-1/t",
            ),
            publish(
                a,
                &[tls_args(&p, None), id.to_vec()].concat(),
                "devices/dev-1/t",
            ),
        )
    })
    .await
    .unwrap();
    assert!(with, "a device certificate from `pki issue` was refused");
    assert!(!without, "a client without a certificate was let in");
    let mut dev1 = open_session(addr, &pki, "dev-1").await.unwrap();
    let mut dev2 = open_session(addr, &pki, "dev-2").await.unwrap();

    ok(&gw(&["pki", "revoke", s(&pki), "dev-1"], ""));

    // The live session of dev-1 ends with DISCONNECT 0x98 (Administrative action), then EOF.
    let frame = dev1.frame_within(DEADLINE).await;
    assert_eq!(
        Got::from_frame(&frame, dev1.version),
        Got::Disconnect {
            reason: ReasonCode::AdministrativeAction.to_u8()
        },
        "a DISCONNECT after the revocation"
    );
    dev1.assert_closed().await;
    // dev-2 is still served, and may connect again; dev-1 may not.
    dev2.ping().await;
    assert!(open_session(addr, &pki, "dev-1").await.is_err());
    open_session(addr, &pki, "dev-2").await.unwrap();
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(
        audit.lines().any(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["event"] == "session_revoked" && v["client_id"] == "dev-1" && v["reason"] == "crl"
        }),
        "{audit}"
    );

    // SIGTERM: exit 0.
    signal(gateway.child.id(), "TERM");
    let status = tokio::task::spawn_blocking(move || gateway.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}

// === (d) check ===

/// Line (1-based) of the first line of `text` containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

/// Contract ("Command line"): "`mqtt-gateway check --config FILE` | ... prints what is wrong with
/// file:line, exit 1".
#[test]
fn check_names_the_file_and_line_of_each_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    make_pki(&pki, &[]);
    std::fs::write(
        dir.path().join("bad.crl"),
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let gateway = format!(
        "[admin]\nlisten = \"127.0.0.1:9090\"\n\n[upstream]\naddress = \"127.0.0.1:1883\"\n\n\
         [[listener]]\nname = \"mqtts\"\nbind = \"0.0.0.0:8883\"\n[listener.tls]\n\
         cert = \"{pki}/gateway.pem\"\nkey = \"{pki}/gateway.key\"\nclient_ca = \"{pki}/ca.pem\"\ncrl = [\"{pki}/ca.crl\"]\n\n\
         [[listener]]\nname = \"internal\"\nbind = \"127.0.0.1:1884\"\n\n\
         [auth]\npassword_file = \"passwords\"\n\n[policy]\nfile = \"policy.toml\"\n\n\
         [limits]\nconnect_timeout = \"10s\"\n",
        pki = s(&pki)
    );
    let policy = "version = 1\n\n[groups]\nops = { principals = [\"alice\"] }\n\n\
                  [[connect]]\nwho = { groups = [\"ops\"] }\nclient_ids = [\"%u\"]\n\n\
                  [[rule]]\nwho = { groups = [\"ops\"], sources = [\"10.0.0.0/8\"], listeners = [\"internal\"] }\n\
                  allow = [\"publish\", \"subscribe\"]\ntopics = [\"ops/#\"]\n";
    let passwords = "# operators\nalice:$7$101$qOYqe1PsLjoCK/CE$JL5lDygzrA1zEyaS7Egmj+0SadwjVg7yxlQ0XXU+nLYcF0wVDb0wZrGFRubP4a47PyJ6UYYKaSN1mTgppvWkkA==\n";
    let run = |gateway: &str, policy: &str| {
        let case = tempfile::tempdir_in(dir.path()).unwrap();
        std::fs::write(case.path().join("gateway.toml"), gateway).unwrap();
        std::fs::write(case.path().join("policy.toml"), policy).unwrap();
        std::fs::write(case.path().join("passwords"), passwords).unwrap();
        gw(
            &["check", "--config", s(&case.path().join("gateway.toml"))],
            "",
        )
    };

    let out = ok(&run(&gateway, policy));
    assert!(
        out.contains("gateway.toml: ok: 2 listener(s), 2 policy rule(s), 1 password entry\n"),
        "{out}"
    );

    let crl = format!("{}/ca.crl", s(&pki));
    let bad_crl = s(&dir.path().join("bad.crl")).to_owned();
    let cert = format!("{}/gateway.pem", s(&pki));
    // (what, gateway.toml, policy.toml, the file and the text of the line that must be named)
    let cases: Vec<(&str, String, String, &str, &str)> = vec![
        (
            "unknown key",
            gateway.replace("connect_timeout = \"10s\"", "conect_timeout = \"10s\""),
            policy.into(),
            "gateway.toml",
            "conect_timeout",
        ),
        (
            "bad duration",
            gateway.replace("\"10s\"", "\"10 s\""),
            policy.into(),
            "gateway.toml",
            "\"10 s\"",
        ),
        (
            "missing policy file",
            gateway.replace("\"policy.toml\"", "\"missing.toml\""),
            policy.into(),
            "gateway.toml",
            "missing.toml",
        ),
        (
            "policy syntax error",
            gateway.clone(),
            policy.replace(
                "[\"publish\", \"subscribe\"]",
                "[\"publish\" \"subscribe\"]",
            ),
            "policy.toml",
            "\"publish\" \"subscribe\"",
        ),
        (
            "unknown group in a rule",
            gateway.clone(),
            policy.replace(
                "who = { groups = [\"ops\"], sources",
                "who = { groups = [\"opz\"], sources",
            ),
            "policy.toml",
            "opz",
        ),
        (
            "unknown listener in a rule",
            gateway.clone(),
            policy.replace("[\"internal\"]", "[\"internl\"]"),
            "policy.toml",
            "internl",
        ),
        (
            "bad CIDR",
            gateway.clone(),
            policy.replace("10.0.0.0/8", "10.0.0.0/33"),
            "policy.toml",
            "10.0.0.0/33",
        ),
        (
            "missing certificate file",
            gateway.replace(&cert, "/nonexistent/gateway.pem"),
            policy.into(),
            "gateway.toml",
            "/nonexistent/gateway.pem",
        ),
        (
            "bad CRL",
            gateway.replace(&crl, &bad_crl),
            policy.into(),
            "gateway.toml",
            "bad.crl",
        ),
    ];
    for (what, g, p, file, needle) in &cases {
        let text = if *file == "gateway.toml" { g } else { p };
        let want = format!("{file}:{}:", line_of(text, needle));
        let err = refused(&run(g, p));
        assert!(err.contains(&want), "{what}: expected {want} in:\n{err}");
    }
    // A bad password file line, in the password file.
    let case = tempfile::tempdir_in(dir.path()).unwrap();
    std::fs::write(case.path().join("gateway.toml"), &gateway).unwrap();
    std::fs::write(case.path().join("policy.toml"), policy).unwrap();
    std::fs::write(
        case.path().join("passwords"),
        format!("{passwords}bob:plaintext\n"),
    )
    .unwrap();
    let err = refused(&gw(
        &["check", "--config", s(&case.path().join("gateway.toml"))],
        "",
    ));
    assert!(err.contains("passwords:3:"), "{err}");
}

/// A gateway.toml (plain listener only) beside `policy` in a fresh directory under `dir`.
fn config_with_policy(dir: &Path, policy: &str) -> tempfile::TempDir {
    let case = tempfile::tempdir_in(dir).unwrap();
    let gateway = "[upstream]\naddress = \"127.0.0.1:1883\"\n\n\
                   [[listener]]\nname = \"internal\"\nbind = \"127.0.0.1:1884\"\n\n\
                   [auth]\nallow_anonymous = true\n\n[policy]\nfile = \"policy.toml\"\n";
    std::fs::write(case.path().join("gateway.toml"), gateway).unwrap();
    std::fs::write(case.path().join("policy.toml"), policy).unwrap();
    case
}

/// Issue 20, item 10: `policy explain --subscribe` judges `$share/g1/$share/g2/F` as the broker
/// takes it, group `g1`'s subscription to `$share/g2/F` ([MQTT-4.8.2-1]), which `#` does not
/// allow ([MQTT-4.7.2-1]); it was judged as `F` (the prefix taken off twice) and allowed.
#[test]
fn explain_takes_a_share_prefix_off_once() {
    let dir = tempfile::tempdir().unwrap();
    let policy =
        "version = 1\n[[rule]]\nwho = { any = true }\nallow = [\"subscribe\"]\ntopics = [\"#\"]\n";
    let case = config_with_policy(dir.path(), policy);
    let config = case.path().join("gateway.toml");
    let explain = |filter: &str| {
        gw(
            &[
                "policy",
                "explain",
                "--config",
                s(&config),
                "--principal",
                "p",
                "--client-id",
                "c",
                "--subscribe",
                filter,
            ],
            "",
        )
    };
    for good in ["F", "$share/g1/F", "$share/g1/a/+/F"] {
        let out = ok(&explain(good));
        assert!(out.starts_with("allow:"), "{good}: {out}");
    }
    let out = explain("$share/g1/$share/g2/F");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(
        text.starts_with("deny:") && text.contains("(group \"g1\", filter \"$share/g2/F\")"),
        "{text}"
    );
}

/// Issue 20, item 14: `check` warns about policy shapes that hand out session takeovers — a
/// `[[connect]]` rule with `client_ids = ["*"]` (its clients may connect with any device's id, and
/// a CONNECT with an id in use ends the session holding it, [MQTT-3.1.4-3]) and a `*` next to `%u`
/// (`%u-*`: principal `a` may use `a-b-1`, an id of principal `a-b`) — naming file:line, and
/// still exits 0 (warnings, not errors). Beside them, `%u` and `%u/*` get no warning.
#[test]
fn check_warns_about_policies_that_hand_out_takeovers() {
    let dir = tempfile::tempdir().unwrap();
    let policy = |ids: &str| {
        format!(
            "version = 1\n\n[[connect]]\nwho = {{ any = true }}\nclient_ids = [{ids}]\n\n\
             [[rule]]\nwho = {{ any = true }}\nallow = [\"publish\"]\ntopics = [\"d/%u/#\"]\n"
        )
    };
    let check = |ids: &str| {
        let case = config_with_policy(dir.path(), &policy(ids));
        let out = gw(
            &["check", "--config", s(&case.path().join("gateway.toml"))],
            "",
        );
        let stdout = ok(&out);
        (stdout, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for (ids, needle) in [
        (
            "\"*\"",
            "\"*\" lets every client of this rule connect with any client id",
        ),
        ("\"%u\", \"%u-*\"", "\"%u-*\" lets principals collide"),
    ] {
        let (stdout, stderr) = check(ids);
        assert!(
            stdout.contains("ok:") && stdout.contains("1 warning(s)"),
            "{stdout}"
        );
        assert!(
            stderr.contains("policy.toml:5: warning: client id pattern") && stderr.contains(needle),
            "{ids}: {stderr}"
        );
    }
    for ids in ["\"%u\"", "\"%u/*\", \"dev-%u\""] {
        let (stdout, stderr) = check(ids);
        assert!(!stdout.contains("warning"), "{ids}: {stdout}");
        assert!(!stderr.contains("warning"), "{ids}: {stderr}");
    }
}

// === deploy/systemd ===

/// Not a wire rule and no contract or DESIGN line: a deployment check of the shipped unit.
#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/mqtt-gateway.service"),
    )
    .unwrap();
    // systemd-analyze checks that the executables exist: point them at the binary under test.
    let unit = unit.replace("/usr/local/bin/mqtt-gateway", BIN);
    let analyze = |text: &str, args: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mqtt-gateway.service");
        std::fs::write(&path, text).unwrap();
        Command::new("systemd-analyze")
            .args(args)
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian package systemd; scripts/test.sh installs it)")
    };
    let out = analyze(&unit, &["verify"]);
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "{out:?}"
    );
    // The same check reports a misspelt value and an unknown directive, with file:line.
    let broken = unit
        .replace("ProtectHome=yes", "ProtectHome=yess")
        .replace("NoNewPrivileges=yes", "NoNewPrivilege=yes");
    let err = String::from_utf8_lossy(&analyze(&broken, &["verify"]).stderr).into_owned();
    for needle in ["ProtectHome", "NoNewPrivilege"] {
        let want = format!("mqtt-gateway.service:{}:", line_of(&broken, needle));
        assert!(err.contains(&want), "{want} not in {err}");
    }
    // Exposure score at most 2.0 of 10 ("OK"); the unit without its sandboxing is refused by the
    // same threshold.
    let security = ["security", "--offline=true", "--threshold=20"];
    assert!(analyze(&unit, &security).status.success());
    let soft: String = unit
        .lines()
        .filter(|l| {
            ![
                "DynamicUser",
                "Protect",
                "Private",
                "Restrict",
                "SystemCall",
                "Capability",
            ]
            .iter()
            .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!analyze(&soft, &security).status.success());
}
