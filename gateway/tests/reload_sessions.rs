//! Reloads against sessions that are not plain live ones, end to end (real Mosquitto, real TLS,
//! the gateway's own file watcher): a client between its TLS handshake and its CONNECT when the
//! reload comes, and what a reload does to a session's Will and to anonymous sessions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use mqtt_inspect::{Packet, ProtocolVersion, ReasonCode, decode};
use support::reload::{
    accepted, assert_accepted, broker_watcher, connected, disconnected_with, next_topic, replace,
    start_with_leaf_crl, still_served, tls13,
};
use support::{ALL_ACTIONS, Flaw, Pki, Setup, connect_frame};

/// A client whose TLS handshake was done under the old CRL but whose CONNECT comes after the
/// reload revoking it is refused at CONNECT (CONNACK 0x87), its session never reaches the broker;
/// another connection opened at the same moment is admitted. DESIGN §3: revocation reaches every
/// session, not only new handshakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_open_across_a_revocation_is_refused_at_its_connect() {
    let pki = Pki::new();
    let crl = pki.write_leaf_crl(&[]);
    let (gw, _reload) = start_with_leaf_crl(Setup::new(&pki), &crl).await;
    let victim_cert = pki.client("victim", None, Flaw::None);
    let other_cert = pki.client("bystander", None, Flaw::None);
    // A live session with the victim's certificate: its DISCONNECT shows the reload is in force.
    let mut live = connected(&gw, &pki, &victim_cert, "victim-live").await;
    // Handshakes done, no CONNECT yet.
    let mut waiting = tls13(&gw, &pki, &victim_cert).await;
    let mut bystander = tls13(&gw, &pki, &other_cert).await;
    let refused_before = gw
        .metric("mqtt_gateway_auth_failures_total{listener=\"mqtts\",reason=\"bad_credentials\"}")
        .await;

    let new_crl = std::fs::read_to_string(pki.write_leaf_crl(&[&victim_cert.serial])).unwrap();
    replace(&crl, &new_crl);
    disconnected_with(&mut live, ReasonCode::AdministrativeAction).await;

    waiting
        .try_send(&connect_frame(ProtocolVersion::V5, "victim", None, None))
        .await
        .unwrap();
    assert_eq!(
        waiting.recv().await.expect("a CONNACK"),
        [0x20, 3, 0, 0x87, 0],
        "Not authorized: the certificate was revoked after its handshake"
    );
    assert!(waiting.recv().await.is_none(), "closed after the CONNACK");
    assert!(
        gw.metric(
            "mqtt_gateway_auth_failures_total{listener=\"mqtts\",reason=\"bad_credentials\"}"
        )
        .await
            >= refused_before + 1.0
    );
    assert!(
        !gw.broker.log().contains("as victim "),
        "the refused client must never reach the broker:\n{}",
        gw.broker.log()
    );

    accepted(
        &mut bystander,
        &connect_frame(ProtocolVersion::V5, "bystander", None, None),
    )
    .await;
    still_served(&mut bystander).await;
}

/// A v5 CONNECT with a QoS 0 Will on `topic`.
fn connect_with_will(client_id: &str, topic: &str) -> Vec<u8> {
    connect_with_delayed_will(client_id, topic, None)
}

/// A v5 CONNECT with a QoS 0 Will on `topic`, with a Will Delay Interval when `delay` is given.
fn connect_with_delayed_will(client_id: &str, topic: &str, delay: Option<u32>) -> Vec<u8> {
    let mut will_props = Vec::new();
    if let Some(d) = delay {
        will_props.push(0x18);
        will_props.extend_from_slice(&d.to_be_bytes());
    }
    let c = mqtt_inspect::Connect {
        version: ProtocolVersion::V5,
        clean_start: true,
        keep_alive: 30,
        properties: mqtt_inspect::Properties::EMPTY,
        client_id,
        will: Some(mqtt_inspect::Will {
            qos: mqtt_inspect::QoS::AtMostOnce,
            retain: false,
            properties: mqtt_inspect::Properties::parse(
                &will_props,
                mqtt_inspect::PropertyContext::Will,
            )
            .unwrap(),
            topic,
            payload: b"gone",
        }),
        username: None,
        password: None,
        bridge: false,
    };
    let mut out = Vec::new();
    c.encode(&mut out).unwrap();
    out
}

