//! Authentication and the connect phase on the wire (issue 4): password files (Mosquitto `$6$`,
//! `$7$`, the gateway's argon2id), anonymous clients, the certificate against the CONNECT user
//! name, what the broker is told (`upstream.credentials`), MQTT 5 enhanced authentication, the
//! connect rules (client-id takeover), `%u`/`%c` with unusable values, and the Will. Real
//! Mosquitto, real TLS; every refusal is checked on the wire (CONNACK code in the client's
//! version), in the metrics (increases: the registry is process-wide and tests run in parallel)
//! and in the audit log, next to the good case.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;

use mqtt_inspect::{AckKind, Property, ProtocolVersion};
use support::wire::{
    ConnectSpec, Got, PlainWire, TlsWire, VERSIONS, assert_broker_ack, connect, got_ack,
    per_version, publish, subscribe,
};
use support::{Flaw, Pki, TestGateway, client_tls};
use support::{
    acl_denied, assert_rule, audit_of, auth_failures, broker_saw, enforcement_setup, rule_line,
    sample,
};

/// Real `mosquitto_passwd` 2.0.11 output for the password `secret` (`$7$`: PBKDF2-SHA512, 101
/// iterations; `$6$`: salted SHA-512).
const ALICE_7: &str = "alice:$7$101$qOYqe1PsLjoCK/CE$JL5lDygzrA1zEyaS7Egmj+0SadwjVg7yxlQ0XXU+nLYcF0wVDb0wZrGFRubP4a47PyJ6UYYKaSN1mTgppvWkkA==";
const BOB_6: &str = "bob:$6$H4x6GM0Ll3QUI3lK$aWg4EQj5OjylX0mHYp8Uh57JDgHjMpinQFTb/NupASYJEe8mFctWDdFsHZ3lK7vmFV/vjfg1GQM5tgqv2jTFCw==";

/// The contract's example policy (`policy.example.toml`, a byte-identical copy).
const EXAMPLE_POLICY: &str = include_str!("data/policy.example.toml");

fn password_auth(allow_anonymous: bool) -> String {
    format!(
        "[auth]\nallow_anonymous = {allow_anonymous}\nprincipal_from = \"username\"\n\
         cert_is_credential = true\npassword_file = \"passwords\"\n"
    )
}

fn passwords(extra_users: &[&str]) -> String {
    let mut lines = vec![ALICE_7.to_owned(), BOB_6.to_owned()];
    // The gateway's own hash (what `mqtt-gateway passwd` writes by default).
    let argon = mqtt_gateway::auth::hash_argon2id(b"secret").unwrap();
    assert!(argon.starts_with("$argon2id$"), "{argon}");
    lines.push(format!("dave:{argon}"));
    // A `$7$` line as `mqtt-gateway passwd --mosquitto` writes it.
    let pbkdf2 = mqtt_gateway::auth::hash_mosquitto_pbkdf2(b"secret", 1000).unwrap();
    lines.push(format!("erin:{pbkdf2}"));
    for u in extra_users {
        lines.push(format!("{u}:{pbkdf2}"));
    }
    lines.join("\n") + "\n"
}

async fn plain(gw: &TestGateway, version: ProtocolVersion) -> PlainWire {
    PlainWire::plain(gw.plain_addr(), version).await
}

