//! Credentials that expire (issue 22; contract `lifecycle.md`): JWT device tokens as the CONNECT
//! password (3.1.1 and 5) and as MQTT 5 Authentication Data, every session ended when its
//! credential ends (DISCONNECT 0xA0), MQTT 5 re-authentication (AUTH 0x19 → AUTH 0x00, or 0x87),
//! per-listener authentication methods, JWKS reloads, and token principals and groups in the
//! policy. Real Mosquitto, real `mosquitto_pub`, real TLS; each refusal beside the case that works,
//! with its metric and audit line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::PathBuf;
use std::time::Duration;

use e2e::MqttVersion;
use jsonwebtoken::Algorithm;
use mqtt_gateway::auth::token_issuer::Issuer;
use mqtt_inspect::{Packet, Property, ProtocolVersion, ReasonCode, decode};
use serde_json::{Value, json};
use support::reload::{replace, still_served};
use support::wire::{ConnectSpec, PlainWire, TlsWire};
use support::{
    Flaw, Pki, Setup, TestGateway, auth_failures, client_tls, enforcement_setup, sample,
};

const AUDIENCE: &str = "mqtt-gateway";
const ISSUER: &str = "https://issuer.test";
/// Long enough for any step of these tests; the expiry tests wait for the event itself.
const EVENT: Duration = Duration::from_secs(30);

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims for `sub`, valid for `secs` from now.
/// The tests of this file run one at a time. The metrics recorder is global to the test process, so
/// every gateway started here counts into the same `auth_failures_total{listener="plain",...}`
/// series, and a test that checks a count went up by one would also see another test's refusals
/// (seen: "wrong audience" counted +2 while another test refused a token with bad claims).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn claims(sub: &str, secs: u64) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + secs})
}

/// A key set file with `issuers`' keys, in a directory of its own.
struct Jwks {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Jwks {
    fn new(issuers: &[&Issuer]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, Issuer::jwks(issuers)).unwrap();
        Self { _dir: dir, path }
    }
}

/// `[auth]` with passwords (principal from the user name) and tokens.
fn token_auth(jwks: &Jwks, extra: &str) -> String {
    format!(
        "[auth]\nallow_anonymous = false\nprincipal_from = \"username\"\ncert_is_credential = true\n\
         password_file = \"passwords\"\n\n[auth.token]\njwks_file = \"{}\"\nissuer = \"{ISSUER}\"\n\
         audience = \"{AUDIENCE}\"\nmax_lifetime = \"1h\"\nleeway = \"0s\"\ngroups_claim = \"groups\"\n{extra}",
        jwks.path.display()
    )
}

async fn token_gateway(pki: &Pki, jwks: &Jwks, policy: Option<String>) -> TestGateway {
    let mut setup = enforcement_setup(pki);
    setup.auth = token_auth(jwks, "");
    if let Some(p) = policy {
        setup.policy = p;
    }
    setup.start().await
}

async fn pub_with_token(
    gw: &TestGateway,
    version: MqttVersion,
    user: &str,
    token: &str,
    client_id: &str,
) -> e2e::CliOutput {
    let addr = gw.plain_addr();
    let args = [
        "-u", user, "-P", token, "-i", client_id, "-t", "t/x", "-m", "hi", "-q", "1",
    ]
    .map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        e2e::mosquitto_pub(addr, version, &args)
    })
    .await
    .unwrap()
    .unwrap()
}

