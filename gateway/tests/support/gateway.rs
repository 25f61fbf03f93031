//! The gateway under test: a real Mosquitto started from `upstream-broker/`, the gateway started
//! in-process in front of it on free loopback ports ([`Setup`], [`TestGateway`]), the broker
//! side (a spy, a direct publisher, a tap that records the CONNECT the broker receives), and
//! readers of `/metrics` samples and audit lines.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e::{LiveSubscriber, Mosquitto, MqttVersion};
use mqtt_gateway::Running;
use mqtt_gateway::config::Config;
use mqtt_inspect::{Peek, decode_connect, peek_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::pki::{Issued, Pki, tls_args};

/// A gateway in front of its own Mosquitto.
pub struct TestGateway {
    pub running: Running,
    pub broker: Mosquitto,
    pub dir: tempfile::TempDir,
    pub audit_path: PathBuf,
    /// The config file the gateway was started from.
    pub config_path: PathBuf,
}

/// A gateway configuration, written by the test.
pub struct Setup<'a> {
    pub pki: &'a Pki,
    /// Body of the `[listener.tls]` table beyond cert/key/client_ca (e.g. `crl = [...]`).
    pub tls_extra: String,
    /// Extra TOML appended to the config (e.g. `[auth]` overrides).
    pub auth: String,
    /// The policy file's text.
    pub policy: String,
    /// Password file lines.
    pub passwords: String,
    /// Extra `[limits]` keys.
    pub limits: String,
    /// `upstream.credentials`.
    pub credentials: &'static str,
    /// Extra keys of the `[policy]` table (e.g. `on_publish_deny = "disconnect"`).
    pub policy_extra: String,
    /// More brokers after the test's own: `upstream.addresses` instead of `address`.
    pub more_upstreams: Vec<SocketAddr>,
    /// Extra keys of both `[[listener]]` tables (e.g. `proxy_protocol = true`).
    pub listener_extra: String,
    /// Replaces the broker address line of `[upstream]` (e.g. another address and
    /// `proxy_protocol = true`).
    pub upstream_keys: Option<String>,
    /// Runtimes that accept and carry the connections (`start_on`); empty: the test's own.
    pub workers: Vec<tokio::runtime::Handle>,
    /// Extra keys of the `[admin]` table (e.g. `max_connections = 4`).
    pub admin_extra: String,
    /// `listener.tls.client_auth` of the TLS listener (default `required`).
    pub client_auth: &'static str,
    /// Lines for the TLS listener only (after `listener_extra`).
    pub mqtts_extra: String,
    /// Extra keys of the `[log]` table (e.g. `sessions = true`).
    pub log_extra: String,
}

/// One `[[rule]]` for anyone (`who = { any = true }`): `allow` or `deny`, the actions, the topics.
pub type Rule<'a> = (&'a str, &'a [&'a str], &'a [&'a str]);

/// Every action a rule can name.
pub const ALL_ACTIONS: &[&str] = &["publish", "subscribe", "receive"];