/// Contract, "On the wire": a refused CONNECT gets 3.1.1 return code 4 (bad user name or
/// password) or 5 (not authorized), MQTT 5 reason 0x86 or 0x87, then the connection closes.
/// A wrong password and an unknown user look the same on the wire, but are counted apart.
///
/// Enforces [MQTT-3.1.4-2] (a failed authentication check closes the Network Connection) and
/// [MQTT-3.2.2-7] (after a CONNACK Reason Code of 0x80 or more the Server MUST close it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_file_hashes_accept_the_right_password_and_refuse_the_rest() {
    let pki = Pki::new();
    let mut setup = enforcement_setup(&pki);
    setup.auth = password_auth(false);
    setup.passwords = passwords(&[]);
    let gw = setup.start().await;

    let bad_before = auth_failures(&gw, "plain", "bad_credentials").await;
    let unknown_before = auth_failures(&gw, "plain", "unknown_user").await;
    let anon_before = auth_failures(&gw, "plain", "anonymous").await;
    let mut bad = 0.0;
    for version in VERSIONS {
        // $7$ (real mosquitto_passwd), $6$ (real mosquitto_passwd), argon2id and $7$ (ours).
        for user in ["alice", "bob", "dave", "erin"] {
            let id = format!("{user}-{}", version.level());
            let mut good = plain(&gw, version).await;
            let code = good
                .connect(&connect(version, &id, Some(user), Some(b"secret")))
                .await;
            assert_eq!(code, 0, "{user} with the right password ({version:?})");
            good.ping().await;

            let mut wrong = plain(&gw, version).await;
            let code = wrong
                .connect(&connect(version, &id, Some(user), Some(b"Secret")))
                .await;
            assert_eq!(code, per_version(version, 4, 0x86), "{user} wrong password");
            wrong.assert_closed().await;
            let line = audit_of(&gw, wrong.local, "auth_failed", None, None).await;
            assert_eq!(line["reason"], "bad_credentials", "{line}");
            assert_eq!(line["listener"], "plain", "{line}");
            bad += 1.0;
            // The first client is still served.
            good.ping().await;
        }

        // A known user without a password.
        let mut nopass = plain(&gw, version).await;
        let frame = connect(version, "alice-np", Some("alice"), None);
        assert_eq!(nopass.connect(&frame).await, per_version(version, 4, 0x86));
        nopass.assert_closed().await;
        let line = audit_of(&gw, nopass.local, "auth_failed", None, None).await;
        assert_eq!(line["reason"], "bad_credentials", "{line}");
        bad += 1.0;

        // An unknown user: the same answer on the wire, another reason in the metric and audit.
        let mut unknown = plain(&gw, version).await;
        let code = unknown
            .connect(&connect(
                version,
                "mallory",
                Some("mallory"),
                Some(b"secret"),
            ))
            .await;
        assert_eq!(code, per_version(version, 4, 0x86), "unknown user");
        unknown.assert_closed().await;
        let line = audit_of(&gw, unknown.local, "auth_failed", None, None).await;
        assert_eq!(line["reason"], "unknown_user", "{line}");
        assert_eq!(line["client_id"], "mallory", "{line}");

        // No user name at all, with allow_anonymous = false: not authorized (rc 5 / 0x87).
        let mut anon = plain(&gw, version).await;
        let code = anon.connect(&connect(version, "anon", None, None)).await;
        assert_eq!(code, per_version(version, 5, 0x87), "anonymous");
        anon.assert_closed().await;
        let line = audit_of(&gw, anon.local, "auth_failed", None, None).await;
        assert_eq!(line["reason"], "anonymous", "{line}");
    }
    assert!(auth_failures(&gw, "plain", "bad_credentials").await >= bad_before + bad);
    assert!(auth_failures(&gw, "plain", "unknown_user").await >= unknown_before + 2.0);
    assert!(auth_failures(&gw, "plain", "anonymous").await >= anon_before + 2.0);
    assert!(
        sample(
            &gw,
            "mqtt_gateway_connections_total",
            &[("listener", "plain"), ("outcome", "auth_failed")]
        )
        .await
            >= bad + 4.0
    );
}

/// `[auth] allow_anonymous = true` lets a client without a user name in, as a client that
/// matches only `anonymous = true` rules; a client that does give a user name is still checked
/// (a wrong password is not demoted to anonymous).
///
/// Contract ("On the wire"): "A refused CONNECT gets a CONNACK that says why, in the client's
/// protocol version: 3.1.1 return code 4 (bad user name or password) or 5 (not authorized); MQTT 5
/// reason 0x86, 0x87 ...; then the connection closes." [MQTT-3.1.4-2].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_is_let_in_only_by_allow_anonymous_and_never_instead_of_a_bad_password() {
    let pki = Pki::new();
    let mut setup = enforcement_setup(&pki);
    setup.auth = password_auth(true);
    setup.passwords = passwords(&[]);
    setup.policy = r#"
version = 1
[[connect]]
who = { anonymous = true }
client_ids = ["*"]
[[connect]]
who = { any = true }
client_ids = ["*"]
[[rule]]
who = { anonymous = true }
allow = ["publish"]
topics = ["public/#"]
[[rule]]
who = { any = true }
allow = ["publish"]
topics = ["users/%u/#"]
"#
    .to_owned();
    let gw = setup.start().await;
    for version in VERSIONS {
        let mut anon = plain(&gw, version).await;
        assert_eq!(
            anon.connect(&connect(version, "anon-1", None, None)).await,
            0
        );
        // Its rules apply...
        anon.send(&publish(version, "public/x", 1, 1, &[], b"hi"))
            .await;
        assert_broker_ack(&anon.next("PUBACK").await, AckKind::Puback, 1);
        // ...and %u rules never match a client without a principal.
        anon.send(&publish(version, "users//x", 1, 2, &[], b"hi"))
            .await;
        assert_eq!(
            anon.next("PUBACK").await,
            got_ack(AckKind::Puback, 2, per_version(version, 0, 0x87))
        );

        let mut wrong = plain(&gw, version).await;
        let code = wrong
            .connect(&connect(version, "w", Some("alice"), Some(b"nope")))
            .await;
        assert_eq!(code, per_version(version, 4, 0x86));
        wrong.assert_closed().await;
        let line = audit_of(&gw, wrong.local, "auth_failed", None, None).await;
        assert_eq!(line["reason"], "bad_credentials", "{line}");

        let mut good = plain(&gw, version).await;
        let code = good
            .connect(&connect(version, "a", Some("alice"), Some(b"secret")))
            .await;
        assert_eq!(code, 0);
        good.ping().await;
    }
}