/// lifecycle.md "On the wire": a token is the CONNECT password (3.1.1 and 5); a bad, unknown-key,
/// expired, too-long-lived or wrong-audience token gets CONNACK 0x86 / 3.1.1 code 4, the answer
/// of a wrong password ([MQTT-3.1.4-2], [MQTT-3.2.2-7]: then the connection closes), each counted
/// with its own reason and audited. `none` and HS256 keyed with the public key are refused
/// whatever the key set says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_with_a_token_is_let_in_and_every_bad_token_is_refused() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    let key = Issuer::new("k1", Algorithm::ES256).unwrap();
    let rsa = Issuer::new("k2", Algorithm::RS256).unwrap();
    let other = Issuer::new("k1", Algorithm::ES256).unwrap();
    let jwks = Jwks::new(&[&key, &rsa]);
    let gw = token_gateway(&pki, &jwks, None).await;
    let public_jwk = key.jwk().to_string();

    let bad: Vec<(&str, String, &str)> = vec![
        ("expired", key.mint(&json!({"sub": "dev-1", "iss": ISSUER, "aud": AUDIENCE, "iat": now() - 120, "exp": now() - 60})).unwrap(), "token_expired"),
        ("forged (another key under k1)", other.mint(&claims("dev-1", 600)).unwrap(), "token_signature"),
        ("alg none", Issuer::unsigned("k1", &claims("dev-1", 600)), "token_signature"),
        ("HS256 keyed with the public key", Issuer::hmac("k1", public_jwk.as_bytes(), &claims("dev-1", 600)).unwrap(), "token_signature"),
        ("unknown kid", Issuer::new("k9", Algorithm::ES256).unwrap().mint(&claims("dev-1", 600)).unwrap(), "token_unknown_key"),
        ("wrong audience", key.mint(&json!({"sub": "dev-1", "iss": ISSUER, "aud": "another-service", "iat": now(), "exp": now() + 600})).unwrap(), "token_claims"),
        ("too long-lived", key.mint(&claims("dev-1", 7200)).unwrap(), "token_claims"),
    ];
    for version in [MqttVersion::V311, MqttVersion::V5] {
        // The good cases: ES256 and RS256.
        for (n, issuer) in [&key, &rsa].into_iter().enumerate() {
            let id = format!("good-{version}-{n}");
            let out = pub_with_token(
                &gw,
                version,
                "dev-1",
                &issuer.mint(&claims("dev-1", 600)).unwrap(),
                &id,
            )
            .await;
            assert!(out.success(), "{version} good token: {out:?}");
            // The broker sees the principal, never the token.
            assert_eq!(
                support::broker_saw(&gw, &id),
                Some(Some("dev-1".to_owned()))
            );
        }
        for (name, token, reason) in &bad {
            let before = auth_failures(&gw, "plain", reason).await;
            let id = format!("bad-{version}-{}", name.replace(' ', "-"));
            let out = pub_with_token(&gw, version, "dev-1", token, &id).await;
            assert!(!out.success(), "{version} {name}: let in: {out:?}");
            let said = out.stderr.to_lowercase();
            assert!(
                said.contains("bad user name or password"),
                "{version} {name}: {out:?}"
            );
            assert_eq!(
                auth_failures(&gw, "plain", reason).await,
                before + 1.0,
                "{version} {name}"
            );
            let line = gw
                .audit_line(|v| v["event"] == "auth_failed" && v["client_id"] == id.as_str())
                .await
                .unwrap_or_else(|| panic!("{version} {name}: no audit line"));
            assert_eq!(line["reason"], *reason, "{line}");
            assert!(line["detail"].is_string(), "{line}");
            assert_eq!(support::broker_saw(&gw, &id), None, "{version} {name}");
        }
        // A user name, when sent, must be the token's principal.
        let before = auth_failures(&gw, "plain", "token_claims").await;
        let out = pub_with_token(
            &gw,
            version,
            "dev-2",
            &key.mint(&claims("dev-1", 600)).unwrap(),
            &format!("other-user-{version}"),
        )
        .await;
        assert!(!out.success(), "{out:?}");
        assert_eq!(
            auth_failures(&gw, "plain", "token_claims").await,
            before + 1.0
        );
    }
    let log = gw.broker.log();
    assert!(
        !log.contains(&key.mint(&claims("dev-1", 600)).unwrap()[..20]),
        "{log}"
    );
}

/// The audit line `event` about `client_id` (waited for; panics when none comes).
async fn audited(gw: &TestGateway, event: &str, client_id: &str) -> Value {
    gw.audit_line(|v| v["event"] == event && v["client_id"] == client_id)
        .await
        .unwrap_or_else(|| panic!("no {event} line for {client_id}"))
}

/// A CONNECT (MQTT 5) with `auth_method` "JWT" and `token` as Authentication Data.
fn token_connect(client_id: &str, token: &str, will: Option<&'static str>) -> Vec<u8> {
    ConnectSpec {
        client_id,
        properties: vec![
            Property::AuthenticationMethod("JWT"),
            Property::AuthenticationData(token.as_bytes()),
        ],
        will: will.map(|t| (t, Vec::new())),
        ..ConnectSpec::default()
    }
    .encode(ProtocolVersion::V5)
}

