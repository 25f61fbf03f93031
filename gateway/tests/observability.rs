//! Observability end to end: the real `mqtt-gateway` binary in its own process (metrics are
//! process-wide, so exact counts need a process of their own) in front of a real Mosquitto, real
//! TLS with certificates made here, `/metrics` read over HTTP, the audit file read back, the
//! dashboard and alert rules checked against what a fresh gateway exports, the rules checked and
//! unit-tested by `promtool`, and a real Prometheus scraping the gateway.
//!
//! Needs Debian's `prometheus` package (`prometheus` and `promtool` on `PATH`): `scripts/test.sh`
//! installs it. These tests fail, never skip, when it is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mqtt_inspect::{AckKind, ProtocolVersion};
use rustls::pki_types::ServerName;
use support::rule_line;
use support::wire::{Got, PlainWire, TlsWire, connect, got_ack, publish, subscribe};
use support::{Flaw, Pki, client_tls};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const V5: ProtocolVersion = ProtocolVersion::V5;
const V311: ProtocolVersion = ProtocolVersion::V311;
const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
const DAY: f64 = 86_400.0;

/// The policy of every gateway here: alice may connect as `alice-*` and use `obs/#`, except for
/// three deny rules (one per action), each found by its topic.
const POLICY: &str = r#"version = 1

[[connect]]
who = { principals = ["alice"] }
client_ids = ["alice-*"]

[[rule]]
who = { principals = ["alice"] }
allow = ["publish", "subscribe", "receive"]
topics = ["obs/#"]

[[rule]]
who = { any = true }
deny = ["publish"]
topics = ["obs/forbidden-pub"]

[[rule]]
who = { any = true }
deny = ["subscribe"]
topics = ["obs/forbidden-sub/#"]

[[rule]]
who = { any = true }
deny = ["receive"]
topics = ["obs/hidden"]
"#;

// === The gateway in its own process ===