/// README "Who is the client": when the principal comes from the certificate, the certificate
/// wins. A certificate client that names another account in CONNECT is refused; naming itself
/// (or nobody) is fine.
///
/// Contract ("On the wire"): "A refused CONNECT gets a CONNACK that says why ...; then the
/// connection closes." [MQTT-3.1.4-2].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_certificate_wins_over_the_connect_user_name() {
    let pki = Pki::new();
    let gw = enforcement_setup(&pki).start().await;
    let cert = pki.client("dev-7", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), &[&rustls::version::TLS13]);
    let before = auth_failures(&gw, "mqtts", "bad_credentials").await;
    for version in VERSIONS {
        let v = version.level();
        let mut other = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), version).await;
        let code = other
            .connect(&connect(version, &format!("x{v}"), Some("dev-8"), None))
            .await;
        assert_eq!(
            code,
            per_version(version, 5, 0x87),
            "another account's name"
        );
        other.assert_closed().await;
        let line = audit_of(&gw, other.local, "auth_failed", None, None).await;
        assert_eq!(line["reason"], "bad_credentials", "{line}");
        assert_eq!(line["listener"], "mqtts", "{line}");
        // Logged as the certificate's principal, which claimed another account.
        assert_eq!(line["principal"], "dev-7", "{line}");
        assert_eq!(line["cert_serial"], hex(&cert.serial), "{line}");

        let mut own = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), version).await;
        let code = own
            .connect(&connect(version, &format!("own{v}"), Some("dev-7"), None))
            .await;
        assert_eq!(code, 0, "its own CN as user name");
        own.ping().await;

        let mut none = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), version).await;
        let code = none
            .connect(&connect(version, &format!("none{v}"), None, None))
            .await;
        assert_eq!(code, 0, "no user name");
        none.ping().await;
        // The broker knows both as the certificate's principal.
        assert_eq!(
            broker_saw(&gw, &format!("own{v}")),
            Some(Some("dev-7".into()))
        );
        assert_eq!(
            broker_saw(&gw, &format!("none{v}")),
            Some(Some("dev-7".into()))
        );
        assert_eq!(
            broker_saw(&gw, &format!("x{v}")),
            None,
            "never reached the broker"
        );
    }
    assert!(auth_failures(&gw, "mqtts", "bad_credentials").await >= before + 2.0);
}

/// `upstream.credentials`: "principal" replaces the user name with the authenticated principal
/// and removes the password, so the broker never sees secrets; "passthrough" forwards CONNECT
/// unchanged. Seen from the broker's side: its connection log (`u'...'`) and a tap that records
/// the CONNECT bytes it receives.
///
/// DESIGN §3: "Secrets stay put. Passwords are never logged or forwarded in
/// `credentials = "principal"` mode".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_sees_the_principal_and_no_password_or_the_connect_unchanged() {
    let pki = Pki::new();
    let cert = pki.client("dev-9", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), &[&rustls::version::TLS13]);
    for credentials in ["principal", "passthrough"] {
        let mut setup = enforcement_setup(&pki);
        setup.passwords = passwords(&[]);
        setup.credentials = credentials;
        let gw = setup.start().await;
        // Put the tap between the gateway and the broker.
        let tap = support::ConnectTap::between(&gw).await;

        // A certificate client that sends no user name.
        let mut c = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), ProtocolVersion::V5).await;
        assert_eq!(
            c.connect(&connect(ProtocolVersion::V5, "cert-client", None, None))
                .await,
            0
        );
        c.ping().await;
        // A password client on the plain listener.
        let mut p = plain(&gw, ProtocolVersion::V311).await;
        let frame = connect(
            ProtocolVersion::V311,
            "pw-client",
            Some("alice"),
            Some(b"secret"),
        );
        assert_eq!(p.connect(&frame).await, 0);
        p.ping().await;

        let by_cert = tap.get("cert-client");
        let by_pw = tap.get("pw-client");
        if credentials == "principal" {
            assert_eq!(broker_saw(&gw, "cert-client"), Some(Some("dev-9".into())));
            assert_eq!(by_cert.username.as_deref(), Some("dev-9"));
            assert_eq!(by_cert.password, None);
            assert_eq!(broker_saw(&gw, "pw-client"), Some(Some("alice".into())));
            assert_eq!(by_pw.username.as_deref(), Some("alice"));
            assert_eq!(by_pw.password, None, "the broker never sees the password");
        } else {
            assert_eq!(broker_saw(&gw, "cert-client"), Some(None), "no user name");
            assert_eq!(by_cert.username, None);
            assert_eq!(by_cert.password, None);
            assert_eq!(broker_saw(&gw, "pw-client"), Some(Some("alice".into())));
            assert_eq!(by_pw.username.as_deref(), Some("alice"));
            assert_eq!(by_pw.password.as_deref(), Some(&b"secret"[..]));
        }
    }
}

