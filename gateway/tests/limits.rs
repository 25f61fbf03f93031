//! Abuse limits end to end (real Mosquitto behind the gateway): bans after repeated authentication
//! failures, connection rate per address, per-client message rate, per-packet caps, keep-alive cap.
//! Each refusal next to a client that is not affected. Clients come from two loopback addresses
//! (127.0.0.1 and 127.0.0.2) to show that limits are per address.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use mqtt_inspect::{
    Connect, Packet, Properties, Property, PropertyContext, ProtocolVersion, ReasonCode, decode,
    encode_properties,
};
use support::{Pki, Plain, Setup};
use tokio::io::AsyncWriteExt;

fn connect(
    version: ProtocolVersion,
    id: &str,
    user: Option<&str>,
    pw: Option<&[u8]>,
    keep_alive: u16,
) -> Vec<u8> {
    let c = Connect {
        version,
        clean_start: true,
        keep_alive,
        properties: Properties::EMPTY,
        client_id: id,
        will: None,
        username: user,
        password: pw,
    };
    let mut out = Vec::new();
    c.encode(&mut out).unwrap();
    out
}

fn password_setup<'a>(pki: &'a Pki, limits: &str) -> Setup<'a> {
    let mut setup = Setup::new(pki);
    setup.auth = "[auth]\nallow_anonymous = false\nprincipal_from = \"username\"\npassword_file = \"passwords\"\n".into();
    setup.passwords = format!(
        "alice:{}\n",
        mqtt_gateway::auth::hash_mosquitto_pbkdf2(b"secret", 1000).unwrap()
    );
    setup.limits = limits.into();
    setup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_auth_failures_ban_the_address_until_the_ban_expires() {
    let pki = Pki::new();
    let gw = password_setup(
        &pki,
        "auth_failures_before_ban = 3\nban_window = \"1m\"\nban_duration = \"3s\"",
    )
    .start()
    .await;
    let addr = gw.plain_addr();
    let banned_before = gw
        .metric("mqtt_gateway_connections_total{listener=\"plain\",outcome=\"banned\"}")
        .await;
    for i in 0..3 {
        let mut c = Plain::connect(addr, "127.0.0.1").await.unwrap();
        c.send(&connect(
            ProtocolVersion::V311,
            &format!("a{i}"),
            Some("alice"),
            Some(b"wrong"),
            30,
        ))
        .await
        .unwrap();
        assert_eq!(
            c.recv().await.unwrap(),
            [0x20, 2, 0, 4],
            "bad password: return code 4"
        );
    }
    // Banned: even the right password is refused; the socket is closed before anything is read.
    let mut c = Plain::connect(addr, "127.0.0.1").await.unwrap();
    let _ = c
        .send(&connect(
            ProtocolVersion::V311,
            "a9",
            Some("alice"),
            Some(b"secret"),
            30,
        ))
        .await;
    assert_eq!(
        c.recv().await,
        None,
        "a banned address is closed before CONNACK"
    );
    assert!(
        gw.metric("mqtt_gateway_connections_total{listener=\"plain\",outcome=\"banned\"}")
            .await
            >= banned_before + 1.0
    );
    assert!(
        gw.audit_line(|v| v["event"] == "banned" && v["reason"] == "address")
            .await
            .is_some()
    );
    // Another address is not banned.
    let mut other = Plain::connect(addr, "127.0.0.2").await.unwrap();
    other
        .send(&connect(
            ProtocolVersion::V311,
            "b1",
            Some("alice"),
            Some(b"secret"),
            30,
        ))
        .await
        .unwrap();
    assert_eq!(other.recv().await.unwrap(), [0x20, 2, 0, 0]);
    // After ban_duration the right password works again.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut c = Plain::connect(addr, "127.0.0.1").await.unwrap();
    c.send(&connect(
        ProtocolVersion::V5,
        "a10",
        Some("alice"),
        Some(b"secret"),
        30,
    ))
    .await
    .unwrap();
    let connack = c.recv().await.unwrap();
    assert!(
        matches!(decode(&connack, ProtocolVersion::V5), Ok(Packet::Connack(a)) if a.code.is_success()),
        "{connack:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_attacked_from_many_addresses_is_banned_with_0x8a() {
    let pki = Pki::new();
    let gw = password_setup(
        &pki,
        "auth_failures_before_ban = 2\nconnections_per_ip_per_second = 100",
    )
    .start()
    .await;
    let addr = gw.plain_addr();
    // 2 × threshold failures against one account, one per address.
    for i in 0..4 {
        let mut c = Plain::connect(addr, &format!("127.0.1.{}", i + 1))
            .await
            .unwrap();
        c.send(&connect(
            ProtocolVersion::V311,
            "x",
            Some("alice"),
            Some(b"guess"),
            30,
        ))
        .await
        .unwrap();
        assert_eq!(c.recv().await.unwrap(), [0x20, 2, 0, 4]);
    }
    // MQTT 5 from a fresh address: CONNACK 0x8A Banned for that account; 3.1.1: return code 5.
    let mut c = Plain::connect(addr, "127.0.2.1").await.unwrap();
    c.send(&connect(
        ProtocolVersion::V5,
        "x",
        Some("alice"),
        Some(b"secret"),
        30,
    ))
    .await
    .unwrap();
    assert_eq!(c.recv().await.unwrap(), [0x20, 3, 0, 0x8a, 0]);
    let mut c = Plain::connect(addr, "127.0.2.2").await.unwrap();
    c.send(&connect(
        ProtocolVersion::V311,
        "x",
        Some("alice"),
        Some(b"secret"),
        30,
    ))
    .await
    .unwrap();
    assert_eq!(c.recv().await.unwrap(), [0x20, 2, 0, 5]);
    assert!(
        gw.metric("mqtt_gateway_auth_failures_total{listener=\"plain\",reason=\"banned\"}")
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_rate_per_address() {
    let pki = Pki::new();
    let gw = password_setup(&pki, "connections_per_ip_per_second = 3")
        .start()
        .await;
    let addr = gw.plain_addr();
    let before = gw
        .metric("mqtt_gateway_rate_limited_total{limit=\"connections\"}")
        .await;
    // Until the first refusal: the burst (3) is served whatever the pace; to miss the refusal the
    // loop would have to run slower than 3 connections a second for 1000 tries in a row (before,
    // 8 tries had to fit in about 1.7 s, which a loaded machine need not do).
    let mut answered = 0;
    let mut refused = 0;
    for i in 0..1000 {
        if refused > 0 {
            break;
        }
        let mut c = Plain::connect(addr, "127.0.3.1").await.unwrap();
        let _ = c
            .send(&connect(
                ProtocolVersion::V311,
                &format!("r{i}"),
                Some("alice"),
                Some(b"secret"),
                30,
            ))
            .await;
        match c.recv().await {
            Some(f) => {
                assert_eq!(f, [0x20, 2, 0, 0]);
                answered += 1;
            }
            None => refused += 1,
        }
    }
    assert!(
        answered >= 3 && refused >= 1,
        "answered {answered}, refused {refused}"
    );
    assert!(
        gw.metric("mqtt_gateway_rate_limited_total{limit=\"connections\"}")
            .await
            >= before + 1.0
    );
    // Another address is not limited.
    let mut c = Plain::connect(addr, "127.0.3.2").await.unwrap();
    c.send(&connect(
        ProtocolVersion::V311,
        "ok",
        Some("alice"),
        Some(b"secret"),
        30,
    ))
    .await
    .unwrap();
    assert_eq!(c.recv().await.unwrap(), [0x20, 2, 0, 0]);
}

fn publish_qos0(topic: &str, payload: &[u8]) -> Vec<u8> {
    let p = mqtt_inspect::Publish {
        dup: false,
        qos: mqtt_inspect::QoS::AtMostOnce,
        retain: false,
        topic,
        packet_id: None,
        properties: Properties::EMPTY,
        payload,
    };
    let mut out = Vec::new();
    p.encode(ProtocolVersion::V5, &mut out).unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_far_over_its_message_rate_is_slowed_then_cut_with_0x96() {
    let pki = Pki::new();
    let gw = password_setup(&pki, "messages_per_client_per_second = 20")
        .start()
        .await;
    let addr = gw.plain_addr();
    let before = gw
        .metric("mqtt_gateway_rate_limited_total{limit=\"messages\"}")
        .await;
    let mut calm = Plain::connect(addr, "127.0.4.1").await.unwrap();
    calm.send(&connect(
        ProtocolVersion::V5,
        "calm",
        Some("alice"),
        Some(b"secret"),
        30,
    ))
    .await
    .unwrap();
    assert!(calm.recv().await.is_some());
    let mut flood = Plain::connect(addr, "127.0.4.2").await.unwrap();
    flood
        .send(&connect(
            ProtocolVersion::V5,
            "flood",
            Some("alice"),
            Some(b"secret"),
            30,
        ))
        .await
        .unwrap();
    assert!(flood.recv().await.is_some());
    // 2,000 messages at once: 100 s of quota at 20/s. Writes may block: TCP pushes back.
    let batch: Vec<u8> = (0..2000)
        .flat_map(|_| publish_qos0("rate/x", b"0123456789"))
        .collect();
    let writer = tokio::spawn(async move {
        let _ = flood.s.write_all(&batch).await;
        flood
    });
    let mut flood = tokio::time::timeout(Duration::from_secs(20), writer)
        .await
        .expect("cut before 20 s")
        .unwrap();
    let frame = flood.recv().await.expect("DISCONNECT");
    let Ok(Packet::Disconnect(d)) = decode(&frame, ProtocolVersion::V5) else {
        panic!("{frame:?}")
    };
    assert_eq!(d.reason, ReasonCode::MessageRateTooHigh);
    assert!(
        gw.metric("mqtt_gateway_rate_limited_total{limit=\"messages\"}")
            .await
            >= before + 1.0
    );
    // The calm client, under its rate, sees no difference.
    for _ in 0..3 {
        calm.send(&[0xc0, 0]).await.unwrap();
        assert_eq!(calm.recv().await.unwrap(), [0xd0, 0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_packet_caps_and_keepalive_cap() {
    let pki = Pki::new();
    let gw = password_setup(&pki, "max_keepalive = \"60s\"")
        .start()
        .await;
    let addr = gw.plain_addr();

    // An absurd keep-alive (65535 s) is capped: MQTT 5 CONNACK carries Server Keep Alive 60.
    let mut c = Plain::connect(addr, "127.0.5.1").await.unwrap();
    c.send(&connect(
        ProtocolVersion::V5,
        "ka",
        Some("alice"),
        Some(b"secret"),
        u16::MAX,
    ))
    .await
    .unwrap();
    let connack = c.recv().await.unwrap();
    let Ok(Packet::Connack(a)) = decode(&connack, ProtocolVersion::V5) else {
        panic!()
    };
    assert!(a.code.is_success());
    assert!(
        a.properties
            .iter()
            .any(|p| p == Property::ServerKeepAlive(60)),
        "{connack:?}"
    );
    // A keep-alive within the cap is left alone.
    let mut ok = Plain::connect(addr, "127.0.5.2").await.unwrap();
    ok.send(&connect(
        ProtocolVersion::V5,
        "ka2",
        Some("alice"),
        Some(b"secret"),
        30,
    ))
    .await
    .unwrap();
    let connack = ok.recv().await.unwrap();
    let Ok(Packet::Connack(a)) = decode(&connack, ProtocolVersion::V5) else {
        panic!()
    };
    assert!(
        !a.properties
            .iter()
            .any(|p| matches!(p, Property::ServerKeepAlive(_))),
        "{connack:?}"
    );

    // 65 user properties on one PUBLISH: DISCONNECT 0x97; 64 pass.
    let props = |n: usize| {
        let list: Vec<Property<'_>> = (0..n).map(|_| Property::UserProperty("k", "v")).collect();
        let mut raw = Vec::new();
        encode_properties(&list, &mut raw).unwrap();
        raw
    };
    let publish_with = |raw: &[u8]| {
        let p = mqtt_inspect::Publish {
            dup: false,
            qos: mqtt_inspect::QoS::AtLeastOnce,
            retain: false,
            topic: "caps/x",
            packet_id: mqtt_inspect::PacketId::new(1),
            properties: Properties::parse(raw, PropertyContext::Publish).unwrap(),
            payload: b"x",
        };
        let mut out = Vec::new();
        p.encode(ProtocolVersion::V5, &mut out).unwrap();
        out
    };
    let raw64 = props(64);
    ok.send(&publish_with(&raw64)).await.unwrap();
    let ack = ok.recv().await.unwrap();
    assert_eq!(ack[0], 0x40, "64 user properties pass: {ack:?}");
    let raw65 = props(65);
    ok.send(&publish_with(&raw65)).await.unwrap();
    let frame = ok.recv().await.unwrap();
    assert_eq!(
        decode(&frame, ProtocolVersion::V5)
            .ok()
            .map(|p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::QuotaExceeded)),
        Some(true),
        "{frame:?}"
    );

    // 65 filters in one SUBSCRIBE: DISCONNECT 0x97.
    let mut body = vec![0, 1, 0];
    for i in 0..65 {
        let f = format!("caps/{i}");
        body.extend_from_slice(&u16::try_from(f.len()).unwrap().to_be_bytes());
        body.extend_from_slice(f.as_bytes());
        body.push(0);
    }
    let mut frame = vec![0x82];
    let mut len = body.len();
    loop {
        let mut b = u8::try_from(len % 128).unwrap();
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        frame.push(b);
        if len == 0 {
            break;
        }
    }
    frame.extend_from_slice(&body);
    c.send(&frame).await.unwrap();
    let reply = c.recv().await.unwrap();
    assert_eq!(
        decode(&reply, ProtocolVersion::V5)
            .ok()
            .map(|p| matches!(p, Packet::Disconnect(d) if d.reason == ReasonCode::QuotaExceeded)),
        Some(true),
        "{reply:?}"
    );
}

const ALICE: (&str, &[u8]) = ("alice", b"secret");

/// Rewrites the gateway's config file atomically with `from` replaced by `to`.
fn edit_config(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in the config");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text.replace(from, to)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A CONNECT from `from` as `user` with `password`: the CONNACK code, or `None` when the
/// connection was refused before any answer. The connection is returned to keep it open.
async fn try_connect(
    addr: SocketAddr,
    from: &str,
    id: &str,
    (user, password): (&str, &[u8]),
) -> (Option<u8>, Plain) {
    let mut c = Plain::connect(addr, from).await.unwrap();
    let _ = c
        .send(&connect(
            ProtocolVersion::V311,
            id,
            Some(user),
            Some(password),
            30,
        ))
        .await;
    (c.recv().await.map(|f| f[3]), c)
}

/// Waits for the reload that puts `limits` satisfying `done` in force (the event itself: the
/// gateway configures its limits before it publishes the new generation).
async fn applied(
    gw: &support::TestGateway,
    done: impl Fn(&mqtt_gateway::config::LimitsConfig) -> bool,
) {
    let gateway = &gw.running.gateway;
    let mut generations = gateway.watch_generation();
    tokio::time::timeout(Duration::from_secs(60), async {
        while !done(&gateway.current().config.limits) {
            generations.changed().await.unwrap();
        }
    })
    .await
    .expect("the edited config was never applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limits_and_ban_settings_follow_a_config_reload_without_dropping_anyone() {
    let pki = Pki::new();
    let gw = password_setup(
        &pki,
        "max_connections_per_ip = 2\nauth_failures_before_ban = 1000",
    )
    .start()
    .await;
    let _reload = mqtt_gateway::reload::spawn(&gw.config_path, &gw.running);
    let addr = gw.plain_addr();
    let mut kept = Vec::new();
    for i in 0..2 {
        let (code, c) = try_connect(addr, "127.0.4.1", &format!("k{i}"), ALICE).await;
        assert_eq!(code, Some(0));
        kept.push(c);
    }
    let (code, _) = try_connect(addr, "127.0.4.1", "k2", ALICE).await;
    assert_eq!(code, None, "a third connection from the address is refused");

    // Raised to 3: once the reload is applied, the third connection is let in.
    edit_config(
        &gw.config_path,
        "max_connections_per_ip = 2",
        "max_connections_per_ip = 3",
    );
    applied(&gw, |l| l.max_connections_per_ip.get() == 3).await;
    let (code, third) = try_connect(addr, "127.0.4.1", "k2-after", ALICE).await;
    assert_eq!(code, Some(0), "the raised limit applies");
    kept.push(third);

    // The ban threshold lowered to 2: two wrong passwords from another address now ban it.
    edit_config(
        &gw.config_path,
        "auth_failures_before_ban = 1000",
        "auth_failures_before_ban = 2",
    );
    applied(&gw, |l| l.auth_failures_before_ban.get() == 2).await;
    // An unknown account, so that no account ban gets in the way. The per-address limit is still
    // 3 here, so the second connection is not refused for the slot the first may still hold
    // while the gateway closes it.
    let (first, _) = try_connect(addr, "127.0.5.1", "w1", ("guess", b"wrong")).await;
    let (second, _) = try_connect(addr, "127.0.5.1", "w2", ("guess", b"wrong")).await;
    assert_eq!(
        (first, second),
        (Some(4), Some(4)),
        "bad user name or password"
    );
    let (code, _) = try_connect(addr, "127.0.5.1", "w3", ALICE).await;
    assert_eq!(code, None, "the lowered ban threshold applies");

    // Lowered to 1: those connected stay connected; a second connection from an address is
    // refused (shown on a fresh address whose first connection stays open: under the old limit
    // the second would be served).
    edit_config(
        &gw.config_path,
        "max_connections_per_ip = 3",
        "max_connections_per_ip = 1",
    );
    applied(&gw, |l| l.max_connections_per_ip.get() == 1).await;
    let (code, _held) = try_connect(addr, "127.0.6.1", "one", ALICE).await;
    assert_eq!(
        code,
        Some(0),
        "the first connection from the address is served"
    );
    let (code, _) = try_connect(addr, "127.0.6.1", "two", ALICE).await;
    assert_eq!(code, None, "the lowered per-address limit applies");
    assert!(
        gw.audit_line(|v| v["event"] == "rate_limited"
            && v["reason"] == "max_connections_per_ip"
            && v["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.6.1:")))
            .await
            .is_some(),
        "the refusal under the lowered limit is audited"
    );
    let (code, _) = try_connect(addr, "127.0.4.1", "k3", ALICE).await;
    assert_eq!(
        code, None,
        "the lowered per-address limit applies to new connections"
    );
    for c in &mut kept {
        c.send(&[0xc0, 0x00]).await.unwrap();
        assert_eq!(c.recv().await.unwrap(), [0xd0, 0x00], "still connected");
    }
    // An address that did nothing wrong is served.
    let (code, _) = try_connect(addr, "127.0.4.2", "fresh", ALICE).await;
    assert_eq!(code, Some(0));
}

/// A connection the gateway ends gives its per-address slot back before the client hears of it
/// (the refusing CONNACK, the DISCONNECT): with `max_connections_per_ip = 1`, a device that
/// reconnects the moment it is refused or disconnected is served, not turned away for its own old
/// connection. Before, the slot was freed only when the session's task ended, after the answer,
/// and such a reconnect was refused without a CONNACK now and then (issue 20, item 15: the race
/// the reload test hit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_the_gateway_ends_can_reconnect_at_once_under_a_per_address_limit_of_one() {
    let pki = Pki::new();
    let gw = password_setup(
        &pki,
        "max_connections_per_ip = 1\nauth_failures_before_ban = 10000\nconnections_per_ip_per_second = 10000",
    )
    .start()
    .await;
    let addr = gw.plain_addr();
    for i in 0..30 {
        // Refused with a CONNACK; the next connection follows at once, without waiting for the
        // close.
        let (code, _refused) =
            try_connect(addr, "127.0.9.1", &format!("bad-{i}"), ("alice", b"wrong")).await;
        assert_eq!(code, Some(4), "round {i}: bad password");
        let mut c = Plain::connect(addr, "127.0.9.1").await.unwrap();
        let _ = c
            .send(&connect(
                ProtocolVersion::V5,
                &format!("good-{i}"),
                Some("alice"),
                Some(b"secret"),
                30,
            ))
            .await;
        let connack = c.recv().await;
        assert!(
            connack
                .as_deref()
                .is_some_and(|f| f.first() == Some(&0x20) && f.get(3) == Some(&0)),
            "round {i}: the reconnect after a refusal is served: {connack:?}"
        );
        // Ended by the gateway (an AUTH after CONNECT, DISCONNECT 0x82); the next round's
        // connection follows at once.
        c.send(&[0xf0, 0x00]).await.unwrap();
        let goodbye = c.recv().await;
        assert_eq!(
            goodbye.as_deref().map(|f| f.get(2).copied()),
            Some(Some(0x82)),
            "round {i}: {goodbye:?}"
        );
    }
    // The limit still holds for connections that are open.
    let (code, _held) = try_connect(addr, "127.0.9.2", "held", ALICE).await;
    assert_eq!(code, Some(0));
    let (code, _) = try_connect(addr, "127.0.9.2", "second", ALICE).await;
    assert_eq!(
        code, None,
        "a second open connection from the address is refused"
    );
}
