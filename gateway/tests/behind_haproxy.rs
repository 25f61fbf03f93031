//! Two gateway processes behind HAProxy (issue 10): HAProxy (the Debian package) balances by
//! source address and sends PROXY protocol v2 (`send-proxy-v2`); both gateways watch the same
//! policy file. Clients connect from several loopback addresses (127.0.6.x, 127.0.7.1,
//! 127.0.8.1), while every connection the gateways see comes from HAProxy at 127.0.0.1. Shown:
//! the clients spread over both gateways, `sources` rules and bans act on the clients' own
//! addresses, and a policy change reaches both gateways.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e::{Mosquitto, free_port};
use mqtt_inspect::{Connect, Properties, ProtocolVersion};
use support::http_get;
use support::wire::PlainWire;

const POLICY: &str = r##"version = 1
[[connect]]
who = { sources = ["127.0.6.0/24", "127.0.8.0/24"] }
client_ids = ["*"]
[[rule]]
who = { any = true }
allow = ["publish"]
topics = ["a/#"]
"##;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Kills the child process when dropped (a failing test must not leave it running).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Gateway {
    _child: Killed,
    admin: SocketAddr,
    listen: SocketAddr,
    audit: PathBuf,
}

fn start_gateway(dir: &Path, name: &str, broker: SocketAddr, shared: &Path) -> Gateway {
    let (admin, listen) = (loopback(free_port()), loopback(free_port()));
    let audit = dir.join(format!("{name}-audit.jsonl"));
    let config = format!(
        r#"[admin]
listen = "{admin}"
[upstream]
address = "{broker}"
[[listener]]
name = "lb"
bind = "{listen}"
proxy_protocol = true
proxy_protocol_from = ["127.0.0.1/32"]
[auth]
allow_anonymous = false
principal_from = "username"
password_file = "{shared}/passwords"
[policy]
file = "{shared}/policy.toml"
[limits]
auth_failures_before_ban = 3
connections_per_ip_per_second = 1000
[log]
audit_file = "{audit}"
"#,
        shared = shared.display(),
        audit = audit.display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mqtt-gateway"))
        .args(["run", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let gw = Gateway {
        _child: Killed(child),
        admin,
        listen,
        audit,
    };
    for _ in 0..400 {
        if http_get(gw.admin, "/healthz").is_some_and(|(s, _)| s == 200) {
            return gw;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "gateway {name} did not start: {}",
        std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
    );
}

impl Gateway {
    fn metric(&self, series: &str) -> f64 {
        let (_, body) = http_get(self.admin, "/metrics").unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }

    fn accepted(&self) -> f64 {
        self.metric("mqtt_gateway_connections_total{listener=\"lb\",outcome=\"accepted\"}")
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn start_haproxy(dir: &Path, backends: &[SocketAddr]) -> (Killed, SocketAddr) {
    let front = loopback(free_port());
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, b)| format!("  server gw{i} {b} send-proxy-v2\n"))
        .collect();
    let cfg = format!(
        "global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1m\n  timeout server 1m\n\
         frontend mqtt\n  bind {front}\n  default_backend gateways\n\
         backend gateways\n  balance source\n  hash-type consistent\n{servers}"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (apt-get install haproxy; scripts/test.sh does)");
    let child = Killed(child);
    for _ in 0..200 {
        if StdTcpStream::connect(front).is_ok() {
            return (child, front);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("haproxy did not start listening on {front}");
}

/// An MQTT 5 client connecting through HAProxy from a chosen loopback source address.
struct Client(PlainWire);

impl Client {
    /// Connects from `from` as alice with `password`; returns the CONNACK reason code (or
    /// `None` when closed without one) and the connection.
    async fn connect(
        front: SocketAddr,
        from: &str,
        id: &str,
        password: &[u8],
    ) -> (Option<u8>, Self) {
        let mut c = Self(
            PlainWire::plain_from(front, from, ProtocolVersion::V5)
                .await
                .unwrap(),
        );
        let mut frame = Vec::new();
        Connect {
            version: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 60,
            properties: Properties::EMPTY,
            client_id: id,
            will: None,
            username: Some("alice"),
            password: Some(password),
            bridge: false,
        }
        .encode(&mut frame)
        .unwrap();
        let _ = c.0.try_send(&frame).await;
        let code = c.0.recv().await.map(|f| {
            assert_eq!(f[0], 0x20, "{f:?}");
            f[3]
        });
        (code, c)
    }

    /// Publishes QoS 1 to `topic`; returns the PUBACK reason code.
    async fn publish(&mut self, topic: &str, id: u16) -> u8 {
        let mut body = u16::try_from(topic.len()).unwrap().to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&id.to_be_bytes());
        body.push(0); // no properties
        body.extend_from_slice(b"x");
        let mut frame = vec![0x32, u8::try_from(body.len()).unwrap()];
        frame.extend_from_slice(&body);
        self.0.try_send(&frame).await.unwrap();
        let ack = self.0.recv().await.expect("PUBACK");
        assert_eq!(ack[0], 0x40, "{ack:?}");
        assert_eq!(ack[2..4], id.to_be_bytes(), "{ack:?}");
        ack.get(4).copied().unwrap_or(0)
    }
}

/// Contract ("Audit log"): each refusal is a JSON line "with at least: time, event, listener,
/// peer address, ..." (the client's, not the balancer's); `sources` rules judge the same address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_behind_haproxy_see_real_client_addresses_and_share_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("policy.d");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join("policy.toml"), POLICY).unwrap();
    let hash = mqtt_gateway::auth::hash_mosquitto_pbkdf2(b"secret", 1000).unwrap();
    std::fs::write(shared.join("passwords"), format!("alice:{hash}\n")).unwrap();
    let broker = tokio::task::spawn_blocking(Mosquitto::start)
        .await
        .unwrap()
        .unwrap();
    let gws = [
        start_gateway(dir.path(), "gw1", broker.addr(), &shared),
        start_gateway(dir.path(), "gw2", broker.addr(), &shared),
    ];
    let (_haproxy, front) = start_haproxy(dir.path(), &[gws[0].listen, gws[1].listen]);

    // Sixteen clients from sixteen addresses: all let in by the `sources` rule, spread over both.
    let before = [gws[0].accepted(), gws[1].accepted()];
    let mut clients = Vec::new();
    for i in 1..=16 {
        let (code, c) =
            Client::connect(front, &format!("127.0.6.{i}"), &format!("c{i}"), b"secret").await;
        assert_eq!(code, Some(0), "client from 127.0.6.{i}");
        clients.push(c);
    }
    let spread = [gws[0].accepted() - before[0], gws[1].accepted() - before[1]];
    assert_eq!(spread[0] + spread[1], 16.0);
    assert!(spread[0] > 0.0 && spread[1] > 0.0, "not spread: {spread:?}");

    // A client outside the rule's sources is refused: 0x87, audited with its own address.
    let (code, _) = Client::connect(front, "127.0.7.1", "outsider", b"secret").await;
    assert_eq!(code, Some(0x87));
    // The audit log is written by a task of its own: wait for the line (not a fixed pause).
    let refusal_audited = || {
        gws.iter().flat_map(Gateway::audit_lines).any(|v| {
            v["event"] == "acl_denied"
                && v["peer"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("127.0.7.1:"))
        })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut audited = refusal_audited();
    while !audited && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        audited = refusal_audited();
    }
    assert!(audited, "the refusal is audited with the client's address");

    // Three wrong passwords from 127.0.8.1 ban that address (and only it).
    for _ in 0..3 {
        let (code, _) = Client::connect(front, "127.0.8.1", "guess", b"wrong").await;
        assert_eq!(code, Some(0x86));
    }
    let (code, _) = Client::connect(front, "127.0.8.1", "guess", b"secret").await;
    assert_eq!(code, None, "the banned address is closed before CONNACK");
    let (code, _) = Client::connect(front, "127.0.8.2", "neighbour", b"secret").await;
    assert_eq!(
        code,
        Some(0),
        "its neighbour behind the same HAProxy is served"
    );

    // The policy grants b/#: every client, on either gateway, can publish there without
    // reconnecting once both have reloaded.
    for c in &mut clients {
        assert_eq!(c.publish("b/x", 1).await, 0x87);
    }
    let path = shared.join("policy.toml");
    let tmp = shared.join("policy.toml.tmp");
    std::fs::write(&tmp, POLICY.replace("[\"a/#\"]", "[\"a/#\", \"b/#\"]")).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let mut pending: Vec<usize> = (0..clients.len()).collect();
    for id in 2..200u16 {
        let mut still = Vec::new();
        for &i in &pending {
            if clients[i].publish("b/x", id).await == 0x87 {
                still.push(i);
            }
        }
        pending = still;
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        pending.is_empty(),
        "clients {pending:?} never saw the new policy"
    );
}