/// No MQTT 5 enhanced authentication method is implemented: a CONNECT that asks for one gets
/// CONNACK 0x8C (bad authentication method) and the connection closes; the same client without
/// it is let in.
///
/// Enforces [MQTT-4.12.0-1]: a Server that does not support the client's Authentication Method
/// MAY send CONNACK 0x8C (Bad authentication method) or 0x87 and MUST close the Network Connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authentication_method_at_connect_gets_connack_0x8c() {
    let pki = Pki::new();
    let gw = enforcement_setup(&pki).start().await;
    let cert = pki.client("dev-5", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), &[&rustls::version::TLS13]);
    let v5 = ProtocolVersion::V5;
    let before = auth_failures(&gw, "mqtts", "bad_credentials").await;

    let mut scram = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), v5).await;
    let frame = ConnectSpec {
        client_id: "dev-5-scram",
        properties: vec![Property::AuthenticationMethod("SCRAM-SHA-256")],
        ..ConnectSpec::default()
    }
    .encode(v5);
    assert_eq!(scram.connect(&frame).await, 0x8c);
    scram.assert_closed().await;
    let line = audit_of(&gw, scram.local, "auth_failed", None, None).await;
    assert_eq!(line["reason"], "bad_credentials", "{line}");
    assert!(auth_failures(&gw, "mqtts", "bad_credentials").await > before);
    assert_eq!(
        broker_saw(&gw, "dev-5-scram"),
        None,
        "never reached the broker"
    );

    let mut c = TlsWire::tls(gw.tls_addr(), tls, v5).await;
    assert_eq!(c.connect(&connect(v5, "dev-5", None, None)).await, 0);
    c.ping().await;
}

/// An AUTH after CONNECT (re-authentication, here claiming another identity) cannot change the
/// identity bound at CONNECT: the gateway closes the connection and the AUTH never reaches the
/// broker. MQTT 5.0 §4.12: a client that sent no Authentication Method in CONNECT must not send
/// AUTH, so this is a Protocol Error: DISCONNECT 0x82 ([MQTT-4.13.1-1]). (0x8C, "bad
/// authentication method", is a CONNACK code; a DISCONNECT cannot carry it, and the codec
/// refuses to encode it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_packet_after_connect_closes_with_disconnect_and_changes_nothing() {
    let pki = Pki::new();
    let gw = enforcement_setup(&pki).start().await;
    let cert = pki.client("dev-6", None, Flaw::None);
    let tls = client_tls(&pki, Some(&cert), &[&rustls::version::TLS13]);
    let v5 = ProtocolVersion::V5;
    let mut c = TlsWire::tls(gw.tls_addr(), tls, v5).await;
    assert_eq!(c.connect(&connect(v5, "dev-6", None, None)).await, 0);
    c.ping().await;
    // AUTH, Re-authenticate (0x19), with a method and data claiming another identity.
    let mut props = Vec::new();
    mqtt_inspect::encode_properties(
        &[
            Property::AuthenticationMethod("PLAIN"),
            Property::AuthenticationData(b"\0admin\0admin"),
        ],
        &mut props,
    )
    .unwrap();
    let mut body = vec![0x19, u8::try_from(props.len()).unwrap()];
    body.extend_from_slice(&props);
    c.send(&support::wire::frame(0xf0, &body)).await;
    let got = c.recv_within(support::wire::ANSWER).await;
    // The broker saw this client once, as dev-6, and nothing else (besides the gateway's own
    // readiness probe, under its own client id).
    let log = gw.broker.log();
    assert_eq!(broker_saw(&gw, "dev-6"), Some(Some("dev-6".into())));
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("New client connected")
                && !l.contains(&format!("as {} ", mqtt_gateway::admin::PROBE_CLIENT_ID)))
            .count(),
        1,
        "only the accepted client reached the broker:\n{log}"
    );
    let got = got.map(|f| Got::from_frame(&f, v5));
    assert_eq!(
        got,
        Some(Got::Disconnect { reason: 0x82 }),
        "DISCONNECT before the close"
    );
    c.assert_closed().await;
    // Audited (issue 20, item 18), for this session and its identity, not the claimed one.
    let line = gw
        .audit_line(|v| v["event"] == "auth_failed" && v["reason"] == "auth_not_supported")
        .await
        .expect("the refused AUTH is audited");
    assert_eq!(line["client_id"], "dev-6", "{line}");
    assert_eq!(line["principal"], "dev-6", "{line}");
    assert!(line["cert_fingerprint"].is_string(), "{line}");
}