/// Everyone may use open/# and will/#; the Will tests narrow it to open/# by a reload.
/// Anything on `open/#` and `will/#`.
fn will_policy() -> String {
    support::anyone(&[("allow", ALL_ACTIONS, &["open/#", "will/#"])])
}

/// The broker publishes a Will long after CONNECT, so a Will is judged again under every new
/// policy: a session whose Will the new policy refuses is ended (DISCONNECT 0x98, `policy`), and
/// the gateway tells the broker a normal DISCONNECT so that the Will is discarded, never published
/// ([MQTT-3.14.4-3]). A session whose Will stays allowed goes on, and its Will is still published
/// when it drops without a DISCONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_the_new_policy_refuses_ends_the_session_and_is_discarded() {
    let pki = Pki::new();
    let policy_v1 = will_policy();
    let mut setup = Setup::new(&pki);
    setup.policy = policy_v1.clone();
    let gw = setup.start().await;
    let _reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);
    let mut watcher = broker_watcher(&gw).await;
    let (a_cert, b_cert) = (
        pki.client("dev-a", None, Flaw::None),
        pki.client("dev-b", None, Flaw::None),
    );
    let mut sessions = Vec::new();
    for (cert, id, will) in [(&a_cert, "dev-a", "will/a"), (&b_cert, "dev-b", "open/b")] {
        let mut c = tls13(&gw, &pki, cert).await;
        accepted(&mut c, &connect_with_will(id, will)).await;
        sessions.push(c);
    }
    let mut b = sessions.pop().unwrap();
    let mut a = sessions.pop().unwrap();
    let before = gw
        .metric("mqtt_gateway_sessions_revoked_total{reason=\"policy\"}")
        .await;

    // will/# may no longer be published to.
    replace(
        &gw.dir.path().join("policy.toml"),
        &policy_v1.replace("\"open/#\", \"will/#\"", "\"open/#\""),
    );
    disconnected_with(&mut a, ReasonCode::AdministrativeAction).await;
    let line = gw
        .audit_line(|v| v["event"] == "session_revoked" && v["client_id"] == "dev-a")
        .await
        .expect("audit line");
    assert_eq!(line["reason"], "policy");
    assert!(
        gw.metric("mqtt_gateway_sessions_revoked_total{reason=\"policy\"}")
            .await
            >= before + 1.0
    );
    still_served(&mut b).await;

    // b drops without a DISCONNECT: the broker publishes its Will (allowed), and the first thing
    // the watcher sees is that Will, not dev-a's.
    drop(b);
    assert_eq!(next_topic(&mut watcher).await, "open/b");
    assert!(!gw.broker.log().contains("will/a"), "{}", gw.broker.log());
}

/// `allow_anonymous` turned off by a config reload ends the anonymous sessions (0x98, `policy`);
/// an authenticated one goes on.
///
/// DESIGN §3: "Revocation reaches live sessions. ... those no longer allowed are closed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sessions_end_when_a_reload_turns_allow_anonymous_off() {
    let pki = Pki::new();
    let mut setup = Setup::new(&pki);
    setup.auth =
        "[auth]\nallow_anonymous = true\nprincipal_from = \"cert_cn\"\ncert_is_credential = true\n"
            .into();
    // Anonymous clients may connect (by the policy too); only the config reload takes that away.
    setup.policy = format!(
        "{}\n[[connect]]\nwho = {{ anonymous = true }}\nclient_ids = [\"anon\"]\n",
        support::open_policy()
    );
    let gw = setup.start().await;
    let _reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);
    let mut anon = support::wire::PlainWire::plain_from(
        gw.running.addr("plain").unwrap(),
        "127.0.0.1",
        ProtocolVersion::V5,
    )
    .await
    .unwrap();
    anon.try_send(&connect_frame(ProtocolVersion::V5, "anon", None, None))
        .await
        .unwrap();
    assert_accepted(&anon.recv().await.expect("CONNACK"));
    let cert = pki.client("dev-1", None, Flaw::None);
    let mut authed = connected(&gw, &pki, &cert, "dev-1").await;

    let config = std::fs::read_to_string(&gw.config_path).unwrap();
    replace(
        &gw.config_path,
        &config.replace("allow_anonymous = true", "allow_anonymous = false"),
    );
    let frame = anon.recv().await.expect("a DISCONNECT from the gateway");
    let Ok(Packet::Disconnect(d)) = decode(&frame, ProtocolVersion::V5) else {
        panic!("not a DISCONNECT: {frame:?}")
    };
    assert_eq!(d.reason, ReasonCode::AdministrativeAction);
    let line = gw
        .audit_line(|v| v["event"] == "session_revoked" && v["client_id"] == "anon")
        .await
        .expect("audit line");
    assert_eq!(line["reason"], "policy");
    still_served(&mut authed).await;
}

