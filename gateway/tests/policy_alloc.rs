//! Policy decisions allocate nothing (DESIGN.md §5: no allocation per packet on the relay path).
//!
//! Its own test binary with ONE `#[test]`, so the counting global allocator sees only this test;
//! everything is built before a region opens and asserted after it closes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::alloc::System;
use std::hint::black_box;
use std::net::IpAddr;

use mqtt_gateway::policy::{Action, ClientFacts, Policy};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const POLICY: &str = r##"
version = 1
[[rule]]
who = { any = true }
allow = ["publish", "subscribe", "receive"]
topics = ["factory/%u/#", "dev/%c/+/x", "shared/#"]
[[rule]]
who = { principals = ["alice"] }
deny = ["publish", "subscribe", "receive"]
topics = ["shared/secret", "dev/%c/bad/x"]
[[rule]]
who = { any = true }
deny = ["publish", "subscribe", "receive"]
topics = ["$SYS/#"]
"##;

/// Not a wire rule. DESIGN §5: "No allocation per packet on the relay path"; "Policy decisions
/// are a lookup in a compiled structure".
#[test]
fn decisions_do_not_allocate() {
    let policy = Policy::from_str(POLICY, "p.toml", &["l"]).unwrap();
    let facts = |client_id| ClientFacts {
        principal: Some("alice"),
        client_id,
        cert_ous: &[],
        listener: "l",
        source: IpAddr::from([127, 0, 0, 1]),
        anonymous: false,
        groups: &[],
    };
    let good = policy.resolve(&facts("c1"));
    let hostile = policy.resolve(&facts("a/b"));
    let questions = [
        (Action::Publish, "factory/alice/x"),
        (Action::Publish, "shared/secret"),
        (Action::Publish, "nowhere"),
        (Action::Receive, "dev/c1/y/x"),
        (Action::Receive, "$SYS/broker/uptime"),
        (Action::Subscribe, "shared/#"),
        (Action::Subscribe, "$share/g/factory/alice/+"),
        (Action::Subscribe, "#"),
        (Action::Connect, ""),
    ];
    for cp in [&good, &hostile] {
        let region = Region::new(GLOBAL);
        for (action, topic) in questions {
            for _ in 0..10 {
                black_box(cp.decide(action, black_box(topic)));
            }
        }
        let stats = region.change();
        assert_eq!(stats.allocations, 0, "{stats:?}");
        assert_eq!(stats.reallocations, 0, "{stats:?}");
    }
    // The answers are the interesting ones (outside the measured regions).
    assert!(good.decide(Action::Publish, "factory/alice/x").allowed);
    assert!(!good.decide(Action::Subscribe, "shared/#").allowed);
    assert!(!hostile.decide(Action::Publish, "dev/a/b/y/x").allowed);
}