/// An MQTT 5 AUTH: re-authenticate (0x19) with `method` and `token`.
fn reauth(method: &str, token: &str) -> Vec<u8> {
    let mut props = Vec::new();
    mqtt_inspect::encode_properties(
        &[
            Property::AuthenticationMethod(method),
            Property::AuthenticationData(token.as_bytes()),
        ],
        &mut props,
    )
    .unwrap();
    let auth = mqtt_inspect::Auth {
        reason: ReasonCode::ReAuthenticate,
        properties: mqtt_inspect::Properties::parse(&props, mqtt_inspect::PropertyContext::Auth)
            .unwrap(),
    };
    let mut out = Vec::new();
    auth.encode(ProtocolVersion::V5, &mut out).unwrap();
    out
}

/// Connects with a token as Authentication Data: CONNACK success, carrying the method back.
async fn token_session(
    gw: &TestGateway,
    client_id: &str,
    token: &str,
    will: Option<&'static str>,
) -> PlainWire {
    let mut c = PlainWire::plain(gw.plain_addr(), ProtocolVersion::V5).await;
    c.send(&token_connect(client_id, token, will)).await;
    let frame = c.recv().await.expect("CONNACK");
    let Ok(Packet::Connack(a)) = decode(&frame, ProtocolVersion::V5) else {
        panic!("not a CONNACK: {frame:?}")
    };
    assert!(a.code.is_success(), "{client_id}: {a:?}");
    // §4.12: the CONNACK of an enhanced authentication names its method.
    assert_eq!(a.properties.authentication_method(), Some("JWT"));
    c
}

/// The next frame within [`EVENT`] is a DISCONNECT with `reason`, then the connection closes.
async fn ended_with(c: &mut PlainWire, reason: ReasonCode) {
    let frame = c.frame_within(EVENT).await;
    let Ok(Packet::Disconnect(d)) = decode(&frame, ProtocolVersion::V5) else {
        panic!("not a DISCONNECT: {frame:?}")
    };
    assert_eq!(d.reason, reason);
    c.assert_eof_within(EVENT).await;
}