/// A revoked device's Will that the policy still allows is left to the broker: a device's
/// "offline" message is published when its session is cut for a revoked certificate, as when it
/// drops. Only a Will the policy refuses is discarded (see the test above).
///
/// MQTT 5.0 §3.1.2.5: the Will is published when the Network Connection closes without a
/// DISCONNECT with Reason Code 0x00, so the gateway does not send one here ([MQTT-3.14.4-3] is the
/// discard it avoids).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_devices_allowed_will_is_still_published() {
    let pki = Pki::new();
    let crl = pki.write_leaf_crl(&[]);
    let (gw, _reload) = start_with_leaf_crl(Setup::new(&pki), &crl).await;
    let mut watcher = broker_watcher(&gw).await;
    let cert = pki.client("dev-w", None, Flaw::None);
    let mut c = tls13(&gw, &pki, &cert).await;
    accepted(&mut c, &connect_with_will("dev-w", "status/dev-w")).await;
    let new_crl = std::fs::read_to_string(pki.write_leaf_crl(&[&cert.serial])).unwrap();
    replace(&crl, &new_crl);
    disconnected_with(&mut c, ReasonCode::AdministrativeAction).await;
    assert_eq!(next_topic(&mut watcher).await, "status/dev-w");
}

/// A reload of `[auth]` that comes while a client is between its handshake and its CONNECT is
/// applied to that CONNECT: with `cert_is_credential` turned off, a certificate alone no longer
/// logs in (0x86), and the certificate with its password does.
///
/// DESIGN §3: "Revocation reaches live sessions"; contract ("On the wire"): a refused CONNECT
/// gets "MQTT 5 reason 0x86" / 3.1.1 return code 4, then the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_after_an_auth_reload_is_judged_by_the_new_auth_settings() {
    let pki = Pki::new();
    let hash = mqtt_gateway::auth::hash_mosquitto_pbkdf2(b"pw", 1000).unwrap();
    let mut setup = Setup::new(&pki);
    setup.passwords = format!("dev-p:{hash}\n");
    let gw = setup.start().await;
    let _reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);
    let cert = pki.client("dev-p", None, Flaw::None);
    let mut alone = tls13(&gw, &pki, &cert).await;
    let mut with_password = tls13(&gw, &pki, &cert).await;
    let series = "mqtt_gateway_reloads_total{source=\"config\",result=\"ok\"}";
    let before = gw.metric(series).await;

    let config = std::fs::read_to_string(&gw.config_path).unwrap();
    replace(
        &gw.config_path,
        &config.replace("cert_is_credential = true", "cert_is_credential = false"),
    );
    // Waits (up to a deadline) for the reload to be in force.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while gw.metric(series).await < before + 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reload never came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    alone
        .try_send(&connect_frame(ProtocolVersion::V5, "dev-p", None, None))
        .await
        .unwrap();
    assert_eq!(alone.recv().await.expect("CONNACK"), [0x20, 3, 0, 0x86, 0]);
    assert!(alone.recv().await.is_none(), "closed after the CONNACK");
    let login = connect_frame(ProtocolVersion::V5, "dev-p", Some("dev-p"), Some(b"pw"));
    accepted(&mut with_password, &login).await;
    still_served(&mut with_password).await;
}

