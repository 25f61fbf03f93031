//! `policy`: the cost of one policy decision (publish, subscribe containment, receive) and of the
//! per-client resolution at CONNECT, for policies of 10, 1,000 and 100,000 rules.
//!
//! The policies are what fleets look like: one rule per device (`principals = ["dev-N"]`, its own
//! subtree), a handful of `%u` rules for everyone, operators on the whole tree, a `$SYS` deny.
//! Run: `cargo run --release -p bench --bin policy` (or through `scripts/bench.sh`, then
//! `target/release/policy`).

#![allow(
    clippy::as_conversions,
    clippy::cast_precision_loss,
    clippy::indexing_slicing
)] // report arithmetic on counts; indices are `i % len` of fixed arrays

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use mqtt_gateway::policy::{ClientFacts, Policy};

fn policy_text(devices: usize) -> String {
    let mut s = String::from(
        "version = 1\n[groups]\noperators = { principals = [\"op-*\"] }\n\
         [[connect]]\nwho = { any = true }\nclient_ids = [\"%u\", \"%u-*\"]\n\
         [[rule]]\nwho = { any = true }\nallow = [\"publish\"]\ntopics = [\"fleet/%u/status\", \"fleet/%u/telemetry/#\"]\n\
         [[rule]]\nwho = { any = true }\nallow = [\"subscribe\", \"receive\"]\ntopics = [\"fleet/%u/commands/#\", \"broadcast/#\"]\n\
         [[rule]]\nwho = { groups = [\"operators\"] }\nallow = [\"publish\", \"subscribe\", \"receive\"]\ntopics = [\"fleet/#\"]\n\
         [[rule]]\nwho = { any = true }\ndeny = [\"publish\", \"subscribe\", \"receive\"]\ntopics = [\"$SYS/#\"]\n",
    );
    for n in 0..devices.saturating_sub(4) {
        s.push_str(&format!(
            "[[rule]]\nwho = {{ principals = [\"dev-{n}\"] }}\nallow = [\"publish\", \"receive\"]\ntopics = [\"site/{}/dev-{n}/#\"]\n",
            n % 97
        ));
    }
    s
}

fn per_op(iterations: u64, started: Instant) -> f64 {
    started.elapsed().as_nanos() as f64 / iterations as f64
}

fn main() -> anyhow::Result<()> {
    println!(
        "{:>8} {:>12} {:>14} {:>14} {:>16} {:>14}",
        "rules", "compile ms", "resolve µs", "publish ns", "subscribe ns", "receive ns"
    );
    for devices in [10usize, 1_000, 100_000] {
        let text = policy_text(devices);
        let started = Instant::now();
        let policy = Policy::from_str(&text, "bench.toml", &["mqtts"])?;
        let compile_ms = started.elapsed().as_secs_f64() * 1e3;
        let principal = format!("dev-{}", devices.saturating_sub(5) / 2);
        let ous: Vec<String> = Vec::new();
        let facts = ClientFacts {
            principal: Some(&principal),
            client_id: &principal,
            cert_ous: &ous,
            listener: "mqtts",
            source: IpAddr::V4(Ipv4Addr::LOCALHOST),
            anonymous: false,
            groups: &[],
        };
        let n_resolve = 2_000u64;
        let started = Instant::now();
        for _ in 0..n_resolve {
            black_box(policy.resolve(black_box(&facts)));
        }
        let resolve_us = per_op(n_resolve, started) / 1e3;
        let client = policy.resolve(&facts);
        assert!(client.connect().allowed);
        let own = format!("fleet/{principal}/telemetry/engine/temp");
        let site = format!(
            "site/{}/{principal}/x",
            (devices.saturating_sub(5) / 2) % 97
        );
        assert!(client.publish(&own).allowed && client.publish(&site).allowed);
        assert!(!client.publish("fleet/dev-other/telemetry/x").allowed);
        let n = 1_000_000u64;
        let topics = [
            own.as_str(),
            site.as_str(),
            "fleet/dev-other/telemetry/x",
            "$SYS/broker/x",
        ];
        let started = Instant::now();
        for i in 0..n {
            black_box(client.publish(black_box(topics[(i % 4) as usize])));
        }
        let publish_ns = per_op(n, started);
        let filters = [
            "fleet/+/commands/#",
            "broadcast/#",
            "#",
            "fleet/dev-other/commands/+",
        ];
        let own_filter = format!("fleet/{principal}/commands/#");
        let started = Instant::now();
        for i in 0..n {
            let f = if i % 5 == 0 {
                own_filter.as_str()
            } else {
                filters[(i % 4) as usize]
            };
            black_box(client.subscribe(black_box(f)));
        }
        let subscribe_ns = per_op(n, started);
        let started = Instant::now();
        for i in 0..n {
            black_box(client.receive(black_box(topics[(i % 4) as usize])));
        }
        let receive_ns = per_op(n, started);
        println!(
            "{:>8} {compile_ms:>12.1} {resolve_us:>14.2} {publish_ns:>14.1} {subscribe_ns:>16.1} {receive_ns:>14.1}",
            policy.rule_count()
        );
    }
    Ok(())
}