/// lifecycle.md: every session ends when its credential ends (DISCONNECT 0xA0 first, audited
/// `credential_expired`, `sessions_closed_total{reason="credential_expired"}`); a client that
/// re-authenticates with AUTH 0x19 before then gets AUTH 0x00 and stays past the first token's
/// `exp` ([MQTT-4.12.1-1]); a re-authentication with an expired token or another principal's ends
/// the session with 0x87 ([MQTT-4.12.1-2]). The broker hears of none of it; the expired session's
/// Will is discarded, a dropped one's is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_session_ends_at_exp_unless_it_reauthenticates() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    let key = Issuer::new("k1", Algorithm::EdDSA).unwrap();
    let jwks = Jwks::new(&[&key]);
    let gw = token_gateway(&pki, &jwks, None).await;
    let mut watcher = support::reload::broker_watcher(&gw).await;
    let closed = "mqtt_gateway_sessions_closed_total{reason=\"credential_expired\"}";
    let expired_before = gw.metric(closed).await;
    let reauth_ok = gw
        .metric("mqtt_gateway_reauthentications_total{result=\"ok\"}")
        .await;
    let reauth_failed = gw
        .metric("mqtt_gateway_reauthentications_total{result=\"failed\"}")
        .await;

    // Sessions whose tokens end in 4 s, and two on long tokens: one that will re-authenticate
    // with the expired token, and one with a Will as a control.
    let short = key.mint(&claims("dev-1", 4)).unwrap();
    let mut expiring = token_session(&gw, "expiring", &short, Some("will/expiring")).await;
    let mut renewed = token_session(&gw, "renewed", &short, None).await;
    let mut late =
        token_session(&gw, "late", &key.mint(&claims("dev-1", 600)).unwrap(), None).await;
    let mut thief = token_session(&gw, "thief", &short, None).await;
    let control = token_session(
        &gw,
        "control",
        &key.mint(&claims("dev-1", 600)).unwrap(),
        Some("will/control"),
    )
    .await;

    // Renewed before expiry: AUTH 0x00 with the method.
    renewed
        .send(&reauth("JWT", &key.mint(&claims("dev-1", 600)).unwrap()))
        .await;
    let frame = renewed.recv().await.expect("AUTH");
    let Ok(Packet::Auth(a)) = decode(&frame, ProtocolVersion::V5) else {
        panic!("not an AUTH: {frame:?}")
    };
    assert_eq!(a.reason, ReasonCode::Success);
    assert_eq!(a.properties.authentication_method(), Some("JWT"));
    // Another principal's token: 0x87, audited.
    thief
        .send(&reauth("JWT", &key.mint(&claims("dev-2", 600)).unwrap()))
        .await;
    ended_with(&mut thief, ReasonCode::NotAuthorized).await;
    let line = audited(&gw, "reauthentication_failed", "thief").await;
    assert_eq!(line["reason"], "principal_changed", "{line}");

    // The first token expires: its session is cut with 0xA0 and audited.
    ended_with(&mut expiring, ReasonCode::MaximumConnectTime).await;
    let line = audited(&gw, "credential_expired", "expiring").await;
    assert_eq!(line["reason"], "token", "{line}");
    assert_eq!(line["principal"], "dev-1", "{line}");
    // Past that exp, the renewed session is still served and publishes.
    still_served(&mut renewed).await;
    renewed
        .send(&support::wire::publish(
            ProtocolVersion::V5,
            "t/renewed",
            1,
            5,
            &[],
            b"x",
        ))
        .await;
    let got = renewed.next("PUBACK").await;
    support::wire::assert_broker_ack(&got, mqtt_inspect::AckKind::Puback, 5);
    // A re-authentication with an expired token (the first one): 0x87.
    late.send(&reauth("JWT", &short)).await;
    ended_with(&mut late, ReasonCode::NotAuthorized).await;
    let line = audited(&gw, "reauthentication_failed", "late").await;
    assert_eq!(line["reason"], "token_expired", "{line}");

    assert!(gw.metric(closed).await >= expired_before + 1.0);
    assert!(
        gw.metric("mqtt_gateway_reauthentications_total{result=\"ok\"}")
            .await
            >= reauth_ok + 1.0
    );
    assert!(
        gw.metric("mqtt_gateway_reauthentications_total{result=\"failed\"}")
            .await
            >= reauth_failed + 2.0
    );
    assert!(
        sample(
            &gw,
            "mqtt_gateway_sessions_closed_total",
            &[("reason", "reauthentication_failed")]
        )
        .await
            >= 2.0
    );

    // The expired session's Will was discarded: the control session drops without a DISCONNECT,
    // and the first Will the broker publishes is the control's.
    drop(control);
    let mut seen = Vec::new();
    while seen.last().is_none_or(|t| t != "will/control") {
        seen.push(support::reload::next_topic(&mut watcher).await);
    }
    assert!(!seen.iter().any(|t| t == "will/expiring"), "{seen:?}");
    // The broker never saw an AUTH, the method or a token.
    let log = gw.broker.log();
    assert!(
        !log.contains("AUTH") && !log.contains("JWT") && !log.contains(&short[..20]),
        "{log}"
    );
    renewed.disconnect().await;
}

/// lifecycle.md: "at the earliest of the client certificate's notAfter and the token's exp, the
/// session is closed". A certificate that expires during a session ends it (0xA0, audited with
/// reason `certificate`); a bystander with a longer certificate stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_expires_during_the_session_ends_it() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    let gw = Setup::new(&pki).start().await;
    let short = pki.client_until(
        "short-lived",
        time::OffsetDateTime::now_utc() + time::Duration::seconds(4),
    );
    let long = pki.client("bystander", None, Flaw::None);
    let mut s = support::reload::connected(&gw, &pki, &short, "short-lived").await;
    let mut b = support::reload::connected(&gw, &pki, &long, "bystander").await;
    let frame = s.frame_within(EVENT).await;
    let Ok(Packet::Disconnect(d)) = decode(&frame, ProtocolVersion::V5) else {
        panic!("not a DISCONNECT: {frame:?}")
    };
    assert_eq!(d.reason, ReasonCode::MaximumConnectTime);
    s.assert_eof_within(EVENT).await;
    let line = audited(&gw, "credential_expired", "short-lived").await;
    assert_eq!(line["reason"], "certificate", "{line}");
    assert!(line["cert_serial"].is_string(), "{line}");
    still_served(&mut b).await;
}