/// `mqtt-gateway run` in a process of its own, with a TLS listener `mqtts` (client certificates
/// required, the intermediate's CRL) and a plain listener `plain`; `principal_from = "username"`
/// with alice's password `secret` in a `$7$` password file. Killed on drop.
struct GatewayProcess {
    child: Child,
    dir: tempfile::TempDir,
    admin: SocketAddr,
    tls: SocketAddr,
    plain: SocketAddr,
    _broker: e2e::Mosquitto,
    /// The shared ban state of `[cluster]` (so that `mqtt_gateway_cluster_up` is exported, 1).
    _redis: support::redis::Redis,
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

impl GatewayProcess {
    async fn start(pki: &Pki, crl: &Path) -> Self {
        let broker = tokio::task::spawn_blocking(e2e::Mosquitto::start)
            .await
            .unwrap()
            .unwrap();
        let redis = support::redis::Redis::start();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("policy.toml"), POLICY).unwrap();
        let hash = mqtt_gateway::auth::hash_mosquitto_pbkdf2(b"secret", 1000).unwrap();
        std::fs::write(d.join("passwords"), format!("alice:{hash}\n")).unwrap();
        let (admin, tls, plain) = (
            loopback(e2e::free_port()),
            loopback(e2e::free_port()),
            loopback(e2e::free_port()),
        );
        let config = format!(
            r#"[admin]
listen = "{admin}"

[upstream]
address = "{broker}"
connect_timeout = "2s"

[[listener]]
name = "mqtts"
bind = "{tls}"
[listener.tls]
cert = "{cert}"
key = "{key}"
client_ca = "{ca}"
client_auth = "required"
crl = ["{crl}"]

[[listener]]
name = "plain"
bind = "{plain}"

[auth]
allow_anonymous = false
principal_from = "username"
password_file = "{dir}/passwords"

[policy]
file = "{dir}/policy.toml"

[limits]
connect_timeout = "5s"

[log]
audit_file = "{dir}/audit.jsonl"

[cluster]
redis = "{redis}"
"#,
            redis = redis.url(),
            broker = broker.addr(),
            cert = pki.server.chain_path.display(),
            key = pki.server.key_path.display(),
            ca = pki.root_path.display(),
            crl = crl.display(),
            dir = d.display(),
        );
        let config_path = d.join("gateway.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(d.join("gateway.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_mqtt-gateway"))
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut gw = Self {
            child,
            dir,
            admin,
            tls,
            plain,
            _broker: broker,
            _redis: redis,
        };
        // Ready once the admin listener answers: the client listeners are bound before it. (No
        // probe of the client listeners: an empty connection is itself a counted outcome.)
        for _ in 0..400 {
            if let Some(status) = gw.child.try_wait().unwrap() {
                panic!("the gateway exited ({status}): {}", gw.log());
            }
            if matches!(http_get(gw.admin, "/healthz"), Ok((200, _))) {
                return gw;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = gw.log();
        let _ = gw.child.kill();
        panic!("the gateway's admin listener never answered: {log}");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    /// `GET /metrics`, parsed.
    fn scrape(&self) -> Exposition {
        let (status, body) = http_get(self.admin, "/metrics").unwrap();
        assert_eq!(status, 200, "{body}");
        Exposition::parse(&body)
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.audit_path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Waits until the audit file holds `n` lines and returns the last one; panics when it does
    /// not get there within a few seconds.
    async fn audit_line_number(&self, n: usize) -> serde_json::Value {
        for _ in 0..200 {
            let lines = self.audit_lines();
            if lines.len() >= n {
                return lines[n - 1].clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "expected {n} audit lines, have {:?}\n{}",
            self.audit_lines(),
            self.log()
        );
    }

    /// SIGTERM, waits for a clean exit, and returns the whole audit file.
    async fn stop(mut self) -> Vec<serde_json::Value> {
        e2e::sigterm(self.child.id()).unwrap();
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}: {}", self.log());
                return self.audit_lines();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the gateway did not exit after SIGTERM: {}", self.log());
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- gateway log ---\n{}--- end ---", self.log());
        }
    }
}

/// A minimal HTTP/1.0 GET over std TCP (the gateway's admin listener, Prometheus' API).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no HTTP head in {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status in {head:?}")))?;
    Ok((status, body.to_owned()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// === The Prometheus text format ===

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    /// `name{k="v",...}` with the labels sorted.
    fn key(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

/// One `/metrics` body: the samples and the `# TYPE` of each family.
#[derive(Debug)]
struct Exposition {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    fn parse(body: &str) -> Self {
        let mut samples = Vec::new();
        let mut types = BTreeMap::new();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            samples.push(parse_sample(line));
        }
        Self { samples, types }
    }

    fn of(&self, name: &str) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The value of the sample of `name` with exactly `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.of(name).find(|s| s.labels == want).map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }

    /// Every sample of the families in `names`, by [`Sample::key`].
    fn series(&self, names: &[&str]) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter(|s| names.contains(&s.name.as_str()))
            .map(|s| (s.key(), s.value))
            .collect()
    }
}

fn parse_sample(line: &str) -> Sample {
    let bad = || -> ! { panic!("unparsable sample line {line:?}") };
    let (name, rest) = match line.find(['{', ' ']) {
        Some(i) => line.split_at(i),
        None => bad(),
    };
    let mut labels = BTreeMap::new();
    let value_text = if let Some(mut rest) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                break after;
            }
            rest = rest.strip_prefix(',').unwrap_or(rest);
            let Some((key, after)) = rest.split_once("=\"") else {
                bad()
            };
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c)) => value.push(c),
                        None => bad(),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => bad(),
                }
            };
            labels.insert(key.to_owned(), value);
            rest = &after[end + 1..];
        }
    } else {
        rest
    };
    let value = value_text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| bad());
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn workspace_file(path: &str) -> PathBuf {
    e2e::workspace_root().join(path)
}

// === Clients ===

/// A TLS handshake without a client certificate (refused by the gateway); reads until the
/// gateway's alert or close arrives.
async fn handshake_without_certificate(pki: &Pki, addr: SocketAddr) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = TlsConnector::from(client_tls(pki, None, TLS13));
    // TLS 1.3: the client may finish its side before the gateway refuses the empty Certificate.
    if let Ok(mut stream) = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await;
        assert!(
            !matches!(read, Ok(Ok(n)) if n > 0),
            "the gateway sent data to a client without a certificate"
        );
    }
}

// === The contract ===

/// The contract's families (spec "Metrics"): name, type, label names, and the closed label value
/// sets the contract lists (`listener` values are this config's listeners).
type Family = (&'static str, &'static str, &'static [&'static str]);
const CONTRACT: &[Family] = &[
    ("mqtt_gateway_connections_active", "gauge", &["listener"]),
    (
        "mqtt_gateway_connections_total",
        "counter",
        &["listener", "outcome"],
    ),
    (
        "mqtt_gateway_tls_handshake_failures_total",
        "counter",
        &["listener", "reason"],
    ),
    (
        "mqtt_gateway_auth_failures_total",
        "counter",
        &["listener", "reason"],
    ),
    ("mqtt_gateway_acl_denied_total", "counter", &["action"]),
    ("mqtt_gateway_rate_limited_total", "counter", &["limit"]),
    (
        "mqtt_gateway_packets_total",
        "counter",
        &["direction", "type"],
    ),
    ("mqtt_gateway_bytes_total", "counter", &["direction"]),
    (
        "mqtt_gateway_malformed_packets_total",
        "counter",
        &["direction"],
    ),
    ("mqtt_gateway_upstream_errors_total", "counter", &["reason"]),
    (
        "mqtt_gateway_reloads_total",
        "counter",
        &["result", "source"],
    ),
    (
        "mqtt_gateway_sessions_revoked_total",
        "counter",
        &["reason"],
    ),
    (
        "mqtt_gateway_tls_handshake_duration_seconds",
        "histogram",
        &["listener"],
    ),
    // ../shared/spec/lifecycle.md, "Metrics and audit additions".
    (
        "mqtt_gateway_crl_fetches_total",
        "counter",
        &["listener", "result"],
    ),
    (
        "mqtt_gateway_reauthentications_total",
        "counter",
        &["result"],
    ),
    (
        "mqtt_gateway_ocsp_responses_total",
        "counter",
        &["listener", "status"],
    ),
    ("mqtt_gateway_ocsp_cache_entries", "gauge", &[]),
    (
        "mqtt_gateway_admin_requests_total",
        "counter",
        &["endpoint", "result"],
    ),
];

/// `(family, label, every value the contract lists)`; for `type` the contract lists a few and
/// "…", so those must be among the values.
const CONTRACT_VALUES: &[(&str, &str, &[&str])] = &[
    (
        "mqtt_gateway_connections_total",
        "outcome",
        &[
            "accepted",
            "tls_failed",
            "auth_failed",
            "denied",
            "rate_limited",
            "banned",
            "upstream_failed",
            "timeout",
            "malformed",
        ],
    ),
    (
        "mqtt_gateway_tls_handshake_failures_total",
        "reason",
        &[
            "no_certificate",
            "unknown_ca",
            "expired",
            "not_yet_valid",
            "revoked",
            "bad_usage",
            "protocol",
            "other",
        ],
    ),
    (
        "mqtt_gateway_auth_failures_total",
        "reason",
        &[
            "bad_credentials",
            "unknown_user",
            "anonymous",
            "client_id",
            "banned",
            // lifecycle.md / issue 22: a token failure "with its own reason", and a method the
            // listener does not accept (README, "Metrics beyond the contract").
            "token_expired",
            "token_signature",
            "token_unknown_key",
            "token_claims",
            "method_not_allowed",
            "certificate_revoked",
            "ocsp_no_answer",
        ],
    ),
    (
        "mqtt_gateway_acl_denied_total",
        "action",
        &["connect", "publish", "subscribe", "receive", "will"],
    ),
    (
        "mqtt_gateway_rate_limited_total",
        "limit",
        &["connections", "messages", "bytes"],
    ),
    (
        "mqtt_gateway_upstream_errors_total",
        "reason",
        &["refused", "timeout", "closed"],
    ),
    (
        "mqtt_gateway_reloads_total",
        "source",
        // + the JWKS of [auth.token] (issue 22), the admin API's token file (issue 24).
        &[
            "config",
            "policy",
            "passwords",
            "crl",
            "certs",
            "jwks",
            "admin_tokens",
        ],
    ),
    ("mqtt_gateway_reloads_total", "result", &["ok", "rejected"]),
    (
        "mqtt_gateway_sessions_revoked_total",
        "reason",
        // + a token whose key the JWKS lost (issue 22), an OCSP revocation (issue 23).
        &["crl", "policy", "password", "token", "ocsp"],
    ),
    (
        "mqtt_gateway_ocsp_responses_total",
        "status",
        &["good", "revoked", "unknown", "error"],
    ),
];

const DIRECTIONS: &[&str] = &["client_to_broker", "broker_to_client"];

/// Metric names in a dashboard or rules file: every `mqtt_gateway_[a-z_]+` token.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("mqtt_gateway_") {
        let token: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '_')
            .collect();
        rest = &rest[at + token.len()..];
        names.insert(token);
    }
    names
}

/// Not a wire rule. Contract ("Metrics"): "At least these families, with these names and labels
/// ... Every family is exported from start-up, its known label values at 0, so dashboards and
/// alerts work before the first event".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_and_rules_only_name_existing_metrics() {
    let pki = Pki::new();
    let crl = pki.write_leaf_crl(&[]);
    let gw = GatewayProcess::start(&pki, &crl).await;
    let exp = gw.scrape();

    // Every contract family, from start-up, with exactly its label names and its label values.
    for (family, kind, labels) in CONTRACT {
        assert_eq!(
            exp.types.get(*family).map(String::as_str),
            Some(*kind),
            "# TYPE of {family}"
        );
        // A histogram's series are read on its `_count` (its `_bucket`s add `le`).
        let sample_name = if *kind == "histogram" {
            format!("{family}_count")
        } else {
            (*family).to_owned()
        };
        let samples: Vec<&Sample> = exp.of(&sample_name).collect();
        assert!(!samples.is_empty(), "{family} is not exported at start-up");
        for s in &samples {
            let names: Vec<&str> = s.labels.keys().map(String::as_str).collect();
            let mut want = labels.to_vec();
            want.sort_unstable();
            assert_eq!(names, want, "labels of {}", s.key());
            assert_eq!(s.value, 0.0, "{} on a fresh gateway", s.key());
        }
        let values = |label: &str| -> BTreeSet<&str> {
            samples
                .iter()
                .filter_map(|s| s.labels.get(label).map(String::as_str))
                .collect()
        };
        if labels.contains(&"listener") {
            let want: BTreeSet<&str> = if *family == "mqtt_gateway_tls_handshake_duration_seconds" {
                ["mqtts"].into()
            } else {
                ["mqtts", "plain"].into()
            };
            assert_eq!(values("listener"), want, "listeners of {family}");
        }
        if labels.contains(&"direction") {
            assert_eq!(
                values("direction"),
                DIRECTIONS.iter().copied().collect(),
                "{family}"
            );
        }
        if *family == "mqtt_gateway_packets_total" {
            let types = values("type");
            for t in ["connect", "publish", "subscribe"] {
                assert!(types.contains(t), "{family} type={t}: {types:?}");
            }
        }
        for (f, label, want) in CONTRACT_VALUES {
            if f == family {
                assert_eq!(
                    values(label),
                    want.iter().copied().collect(),
                    "{family} {label}"
                );
            }
        }
    }
    // Histograms are histograms (buckets), not summaries.
    assert!(
        exp.get(
            "mqtt_gateway_tls_handshake_duration_seconds_bucket",
            &[("listener", "mqtts"), ("le", "+Inf")]
        )
        .is_some()
    );

    // The dashboard: importable shape, a Prometheus data source variable used by every query.
    let text = std::fs::read_to_string(workspace_file("dashboards/mqtt-gateway.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 39);
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no prometheus datasource variable: {vars:?}"
    );
    let panels: Vec<&serde_json::Value> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    assert!(panels.len() >= 15, "{} panels", panels.len());
    for p in &panels {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            assert!(
                t["expr"].as_str().unwrap().contains("mqtt_gateway_"),
                "{}",
                p["title"]
            );
        }
    }

    // Every metric named by the dashboard and the alert rules is exported by a fresh gateway.
    let rules = std::fs::read_to_string(workspace_file("dashboards/alerts.yml")).unwrap();
    let from_dashboard = metric_names(&text);
    let from_rules = metric_names(&rules);
    assert!(from_dashboard.len() >= 15, "{from_dashboard:?}");
    assert!(from_rules.len() >= 6, "{from_rules:?}");
    for name in from_dashboard.iter().chain(&from_rules) {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|f| exp.types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name.as_str());
        assert!(
            exp.types.contains_key(family)
                && exp.samples.iter().any(|s| s.name.starts_with(family)),
            "{name} is named by the dashboard or the rules but not exported"
        );
    }
}

/// Not a wire rule. Contract ("Metrics"): "Every family is exported from start-up, its known label
/// values at 0" (these families are beyond the contract's list, documented in the README).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_file_dates_and_client_certificates_are_measured() {
    let before = unix_now().floor();
    let pki = Pki::new();
    let crl = pki.write_leaf_crl(&[]);
    let after = unix_now().ceil();
    let gw = GatewayProcess::start(&pki, &crl).await;
    let exp = gw.scrape();

    // The files' dates (the test PKI: server certificate valid 30 days, CRL thisUpdate 5 minutes
    // ago and nextUpdate in 7 days), per TLS listener only.
    let within = |v: f64, offset: f64| v >= before + offset && v <= after + offset;
    let expiry = exp.value(
        "mqtt_gateway_server_certificate_expiry_timestamp_seconds",
        &[("listener", "mqtts")],
    );
    assert!(within(expiry, 30.0 * DAY), "{expiry}");
    let crl_labels = [("listener", "mqtts"), ("crl", "inter.crl")];
    let next = exp.value(
        "mqtt_gateway_crl_next_update_timestamp_seconds",
        &crl_labels,
    );
    assert!(within(next, 7.0 * DAY), "{next}");
    let this = exp.value(
        "mqtt_gateway_crl_this_update_timestamp_seconds",
        &crl_labels,
    );
    assert!(within(this, -300.0), "{this}");
    for family in [
        "mqtt_gateway_server_certificate_expiry_timestamp_seconds",
        "mqtt_gateway_crl_next_update_timestamp_seconds",
        "mqtt_gateway_crl_this_update_timestamp_seconds",
        "mqtt_gateway_tls_resumptions_total",
    ] {
        assert_eq!(exp.of(family).count(), 1, "{family}: one series, mqtts");
    }
    assert_eq!(exp.value("mqtt_gateway_policy_generation", &[]), 1.0);
    for gauge in [
        "mqtt_gateway_reload_last_success_timestamp_seconds",
        "mqtt_gateway_reload_last_rejected_timestamp_seconds",
    ] {
        assert_eq!(exp.value(gauge, &[]), 0.0, "{gauge}");
    }
    assert_eq!(exp.value("mqtt_gateway_audit_dropped_total", &[]), 0.0);

    let days_count =
        |e: &Exposition| e.value("mqtt_gateway_client_certificate_remaining_days_count", &[]);
    let days_le = |e: &Exposition, le: &str| {
        e.value(
            "mqtt_gateway_client_certificate_remaining_days_bucket",
            &[("le", le)],
        )
    };
    let resumed = |e: &Exposition| {
        e.value(
            "mqtt_gateway_tls_resumptions_total",
            &[("listener", "mqtts")],
        )
    };
    assert_eq!(days_count(&exp), 0.0);
    assert_eq!(resumed(&exp), 0.0);

    // Refused: no certificate, nothing observed.
    handshake_without_certificate(&pki, gw.tls).await;
    let line = gw.audit_line_number(1).await;
    assert_eq!(line["reason"], "no_certificate", "{line}");
    let exp = gw.scrape();
    assert_eq!(days_count(&exp), 0.0);
    assert_eq!(resumed(&exp), 0.0);

    // A full handshake with a 30-day certificate: observed in the (14, 30] bucket, not resumed.
    let cert = pki.client("dev-1", None, Flaw::None);
    let config = client_tls(&pki, Some(&cert), TLS13);
    let login = connect(V5, "alice-tls", Some("alice"), Some(b"secret"));
    let mut first = TlsWire::tls(gw.tls, config.clone(), V5).await;
    assert_eq!(first.connect(&login).await, 0);
    first.disconnect().await;
    let exp = gw.scrape();
    assert_eq!(days_count(&exp), 1.0);
    assert_eq!(days_le(&exp, "14"), 0.0);
    assert_eq!(days_le(&exp, "30"), 1.0);
    assert_eq!(resumed(&exp), 0.0, "a full handshake is not a resumption");

    // The same client again: the session is resumed (TLS 1.3 ticket), and observed again.
    let mut second = TlsWire::tls(gw.tls, config, V5).await;
    assert_eq!(second.connect(&login).await, 0);
    second.disconnect().await;
    let exp = gw.scrape();
    assert_eq!(resumed(&exp), 1.0);
    assert_eq!(days_count(&exp), 2.0);
    assert_eq!(
        gw.stop().await.len(),
        1,
        "only the refused handshake is audited"
    );
}

// === Each refusal counted and logged once ===

/// The families a refusal may move; everything else (traffic, gauges, histograms) is left out.
const REFUSAL_FAMILIES: &[&str] = &[
    "mqtt_gateway_connections_total",
    "mqtt_gateway_tls_handshake_failures_total",
    "mqtt_gateway_auth_failures_total",
    "mqtt_gateway_acl_denied_total",
    "mqtt_gateway_rate_limited_total",
    "mqtt_gateway_malformed_packets_total",
    "mqtt_gateway_upstream_errors_total",
    "mqtt_gateway_sessions_revoked_total",
    "mqtt_gateway_policy_deny_hits_total",
    "mqtt_gateway_audit_dropped_total",
];

/// The series of [`REFUSAL_FAMILIES`] that changed between two scrapes, by how much.
fn moved(before: &Exposition, after: &Exposition) -> BTreeMap<String, f64> {
    let b = before.series(REFUSAL_FAMILIES);
    after
        .series(REFUSAL_FAMILIES)
        .into_iter()
        .filter_map(|(k, v)| {
            let d = v - b.get(&k).copied().unwrap_or(0.0);
            (d != 0.0).then_some((k, d))
        })
        .collect()
}

/// `name{labels}` as [`Sample::key`] writes it, moved by 1.
fn once(name: &str, labels: &[(&str, &str)]) -> (String, f64) {
    let s = Sample {
        name: name.to_owned(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        value: 0.0,
    };
    (s.key(), 1.0)
}

/// Asserts the audit line's event, reason, listener and peer, and the deciding rule: `Some(line)`
/// of the policy, or `None` (no rule decided). Returns the rule as written.
fn assert_audit(
    line: &serde_json::Value,
    event: &str,
    reason: &str,
    listener: &str,
    rule: Option<u32>,
) -> Option<String> {
    assert_eq!(line["event"], event, "{line}");
    assert_eq!(line["reason"], reason, "{line}");
    assert_eq!(line["listener"], listener, "{line}");
    assert!(line["peer"].as_str().is_some(), "{line}");
    assert!(line["time"].as_str().is_some(), "{line}");
    match rule {
        Some(n) => {
            let r = line["rule"]
                .as_str()
                .unwrap_or_else(|| panic!("no rule: {line}"));
            assert!(r.ends_with(&format!("policy.toml:{n}")), "{r} vs line {n}");
            Some(r.to_owned())
        }
        None => {
            assert!(line.get("rule").is_none(), "{line}");
            None
        }
    }
}

/// Contract ("Audit log"): "Every security decision that refuses something (TLS failure, auth
/// failure, ban, ACL deny, rate limit, revocation of a live session) is one JSON line"; each one
/// counted in the contract's metric families ("Metrics").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_refusal_counted_and_logged_once() {
    let pki = Pki::new();
    let crl = pki.write_leaf_crl(&[]);
    let gw = GatewayProcess::start(&pki, &crl).await;
    let mut n = 0;
    let mut scrape = gw.scrape();

    // 1. TLS: no client certificate.
    handshake_without_certificate(&pki, gw.tls).await;
    n += 1;
    let line = gw.audit_line_number(n).await;
    assert_audit(&line, "tls_failed", "no_certificate", "mqtts", None);
    let now = gw.scrape();
    assert_eq!(
        moved(&scrape, &now),
        BTreeMap::from([
            once(
                "mqtt_gateway_connections_total",
                &[("listener", "mqtts"), ("outcome", "tls_failed")]
            ),
            once(
                "mqtt_gateway_tls_handshake_failures_total",
                &[("listener", "mqtts"), ("reason", "no_certificate")]
            ),
        ])
    );
    scrape = now;

    // 2. Authentication: alice with a wrong password (3.1.1: return code 4).
    let mut c = PlainWire::plain(gw.plain, V311).await;
    assert_eq!(
        c.connect(&connect(V311, "alice-1", Some("alice"), Some(b"wrong")))
            .await,
        4
    );
    n += 1;
    let line = gw.audit_line_number(n).await;
    assert_audit(&line, "auth_failed", "bad_credentials", "plain", None);
    assert_eq!(line["client_id"], "alice-1");
    let now = gw.scrape();
    assert_eq!(
        moved(&scrape, &now),
        BTreeMap::from([
            once(
                "mqtt_gateway_connections_total",
                &[("listener", "plain"), ("outcome", "auth_failed")]
            ),
            once(
                "mqtt_gateway_auth_failures_total",
                &[("listener", "plain"), ("reason", "bad_credentials")]
            ),
        ])
    );
    scrape = now;

    // 3. Connect rule: the right password but a client id no [[connect]] rule allows (return
    //    code 5); a default deny, so no rule is named. Counted as a connect denial and as an
    //    authentication failure for the client id (both families list it).
    let mut c = PlainWire::plain(gw.plain, V311).await;
    assert_eq!(
        c.connect(&connect(V311, "mallory", Some("alice"), Some(b"secret")))
            .await,
        5
    );
    n += 1;
    let line = gw.audit_line_number(n).await;
    assert_audit(&line, "acl_denied", "client_id", "plain", None);
    assert_eq!(line["action"], "connect", "{line}");
    assert_eq!(line["client_id"], "mallory", "{line}");
    let now = gw.scrape();
    assert_eq!(
        moved(&scrape, &now),
        BTreeMap::from([
            once(
                "mqtt_gateway_connections_total",
                &[("listener", "plain"), ("outcome", "denied")]
            ),
            once("mqtt_gateway_acl_denied_total", &[("action", "connect")]),
            once(
                "mqtt_gateway_auth_failures_total",
                &[("listener", "plain"), ("reason", "client_id")]
            ),
        ])
    );
    scrape = now;

    // 4. A malformed first packet: a CONNECT whose protocol name runs past its end.
    let mut c = PlainWire::plain(gw.plain, V311).await;
    c.send(&[0x10, 0x02, 0x00, 0x04]).await;
    c.assert_closed().await;
    n += 1;
    let line = gw.audit_line_number(n).await;
    assert_audit(&line, "malformed", "malformed", "plain", None);
    let now = gw.scrape();
    assert_eq!(
        moved(&scrape, &now),
        BTreeMap::from([
            once(
                "mqtt_gateway_connections_total",
                &[("listener", "plain"), ("outcome", "malformed")]
            ),
            once(
                "mqtt_gateway_malformed_packets_total",
                &[("direction", "client_to_broker")]
            ),
        ])
    );
    scrape = now;

    // 5. Accepted (the good case), then a denied PUBLISH: QoS 1 answered by the gateway with 0x87.
    let mut alice = PlainWire::plain(gw.plain, V5).await;
    assert_eq!(
        alice
            .connect(&connect(V5, "alice-1", Some("alice"), Some(b"secret")))
            .await,
        0
    );
    alice
        .send(&publish(V5, "obs/forbidden-pub", 1, 1, &[], b"x"))
        .await;
    assert_eq!(
        alice.next("PUBACK").await,
        got_ack(AckKind::Puback, 1, 0x87)
    );
    n += 1;
    let line = gw.audit_line_number(n).await;
    let rule = assert_audit(
        &line,
        "acl_denied",
        "publish",
        "plain",
        Some(rule_line(POLICY, "obs/forbidden-pub")),
    )
    .unwrap();
    assert_eq!(line["principal"], "alice");
    assert_eq!(line["topic"], "obs/forbidden-pub");
    let now = gw.scrape();
    assert_eq!(
        moved(&scrape, &now),
        BTreeMap::from([
            once(
                "mqtt_gateway_connections_total",
                &[("listener", "plain"), ("outcome", "accepted")]
            ),
            once("mqtt_gateway_acl_denied_total", &[("action", "publish")]),
            once("mqtt_gateway_policy_deny_hits_total", &[("rule", &rule)]),
        ])
    );
    scrape = now;

    // 6. A SUBSCRIBE with one denied filter among two allowed ones: 0x87 in its position only.
    alice
        .send(&subscribe(
            V5,
            2,
            &[
                ("obs/hidden", 0),
                ("obs/forbidden-sub/x", 0),
                ("obs/visible", 0),
            ],
        ))
        .await;
    assert_eq!(
        alice.next("SUBACK").await,
        Got::Suback {
            id: 2,
            codes: vec![0x00, 0x87, 0x00]
        }
    );
    n += 1;
    let line = gw.audit_line_number(n).await;
    let rule = assert_audit(
        &line,
        "acl_denied",
        "subscribe",
        "plain",
        Some(rule_line(POLICY, "obs/forbidden-sub/#")),
    )
    .unwrap();
    assert_eq!(line["topic"], "obs/forbidden-sub/x");
    let now = gw.scrape();
    assert_eq!(
        moved(&scrape, &now),
        BTreeMap::from([
            once("mqtt_gateway_acl_denied_total", &[("action", "subscribe")]),
            once("mqtt_gateway_policy_deny_hits_total", &[("rule", &rule)]),
        ])
    );
    scrape = now;

    // 7. A denied delivery: alice's own message on obs/hidden comes back from the broker and is
    //    withheld; the one on obs/visible behind it is delivered.
    alice
        .send(&publish(V5, "obs/hidden", 0, 0, &[], b"h"))
        .await;
    alice
        .send(&publish(V5, "obs/visible", 0, 0, &[], b"v"))
        .await;
    let delivered = alice.publishes_until("obs/visible").await;
    assert_eq!(delivered, [("obs/visible".to_owned(), b"v".to_vec())]);
    n += 1;
    let line = gw.audit_line_number(n).await;
    let rule = assert_audit(
        &line,
        "acl_denied",
        "receive",
        "plain",
        Some(rule_line(POLICY, "obs/hidden")),
    )
    .unwrap();
    assert_eq!(line["topic"], "obs/hidden");
    let now = gw.scrape();
    assert_eq!(
        moved(&scrape, &now),
        BTreeMap::from([
            once("mqtt_gateway_acl_denied_total", &[("action", "receive")]),
            once("mqtt_gateway_policy_deny_hits_total", &[("rule", &rule)]),
        ])
    );
    scrape = now;

    // 8. A malformed packet in the session: a PUBLISH whose topic runs past its end (MQTT 5:
    //    DISCONNECT 0x81, then close).
    alice.send(&[0x30, 0x03, 0x00, 0x05, b'a']).await;
    assert_eq!(
        alice.next("DISCONNECT").await,
        Got::Disconnect { reason: 0x81 }
    );
    alice.assert_closed().await;
    n += 1;
    let line = gw.audit_line_number(n).await;
    assert_audit(&line, "malformed", "client_to_broker", "plain", None);
    assert_eq!(line["client_id"], "alice-1");
    let now = gw.scrape();
    assert_eq!(
        moved(&scrape, &now),
        BTreeMap::from([once(
            "mqtt_gateway_malformed_packets_total",
            &[("direction", "client_to_broker")]
        )])
    );

    // Exactly one audit line per refusal: the whole file once the gateway has exited.
    let lines: Vec<(String, String)> = gw
        .stop()
        .await
        .iter()
        .map(|v| {
            (
                v["event"].as_str().unwrap().to_owned(),
                v["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want = [
        ("tls_failed", "no_certificate"),
        ("auth_failed", "bad_credentials"),
        ("acl_denied", "client_id"),
        ("malformed", "malformed"),
        ("acl_denied", "publish"),
        ("acl_denied", "subscribe"),
        ("acl_denied", "receive"),
        ("malformed", "client_to_broker"),
    ]
    .map(|(e, r)| (e.to_owned(), r.to_owned()));
    assert_eq!(lines, want);
}

// === promtool and Prometheus ===

fn require(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "`{tool}` not found: install Debian's prometheus package (scripts/test.sh does)"
    );
}

/// Not a wire rule. Contract ("Metrics"): "... so dashboards and alerts work before the first
/// event".
#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    require("promtool");
    let run = |args: &[&str]| {
        e2e::run_with_timeout(Command::new("promtool").args(args), Duration::from_secs(60)).unwrap()
    };
    let rules = workspace_file("dashboards/alerts.yml");
    let out = run(&["check", "rules", rules.to_str().unwrap()]);
    assert!(out.success(), "{out:?}");
    assert!(out.stdout.contains("SUCCESS"), "{out:?}");
    let out = run(&[
        "test",
        "rules",
        workspace_file("dashboards/alerts_test.yml")
            .to_str()
            .unwrap(),
    ]);
    assert!(out.success(), "{out:?}");

    // The check is not a formality: the same file with one broken expression is refused.
    let text = std::fs::read_to_string(&rules).unwrap();
    let broken = text.replacen("> 0.5", "> > 0.5", 1);
    assert_ne!(broken, text);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.yml");
    std::fs::write(&path, broken).unwrap();
    let out = run(&["check", "rules", path.to_str().unwrap()]);
    assert!(!out.success(), "{out:?}");
}

/// A process killed (SIGKILL) and reaped on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET` on Prometheus' API, as JSON; `None` while it does not answer 200.
fn prometheus_api(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    match http_get(addr, path) {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}

/// The value of an instant query's single result, `None` while there is none.
fn query(addr: SocketAddr, promql: &str) -> Option<f64> {
    let v = prometheus_api(addr, &format!("/api/v1/query?query={}", urlencode(promql)))?;
    assert_eq!(v["status"], "success", "{v}");
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Not a wire rule. Contract ("Metrics"): "GET /metrics on the admin listener", scraped by a
/// real Prometheus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_gateway() {
    require("prometheus");
    let pki = Pki::new();
    let crl = pki.write_leaf_crl(&[]);
    let gw = GatewayProcess::start(&pki, &crl).await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules}\nscrape_configs:\n  - job_name: mqtt-gateway\n    static_configs:\n      - targets: [\"{admin}\"]\n",
            rules = workspace_file("dashboards/alerts.yml").display(),
            admin = gw.admin,
        ),
    )
    .unwrap();
    let web = loopback(e2e::free_port());
    let log_path = dir.path().join("prometheus.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    const REFUSED: u32 = 3;
    for i in 1..=REFUSED {
        handshake_without_certificate(&pki, gw.tls).await;
        gw.audit_line_number(usize::try_from(i).unwrap()).await;
    }

    // Bounded polling: Prometheus starts, scrapes every second, and evaluates the rules.
    let counted = tokio::task::spawn_blocking(move || {
        for _ in 0..240 {
            let v = query(
                web,
                r#"sum(mqtt_gateway_tls_handshake_failures_total{reason="no_certificate"})"#,
            );
            if v.is_some_and(|v| v >= f64::from(REFUSED)) {
                return v;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        None
    })
    .await
    .unwrap();
    assert_eq!(
        counted,
        Some(f64::from(REFUSED)),
        "Prometheus never saw the refused handshakes; its log:\n{}",
        log()
    );
    assert_eq!(
        query(web, r#"up{job="mqtt-gateway"}"#),
        Some(1.0),
        "{}",
        log()
    );

    // The alert rules load and evaluate without error against the real series, and none fires
    // or is pending for this healthy gateway.
    let rules = tokio::task::spawn_blocking(move || {
        for _ in 0..240 {
            if let Some(v) = prometheus_api(web, "/api/v1/rules") {
                let rules: Vec<serde_json::Value> = v["data"]["groups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                    .collect();
                if !rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown") {
                    return rules;
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Vec::new()
    })
    .await
    .unwrap();
    let alerting = rules.iter().filter(|r| r["type"] == "alerting").count();
    let in_file = std::fs::read_to_string(workspace_file("dashboards/alerts.yml"))
        .unwrap()
        .matches("- alert:")
        .count();
    assert_eq!(alerting, in_file, "rules loaded: {rules:?}\n{}", log());
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
        assert_eq!(r["state"], "inactive", "{r}");
    }
    drop(prometheus);
    assert_eq!(gw.stop().await.len(), 3);
}