/// Issue 20 item 2: a Will the broker holds after the connection is gone (MQTT 5 Will Delay
/// Interval) is out of the gateway's reach, so a revocation or policy change during the delay
/// could not stop it. The broker is told at most `limits.max_will_delay` (default 0: no delay):
/// - still allowed: a device asking for an hour's delay reaches the broker without one (seen by a
///   tap in front of it), and when it drops without DISCONNECT its Will is published at once,
///   under the policy that allowed it;
/// - revoked: a device whose delayed Will the new policy refuses is cut off (0x98) and the broker
///   told a normal DISCONNECT, so the Will is discarded [MQTT-3.14.4-3]: the watcher's next
///   message is a marker published after it, and the broker never logs the Will's topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_delay_is_not_left_to_the_broker() {
    let pki = Pki::new();
    let policy_v1 = will_policy();
    let mut setup = Setup::new(&pki);
    setup.policy = policy_v1.clone();
    let gw = setup.start().await;
    let tap = support::ConnectTap::between(&gw).await;
    let mut watcher = broker_watcher(&gw).await;

    // Still allowed: published at once when the device drops.
    let cert = pki.client("dev-delay-s", None, Flaw::None);
    let mut c = tls13(&gw, &pki, &cert).await;
    accepted(
        &mut c,
        &connect_with_delayed_will("dev-delay-s", "open/s", Some(3600)),
    )
    .await;
    assert_eq!(
        tap.get("dev-delay-s").will_delay,
        None,
        "the broker holds no delayed Will"
    );
    drop(c);
    assert_eq!(next_topic(&mut watcher).await, "open/s");

    // Revoked while connected: the Will is discarded.
    let cert = pki.client("dev-delay-r", None, Flaw::None);
    let mut c = tls13(&gw, &pki, &cert).await;
    accepted(
        &mut c,
        &connect_with_delayed_will("dev-delay-r", "will/r", Some(3600)),
    )
    .await;
    assert_eq!(tap.get("dev-delay-r").will_delay, None);
    std::fs::write(
        gw.dir.path().join("policy.toml"),
        policy_v1.replace("\"open/#\", \"will/#\"", "\"open/#\""),
    )
    .unwrap();
    // A new snapshot with the policy file as it is now (still through the tap).
    gw.upstream_to(tap.addr);
    disconnected_with(&mut c, ReasonCode::AdministrativeAction).await;
    drop(c);
    support::broker_pub(&gw, &["-t", "open/marker", "-m", "m"]).await;
    assert_eq!(next_topic(&mut watcher).await, "open/marker");
    assert!(!gw.broker.log().contains("will/r"), "{}", gw.broker.log());
}

/// `limits.max_will_delay` set: a longer Will Delay Interval reaches the broker lowered to it, a
/// shorter one unchanged, and both devices are served.
///
/// DESIGN §3: "Revocation reaches live sessions" (a Will the broker holds past the connection,
/// MQTT 5.0 §3.1.3.2.2, is out of its reach, so its delay is bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_will_delay_caps_what_the_broker_is_told() {
    let pki = Pki::new();
    let mut setup = Setup::new(&pki);
    setup.limits = "max_will_delay = \"30s\"".to_owned();
    let gw = setup.start().await;
    let tap = support::ConnectTap::between(&gw).await;
    for (id, asked, told) in [("dev-cap-long", 3600, 30), ("dev-cap-short", 10, 10)] {
        let cert = pki.client(id, None, Flaw::None);
        let mut c = tls13(&gw, &pki, &cert).await;
        accepted(
            &mut c,
            &connect_with_delayed_will(id, &format!("status/{id}"), Some(asked)),
        )
        .await;
        still_served(&mut c).await;
        assert_eq!(tap.get(id).will_delay, Some(told), "{id}");
    }
}