/// Issue 22 item 4: `[[listener]] auth` narrows the methods a listener accepts. With
/// `auth = ["certificate"]` on the TLS listener, a password login there is refused (0x86 / code
/// 4, `auth_failures_total{reason="method_not_allowed"}`, audited) while the plain listener
/// accepts it; a device certificate is accepted on the TLS listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_accepts_only_its_methods() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    let key = Issuer::new("k1", Algorithm::ES256).unwrap();
    let jwks = Jwks::new(&[&key]);
    let hash = mqtt_gateway::auth::hash_mosquitto_pbkdf2(b"pw", 1000).unwrap();
    let mut setup = enforcement_setup(&pki);
    setup.auth = format!(
        "[auth]\nprincipal_from = \"cert_cn\"\ncert_is_credential = true\npassword_file = \"passwords\"\n\
         [auth.token]\njwks_file = \"{}\"\naudience = \"{AUDIENCE}\"\n",
        jwks.path.display()
    );
    setup.passwords = format!("alice:{hash}\n");
    setup.client_auth = "optional";
    setup.mqtts_extra = "auth = [\"certificate\"]".to_owned();
    let gw = setup.start().await;
    let no_cert = client_tls(&pki, None, &[&rustls::version::TLS13]);
    for version in support::wire::VERSIONS {
        let before = auth_failures(&gw, "mqtts", "method_not_allowed").await;
        let mut c = TlsWire::tls(gw.tls_addr(), no_cert.clone(), version).await;
        let id = format!("alice-{}", version.level());
        let code = c
            .connect(&support::connect_frame(
                version,
                &id,
                Some("alice"),
                Some(b"pw"),
            ))
            .await;
        assert_eq!(code, support::wire::per_version(version, 4, 0x86));
        c.assert_closed().await;
        assert_eq!(
            auth_failures(&gw, "mqtts", "method_not_allowed").await,
            before + 1.0
        );
        let line = gw
            .audit_line(|v| v["event"] == "auth_failed" && v["client_id"] == id.as_str())
            .await
            .expect("audit line");
        assert_eq!(line["reason"], "method_not_allowed", "{line}");
        assert_eq!(line["detail"], "password", "{line}");
        // A token there: refused the same way.
        let token = key
            .mint(&json!({"sub": "alice", "aud": AUDIENCE, "exp": now() + 60}))
            .unwrap();
        let mut c = TlsWire::tls(gw.tls_addr(), no_cert.clone(), version).await;
        let code = c
            .connect(&support::connect_frame(
                version,
                &format!("tok-{id}"),
                Some("alice"),
                Some(token.as_bytes()),
            ))
            .await;
        assert_eq!(code, support::wire::per_version(version, 4, 0x86));
        // The same password on the plain listener: accepted.
        let mut p = PlainWire::plain(gw.plain_addr(), version).await;
        let code = p
            .connect(&support::connect_frame(
                version,
                &id,
                Some("alice"),
                Some(b"pw"),
            ))
            .await;
        assert_eq!(code, 0);
        // And a token there too.
        let mut p = PlainWire::plain(gw.plain_addr(), version).await;
        let code = p
            .connect(&support::connect_frame(
                version,
                &format!("tok-{id}"),
                Some("alice"),
                Some(token.as_bytes()),
            ))
            .await;
        assert_eq!(code, 0);
    }
    // `check` prints what each listener accepts.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mqtt-gateway"))
        .args(["check", "--config"])
        .arg(&gw.config_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("listener mqtts: accepts certificate\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("listener plain: accepts password, token\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("auth.token: 1 key(s) in the JWKS"),
        "{stdout}"
    );
    // A JWKS that holds a private key is refused, with the key named.
    let mut leaked = key.jwk().clone();
    leaked["d"] = json!("AAAA");
    replace(&jwks.path, &json!({"keys": [leaked]}).to_string());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mqtt-gateway"))
        .args(["check", "--config"])
        .arg(&gw.config_path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains("auth.token.jwks_file")
            && stderr.contains("keys[0] (kid \"k1\")")
            && stderr.contains("private"),
        "{stderr}"
    );
    // A device certificate on the TLS listener: accepted.
    let dev = pki.client("dev-9", None, Flaw::None);
    let mut c = support::reload::connected(&gw, &pki, &dev, "dev-9").await;
    still_served(&mut c).await;
}