/// Connect rules of the contract's example policy: a sensor (certificate OU `sensors`) must use
/// its own name as client id, so no device can take over another device's session. Refused with
/// "not authorized" (rc 5 / 0x87), `acl_denied_total{action="connect"}`, auth reason client_id.
///
/// Contract ("On the wire"): refused CONNECT "3.1.1 return code ... 5 (not authorized); MQTT 5
/// reason ... 0x87", then the connection closes ([MQTT-3.1.4-2]). What it prevents: a CONNECT with
/// a client id in use ends the session holding it ([MQTT-3.1.4-3]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_cannot_take_over_another_sensors_client_id() {
    let pki = Pki::new();
    let mut setup = enforcement_setup(&pki);
    setup.policy = EXAMPLE_POLICY.to_owned();
    let gw = setup.start().await;
    let s1_cert = pki.client("sensor-1", Some("sensors"), Flaw::None);
    let s1 = client_tls(&pki, Some(&s1_cert), &[&rustls::version::TLS13]);
    let s2 = client_tls(
        &pki,
        Some(&pki.client("sensor-2", Some("sensors"), Flaw::None)),
        &[&rustls::version::TLS13],
    );
    let denied_before = acl_denied(&gw, "connect").await;
    let client_id_before = auth_failures(&gw, "mqtts", "client_id").await;

    // sensor-2 holds its session.
    let mut victim = TlsWire::tls(gw.tls_addr(), s2, ProtocolVersion::V5).await;
    let frame = ConnectSpec {
        client_id: "sensor-2",
        resume: true,
        properties: vec![Property::SessionExpiryInterval(60)],
        ..ConnectSpec::default()
    }
    .encode(ProtocolVersion::V5);
    assert_eq!(victim.connect(&frame).await, 0);
    for version in VERSIONS {
        let mut thief = TlsWire::tls(gw.tls_addr(), Arc::clone(&s1), version).await;
        let code = thief
            .connect(&connect(version, "sensor-2", None, None))
            .await;
        assert_eq!(
            code,
            per_version(version, 5, 0x87),
            "takeover ({version:?})"
        );
        thief.assert_closed().await;
        let line = audit_of(&gw, thief.local, "acl_denied", Some("connect"), None).await;
        assert_eq!(line["reason"], "client_id", "{line}");
        assert_eq!(line["client_id"], "sensor-2", "{line}");
        // The line names the thief, not only the victim's client id (issue 20 item 9).
        assert_eq!(line["principal"], "sensor-1", "{line}");
        assert_eq!(line["cert_serial"], hex(&s1_cert.serial), "{line}");
        assert_eq!(
            line["cert_fingerprint"].as_str().map(str::len),
            Some(64),
            "{line}"
        );

        let mut own = TlsWire::tls(gw.tls_addr(), Arc::clone(&s1), version).await;
        assert_eq!(
            own.connect(&connect(version, "sensor-1", None, None)).await,
            0
        );
        own.ping().await;
        own.disconnect().await;
    }
    // The victim's session was never taken over: still connected, end to end.
    victim.ping().await;
    assert!(acl_denied(&gw, "connect").await >= denied_before + 2.0);
    assert!(auth_failures(&gw, "mqtts", "client_id").await >= client_id_before + 2.0);
}

/// Policy contract: "A rule whose variable value holds '+', '#' or '/' does not match, so no
/// client can widen a rule by choosing its own name." A NUL never gets that far: the codec
/// refuses it as malformed ([MQTT-1.5.4-2]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_and_slashes_in_names_never_match_variables() {
    let pki = Pki::new();
    let policy = r#"
