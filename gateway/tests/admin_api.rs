//! The admin API (`/api/v1`, spec/lifecycle.md "Admin API") against a real gateway in front of a
//! real Mosquitto, driven with `curl`: tokens (401, 403 beside 200), the live sessions listed and
//! filtered, a kick (the client gets DISCONNECT 0x98, a bystander stays), `admin_action` and
//! `session_opened`/`session_closed` audit lines, `admin_requests_total`, reload answering with
//! file:line, and policy explain as JSON.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::Path;

use e2e::{LiveSubscriber, MqttVersion};
use mqtt_inspect::ReasonCode;
use serde_json::Value;
use support::reload::{connected, disconnected_with, still_served};
use support::{Flaw, Pki, Setup, TestGateway, tls_args};

/// The tests of this file run one at a time: they read deltas of the process's metrics.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Writes a token file with an `operate` token `ops` and a `read` token `viewer`; returns their
/// `NAME:SECRET` strings.
fn token_file(path: &Path) -> (String, String) {
    use mqtt_gateway::api::tokens::new_secret;
    let (ops, viewer) = (new_secret().unwrap(), new_secret().unwrap());
    let line = |name: &str, role: &str, s: &str| {
        format!(
            "{name}:{role}:{}\n",
            mqtt_gateway::auth::hash_argon2id(s.as_bytes()).unwrap()
        )
    };
    std::fs::write(
        path,
        format!(
            "# admin tokens\n{}{}",
            line("ops", "operate", &ops),
            line("viewer", "read", &viewer)
        ),
    )
    .unwrap();
    (format!("ops:{ops}"), format!("viewer:{viewer}"))
}

/// `curl -X METHOD` on the admin listener, with `token` as a Bearer token: (status, JSON body).
async fn curl(gw: &TestGateway, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    curl_body(gw, method, path, token, None).await
}

/// [`curl`] with a JSON request body.
async fn curl_body(
    gw: &TestGateway,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let url = format!("http://{}{path}", gw.running.admin.unwrap());
    let mut args = vec![
        "-s".to_owned(),
        "-X".to_owned(),
        method.to_owned(),
        "-w".to_owned(),
        "\n%{http_code}".to_owned(),
    ];
    if let Some(t) = token {
        args.extend(["-H".to_owned(), format!("Authorization: Bearer {t}")]);
    }
    if let Some(b) = body {
        args.extend([
            "-H".to_owned(),
            "Content-Type: application/json".to_owned(),
            "--data-binary".to_owned(),
            b.to_owned(),
        ]);
    }
    args.push(url);
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl").args(&args).output()
    })
    .await
    .unwrap()
    .expect("curl is installed");
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    (status.parse().unwrap_or(0), body)
}

async fn start(pki: &Pki, dir: &Path) -> (TestGateway, String, String) {
    let tokens = dir.join("admin-tokens");
    let (ops, viewer) = token_file(&tokens);
    let mut setup = Setup::new(pki);
    setup.admin_extra = format!("api_tokens_file = \"{}\"", tokens.display());
    setup.log_extra = "sessions = true".to_owned();
    (setup.start().await, ops, viewer)
}

fn sessions(body: &Value) -> Vec<Value> {
    body["sessions"].as_array().cloned().unwrap_or_default()
}

