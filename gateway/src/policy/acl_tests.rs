//! The compiled tries against a plain scan over the rules with `mqtt_inspect::topic`'s
//! `matches` and `contains` (and brute-force overlap), for random rules and topics.

use std::net::IpAddr;
use std::sync::Arc;

use mqtt_inspect::topic::{contains, matches};
use proptest::prelude::*;

use super::super::compile::{Actions, Effect, Parsed, RuleSpec, compile};
use super::super::template;
use super::super::who::Who;
use super::super::{ClientFacts, RuleRef};
use super::ClientPolicy;

const PRINCIPAL: &str = "u1";
const CLIENT_ID: &str = "c1";

#[derive(Clone, Debug)]
struct TestRule {
    deny: bool,
    contained: bool,
    publish: bool,
    subscribe: bool,
    filter: String,
}

fn level() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "$s", "", "+", "%u", "%c", "u1"])
}

fn filter_strategy(with_vars: bool) -> impl Strategy<Value = String> {
    (prop::collection::vec(level(), 1..4), any::<bool>()).prop_map(move |(levels, hash)| {
        let mut v: Vec<&str> = levels
            .into_iter()
            .map(|l| match l {
                "%u" | "%c" if !with_vars => "c1",
                l => l,
            })
            .collect();
        if hash {
            v.push("#");
        }
        let f = v.join("/");
        if f.is_empty() { "a".to_string() } else { f }
    })
}

fn topic_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["a", "b", "$s", "", "u1", "c1", "x"]),
        1..5,
    )
    .prop_map(|v| {
        let t = v.join("/");
        if t.is_empty() { "a".to_string() } else { t }
    })
}

fn rule_strategy() -> impl Strategy<Value = TestRule> {
    (any::<(bool, bool, bool, bool)>(), filter_strategy(true)).prop_map(
        |((deny, contained, publish, subscribe), filter)| TestRule {
            deny,
            contained,
            publish,
            subscribe,
            filter,
        },
    )
}

fn client_policy(rules: &[TestRule]) -> ClientPolicy {
    let file: Arc<str> = Arc::from("t");
    let specs = rules
        .iter()
        .enumerate()
        .map(|(i, r)| RuleSpec {
            who: Who::default(),
            effect: if r.deny { Effect::Deny } else { Effect::Allow },
            actions: Actions {
                publish: r.publish,
                subscribe: r.subscribe,
                receive: false,
            },
            topics: vec![template::parse(&r.filter, true).unwrap()],
            at: RuleRef {
                file: Arc::clone(&file),
                line: u32::try_from(i + 1).unwrap(),
            },
            subscribe_deny_contained: r.contained,
        })
        .collect();
    let parsed = Parsed {
        file: Some(file),
        rules: specs,
        ..Parsed::default()
    };
    let compiled = Arc::new(compile(Some(parsed), None).unwrap());
    let facts = ClientFacts {
        principal: Some(PRINCIPAL),
        client_id: CLIENT_ID,
        cert_ous: &[],
        listener: "l",
        source: IpAddr::from([127, 0, 0, 1]),
        anonymous: false,
        groups: &[],
    };
    ClientPolicy::resolve(&compiled, &facts)
}

fn substituted(r: &TestRule) -> String {
    r.filter
        .split('/')
        .map(|l| match l {
            "%u" => PRINCIPAL,
            "%c" => CLIENT_ID,
            l => l,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every topic of up to 4 levels over the symbols that occur in filters, plus a fresh one.
fn witnesses() -> Vec<String> {
    let symbols = ["a", "b", "$s", "", "u1", "c1", "x"];
    let mut all: Vec<String> = symbols.iter().map(|s| (*s).to_string()).collect();
    let mut last = all.clone();
    for _ in 1..4 {
        let next: Vec<String> = last
            .iter()
            .flat_map(|p| symbols.iter().map(move |s| format!("{p}/{s}")))
            .collect();
        all.extend(next.iter().cloned());
        last = next;
    }
    all
}

fn overlaps(a: &str, b: &str, witnesses: &[String]) -> bool {
    witnesses.iter().any(|t| matches(a, t) && matches(b, t))
}

/// The expected (allowed, rule line) by a scan, first rule in file order winning per kind.
fn expected(
    rules: &[TestRule],
    check: impl Fn(&TestRule, &str) -> Option<bool>,
) -> (bool, Option<u32>) {
    let line = |i: usize| u32::try_from(i + 1).ok();
    let mut allow = None;
    for (i, r) in rules.iter().enumerate() {
        match check(r, &substituted(r)) {
            Some(true) => return (false, line(i)),
            Some(false) if allow.is_none() => allow = line(i),
            _ => {}
        }
    }
    (allow.is_some(), allow)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn publish_matches_a_scan(rules in prop::collection::vec(rule_strategy(), 1..6), topic in topic_strategy()) {
        let cp = client_policy(&rules);
        let want = expected(&rules, |r, f| (r.publish && matches(f, &topic)).then_some(r.deny));
        let got = cp.publish(&topic);
        prop_assert_eq!((got.allowed, got.rule.map(|r| r.line)), want, "topic {}", topic);
    }

    #[test]
    fn subscribe_matches_a_scan(rules in prop::collection::vec(rule_strategy(), 1..6), filter in filter_strategy(false)) {
        let cp = client_policy(&rules);
        let w = witnesses();
        let want = expected(&rules, |r, f| {
            if !r.subscribe {
                return None;
            }
            match (r.deny, r.contained) {
                (false, _) => contains(f, &filter).then_some(false),
                (true, true) => contains(f, &filter).then_some(true),
                (true, false) => overlaps(f, &filter, &w).then_some(true),
            }
        });
        let got = cp.subscribe(&filter);
        prop_assert_eq!((got.allowed, got.rule.map(|r| r.line)), want, "filter {}", filter);
    }
}

/// Issue 20, item 10: a `$share/<group>/` prefix is taken off once ([MQTT-4.8.2-1]):
/// `$share/g1/$share/g2/a/x` is judged as `$share/g2/a/x`, which neither `a/+` nor `#` allows
/// ([MQTT-4.7.2-1]); `$share/g1/a/x` is judged as `a/x`. (Before the fix the caller took the prefix
/// off and `subscribe` took it off again; the e2e test `acl_subscribe` and `operator_tools`'s
/// explain test show that path.)
#[test]
fn a_share_prefix_is_taken_off_once() {
    for allow in ["a/+", "#", "+/+/+/+"] {
        let cp = client_policy(&[TestRule {
            deny: false,
            contained: false,
            publish: false,
            subscribe: true,
            filter: allow.to_owned(),
        }]);
        for (filter, want) in [
            ("a/x", allow != "+/+/+/+"),
            ("$share/g1/a/x", allow != "+/+/+/+"),
            ("$share/g1/$share/g2/a/x", false),
        ] {
            assert_eq!(cp.subscribe(filter).allowed, want, "{allow} {filter}");
        }
    }
}