/// A policy file that lets anyone connect with any client id, then one `[[rule]]` for anyone per
/// entry of `rules`, in order.
pub fn anyone(rules: &[Rule<'_>]) -> String {
    let mut policy =
        String::from("version = 1\n[[connect]]\nwho = { any = true }\nclient_ids = [\"*\"]\n");
    for (verb, actions, topics) in rules {
        writeln!(
            policy,
            "[[rule]]\nwho = {{ any = true }}\n{verb} = {actions:?}\ntopics = {topics:?}"
        )
        .unwrap();
    }
    policy
}

/// A policy that lets every authenticated client connect with any client id and do anything
/// outside `$SYS`.
pub fn open_policy() -> String {
    anyone(&[("allow", ALL_ACTIONS, &["#"])])
}

impl<'a> Setup<'a> {
    pub fn new(pki: &'a Pki) -> Self {
        Self {
            pki,
            tls_extra: String::new(),
            auth: String::new(),
            policy: open_policy(),
            passwords: String::new(),
            limits: String::new(),
            credentials: "principal",
            policy_extra: String::new(),
            more_upstreams: Vec::new(),
            listener_extra: String::new(),
            upstream_keys: None,
            workers: Vec::new(),
            admin_extra: String::new(),
            client_auth: "required",
            mqtts_extra: String::new(),
            log_extra: String::new(),
        }
    }

    pub async fn start(self) -> TestGateway {
        let broker = tokio::task::spawn_blocking(Mosquitto::start)
            .await
            .unwrap()
            .unwrap();
        self.start_with(broker).await
    }

    pub async fn start_with(self, broker: Mosquitto) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("policy.toml"), &self.policy).unwrap();
        std::fs::write(d.join("passwords"), &self.passwords).unwrap();
        let audit_path = d.join("audit.jsonl");
        let pki = self.pki;
        let auth = if self.auth.is_empty() {
            "[auth]\nallow_anonymous = false\nprincipal_from = \"cert_cn\"\ncert_is_credential = true\npassword_file = \"passwords\"\n".to_owned()
        } else {
            self.auth.clone()
        };
        let toml = format!(
            r#"
[admin]
listen = "127.0.0.1:0"
{admin_extra}

[upstream]
{upstream}
connect_timeout = "2s"
credentials = "{credentials}"

[[listener]]
name = "mqtts"
bind = "127.0.0.1:0"
{listener_extra}
{mqtts_extra}
[listener.tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
client_auth = "{client_auth}"
{tls_extra}

[[listener]]
name = "plain"
bind = "127.0.0.1:0"
{listener_extra}

{auth}

[policy]
file = "policy.toml"
{policy_extra}

[limits]
connect_timeout = "3s"
{limits}

[log]
audit_file = "{audit}"
{log_extra}
"#,
            log_extra = self.log_extra,
            upstream = if let Some(keys) = &self.upstream_keys {
                keys.clone()
            } else if self.more_upstreams.is_empty() {
                format!("address = \"{}\"", broker.addr())
            } else {
                let all: Vec<String> = std::iter::once(broker.addr())
                    .chain(self.more_upstreams.iter().copied())
                    .map(|a| format!("\"{a}\""))
                    .collect();
                format!("addresses = [{}]", all.join(", "))
            },
            admin_extra = self.admin_extra,
            mqtts_extra = self.mqtts_extra,
            client_auth = self.client_auth,
            credentials = self.credentials,
            listener_extra = self.listener_extra,
            cert = pki.server.chain_path.display(),
            key = pki.server.key_path.display(),
            ca = pki.root_path.display(),
            tls_extra = self.tls_extra,
            auth = auth,
            limits = self.limits,
            policy_extra = self.policy_extra,
            audit = audit_path.display(),
        );
        let cfg_path = d.join("gateway.toml");
        std::fs::write(&cfg_path, &toml).unwrap();
        let config = Config::load(&cfg_path).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let running = mqtt_gateway::start_on(config, &self.workers).await.unwrap();
        TestGateway {
            config_path: cfg_path,
            running,
            broker,
            dir,
            audit_path,
        }
    }
}

impl TestGateway {
    /// Sends the gateway's new upstream connections to `addr`, with the configuration and policy
    /// files as they are now: a new snapshot, as a reload makes.
    pub fn upstream_to(&self, addr: SocketAddr) {
        let snap = self.running.gateway.current();
        let mut config = (*snap.config).clone();
        config.upstream.address = Some(addr.to_string());
        self.running.gateway.store(
            mqtt_gateway::server::load_snapshot(Arc::new(config), snap.generation + 1).unwrap(),
        );
    }

    pub fn tls_addr(&self) -> SocketAddr {
        self.running.addr("mqtts").unwrap()
    }

    pub fn plain_addr(&self) -> SocketAddr {
        self.running.addr("plain").unwrap()
    }

    /// The audit log lines written so far, parsed.
    pub async fn audit(&self) -> Vec<serde_json::Value> {
        // The writer thread flushes after each batch; give it a moment.
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Ok(text) = std::fs::read_to_string(&self.audit_path)
                && !text.is_empty()
            {
                return text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
            }
        }
        Vec::new()
    }

    /// Waits until the audit log has a line matching `pred`, and returns it.
    pub async fn audit_line(
        &self,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        for _ in 0..100 {
            if let Ok(text) = std::fs::read_to_string(&self.audit_path) {
                for l in text.lines() {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    if pred(&v) {
                        return Some(v);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        None
    }

    /// GET on the admin listener, returning the body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let mut s = TcpStream::connect(self.running.admin.unwrap())
            .await
            .unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    }

    /// The value of one sample of `/metrics`, e.g. `metric("mqtt_gateway_acl_denied_total{action=\"publish\"}")`.
    pub async fn metric(&self, series: &str) -> f64 {
        let (_, body) = self.admin_get("/metrics").await;
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("no series {series} in /metrics"))
    }
}

/// `[limits]` for the enforcement tests: many connections, packets and refusals from 127.0.0.1
/// in a short time are what these tests do, not an attack (bans and rates have tests of their
/// own).
pub const GENEROUS_LIMITS: &str = "auth_failures_before_ban = 10000\n\
    connections_per_ip_per_second = 10000\n\
    messages_per_client_per_second = 100000\n";

/// A [`Setup`] with [`GENEROUS_LIMITS`].
pub fn enforcement_setup(pki: &Pki) -> Setup<'_> {
    let mut setup = Setup::new(pki);
    setup.limits = GENEROUS_LIMITS.to_owned();
    setup
}

