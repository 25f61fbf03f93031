//! A real MQTT.js client (npm `mqtt`, in Node) through the gateway's WebSocket listeners
//! (issue 10): `ws://` with a password and `wss://` with a client certificate, publishing and
//! subscribing with the policy enforced. The client script is `tests/mqttjs/pubsub.mjs`; its
//! modules are installed by `scripts/test.sh` (`npm ci`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::PathBuf;
use std::process::Command;

use support::{ALL_ACTIONS, Flaw, Pki, Setup, TestGateway};

fn script_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/mqttjs")
}

async fn gateway(pki: &Pki) -> TestGateway {
    let mut setup = Setup::new(pki);
    setup.policy = support::anyone(&[("allow", ALL_ACTIONS, &["ws/#"])]);
    setup.listener_extra = "protocol = \"websocket\"".into();
    setup.passwords = format!(
        "alice:{}\n",
        mqtt_gateway::auth::hash_mosquitto_pbkdf2(b"secret", 1000).unwrap()
    );
    setup.start().await
}

/// Runs the MQTT.js script; returns its JSON report.
async fn mqttjs(args: Vec<String>, env: Vec<(&'static str, PathBuf)>) -> serde_json::Value {
    assert!(
        script_dir().join("node_modules/mqtt").exists(),
        "MQTT.js is not installed: run `npm ci --prefix tests/mqttjs` (scripts/test.sh does)"
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script_dir().join("pubsub.mjs"))
            .args(&args)
            .envs(env)
            .output()
            .expect("node (Node.js) on PATH")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{report}");
    report
}

/// What the policy must have done to the script's actions.
fn assert_enforced(report: &serde_json::Value) {
    assert_eq!(report["connected"], true, "{report}");
    assert_eq!(report["allowedSub"], serde_json::json!([1]), "{report}");
    // SUBACK 0x87 Not authorized for the filter the policy does not grant.
    assert_eq!(report["deniedSub"], serde_json::json!([0x87]), "{report}");
    // PUBACK 0x87 for the topic the policy does not grant.
    assert_eq!(report["deniedPublish"], 0x87, "{report}");
    // The allowed message went through the broker and back.
    assert_eq!(
        report["received"],
        serde_json::json!([["ws/js", "hello"]]),
        "{report}"
    );
}

/// Enforces [MQTT-6.0.0-4] (the subprotocol the server selects is "mqtt", which MQTT.js offers,
/// [MQTT-6.0.0-3]) and [MQTT-6.0.0-1] (binary frames), with a real client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_js_over_ws_with_a_password() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let url = format!("ws://{}/mqtt", gw.plain_addr());
    let report = mqttjs(
        vec![url.clone(), "js-ws".into(), "alice".into(), "secret".into()],
        vec![],
    )
    .await;
    assert_enforced(&report);
    // The wrong password is refused at CONNECT (CONNACK 0x86), like over TCP.
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script_dir().join("pubsub.mjs"))
            .args([url.as_str(), "js-bad", "alice", "wrong"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let report: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(report["connected"], false, "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("Bad User Name or Password"),
        "{report}"
    );
}

/// Enforces [MQTT-6.0.0-4] over `wss://`; the client certificate is judged as on the TLS
/// listener (gateway.example.toml: `client_auth = "required"`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_js_over_wss_with_a_client_certificate() {
    let pki = Pki::new();
    let gw = gateway(&pki).await;
    let cert = pki.client("js-device", None, Flaw::None);
    let url = format!("wss://localhost:{}/mqtt", gw.tls_addr().port());
    let report = mqttjs(
        vec![url, "js-device".into()],
        vec![
            ("CA", pki.root_path.clone()),
            ("CERT", cert.chain_path.clone()),
            ("KEY", cert.key_path.clone()),
        ],
    )
    .await;
    assert_enforced(&report);
}