version = 1
[[connect]]
who = { any = true }
client_ids = ["%u"]
[[connect]]
who = { principals = ["roamer"] }
client_ids = ["*"]
[[connect]]
who = { principals = ["+", "x/y"] }
client_ids = ["id-*"]
[[rule]]
who = { any = true }
allow = ["publish", "subscribe", "receive"]
topics = ["users/%u/#"]
[[rule]]
who = { any = true }
allow = ["publish", "subscribe", "receive"]
topics = ["clients/%c/#"]
"#;
    let mut setup = enforcement_setup(&pki);
    setup.auth = password_auth(false);
    setup.passwords = passwords(&["carl", "roamer", "+", "x/y", "a#b"]);
    setup.policy = policy.to_owned();
    let gw = setup.start().await;
    let v = ProtocolVersion::V5;
    let connect_denied = acl_denied(&gw, "connect").await;

    // The good case: own name as client id, own topics.
    let mut carl = plain(&gw, v).await;
    assert_eq!(
        carl.connect(&connect(v, "carl", Some("carl"), Some(b"secret")))
            .await,
        0
    );
    carl.send(&publish(v, "users/carl/t", 1, 1, &[], b"x"))
        .await;
    assert_broker_ack(&carl.next("PUBACK").await, AckKind::Puback, 1);
    carl.send(&subscribe(
        v,
        2,
        &[("users/carl/#", 0), ("clients/carl/#", 0)],
    ))
    .await;
    assert_eq!(
        carl.next("SUBACK").await,
        Got::Suback {
            id: 2,
            codes: vec![0, 0]
        }
    );

    // "%u" in a connect rule: a user named "+", "a#b" or "x/y" never matches it, even with its
    // own name as client id.
    for user in ["+", "a#b", "x/y"] {
        let mut c = plain(&gw, v).await;
        assert_eq!(
            c.connect(&connect(v, user, Some(user), Some(b"secret")))
                .await,
            0x87,
            "user {user:?} as client id {user:?}"
        );
        c.assert_closed().await;
        let line = audit_of(&gw, c.local, "acl_denied", Some("connect"), None).await;
        assert_eq!(line["reason"], "client_id", "{line}");
    }
    assert!(acl_denied(&gw, "connect").await >= connect_denied + 3.0);

    // "%u" in topic rules: "+" may not subscribe users/+/# (everyone's), "x/y" may not publish
    // to users/x/y/... (user x's tree).
    let sub_denied = acl_denied(&gw, "subscribe").await;
    let mut plus = plain(&gw, v).await;
    assert_eq!(
        plus.connect(&connect(v, "id-1", Some("+"), Some(b"secret")))
            .await,
        0
    );
    plus.send(&subscribe(v, 3, &[("users/+/#", 0), ("clients/id-1/#", 0)]))
        .await;
    assert_eq!(
        plus.next("SUBACK").await,
        Got::Suback {
            id: 3,
            codes: vec![0x87, 0]
        }
    );
    let line = audit_of(
        &gw,
        plus.local,
        "acl_denied",
        Some("subscribe"),
        Some("users/+/#"),
    )
    .await;
    assert_eq!(line["principal"], "+", "{line}");
    let pub_denied = acl_denied(&gw, "publish").await;
    let mut slash = plain(&gw, v).await;
    assert_eq!(
        slash
            .connect(&connect(v, "id-2", Some("x/y"), Some(b"secret")))
            .await,
        0
    );
    slash
        .send(&publish(v, "users/x/y/t", 1, 4, &[], b"x"))
        .await;
    assert_eq!(
        slash.next("PUBACK").await,
        got_ack(AckKind::Puback, 4, 0x87)
    );
    audit_of(
        &gw,
        slash.local,
        "acl_denied",
        Some("publish"),
        Some("users/x/y/t"),
    )
    .await;

    // "%c" in topic rules: client ids "+", "#" and "a/b" (let in by the roamer rule).
    let mut rp = plain(&gw, v).await;
    assert_eq!(
        rp.connect(&connect(v, "+", Some("roamer"), Some(b"secret")))
            .await,
        0
    );
    rp.send(&subscribe(v, 5, &[("clients/+/#", 0), ("clients/+/x", 0)]))
        .await;
    assert_eq!(
        rp.next("SUBACK").await,
        Got::Suback {
            id: 5,
            codes: vec![0x87, 0x87]
        }
    );
    let mut rh = plain(&gw, v).await;
    assert_eq!(
        rh.connect(&connect(v, "#", Some("roamer"), Some(b"secret")))
            .await,
        0
    );
    rh.send(&subscribe(v, 6, &[("clients/#", 0)])).await;
    assert_eq!(
        rh.next("SUBACK").await,
        Got::Suback {
            id: 6,
            codes: vec![0x87]
        }
    );
    let mut rs = plain(&gw, v).await;
    assert_eq!(
        rs.connect(&connect(v, "a/b", Some("roamer"), Some(b"secret")))
            .await,
        0
    );
    rs.send(&publish(v, "clients/a/b/t", 1, 7, &[], b"x")).await;
    assert_eq!(rs.next("PUBACK").await, got_ack(AckKind::Puback, 7, 0x87));
    // The good case of %c: a plain client id.
    let mut rc = plain(&gw, v).await;
    assert_eq!(
        rc.connect(&connect(v, "c1", Some("roamer"), Some(b"secret")))
            .await,
        0
    );
    rc.send(&publish(v, "clients/c1/t", 1, 9, &[], b"x")).await;
    assert_broker_ack(&rc.next("PUBACK").await, AckKind::Puback, 9);
    rc.send(&subscribe(v, 8, &[("clients/c1/#", 0)])).await;
    assert_eq!(
        rc.next("SUBACK").await,
        Got::Suback {
            id: 8,
            codes: vec![0]
        }
    );
    assert!(acl_denied(&gw, "subscribe").await >= sub_denied + 4.0);
    assert!(acl_denied(&gw, "publish").await >= pub_denied + 2.0);

    // NUL in the client id or the user name: malformed, never a policy question.
    let malformed = sample(
        &gw,
        "mqtt_gateway_malformed_packets_total",
        &[("direction", "client_to_broker")],
    )
    .await;
    for version in VERSIONS {
        for (id, user) in [("ro\0amer", "roamer"), ("nul-ok", "roamer\0")] {
            let mut c = plain(&gw, version).await;
            c.send(&connect(version, id, Some(user), Some(b"secret")))
                .await;
            if version.is_v5() {
                // MQTT 5: a CONNACK with the reason, then the close.
                assert_eq!(
                    c.next("CONNACK").await,
                    Got::Connack {
                        code: 0x81,
                        session_present: false,
                        topic_alias_max: 0
                    }
                );
            }
            c.assert_closed().await;
            audit_of(&gw, c.local, "malformed", None, None).await;
        }
        let mut c = plain(&gw, version).await;
        assert_eq!(
            c.connect(&connect(version, "nul-ok", Some("roamer"), Some(b"secret")))
                .await,
            0
        );
    }
    assert!(
        sample(
            &gw,
            "mqtt_gateway_malformed_packets_total",
            &[("direction", "client_to_broker")]
        )
        .await
            >= malformed + 4.0
    );
}

