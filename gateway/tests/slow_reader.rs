//! A client that stops reading what the broker sends it (real Mosquitto, real TLS): the gateway
//! stops reading the broker for it (TCP pushes back, nothing is queued in the gateway), and once
//! one write has waited for the write limit (30 s) the session ends as `write_timeout`. A client
//! subscribed to the same messages that reads them gets every one meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::{Duration, Instant};

use mqtt_inspect::ProtocolVersion;
use support::wire::{TlsWire, connect, publish, subscribe};
use support::{Pki, Setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V5: ProtocolVersion = ProtocolVersion::V5;
/// Each message's payload; MESSAGES of them (32 MiB) overflow every socket buffer between the
/// gateway and a client that does not read.
const PAYLOAD: usize = 64 * 1024;
const MESSAGES: usize = 512;

async fn client(gw: &support::TestGateway, pki: &Pki, cn: &str) -> TlsWire {
    let cert = pki.client(cn, None, support::Flaw::None);
    let tls = support::client_tls(pki, Some(&cert), &[&rustls::version::TLS13]);
    let mut c = TlsWire::tls(gw.tls_addr(), tls, V5).await;
    c.send(&connect(V5, cn, Some("alice"), Some(b"secret")))
        .await;
    let connack = c.recv().await.expect("CONNACK");
    assert_eq!(connack[..4], [0x20, connack[1], 0, 0], "{connack:?}");
    c
}

async fn subscribed(gw: &support::TestGateway, pki: &Pki, cn: &str) -> TlsWire {
    let mut c = client(gw, pki, cn).await;
    c.send(&subscribe(V5, 1, &[("big/#", 0)])).await;
    let suback = c.recv().await.expect("SUBACK");
    assert_eq!(suback[0], 0x90, "{suback:?}");
    assert_eq!(*suback.last().unwrap(), 0, "{suback:?}");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_at_the_write_limit_and_a_reader_gets_everything() {
    let pki = Pki::new();
    let mut setup = Setup::new(&pki);
    setup.auth = "[auth]\nallow_anonymous = false\nprincipal_from = \"username\"\npassword_file = \"passwords\"\n".into();
    setup.passwords = format!(
        "alice:{}\n",
        mqtt_gateway::auth::hash_mosquitto_pbkdf2(b"secret", 1000).unwrap()
    );
    // The publisher's rates must not be what slows the flood.
    setup.limits = "max_packet_size = \"128KiB\"\nbytes_per_client_per_second = \"256MiB\"\nmessages_per_client_per_second = 100000".into();
    let gw = setup.start().await;
    let series = "mqtt_gateway_sessions_closed_total{reason=\"write_timeout\"}";
    let before = gw.metric(series).await;

    let stuck = subscribed(&gw, &pki, "stuck").await;
    let mut reader = subscribed(&gw, &pki, "reader").await;
    let one = publish(V5, "big/x", 0, 0, &[], &vec![b'x'; PAYLOAD]);
    let expected = one.len() * MESSAGES;
    // The reader reads everything, in a task of its own.
    let read = tokio::spawn(async move {
        let mut got = 0usize;
        let mut chunk = vec![0u8; 64 * 1024];
        while got < expected {
            match reader.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        (got, reader)
    });
    let mut publisher = client(&gw, &pki, "publisher").await;
    for _ in 0..MESSAGES {
        publisher.stream.write_all(&one).await.unwrap();
    }
    publisher.stream.flush().await.unwrap();

    // The good case: every byte reaches the client that reads, while the other one is stuck.
    let (got, mut reader) = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the reader did not get the messages")
        .unwrap();
    assert_eq!(got, expected);

    // The stuck client's session ends once a write has waited 30 s: wait for the event.
    let started = Instant::now();
    while gw.metric(series).await < before + 1.0 {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the stuck session was not cut"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Only the stuck one: the reader and the publisher are still served.
    assert_eq!(gw.metric(series).await, before + 1.0);
    reader.ping().await;
    publisher.ping().await;
    drop(stuck);
}