// === Clients of the gateway ===

/// `mosquitto_pub` through the gateway's TLS listener with `cert`.
pub fn tls_pub(
    gw: &TestGateway,
    pki: &Pki,
    cert: Option<&Issued>,
    version: MqttVersion,
    args: &[&str],
) -> e2e::CliOutput {
    let tls = tls_args(pki, cert);
    let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    e2e::mosquitto_pub(gw.tls_addr(), version, &all).unwrap()
}

/// A GET over plain blocking TCP (the admin listener): the status and the body; `None` when the
/// exchange fails.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Path helper for tests.
pub fn display(p: &Path) -> String {
    p.display().to_string()
}

/// Tasks alive on all the worker runtimes together.
pub fn alive_tasks(workers: &mqtt_gateway::workers::Workers) -> usize {
    workers
        .handles()
        .iter()
        .map(|h| h.metrics().num_alive_tasks())
        .sum()
}

// === The broker side ===

/// A `mosquitto_sub -v` connected straight to the broker (not through the gateway), subscribed
/// to `filter` once this returns; it exits after `count` messages or `wait_secs`.
pub async fn broker_spy(
    gw: &TestGateway,
    filter: &str,
    count: u32,
    wait_secs: u32,
) -> LiveSubscriber {
    let addr = gw.broker.addr();
    let args: Vec<String> = ["-t", filter, "-v", "-C", &count.to_string()]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        LiveSubscriber::spawn(addr, MqttVersion::V311, wait_secs, &a)
    })
    .await
    .unwrap()
    .expect("spy subscribes on the broker")
}

/// What a spy received, as `topic payload` lines.
pub async fn spy_messages(spy: LiveSubscriber) -> Vec<String> {
    let out = tokio::task::spawn_blocking(move || spy.finish())
        .await
        .unwrap()
        .unwrap();
    out.messages().iter().map(|s| (*s).to_owned()).collect()
}

/// `mosquitto_pub` straight to the broker.
pub async fn broker_pub(gw: &TestGateway, args: &[&str]) {
    let addr = gw.broker.addr();
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        e2e::mosquitto_pub(addr, MqttVersion::V311, &a)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(out.success(), "mosquitto_pub to the broker: {out:?}");
}

/// One CONNECT as the broker received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tapped {
    /// Client identifier.
    pub client_id: String,
    /// User Name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Vec<u8>>,
    /// MQTT 5 Topic Alias Maximum (0 when absent).
    pub topic_alias_max: u16,
    /// MQTT 5 Will Delay Interval of the Will (`None` when absent, or no Will).
    pub will_delay: Option<u32>,
}

/// A TCP relay in front of the broker that records the CONNECT of every connection.
pub struct ConnectTap {
    /// Where the gateway should connect.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Tapped>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectTap {
    /// A tap put between `gw` and its broker (a new snapshot, as a reload would).
    pub async fn between(gw: &TestGateway) -> Self {
        let tap = Self::start(gw.broker.addr()).await;
        gw.upstream_to(tap.addr);
        tap
    }