/// The Will is judged as a publish at CONNECT (policy contract: "publish - PUBLISH from the
/// client, and the Will message at CONNECT"): a Will to a foreign topic or to `$SYS` refuses the
/// CONNECT (rc 5 / 0x87, `acl_denied_total{action="will"}`), as does an MQTT 5 Will whose Response
/// Topic the client may not receive; an allowed Will is accepted.
///
/// DESIGN §3 ("The judged topic is the delivered topic"): "the Will is judged at CONNECT"; a
/// refusal is a CONNACK that says why, then the close (contract "On the wire", [MQTT-3.1.4-2]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_will_is_judged_as_a_publish_at_connect() {
    let pki = Pki::new();
    let mut setup = enforcement_setup(&pki);
    setup.policy = EXAMPLE_POLICY.to_owned();
    let gw = setup.start().await;
    let tls = client_tls(
        &pki,
        Some(&pki.client("sensor-1", Some("sensors"), Flaw::None)),
        &[&rustls::version::TLS13],
    );
    let sys_rule = rule_line(EXAMPLE_POLICY, "topics = [\"$SYS/#\"]");
    let before = acl_denied(&gw, "will").await;
    for version in VERSIONS {
        let mut refused = vec![
            ("factory/sensor-2/status", vec![]),
            ("$SYS/broker/clients", vec![]),
        ];
        if version.is_v5() {
            refused.push((
                "factory/sensor-1/status",
                vec![Property::ResponseTopic("factory/sensor-2/commands/x")],
            ));
        }
        for (topic, props) in refused {
            let response = props.first().map(|p| match p {
                Property::ResponseTopic(t) => *t,
                _ => unreachable!(),
            });
            let frame = ConnectSpec {
                client_id: "sensor-1",
                will: Some((topic, props)),
                ..ConnectSpec::default()
            }
            .encode(version);
            let mut c = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), version).await;
            assert_eq!(
                c.connect(&frame).await,
                per_version(version, 5, 0x87),
                "{topic}"
            );
            c.assert_closed().await;
            let judged = response.unwrap_or(topic);
            let line = audit_of(&gw, c.local, "acl_denied", Some("will"), Some(judged)).await;
            assert_eq!(line["reason"], "will", "{line}");
            if topic.starts_with("$SYS") {
                assert_rule(&line, sys_rule);
            }
        }
        let frame = ConnectSpec {
            client_id: "sensor-1",
            will: Some(("factory/sensor-1/status", vec![])),
            ..ConnectSpec::default()
        }
        .encode(version);
        let mut c = TlsWire::tls(gw.tls_addr(), Arc::clone(&tls), version).await;
        assert_eq!(c.connect(&frame).await, 0, "own status topic as Will");
        c.ping().await;
        c.disconnect().await;
    }
    assert!(acl_denied(&gw, "will").await >= before + 5.0);
}

/// A certificate that TLS verified but whose subject cannot be read (an OU as a TeletexString)
/// names nobody: refused at CONNECT (3.1.1 code 4, MQTT 5 0x86, `bad_credentials`) even with a
/// good user name and password, rather than taken as no certificate at all, which would dodge its
/// OU's deny rules and every CRL re-check of its live session. The same login with a readable
/// certificate is let in.
///
/// DESIGN §3: "Fail closed." Contract ("On the wire"): "A refused CONNECT gets a CONNACK that
/// says why ...: 3.1.1 return code 4 ...; MQTT 5 reason 0x86 ...; then the connection closes."
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_whose_subject_cannot_be_read_is_refused_not_ignored() {
    let pki = Pki::new();
    let mut setup = support::Setup::new(&pki);
    setup.auth = password_auth(false);
    setup.passwords = passwords(&[]);
    let gw = setup.start().await;
    let unreadable = pki.client("dev-odd", None, Flaw::UnreadableOu);
    let readable = pki.client("dev-ok", None, Flaw::None);
    let tls = |cert| client_tls(&pki, Some(cert), &[&rustls::version::TLS13]);
    let before = auth_failures(&gw, "mqtts", "bad_credentials").await;
    for version in VERSIONS {
        let v = version.level();
        let mut odd = TlsWire::tls(gw.tls_addr(), tls(&unreadable), version).await;
        let code = odd
            .connect(&connect(
                version,
                &format!("odd{v}"),
                Some("alice"),
                Some(b"secret"),
            ))
            .await;
        assert_eq!(code, per_version(version, 4, 0x86));
        odd.assert_closed().await;
        assert_eq!(
            broker_saw(&gw, &format!("odd{v}")),
            None,
            "never reached the broker"
        );

        let mut ok = TlsWire::tls(gw.tls_addr(), tls(&readable), version).await;
        let code = ok
            .connect(&connect(
                version,
                &format!("ok{v}"),
                Some("alice"),
                Some(b"secret"),
            ))
            .await;
        assert_eq!(code, 0);
        ok.ping().await;
    }
    assert!(auth_failures(&gw, "mqtts", "bad_credentials").await >= before + 2.0);
}

