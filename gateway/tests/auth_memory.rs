//! Field finding (issue 20, item 3): password verification must not leave memory behind. Each
//! argon2id check needs its work buffer (19 MiB with the crate's defaults); a gateway that
//! allocates one per check let the allocator keep them, and unauthenticated clients grew it by
//! hundreds of MiB with a few dozen wrong passwords. The buffers are now a fixed pool, one per
//! verification slot, so the memory of password checks is bounded by the concurrency cap.
//!
//! Its own test binary: the bound is read from this process's resident set (`/proc/self/status`),
//! which no other test may disturb. End to end: a real Mosquitto, the gateway in this process, raw
//! MQTT clients sending wrong passwords in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;

use mqtt_gateway::shared::AUTH_CONCURRENCY;
use mqtt_inspect::ProtocolVersion;
use support::wire::PlainWire;
use support::{Pki, Setup, connect_frame};

/// Work memory of one argon2id verification with the default parameters (m = 19456 KiB).
const ARGON2_BUFFER: u64 = 19_456 * 1024;

/// What besides the buffers may grow: connection state, the runtime's threads, allocator slack.
const MARGIN: u64 = 48 * 1024 * 1024;

fn vm(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    kib * 1024
}

/// `n` wrong-password CONNECTs, `parallel` at a time; every one must be refused with return
/// code 4 (unknown user and bad password cost and answer the same).
async fn wrong_passwords(addr: std::net::SocketAddr, n: usize, parallel: usize) {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..parallel {
        let next = Arc::clone(&next);
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let mut c = PlainWire::plain_from(
                    addr,
                    &format!("127.0.6.{}", w + 1),
                    ProtocolVersion::V311,
                )
                .await
                .unwrap();
                let user = if i.is_multiple_of(2) {
                    "alice".to_owned()
                } else {
                    format!("nobody-{i}")
                };
                c.try_send(&connect_frame(
                    ProtocolVersion::V311,
                    "x",
                    Some(&user),
                    Some(b"wrong"),
                ))
                .await
                .unwrap();
                assert_eq!(c.recv().await.unwrap(), [0x20, 2, 0, 4], "attempt {i}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Not a wire rule. DESIGN §3: "password hashing runs off the async workers with a concurrency
/// cap"; Resources: "every buffer, map and queue keyed by peers has a cap".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_of_failed_argon2id_logins_is_bounded_by_the_verification_cap() {
    let pki = Pki::new();
    let mut setup = Setup::new(&pki);
    setup.auth = "[auth]\nallow_anonymous = false\nprincipal_from = \"username\"\npassword_file = \"passwords\"\n".into();
    setup.passwords = format!(
        "alice:{}\n",
        mqtt_gateway::auth::hash_argon2id(b"secret").unwrap()
    );
    // No ban or rate limit in the way: every attempt is hashed.
    setup.limits = "auth_failures_before_ban = 1000000\nconnections_per_ip_per_second = 100000\nmax_connections_per_ip = 1000".into();
    let gw = setup.start().await;
    let addr = gw.plain_addr();

    // The good case beside it: the right password still works.
    let mut good = PlainWire::plain_from(addr, "127.0.0.1", ProtocolVersion::V311)
        .await
        .unwrap();
    good.try_send(&connect_frame(
        ProtocolVersion::V311,
        "good",
        Some("alice"),
        Some(b"secret"),
    ))
    .await
    .unwrap();
    assert_eq!(good.recv().await.unwrap(), [0x20, 2, 0, 0]);

    let before = vm("VmRSS:");
    // Twice the cap in parallel, many times the cap in all.
    let parallel = 2 * AUTH_CONCURRENCY;
    let attempts = 60 * AUTH_CONCURRENCY;
    wrong_passwords(addr, attempts, parallel).await;
    let after = vm("VmRSS:");
    let bound = u64::try_from(AUTH_CONCURRENCY).unwrap() * ARGON2_BUFFER + MARGIN;
    let grown = after.saturating_sub(before);
    eprintln!(
        "{attempts} failed argon2id logins, {parallel} in parallel: RSS {} -> {} MiB (+{} MiB, bound {} MiB)",
        before >> 20,
        after >> 20,
        grown >> 20,
        bound >> 20
    );
    assert!(
        grown <= bound,
        "RSS grew by {} MiB over {attempts} failed logins: more than {AUTH_CONCURRENCY} argon2 buffers + margin ({} MiB)",
        grown >> 20,
        bound >> 20
    );
    assert!(
        gw.metric(
            "mqtt_gateway_auth_failures_total{listener=\"plain\",reason=\"bad_credentials\"}"
        )
        .await
            >= f64::from(u32::try_from(attempts / 2).unwrap())
    );

    // And the right password still works after the flood.
    let mut good = PlainWire::plain_from(addr, "127.0.0.1", ProtocolVersion::V311)
        .await
        .unwrap();
    good.try_send(&connect_frame(
        ProtocolVersion::V311,
        "good2",
        Some("alice"),
        Some(b"secret"),
    ))
    .await
    .unwrap();
    assert_eq!(good.recv().await.unwrap(), [0x20, 2, 0, 0]);
}
