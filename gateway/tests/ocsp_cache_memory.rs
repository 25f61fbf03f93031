//! The OCSP answer cache stays within its bound (100,000 certificates), and what that many
//! answers cost in heap (the figure in BENCHMARKS.md). Its own test binary with ONE `#[test]`, so
//! the counting global allocator sees only this test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::as_conversions)]

use std::alloc::System;
use std::sync::Arc;

use mqtt_gateway::ocsp::validate::{Answer, Status};
use mqtt_gateway::ocsp::{MAX_ENTRIES, Ocsp};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Issue 23: "100,000 distinct cached certificates stay within the cache bound". 110,000
/// distinct answers (8-byte serials, like the test PKI's, of one issuer) leave at most
/// `MAX_ENTRIES` cached; the heap they hold is printed (`--nocapture`) and bounded.
#[test]
fn the_cache_holds_at_most_100000_answers_and_what_they_cost() {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Device CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let issuer = p.self_signed(&KeyPair::generate().unwrap()).unwrap();
    let issuer = issuer.der().clone();
    let listener: Arc<str> = Arc::from("mqtts");
    let now = 1_800_000_000;
    let answer = |i: i64| Answer {
        status: Status::Good,
        this_update: now,
        // Distinct ends: eviction takes the soonest.
        valid_until: now + 3600 + i,
        has_next_update: true,
    };
    let ocsp = Ocsp::default();
    // The issuer is parsed once, before the measurement.
    ocsp.remember(&listener, &issuer, &[0x7f], answer(0));

    let region = Region::new(GLOBAL);
    for i in 0..MAX_ENTRIES {
        let serial = (0x1000_0000_0000_0000_u64 + i as u64).to_be_bytes();
        ocsp.remember(&listener, &issuer, &serial, answer(i as i64));
    }
    let stats = region.change();
    let held = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    let per = held / MAX_ENTRIES as i64;
    println!(
        "{} answers cached: {} bytes net heap ({per} per answer; {} allocations)",
        ocsp.len(),
        held,
        stats.allocations
    );
    assert!(ocsp.len() <= MAX_ENTRIES);
    // A bound that catches a copy of the issuer certificate (or the like) per entry.
    assert!(per < 600, "{per} bytes per cached answer");

    for i in MAX_ENTRIES..MAX_ENTRIES + 10_000 {
        let serial = (0x1000_0000_0000_0000_u64 + i as u64).to_be_bytes();
        ocsp.remember(&listener, &issuer, &serial, answer(i as i64));
        assert!(ocsp.len() <= MAX_ENTRIES, "{} entries", ocsp.len());
    }
    println!("after 110,000 distinct answers: {} cached", ocsp.len());
}