/// Lower-case hex without leading zero bytes, as the audit log writes certificate serials.
fn hex(bytes: &[u8]) -> String {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    bytes[start..].iter().map(|b| format!("{b:02x}")).collect()
}

/// Issue 20 item 13: a Mosquitto bridge from a remote site (protocol level with the bridge bit,
/// 0x84 for 3.1.1, as `try_private true`, Mosquitto's default, sends it) connects through the
/// gateway with its certificate, and is judged like any client: its connect rule, and every
/// message it forwards against its publish rights. Shown with a real second Mosquitto bridging
/// `site/a/#` and `blocked/#` out: the allowed message reaches the central broker, the refused one
/// is dropped (acl_denied, audited under the bridge's principal), and the central broker saw a
/// bridge (Mosquitto logs "New bridge connected"), so the bit reached it. Before, the gateway
/// refused the bridge's CONNECT with return code 1 and the site never connected.
///
/// MQTT 3.1.1 §3.1.2.2 keeps return code 1 (unacceptable protocol level) for a level the Server
/// does not support; 0x84 is Mosquitto's bridge form of level 4, which the gateway supports. Policy
/// contract: "publish - PUBLISH from the client" (a bridge is a client like any other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mosquitto_bridge_connects_through_the_gateway_and_is_judged_like_a_client() {
    let pki = Pki::new();
    let mut setup = support::enforcement_setup(&pki);
    setup.policy = r##"version = 1
[[connect]]
who = { any = true }
client_ids = ["%u"]
[[rule]]
who = { principals = ["site-a"] }
allow = ["publish"]
topics = ["site/a/#"]
[[rule]]
who = { any = true }
allow = ["subscribe", "receive"]
topics = ["#"]
"##
    .to_owned();
    let gw = setup.start().await;
    // The first message the central broker delivers (it exits after one).
    let watcher = support::broker_spy(&gw, "#", 1, 30).await;
    let denied_before = acl_denied(&gw, "publish").await;

    let cert = pki.client("site-a", None, Flaw::None);
    let site = e2e::Mosquitto::start_with_conf(&format!(
        "connection to-central\n\
         address {gw}\n\
         remote_clientid site-a\n\
         bridge_cafile {ca}\n\
         bridge_certfile {chain}\n\
         bridge_keyfile {key}\n\
         try_private true\n\
         notifications false\n\
         restart_timeout 1\n\
         topic site/a/# out 1\n\
         topic blocked/# out 1\n",
        gw = gw.tls_addr(),
        ca = pki.root_path.display(),
        chain = cert.chain_path.display(),
        key = cert.key_path.display(),
    ))
    .unwrap();

    // The bridge is in once the central broker logs it, as a bridge (the bit reached it).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let bridged = |log: String| {
        log.lines()
            .any(|l| l.contains("New bridge connected") && l.contains(" as site-a "))
    };
    while !bridged(gw.broker.log()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the bridge never reached the central broker.\nsite log:\n{}\ncentral log:\n{}\naudit:\n{}",
            site.log(),
            gw.broker.log(),
            std::fs::read_to_string(&gw.audit_path).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Published at the remote site, forwarded by its bridge through the gateway.
    for (topic, payload) in [("blocked/x", "refused"), ("site/a/t", "allowed")] {
        let out = tokio::task::spawn_blocking({
            let addr = site.addr();
            move || {
                e2e::mosquitto_pub(
                    addr,
                    e2e::MqttVersion::V311,
                    &["-t", topic, "-m", payload, "-q", "1"],
                )
            }
        })
        .await
        .unwrap()
        .unwrap();
        assert!(out.success(), "{out:?}");
    }
    let line = gw
        .audit_line(|v| v["event"] == "acl_denied" && v["topic"] == "blocked/x")
        .await
        .expect("the refused message is audited");
    assert_eq!(line["principal"], "site-a", "{line}");
    assert_eq!(line["client_id"], "site-a", "{line}");
    assert!(acl_denied(&gw, "publish").await >= denied_before + 1.0);
    // The central broker got the allowed message and never the refused one (sent before it).
    assert_eq!(support::spy_messages(watcher).await, ["site/a/t allowed"]);
}