    /// Listens on a free loopback port and relays every connection to `broker`.
    pub async fn start(broker: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut from, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                conns.spawn(async move {
                    let mut buf = Vec::new();
                    let len = loop {
                        if let Ok(Peek::Complete(h)) = peek_frame(&buf, u32::MAX) {
                            break h.frame_len();
                        }
                        let mut chunk = [0u8; 1024];
                        match from.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    if let Ok(c) = decode_connect(&buf[..len]) {
                        record.lock().unwrap().push(Tapped {
                            client_id: c.client_id.to_owned(),
                            username: c.username.map(str::to_owned),
                            password: c.password.map(<[u8]>::to_vec),
                            topic_alias_max: c.properties.topic_alias_maximum(),
                            will_delay: c.will.and_then(|w| {
                                w.properties.iter().find_map(|p| match p {
                                    mqtt_inspect::Property::WillDelayInterval(d) => Some(d),
                                    _ => None,
                                })
                            }),
                        });
                    }
                    let Ok(mut to) = TcpStream::connect(broker).await else {
                        return;
                    };
                    if to.write_all(&buf).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut from, &mut to).await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Self { addr, seen, task }
    }

    /// The CONNECT the broker got for `client_id`.
    pub fn get(&self, client_id: &str) -> Tapped {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .find(|t| t.client_id == client_id)
            .cloned()
            .unwrap_or_else(|| panic!("the broker got no CONNECT from {client_id}"))
    }
}

impl Drop for ConnectTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether the broker log has a "New client connected ... as `client_id` (...)" line, and the
/// `u'...'` part of it (`Some(None)`: connected without a user name).
pub fn broker_saw(gw: &TestGateway, client_id: &str) -> Option<Option<String>> {
    let log = gw.broker.log();
    let needle = format!(" as {client_id} (");
    let line = log
        .lines()
        .find(|l| l.contains("New client connected") && l.contains(&needle))?;
    Some(
        line.split_once("u'")
            .and_then(|(_, rest)| rest.split_once('\''))
            .map(|(user, _)| user.to_owned()),
    )
}

// === Metrics and audit ===

/// The value of the `/metrics` sample of `family` whose labels are exactly `labels` (any order).
pub async fn sample(gw: &TestGateway, family: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, body) = gw.admin_get("/metrics").await;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(family) else {
            continue;
        };
        let (set, value) = match rest.strip_prefix('{') {
            Some(r) => match r.split_once('}') {
                Some((set, value)) => (set, value),
                None => continue,
            },
            None if rest.starts_with(' ') => ("", rest),
            None => continue,
        };
        let mut got: Vec<(String, String)> = set
            .split(',')
            .filter(|kv| !kv.is_empty())
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
            .collect();
        let mut want: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        got.sort();
        want.sort();
        if got == want {
            return value.trim().parse().unwrap();
        }
    }
    panic!("no sample {family}{labels:?} in /metrics")
}

/// `mqtt_gateway_acl_denied_total{action}`.
pub async fn acl_denied(gw: &TestGateway, action: &str) -> f64 {
    sample(gw, "mqtt_gateway_acl_denied_total", &[("action", action)]).await
}

/// `mqtt_gateway_auth_failures_total{listener,reason}`.
pub async fn auth_failures(gw: &TestGateway, listener: &str, reason: &str) -> f64 {
    sample(
        gw,
        "mqtt_gateway_auth_failures_total",
        &[("listener", listener), ("reason", reason)],
    )
    .await
}

/// The audit line about the connection from `peer` with `event`, `reason` and, when given, the
/// action and topic; panics when none is written within a few seconds.
pub async fn audit_of(
    gw: &TestGateway,
    peer: SocketAddr,
    event: &str,
    action: Option<&str>,
    topic: Option<&str>,
) -> serde_json::Value {
    let peer = peer.to_string();
    gw.audit_line(|v| {
        v["peer"] == peer.as_str()
            && v["event"] == event
            && action.is_none_or(|a| v["action"] == a)
            && topic.is_none_or(|t| v["topic"] == t)
    })
    .await
    .unwrap_or_else(|| {
        panic!("no audit line event={event} action={action:?} topic={topic:?} for {peer}")
    })
}

/// The 1-based line of the `[[rule]]`/`[[connect]]` header of the entry holding `marker` in
/// `policy` (how the gateway names the rule that decided).
pub fn rule_line(policy: &str, marker: &str) -> u32 {
    let lines: Vec<&str> = policy.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("{marker} not in the policy"));
    let header = lines[..=at]
        .iter()
        .rposition(|l| l.trim_start().starts_with("[["))
        .unwrap();
    u32::try_from(header + 1).unwrap()
}

/// Asserts that an audit line names `policy.toml:<line>` as the deciding rule.
pub fn assert_rule(line: &serde_json::Value, want_line: u32) {
    let rule = line["rule"]
        .as_str()
        .unwrap_or_else(|| panic!("no rule in {line}"));
    assert!(
        rule.ends_with(&format!("policy.toml:{want_line}")),
        "rule {rule}, expected policy.toml:{want_line} ({line})"
    );
}