/// Issue 22 item 2: "A key removed from the JWKS on reload ends the live sessions it
/// authenticated": the sessions on the removed key are cut (0x98, `sessions_revoked_total{reason=
/// "token"}`, audited), those on the kept key stay; the key's tokens are refused afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwks_reload_that_drops_a_key_ends_its_sessions_only() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    let k1 = Issuer::new("k1", Algorithm::ES256).unwrap();
    let k2 = Issuer::new("k2", Algorithm::EdDSA).unwrap();
    let jwks = Jwks::new(&[&k1, &k2]);
    let gw = token_gateway(&pki, &jwks, None).await;
    let hup = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);
    let mut on_k1 =
        token_session(&gw, "on-k1", &k1.mint(&claims("dev-1", 600)).unwrap(), None).await;
    let mut on_k2 =
        token_session(&gw, "on-k2", &k2.mint(&claims("dev-2", 600)).unwrap(), None).await;
    let series = "mqtt_gateway_sessions_revoked_total{reason=\"token\"}";
    let before = gw.metric(series).await;

    replace(&jwks.path, &Issuer::jwks(&[&k2]));
    hup.send(()).await.unwrap();
    ended_with(&mut on_k1, ReasonCode::AdministrativeAction).await;
    let line = audited(&gw, "session_revoked", "on-k1").await;
    assert_eq!(line["reason"], "token", "{line}");
    assert!(gw.metric(series).await >= before + 1.0);
    still_served(&mut on_k2).await;
    // k1's tokens are now unknown; k2's still work.
    let mut c = PlainWire::plain(gw.plain_addr(), ProtocolVersion::V5).await;
    c.send(&token_connect(
        "again",
        &k1.mint(&claims("dev-1", 600)).unwrap(),
        None,
    ))
    .await;
    let frame = c.recv().await.expect("CONNACK");
    assert!(
        matches!(decode(&frame, ProtocolVersion::V5), Ok(Packet::Connack(a)) if a.code.to_u8() == 0x86),
        "{frame:?}"
    );
    token_session(
        &gw,
        "k2-again",
        &k2.mint(&claims("dev-2", 600)).unwrap(),
        None,
    )
    .await;
    // A key set that cannot be used is refused whole (audited with the file and the key); the
    // last good one stays in force.
    let rejected = "mqtt_gateway_reloads_total{source=\"jwks\",result=\"rejected\"}";
    let before = gw.metric(rejected).await;
    replace(
        &jwks.path,
        r#"{"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}"#,
    );
    hup.send(()).await.unwrap();
    let line = gw
        .audit_line(|v| v["event"] == "reload_rejected" && v["reason"] == "jwks")
        .await
        .expect("reload_rejected line");
    let detail = line["detail"].as_str().unwrap();
    assert!(
        detail.contains("jwks.json") && detail.contains("kid \"s\"") && detail.contains("\"k\""),
        "{line}"
    );
    assert!(gw.metric(rejected).await >= before + 1.0);
    still_served(&mut on_k2).await;
    token_session(
        &gw,
        "k2-after-bad-reload",
        &k2.mint(&claims("dev-2", 600)).unwrap(),
        None,
    )
    .await;
}