fn requests(endpoint: &str, result: &str) -> String {
    format!("mqtt_gateway_admin_requests_total{{endpoint=\"{endpoint}\",result=\"{result}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_listed_filtered_and_kicked_and_only_an_operate_token_kicks() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (gw, ops, viewer) = start(&pki, dir.path()).await;
    // The series exist from the start (`metric` panics on a missing one); the recorder is the
    // process's, shared by the tests of this file, which run one at a time: deltas.
    let kicked_series = "mqtt_gateway_sessions_closed_total{reason=\"kicked\"}";
    let series = [
        kicked_series.to_owned(),
        requests("session_kick", "ok"),
        requests("session_kick", "forbidden"),
        requests("session_kick", "client_error"),
        requests("sessions_list", "unauthorized"),
    ];
    let mut before = Vec::new();
    for s in &series {
        before.push(gw.metric(s).await);
    }

    let (cert_a, cert_b, cert_c) = (
        pki.client("device-a", None, Flaw::None),
        pki.client("device-b", None, Flaw::None),
        pki.client("device-c", None, Flaw::None),
    );
    let mut a = connected(&gw, &pki, &cert_a, "kick-me").await;
    let mut b = connected(&gw, &pki, &cert_b, "bystander").await;
    // A real mosquitto_sub (MQTT 5) through the gateway, subscribed.
    let sub_args: Vec<String> = tls_args(&pki, Some(&cert_c))
        .into_iter()
        .chain(["-i", "sub-c", "-t", "x/#"].map(str::to_owned))
        .collect();
    let addr = gw.tls_addr();
    let sub = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = sub_args.iter().map(String::as_str).collect();
        LiveSubscriber::spawn(addr, MqttVersion::V5, 60, &a)
    })
    .await
    .unwrap()
    .unwrap();

    // No token, a wrong secret, an unknown name: 401. Nothing is listed.
    let wrong = format!("ops:{}", "0".repeat(64));
    for token in [
        None,
        Some(wrong.as_str()),
        Some("nobody:x"),
        Some("garbage"),
    ] {
        let (status, body) = curl(&gw, "GET", "/api/v1/sessions", token).await;
        assert_eq!(status, 401, "{token:?}: {body}");
        assert!(body.get("sessions").is_none());
    }
    // A read token lists: all three, with their identity and counters.
    let (status, all) = curl(&gw, "GET", "/api/v1/sessions", Some(&viewer)).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["total"], 3, "{all}");
    let mut ids: Vec<String> = sessions(&all)
        .iter()
        .map(|s| s["client_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["bystander", "kick-me", "sub-c"]);
    // Filters: by client id, principal, listener, address; pagination.
    let (_, one) = curl(
        &gw,
        "GET",
        "/api/v1/sessions?client_id=kick-me",
        Some(&viewer),
    )
    .await;
    let one = sessions(&one);
    assert_eq!(one.len(), 1, "{one:?}");
    let s = &one[0];
    assert_eq!(s["principal"], "device-a");
    assert_eq!(s["listener"], "mqtts");
    assert_eq!(s["protocol"], 5);
    assert_eq!(s["cert_fingerprint"].as_str().unwrap().len(), 64, "{s}");
    assert!(s["cert_serial"].is_string(), "{s}");
    assert!(s["credential_expiry"].as_u64().unwrap() > s["connected_since"].as_u64().unwrap());
    assert!(s["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(s["packets_in"], 1, "the CONNECT: {s}");
    assert_eq!(s["packets_out"], 1, "the CONNACK: {s}");
    assert!(s["bytes_in"].as_u64().unwrap() > 10);
    for (query, want) in [
        ("principal=device-b", 1),
        ("principal=nobody", 0),
        ("listener=mqtts", 3),
        ("listener=plain", 0),
        ("address=127.0.0.0%2F8", 3),
        ("address=10.0.0.1", 0),
        ("principal=device-c&client_id=sub-c", 1),
    ] {
        let (status, body) = curl(
            &gw,
            "GET",
            &format!("/api/v1/sessions?{query}"),
            Some(&viewer),
        )
        .await;
        assert_eq!(
            (status, body["total"].as_u64()),
            (200, Some(want)),
            "{query}: {body}"
        );
    }
    let (_, page) = curl(
        &gw,
        "GET",
        "/api/v1/sessions?limit=2&offset=2",
        Some(&viewer),
    )
    .await;
    assert_eq!(
        (sessions(&page).len(), page["total"].as_u64()),
        (1, Some(3))
    );
    for bad in ["limit=0", "limit=1001", "address=nope", "colour=red"] {
        let (status, _) = curl(
            &gw,
            "GET",
            &format!("/api/v1/sessions?{bad}"),
            Some(&viewer),
        )
        .await;
        assert_eq!(status, 400, "{bad}");
    }

    // A read token may not kick: 403, and the session is still served.
    let id = s["id"].as_u64().unwrap();
    let (status, body) = curl(
        &gw,
        "DELETE",
        &format!("/api/v1/sessions/{id}"),
        Some(&viewer),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    still_served(&mut a).await;
    // The operate token kicks: DISCONNECT 0x98 (Administrative action), closed; the bystander
    // stays.
    let (status, body) = curl(&gw, "DELETE", &format!("/api/v1/sessions/{id}"), Some(&ops)).await;
    assert_eq!(
        (status, &body["closed"]),
        (200, &Value::Bool(true)),
        "{body}"
    );
    disconnected_with(&mut a, ReasonCode::AdministrativeAction).await;
    still_served(&mut b).await;
    let (status, _) = curl(&gw, "DELETE", &format!("/api/v1/sessions/{id}"), Some(&ops)).await;
    assert_eq!(status, 404, "gone");

    // mosquitto_sub -V mqttv5, kicked, exits (long before its -W 60).
    let (_, subs) = curl(
        &gw,
        "GET",
        "/api/v1/sessions?client_id=sub-c",
        Some(&viewer),
    )
    .await;
    let sub_id = sessions(&subs)[0]["id"].as_u64().unwrap();
    let (status, _) = curl(
        &gw,
        "DELETE",
        &format!("/api/v1/sessions/{sub_id}"),
        Some(&ops),
    )
    .await;
    assert_eq!(status, 200);
    let out = tokio::task::spawn_blocking(move || sub.finish())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.timed_out, "mosquitto_sub ended when kicked: {out:?}");

    for ((s, was), delta) in series.iter().zip(before).zip([2.0, 2.0, 1.0, 1.0, 4.0]) {
        assert_eq!(gw.metric(s).await - was, delta, "{s}");
    }
    let action = gw
        .audit_line(|l| l["event"] == "admin_action" && l["reason"] == "session_kick")
        .await
        .expect("an admin_action line");
    let detail = action["detail"].as_str().unwrap();
    assert!(
        detail.contains("token ops") && detail.contains("kick-me"),
        "{action}"
    );
    assert!(
        gw.audit_line(|l| l["event"] == "admin_action"
            && l["detail"].as_str().is_some_and(|d| d.contains("viewer")))
            .await
            .is_none(),
        "a refused call is no action"
    );
    let closed = gw
        .audit_line(|l| l["event"] == "session_closed" && l["client_id"] == "kick-me")
        .await
        .expect("a session_closed line");
    assert_eq!(closed["reason"], "kicked");
    assert_eq!(closed["principal"], "device-a");
    assert!(
        gw.audit_line(|l| l["event"] == "session_opened" && l["client_id"] == "bystander")
            .await
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_answers_file_and_line_and_explain_answers_json() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (gw, ops, viewer) = start(&pki, dir.path()).await;
    let _reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);

    let (status, _) = curl(&gw, "POST", "/api/v1/reload", Some(&viewer)).await;
    assert_eq!(status, 403);
    let (status, body) = curl(&gw, "POST", "/api/v1/reload", None).await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = curl(&gw, "GET", "/api/v1/reload", Some(&ops)).await;
    assert_eq!(status, 405, "{body}");

    let policy = gw.dir.path().join("policy.toml");
    let good = std::fs::read_to_string(&policy).unwrap();
    support::reload::replace(&policy, &format!("{good}\n[[rule]]\nbroken =\n"));
    let (status, body) = curl(&gw, "POST", "/api/v1/reload", Some(&ops)).await;
    assert_eq!(status, 409, "{body}");
    let error = body["rejected"][0]["error"].as_str().unwrap();
    assert_eq!(body["rejected"][0]["source"], "policy");
    assert!(error.contains("policy.toml:"), "file:line: {error}");
    let lines = good.lines().count();
    assert!(
        (lines..lines + 4).any(|n| error.contains(&format!("policy.toml:{n}"))),
        "{error}"
    );
    support::reload::replace(&policy, &format!("{good}\n"));
    let (status, body) = curl(&gw, "POST", "/api/v1/reload", Some(&ops)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["applied"], serde_json::json!(["policy"]), "{body}");
    assert!(
        gw.audit_line(|l| l["event"] == "admin_action" && l["reason"] == "reload")
            .await
            .is_some()
    );

    let explained = gw.metric(&requests("policy_explain", "ok")).await;
    let (status, body) = curl(
        &gw,
        "GET",
        "/api/v1/policy/explain?principal=device-a&client_id=c1&publish=a%2Fb",
        Some(&viewer),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["decision"], "allow", "{body}");
    assert!(
        body["rule"].as_str().unwrap().contains("policy.toml:"),
        "{body}"
    );
    let (status, body) = curl(
        &gw,
        "GET",
        "/api/v1/policy/explain?principal=device-a",
        Some(&viewer),
    )
    .await;
    assert_eq!(status, 400, "no action: {body}");
    assert_eq!(
        gw.metric(&requests("policy_explain", "ok")).await - explained,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_there_is_no_api_and_the_probes_answer_as_before() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let gw = Setup::new(&pki).start().await;
    let (status, _) = curl(&gw, "GET", "/api/v1/sessions", Some("ops:x")).await;
    assert_eq!(status, 404);
    let (status, body) = gw.admin_get("/healthz").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = curl(&gw, "POST", "/metrics", None).await;
    assert_eq!(status, 405);
}

/// `mosquitto_pub -V mqttv5` through the TLS listener with `cert`, its socket bound to `from`.
async fn publish_from(
    gw: &TestGateway,
    pki: &Pki,
    cert: &support::Issued,
    from: &str,
) -> e2e::CliOutput {
    let mut args: Vec<String> = tls_args(pki, Some(cert));
    args.extend(["-A", from, "-t", "t/ban", "-m", "x", "-i", "banned-or-not"].map(str::to_owned));
    let addr = gw.tls_addr();
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        e2e::mosquitto_pub(addr, MqttVersion::V5, &a)
    })
    .await
    .unwrap()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_added_through_the_api_refuses_that_address_with_0x8a_until_lifted() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (gw, ops, viewer) = start(&pki, dir.path()).await;
    let cert = pki.client("device-d", None, Flaw::None);
    let banned = "mqtt_gateway_connections_total{listener=\"mqtts\",outcome=\"banned\"}";
    let was = gw.metric(banned).await;
    assert!(publish_from(&gw, &pki, &cert, "127.0.0.2").await.success());

    let ban = r#"{"address": "127.0.0.2", "expires_in": 3600}"#;
    let (status, _) = curl_body(&gw, "POST", "/api/v1/bans", Some(&viewer), Some(ban)).await;
    assert_eq!(status, 403);
    for bad in [
        r#"{"address": "nope"}"#,
        r#"{"address": "127.0.0.2", "user": "u"}"#,
        "{}",
        r#"{"certificate": "ab"}"#,
        "not json",
    ] {
        let (status, body) = curl_body(&gw, "POST", "/api/v1/bans", Some(&ops), Some(bad)).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = curl_body(&gw, "POST", "/api/v1/bans", Some(&ops), Some(ban)).await;
    assert_eq!(status, 200, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (body["kind"].as_str(), body["value"].as_str()),
        (Some("address"), Some("127.0.0.2/32"))
    );
    let (status, list) = curl(&gw, "GET", "/api/v1/bans", Some(&viewer)).await;
    assert_eq!(status, 200);
    let listed = list["bans"].as_array().unwrap();
    assert!(
        listed
            .iter()
            .any(|b| b["id"] == id.as_str() && b["source"] == "operator" && b["expires"].is_u64()),
        "{list}"
    );

    // The banned address: CONNACK 0x8A; another address is served.
    let refused = publish_from(&gw, &pki, &cert, "127.0.0.2").await;
    assert!(!refused.success(), "{refused:?}");
    assert!(
        refused.stderr.to_lowercase().contains("banned"),
        "0x8A Banned: {refused:?}"
    );
    assert_eq!(gw.metric(banned).await - was, 1.0);
    assert!(publish_from(&gw, &pki, &cert, "127.0.0.3").await.success());

    // Lifted: served again, no restart.
    let (status, _) = curl(&gw, "DELETE", &format!("/api/v1/bans/{id}"), Some(&viewer)).await;
    assert_eq!(status, 403);
    let (status, body) = curl(&gw, "DELETE", &format!("/api/v1/bans/{id}"), Some(&ops)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = curl(&gw, "DELETE", &format!("/api/v1/bans/{id}"), Some(&ops)).await;
    assert_eq!(status, 404);
    assert!(publish_from(&gw, &pki, &cert, "127.0.0.2").await.success());
    assert_eq!(gw.metric(banned).await - was, 1.0);
    for endpoint in ["ban_add", "ban_remove"] {
        let line = gw
            .audit_line(|l| l["event"] == "admin_action" && l["reason"] == endpoint)
            .await
            .expect("an admin_action line");
        assert!(
            line["detail"].as_str().unwrap().contains("token ops"),
            "{line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_through_the_api_rewrites_the_crl_and_cuts_the_live_session() {
    let _serial = SERIAL.lock().await;
    use mqtt_gateway::pki::Ca;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("pki");
    let ca = Ca::init(&ca_dir, "Fleet CA", 365).unwrap();
    ca.issue("meter-1", None, 30, false, &[]).unwrap();
    ca.issue("meter-2", None, 30, false, &[]).unwrap();
    // The listener trusts the fleet CA too (beside the test root) and enforces its CRL.
    let fleet = std::fs::read_to_string(ca.path("ca.pem")).unwrap();
    let mut roots = std::fs::read_to_string(&pki.root_path).unwrap();
    roots.push_str(&fleet);
    std::fs::write(&pki.root_path, roots).unwrap();

    let tokens = dir.path().join("admin-tokens");
    let (ops, viewer) = token_file(&tokens);
    let mut setup = Setup::new(&pki);
    setup.admin_extra = format!(
        "api_tokens_file = \"{}\"\npki_dir = \"{}\"",
        tokens.display(),
        ca_dir.display()
    );
    setup.tls_extra = format!("crl = [\"{}\"]", ca.path("ca.crl").display());
    let gw = setup.start().await;
    let _reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);

    let spawn_sub = |name: &str| {
        let args: Vec<String> = [
            "--cafile",
            &pki.root_path.display().to_string(),
            "--cert",
            &ca.path(&format!("{name}.pem")).display().to_string(),
            "--key",
            &ca.path(&format!("{name}.key")).display().to_string(),
            "-i",
            name,
            "-t",
            "m/#",
        ]
        .map(str::to_owned)
        .to_vec();
        let addr = gw.tls_addr();
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            LiveSubscriber::spawn(addr, MqttVersion::V5, 60, &a)
        })
    };
    let one = spawn_sub("meter-1").await.unwrap().unwrap();
    let two = spawn_sub("meter-2").await.unwrap().unwrap();
    let crl_before = std::fs::read(ca.path("ca.crl")).unwrap();

    let (status, _) = curl(
        &gw,
        "POST",
        "/api/v1/certificates/meter-1/revoke",
        Some(&viewer),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = curl(
        &gw,
        "POST",
        "/api/v1/certificates/nobody/revoke",
        Some(&ops),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = curl(
        &gw,
        "POST",
        "/api/v1/certificates/meter-1/revoke",
        Some(&ops),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sessions_cut"], 1, "{body}");
    assert_ne!(
        std::fs::read(ca.path("ca.crl")).unwrap(),
        crl_before,
        "the CRL changed"
    );
    // Answered once the session is gone: it is no longer listed, and its client exits.
    let (_, listed) = curl(&gw, "GET", "/api/v1/sessions", Some(&viewer)).await;
    let ids: Vec<String> = sessions(&listed)
        .iter()
        .map(|s| s["client_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["meter-2"], "{listed}");
    let out = tokio::task::spawn_blocking(move || one.finish())
        .await
        .unwrap()
        .unwrap();
    assert!(!out.timed_out, "{out:?}");
    // The CRL is in force for new connections too; the other meter is still served.
    let again: Vec<String> = tls_args(&pki, None)
        .into_iter()
        .chain(
            [
                "--cert",
                &ca.path("meter-1.pem").display().to_string(),
                "--key",
                &ca.path("meter-1.key").display().to_string(),
                "-t",
                "m/x",
                "-m",
                "x",
            ]
            .map(str::to_owned),
        )
        .collect();
    let addr = gw.tls_addr();
    let refused = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = again.iter().map(String::as_str).collect();
        e2e::mosquitto_pub(addr, MqttVersion::V5, &a)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(!refused.success(), "{refused:?}");
    let (_, still) = curl(
        &gw,
        "GET",
        "/api/v1/sessions?client_id=meter-2",
        Some(&viewer),
    )
    .await;
    assert_eq!(still["total"], 1);
    drop(two);
    let line = gw
        .audit_line(|l| l["event"] == "admin_action" && l["reason"] == "certificate_revoke")
        .await
        .expect("an admin_action line");
    assert!(
        line["detail"].as_str().unwrap().contains("meter-1"),
        "{line}"
    );
}

// === docs/openapi.yaml against the running API ===

/// docs/openapi.yaml as JSON (PyYAML, installed by scripts/test.sh).
fn openapi() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    let out = std::process::Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import json,sys,yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(&path)
        .output()
        .expect("python3 with PyYAML");
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Follows a `$ref` within the document.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let mut at = doc;
            for part in r.trim_start_matches("#/").split('/') {
                at = &at[part];
            }
            assert!(!at.is_null(), "dangling $ref {r}");
            resolve(doc, at)
        }
        None => v,
    }
}

/// Checks `value` against the subset of JSON Schema the document uses: type, nullable, required,
/// properties, items, enum. Returns what is wrong, with the JSON path.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, wrong: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if value.is_null() {
        if schema["nullable"] != true {
            wrong.push(format!("{at}: null but not nullable"));
        }
        return;
    }
    let ok = match schema["type"].as_str() {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_u64() || value.is_i64(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !ok {
        wrong.push(format!("{at}: {value} is not {}", schema["type"]));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        wrong.push(format!("{at}: {value} not in {allowed:?}"));
    }
    for field in schema["required"].as_array().into_iter().flatten() {
        let f = field.as_str().unwrap();
        if value.get(f).is_none() {
            wrong.push(format!("{at}: required field {f} missing in {value}"));
        }
    }
    if let (Some(props), Some(obj)) = (schema["properties"].as_object(), value.as_object()) {
        for (k, v) in obj {
            match props.get(k) {
                Some(s) => check(doc, s, v, &format!("{at}.{k}"), wrong),
                None => wrong.push(format!("{at}: field {k} is not documented")),
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), value.as_array()) {
        for (i, v) in arr.iter().enumerate() {
            check(doc, items, v, &format!("{at}[{i}]"), wrong);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_path_and_status_is_what_the_running_api_answers() {
    let _serial = SERIAL.lock().await;
    use mqtt_gateway::pki::Ca;
    let doc = openapi();
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("pki");
    let ca = Ca::init(&ca_dir, "Fleet CA", 365).unwrap();
    ca.issue("meter-1", None, 30, false, &[]).unwrap();
    let tokens = dir.path().join("admin-tokens");
    let (ops, viewer) = token_file(&tokens);
    let mut setup = Setup::new(&pki);
    setup.admin_extra = format!(
        "api_tokens_file = \"{}\"\npki_dir = \"{}\"",
        tokens.display(),
        ca_dir.display()
    );
    let gw = setup.start().await;
    let _reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);
    let cert = pki.client("device-a", None, Flaw::None);
    let mut a = connected(&gw, &pki, &cert, "doc-a").await;
    let (_, listed) = curl(&gw, "GET", "/api/v1/sessions", Some(&viewer)).await;
    let id = sessions(&listed)[0]["id"].as_u64().unwrap();
    let policy = gw.dir.path().join("policy.toml");
    let good_policy = std::fs::read_to_string(&policy).unwrap();

    // (template, method, concrete path, token, body, status)
    let (o, v) = (Some(ops.as_str()), Some(viewer.as_str()));
    let ban = r#"{"user": "mallory", "expires_in": 60}"#;
    type Call<'a> = (
        &'a str,
        &'a str,
        String,
        Option<&'a str>,
        Option<&'a str>,
        u16,
    );
    let calls: Vec<Call<'_>> = vec![
        (
            "/api/v1/sessions",
            "get",
            "/api/v1/sessions?limit=10".into(),
            v,
            None,
            200,
        ),
        (
            "/api/v1/sessions",
            "get",
            "/api/v1/sessions?limit=0".into(),
            v,
            None,
            400,
        ),
        (
            "/api/v1/sessions",
            "get",
            "/api/v1/sessions".into(),
            None,
            None,
            401,
        ),
        (
            "/api/v1/sessions/{id}",
            "delete",
            format!("/api/v1/sessions/{id}"),
            None,
            None,
            401,
        ),
        (
            "/api/v1/sessions/{id}",
            "delete",
            format!("/api/v1/sessions/{id}"),
            v,
            None,
            403,
        ),
        (
            "/api/v1/sessions/{id}",
            "delete",
            format!("/api/v1/sessions/{id}"),
            o,
            None,
            200,
        ),
        (
            "/api/v1/sessions/{id}",
            "delete",
            format!("/api/v1/sessions/{id}"),
            o,
            None,
            404,
        ),
        (
            "/api/v1/bans",
            "post",
            "/api/v1/bans".into(),
            o,
            Some(ban),
            200,
        ),
        (
            "/api/v1/bans",
            "post",
            "/api/v1/bans".into(),
            o,
            Some("{}"),
            400,
        ),
        (
            "/api/v1/bans",
            "post",
            "/api/v1/bans".into(),
            None,
            Some(ban),
            401,
        ),
        (
            "/api/v1/bans",
            "post",
            "/api/v1/bans".into(),
            v,
            Some(ban),
            403,
        ),
        ("/api/v1/bans", "get", "/api/v1/bans".into(), v, None, 200),
        (
            "/api/v1/bans",
            "get",
            "/api/v1/bans".into(),
            None,
            None,
            401,
        ),
        (
            "/api/v1/bans/{id}",
            "delete",
            "/api/v1/bans/m1".into(),
            None,
            None,
            401,
        ),
        (
            "/api/v1/bans/{id}",
            "delete",
            "/api/v1/bans/m1".into(),
            v,
            None,
            403,
        ),
        (
            "/api/v1/bans/{id}",
            "delete",
            "/api/v1/bans/m1".into(),
            o,
            None,
            200,
        ),
        (
            "/api/v1/bans/{id}",
            "delete",
            "/api/v1/bans/m1".into(),
            o,
            None,
            404,
        ),
        (
            "/api/v1/reload",
            "post",
            "/api/v1/reload".into(),
            o,
            None,
            200,
        ),
        (
            "/api/v1/reload",
            "post",
            "/api/v1/reload".into(),
            None,
            None,
            401,
        ),
        (
            "/api/v1/reload",
            "post",
            "/api/v1/reload".into(),
            v,
            None,
            403,
        ),
        (
            "/api/v1/reload",
            "post",
            "/api/v1/reload".into(),
            o,
            None,
            409,
        ),
        (
            "/api/v1/policy/explain",
            "get",
            "/api/v1/policy/explain?principal=p&subscribe=a%2F%23".into(),
            v,
            None,
            200,
        ),
        (
            "/api/v1/policy/explain",
            "get",
            "/api/v1/policy/explain?principal=p".into(),
            v,
            None,
            400,
        ),
        (
            "/api/v1/policy/explain",
            "get",
            "/api/v1/policy/explain?connect".into(),
            None,
            None,
            401,
        ),
        (
            "/api/v1/certificates/{name}/revoke",
            "post",
            "/api/v1/certificates/meter-1/revoke".into(),
            None,
            None,
            401,
        ),
        (
            "/api/v1/certificates/{name}/revoke",
            "post",
            "/api/v1/certificates/meter-1/revoke".into(),
            v,
            None,
            403,
        ),
        (
            "/api/v1/certificates/{name}/revoke",
            "post",
            "/api/v1/certificates/meter-1/revoke".into(),
            o,
            None,
            200,
        ),
        (
            "/api/v1/certificates/{name}/revoke",
            "post",
            "/api/v1/certificates/meter-1/revoke".into(),
            o,
            None,
            404,
        ),
    ];
    let mut covered = std::collections::BTreeSet::new();
    let mut wrong = Vec::new();
    for (template, method, path, token, body, status) in &calls {
        if *status == 409 {
            support::reload::replace(&policy, &format!("{good_policy}\n[[rule]]\nbroken =\n"));
        }
        let (got, answer) = curl_body(&gw, &method.to_uppercase(), path, *token, *body).await;
        if *status == 409 {
            support::reload::replace(&policy, &good_policy);
        }
        assert_eq!(got, *status, "{method} {path}: {answer}");
        let op = &doc["paths"][template][method];
        assert!(op.is_object(), "{method} {template} is not documented");
        let response = resolve(&doc, &op["responses"][status.to_string()]);
        assert!(
            response.is_object(),
            "{method} {template} {status} is not documented"
        );
        let schema = &response["content"]["application/json"]["schema"];
        check(
            &doc,
            schema,
            &answer,
            &format!("{method} {path} {status}"),
            &mut wrong,
        );
        covered.insert((template.to_string(), method.to_string(), status.to_string()));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    disconnected_with(&mut a, ReasonCode::AdministrativeAction).await;

    // Every documented path, method and status was exercised above.
    let mut documented = std::collections::BTreeSet::new();
    let mut operations = std::collections::BTreeSet::new();
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations.insert(op["operationId"].as_str().unwrap().to_owned());
            for status in op["responses"].as_object().unwrap().keys() {
                documented.insert((template.clone(), method.clone(), status.clone()));
            }
        }
    }
    assert_eq!(documented, covered);
    // And the document's operations are the API's endpoints (the metric's `endpoint` label).
    let endpoints: std::collections::BTreeSet<String> = mqtt_gateway::api::Endpoint::ALL
        .into_iter()
        .filter(|e| *e != mqtt_gateway::api::Endpoint::Unknown)
        .map(|e| e.as_str().to_owned())
        .collect();
    assert_eq!(operations, endpoints);
}

/// `curl` over HTTPS to the admin listener, trusting the test root: (status, body); status 0 when
/// curl could not talk TLS at all.
async fn curl_tls(gw: &TestGateway, pki: &Pki, path: &str, token: Option<&str>) -> (u16, String) {
    let mut args = vec![
        "-s".to_owned(),
        "--cacert".to_owned(),
        pki.root_path.display().to_string(),
        "-w".to_owned(),
        "\n%{http_code}".to_owned(),
    ];
    if let Some(t) = token {
        args.extend(["-H".to_owned(), format!("Authorization: Bearer {t}")]);
    }
    args.push(format!("https://{}{path}", gw.running.admin.unwrap()));
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl").args(&args).output()
    })
    .await
    .unwrap()
    .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.parse().unwrap_or(0), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_admin_tls_the_api_and_the_probes_speak_only_tls() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin-tokens");
    let (_, viewer) = token_file(&tokens);
    let mut setup = Setup::new(&pki);
    setup.admin_extra = format!(
        "api_tokens_file = \"{}\"\n[admin.tls]\ncert = \"{}\"\nkey = \"{}\"",
        tokens.display(),
        pki.server.chain_path.display(),
        pki.server.key_path.display()
    );
    let gw = setup.start().await;
    let (status, body) = curl_tls(&gw, &pki, "/api/v1/sessions", Some(&viewer)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(curl_tls(&gw, &pki, "/api/v1/sessions", None).await.0, 401);
    let (status, body) = curl_tls(&gw, &pki, "/healthz", None).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Plain HTTP gets no answer.
    let (status, _) = curl(&gw, "GET", "/healthz", None).await;
    assert_ne!(status, 200);
}

/// Runs the `mqtt-gateway` binary.
async fn cli(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mqtt-gateway"))
            .args(&args)
            .env_remove("MQTT_GATEWAY_TOKEN")
            .envs(env)
            .output()
    })
    .await
    .unwrap()
    .unwrap()
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_writes_a_token_then_lists_and_kicks_in_two_commands() {
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin-tokens");
    let file = tokens.display().to_string();
    // `admin-token` writes the file and prints the token once.
    let made = cli(&["admin-token", &file, "alice", "--role", "operate"], &[]).await;
    assert!(made.status.success(), "{made:?}");
    let token = stdout(&made).trim().to_owned();
    assert!(
        token.starts_with("alice:") && token.len() == 6 + 64,
        "{token}"
    );
    let stored = std::fs::read_to_string(&tokens).unwrap();
    assert!(stored.starts_with("alice:operate:$argon2id$") && !stored.contains(&token[6..]));
    let bad = cli(&["admin-token", &file, "bob", "--role", "admin"], &[]).await;
    assert!(!bad.status.success());

    let mut setup = Setup::new(&pki);
    setup.admin_extra = format!("api_tokens_file = \"{file}\"");
    let gw = setup.start().await;
    let admin = format!("http://{}", gw.running.admin.unwrap());
    let cfg = gw.config_path.display().to_string();
    let checked = cli(&["check", "--config", &cfg], &[]).await;
    assert!(
        stdout(&checked).contains("admin: /api/v1 enabled, 1 token(s)"),
        "{checked:?}"
    );

    let cert = pki.client("device-cli", None, Flaw::None);
    let mut device = connected(&gw, &pki, &cert, "cli-device").await;
    let env = [
        ("MQTT_GATEWAY_ADMIN", admin.as_str()),
        ("MQTT_GATEWAY_TOKEN", token.as_str()),
    ];
    // 1: list (a table for people).
    let listed = cli(&["sessions", "--principal", "device-cli"], &env).await;
    assert!(listed.status.success(), "{listed:?}");
    let table = stdout(&listed);
    let row = table
        .lines()
        .find(|l| l.contains("cli-device"))
        .unwrap_or_else(|| panic!("{table}"));
    let id = row.split_whitespace().next().unwrap().to_owned();
    assert!(table.contains("1 of 1 session(s)"), "{table}");
    // 2: kick.
    let kicked = cli(&["kick", &id], &env).await;
    assert!(kicked.status.success(), "{kicked:?}");
    disconnected_with(&mut device, ReasonCode::AdministrativeAction).await;

    // --json for scripts; flags instead of the environment; a bad token fails.
    let json = cli(
        &["sessions", "--json", "--admin", &admin, "--token", &token],
        &[],
    )
    .await;
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["total"], 0, "{v}");
    let wrong = cli(&["bans", "--admin", &admin, "--token", "alice:0"], &[]).await;
    assert!(!wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("401"));
    let banned = cli(&["ban", "--user", "mallory", "--expires-in", "60"], &env).await;
    assert!(
        stdout(&banned).contains("banned: user mallory (m1)"),
        "{banned:?}"
    );
    assert!(stdout(&cli(&["bans"], &env).await).contains("mallory"));
    assert!(cli(&["unban", "m1"], &env).await.status.success());
    assert!(!cli(&["unban", "m1"], &env).await.status.success());

    // A broken token file: `check` names file:line.
    std::fs::write(&tokens, "alice:root:x\n").unwrap();
    let checked = cli(&["check", "--config", &cfg], &[]).await;
    assert!(!checked.status.success());
    let err = String::from_utf8_lossy(&checked.stderr);
    assert!(err.contains(&format!("{file}:1: ")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_are_capped_and_a_slow_request_is_cut() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _serial = SERIAL.lock().await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (gw, ops, _) = start(&pki, dir.path()).await;
    let admin = gw.running.admin.unwrap();
    let ask = |head: String| async move {
        let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out).await;
        out
    };
    // Over 64 KiB announced: 413 before a byte of it is read; at the cap, read and judged.
    let big = ask(format!(
        "POST /api/v1/bans HTTP/1.1\r\nAuthorization: Bearer {ops}\r\nContent-Length: 65537\r\n\r\n"
    ))
    .await;
    assert!(big.starts_with("HTTP/1.1 413"), "{big}");
    let body = format!("{{\"user\": \"{}\"}}", "u".repeat(65_536 - 12));
    assert_eq!(body.len(), 65_536);
    let at_cap = ask(format!(
        "POST /api/v1/bans HTTP/1.1\r\nAuthorization: Bearer {ops}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ))
    .await;
    assert!(
        at_cap.starts_with("HTTP/1.1 200"),
        "{}",
        &at_cap[..at_cap.len().min(200)]
    );
    // A body that never comes: the connection is closed unanswered (5 s for the whole request).
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(
        format!("POST /api/v1/bans HTTP/1.1\r\nAuthorization: Bearer {ops}\r\nContent-Length: 10\r\n\r\n{{")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(20), s.read_to_end(&mut out)).await;
    assert!(
        matches!(read, Ok(Ok(0))) && out.is_empty(),
        "{read:?} {out:?}"
    );
}

/// [MQTT-3.2.0-1]: the first packet the Server sends is a CONNACK. A session kicked before its
/// broker's CONNACK reached it gets a refusing CONNACK (0x87), not a DISCONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_kicked_before_its_connack_gets_a_refusing_connack() {
    use mqtt_inspect::{Packet, ProtocolVersion, decode};
    let _serial = SERIAL.lock().await;
    // A "broker" that accepts and never answers: the session waits for its CONNACK.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("admin-tokens");
    let (ops, viewer) = token_file(&tokens);
    let mut setup = Setup::new(&pki);
    setup.admin_extra = format!("api_tokens_file = \"{}\"", tokens.display());
    setup.upstream_keys = Some(format!("address = \"{silent_addr}\""));
    let gw = setup.start().await;
    let cert = pki.client("device-early", None, Flaw::None);
    let mut c = support::reload::tls13(&gw, &pki, &cert).await;
    c.send(&support::connect_frame(
        ProtocolVersion::V5,
        "early",
        None,
        None,
    ))
    .await;
    // Listed once its CONNECT went upstream.
    let id = loop {
        let (_, body) = curl(
            &gw,
            "GET",
            "/api/v1/sessions?client_id=early",
            Some(&viewer),
        )
        .await;
        if let Some(s) = sessions(&body).first() {
            break s["id"].as_u64().unwrap();
        }
        tokio::task::yield_now().await;
    };
    let (status, _) = curl(&gw, "DELETE", &format!("/api/v1/sessions/{id}"), Some(&ops)).await;
    assert_eq!(status, 200);
    let frame = c.recv().await.expect("an answer");
    match decode(&frame, ProtocolVersion::V5) {
        Ok(Packet::Connack(ack)) => assert_eq!(
            ack.code,
            mqtt_inspect::ConnackCode::V5(ReasonCode::NotAuthorized)
        ),
        other => panic!("not a CONNACK: {other:?}"),
    }
    assert!(c.recv().await.is_none(), "closed");
    held.abort();
}