/// Issue 22: `%u` rules and `groups_claim` groups work for token principals, and `policy explain`
/// takes the same inputs (`--group`, `--token`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_principals_and_groups_meet_the_policy() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    let key = Issuer::new("k1", Algorithm::ES256).unwrap();
    let jwks = Jwks::new(&[&key]);
    let policy = "version = 1\n\n[[connect]]\nwho = { any = true }\nclient_ids = [\"*\"]\n\n\
                  [[rule]]\nwho = { groups = [\"fleet\"] }\nallow = [\"publish\"]\ntopics = [\"fleet/%u/#\"]\n"
        .to_owned();
    let gw = token_gateway(&pki, &jwks, Some(policy)).await;
    let in_fleet = key
        .mint(&json!({"sub": "dev-1", "iss": ISSUER, "aud": AUDIENCE, "exp": now() + 600, "groups": ["fleet"]}))
        .unwrap();
    let outside = key.mint(&claims("dev-1", 600)).unwrap();
    // Allowed: Mosquitto's own PUBACK (0x10, "no matching subscribers": nobody listens).
    for (token, id, own, other) in [
        (&in_fleet, "member", 0x10, 0x87),
        (&outside, "outsider", 0x87, 0x87),
    ] {
        let mut c = token_session(&gw, id, token, None).await;
        for (topic, want, pid) in [("fleet/dev-1/t", own, 1u16), ("fleet/dev-2/t", other, 2)] {
            c.send(&support::wire::publish(
                ProtocolVersion::V5,
                topic,
                1,
                pid,
                &[],
                b"x",
            ))
            .await;
            assert_eq!(
                c.next("PUBACK").await,
                support::wire::got_ack(mqtt_inspect::AckKind::Puback, pid, want),
                "{id} {topic}"
            );
        }
    }
    // `policy explain`, with a group, and with the token itself.
    let explain = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_mqtt-gateway"))
            .args(["policy", "explain", "--config"])
            .arg(&gw.config_path)
            .args(args)
            .output()
            .unwrap()
    };
    let allowed = explain(&[
        "--principal",
        "dev-1",
        "--group",
        "fleet",
        "--publish",
        "fleet/dev-1/t",
    ]);
    assert!(allowed.status.success(), "{allowed:?}");
    let denied = explain(&["--principal", "dev-1", "--publish", "fleet/dev-1/t"]);
    assert_eq!(denied.status.code(), Some(3), "{denied:?}");
    let by_token = explain(&["--token", &in_fleet, "--publish", "fleet/dev-1/t"]);
    assert!(by_token.status.success(), "{by_token:?}");
    assert!(
        String::from_utf8_lossy(&by_token.stdout)
            .contains("principal \"dev-1\", groups [\"fleet\"]")
    );
    let bad = explain(&[
        "--token",
        &Issuer::unsigned("k1", &claims("dev-1", 60)),
        "--publish",
        "fleet/dev-1/t",
    ]);
    assert!(!bad.status.success(), "{bad:?}");
}

/// docs/guide-device-tokens.md works as written: `device-token.sh keygen` makes the JWKS the
/// gateway loads, `device-token.sh mint` a token `mosquitto_pub -P` logs in with (3.1.1 and 5),
/// and a token minted for another audience is refused (return code 4 / 0x86).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guide_mints_a_token_that_mosquitto_pub_can_use() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let script = e2e::workspace_root().join("docs/examples/device-token.sh");
    let key = dir.path().join("signing.key");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("bash")
            .arg(&script)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let jwks_text = run(&["keygen", key.to_str().unwrap(), "fleet-1"]);
    let jwks = Jwks::new(&[]);
    std::fs::write(&jwks.path, &jwks_text).unwrap();
    let mut setup = enforcement_setup(&pki);
    setup.auth = format!(
        "[auth]\nprincipal_from = \"username\"\npassword_file = \"passwords\"\n\
         [auth.token]\njwks_file = \"{}\"\naudience = \"mqtt-gateway\"\nmax_lifetime = \"24h\"\n",
        jwks.path.display()
    );
    let gw = setup.start().await;
    let token = run(&["mint", key.to_str().unwrap(), "fleet-1", "sensor-7", "3600"]);
    let foreign = run(&[
        "mint",
        key.to_str().unwrap(),
        "fleet-1",
        "sensor-7",
        "3600",
        "another-service",
    ]);
    for version in [MqttVersion::V311, MqttVersion::V5] {
        let out = pub_with_token(
            &gw,
            version,
            "sensor-7",
            &token,
            &format!("guide-{version}"),
        )
        .await;
        assert!(out.success(), "{version}: {out:?}");
        let out = pub_with_token(
            &gw,
            version,
            "sensor-7",
            &foreign,
            &format!("guide-foreign-{version}"),
        )
        .await;
        assert!(!out.success(), "{version}: {out:?}");
        assert!(
            out.stderr
                .to_lowercase()
                .contains("bad user name or password"),
            "{out:?}"
        );
    }
}

/// Issue 22 item 2: refused tokens "feed the ban counters" like wrong passwords: three forged
/// tokens from one address ban it (the next connection, with a good token, is closed before any
/// CONNACK: `connections_total{outcome="banned"}`), while another address still logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_tokens_count_towards_the_ban() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    let key = Issuer::new("k1", Algorithm::ES256).unwrap();
    let forger = Issuer::new("k1", Algorithm::ES256).unwrap();
    let jwks = Jwks::new(&[&key]);
    let mut setup = Setup::new(&pki);
    setup.auth = token_auth(&jwks, "");
    setup.limits =
        "auth_failures_before_ban = 3\nban_window = \"1m\"\nban_duration = \"1m\"\n".to_owned();
    let gw = setup.start().await;
    let banned = "mqtt_gateway_connections_total{listener=\"plain\",outcome=\"banned\"}";
    let before = gw.metric(banned).await;
    let login = |from: &'static str, token: String, id: String| {
        let addr = gw.plain_addr();
        async move {
            let mut c = PlainWire::plain_from(addr, from, ProtocolVersion::V311)
                .await
                .unwrap();
            let frame = support::connect_frame(
                ProtocolVersion::V311,
                &id,
                Some("dev-1"),
                Some(token.as_bytes()),
            );
            let _ = c.try_send(&frame).await;
            c.recv().await
        }
    };
    for i in 0..3 {
        let forged = forger.mint(&claims("dev-1", 600)).unwrap();
        assert_eq!(
            login("127.0.0.1", forged, format!("f{i}")).await,
            Some(vec![0x20, 2, 0, 4]),
            "forged token {i}: return code 4"
        );
    }
    let good = key.mint(&claims("dev-1", 600)).unwrap();
    assert_eq!(
        login("127.0.0.1", good.clone(), "g1".to_owned()).await,
        None,
        "banned: closed before CONNACK"
    );
    assert!(gw.metric(banned).await >= before + 1.0);
    assert_eq!(
        login("127.0.0.2", good, "g2".to_owned()).await,
        Some(vec![0x20, 2, 0, 0]),
        "another address logs in"
    );
}

/// A token over mTLS: the certificate and the token must name the same client. A device whose
/// certificate (CN `dev-1`) matches its token's `sub` is let in over TLS; the same certificate with
/// another device's token (and that device's user name, which the token allows) is refused (MQTT 5 0x87 / 3.1.1 code 5, `bad_credentials`, audited under
/// the token's principal), as a user name naming another account is ([MQTT-3.1.4-2]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_and_a_token_must_name_the_same_client() {
    let _one_at_a_time = ONE_AT_A_TIME.lock().await;
    let pki = Pki::new();
    let key = Issuer::new("k1", Algorithm::ES256).unwrap();
    let jwks = Jwks::new(&[&key]);
    let mut setup = enforcement_setup(&pki);
    setup.auth = format!(
        "[auth]\nprincipal_from = \"cert_cn\"\ncert_is_credential = true\n\
         [auth.token]\njwks_file = \"{}\"\naudience = \"{AUDIENCE}\"\n",
        jwks.path.display()
    );
    let gw = setup.start().await;
    let cert = pki.client("dev-1", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), &[&rustls::version::TLS13]);
    let token = |sub: &str| {
        key.mint(&json!({"sub": sub, "aud": AUDIENCE, "exp": now() + 600}))
            .unwrap()
    };
    for version in support::wire::VERSIONS {
        let before = auth_failures(&gw, "mqtts", "bad_credentials").await;
        let id = format!("mixed-{}", version.level());
        let mut c = TlsWire::tls(gw.tls_addr(), tls.clone(), version).await;
        let other = token("dev-2");
        let code = c
            .connect(&support::connect_frame(
                version,
                &id,
                Some("dev-2"),
                Some(other.as_bytes()),
            ))
            .await;
        assert_eq!(code, support::wire::per_version(version, 5, 0x87));
        c.assert_closed().await;
        assert_eq!(
            auth_failures(&gw, "mqtts", "bad_credentials").await,
            before + 1.0
        );
        let line = audited(&gw, "auth_failed", &id).await;
        assert_eq!(line["principal"], "dev-2", "{line}");
        // The same certificate with its own token.
        let mut c = TlsWire::tls(gw.tls_addr(), tls.clone(), version).await;
        let own = token("dev-1");
        let code = c
            .connect(&support::connect_frame(
                version,
                &format!("own-{}", version.level()),
                Some("dev-1"),
                Some(own.as_bytes()),
            ))
            .await;
        assert_eq!(code, 0);
        still_served(&mut c).await;
    }
}
