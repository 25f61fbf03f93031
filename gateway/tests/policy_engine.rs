//! The policy engine from the outside: the contract's policy.example.toml decides as its
//! comments say, every `who` selector, hostile `%u`/`%c` values, deny over allow, subscribe
//! containment and overlap, `$` topics, broken files with their `file:line`, the Mosquitto
//! acl_file translation, and `explain` agreeing with `resolve(..).decide(..)`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::IpAddr;
use std::path::Path;

use mqtt_gateway::policy::{Action, ClientFacts, ClientPolicy, Decision, Policy, PolicyError};

const EXAMPLE: &str = include_str!("data/policy.example.toml");
const LISTENERS: &[&str] = &["mqtts", "internal"];

struct Client {
    principal: Option<&'static str>,
    client_id: &'static str,
    ous: Vec<String>,
    listener: &'static str,
    source: IpAddr,
}

impl Client {
    fn new(principal: &'static str, client_id: &'static str) -> Self {
        Self {
            principal: Some(principal),
            client_id,
            ous: Vec::new(),
            listener: "mqtts",
            source: IpAddr::from([10, 0, 0, 7]),
        }
    }
    fn anonymous(client_id: &'static str) -> Self {
        Self {
            principal: None,
            ..Self::new("", client_id)
        }
    }
    fn ou(mut self, ou: &str) -> Self {
        self.ous.push(ou.to_string());
        self
    }
    fn facts(&self) -> ClientFacts<'_> {
        ClientFacts {
            principal: self.principal,
            client_id: self.client_id,
            cert_ous: &self.ous,
            listener: self.listener,
            source: self.source,
            anonymous: self.principal.is_none(),
            groups: &[],
        }
    }
    fn resolve(&self, policy: &Policy) -> ClientPolicy {
        policy.resolve(&self.facts())
    }
}

/// Line of the `n`th (0-based) line of `src` that is exactly `header`.
fn header_line(src: &str, header: &str, n: usize) -> u32 {
    let i = src
        .lines()
        .enumerate()
        .filter(|(_, l)| l.trim() == header)
        .nth(n)
        .unwrap()
        .0;
    u32::try_from(i + 1).unwrap()
}

fn line(d: &Decision) -> Option<u32> {
    d.rule.as_ref().map(|r| r.line)
}

fn policy(src: &str) -> Policy {
    Policy::from_str(src, "p.toml", LISTENERS).unwrap()
}

/// Contract: `policy.example.toml` is "part of the contract" (spec README); its comments are the
/// decisions checked here.
#[test]
fn example_policy_decides_as_its_comments_say() {
    let p = Policy::load(
        Some(Path::new("tests/data/policy.example.toml")),
        None,
        LISTENERS,
    )
    .unwrap();
    // No mistakes; one takeover warning (issue 20, item 14): the operators' `%u-*` lets one
    // operator use an id of another whose principal extends its own (`a` / `a-b`).
    let shown: Vec<String> = p.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert!(
        shown[0].ends_with(&format!(
            "policy.example.toml:{}: warning: client id pattern \"%u-*\" lets principals collide: \
             `*` next to %u matches part of a longer principal (with \"%u-*\", principal \"a\" may \
             use \"a-b-1\", an id of principal \"a-b\"), so one can take over the other's sessions; \
             separate %u from `*` with `/`, which no principal may hold (\"%u/*\"), or drop the `*`",
            EXAMPLE.lines().position(|l| l.contains("\"%u-*\"")).unwrap() + 1
        )),
        "{shown:#?}"
    );
    assert!(
        p.warnings()
            .iter()
            .all(|w| w.kind == mqtt_gateway::policy::WarningKind::Takeover)
    );
    assert_eq!(p.rule_count(), 6);
    let rule = |n| Some(header_line(EXAMPLE, "[[rule]]", n));
    let connect = |n| Some(header_line(EXAMPLE, "[[connect]]", n));

    let sensor = Client::new("sensor-1", "sensor-1")
        .ou("sensors")
        .resolve(&p);
    assert_eq!(line(&sensor.connect()), connect(0));
    assert!(sensor.connect().allowed);
    let d = sensor.publish("factory/sensor-1/telemetry/temp");
    assert!(d.allowed);
    assert_eq!(line(&d), rule(0));
    assert_eq!(
        d.rule.unwrap().to_string(),
        format!("tests/data/policy.example.toml:{}", rule(0).unwrap())
    );
    assert!(sensor.publish("factory/sensor-1/status").allowed);
    assert!(!sensor.publish("factory/sensor-1/status/x").allowed);
    assert_eq!(
        sensor.publish("factory/sensor-2/telemetry/temp"),
        Decision::DEFAULT_DENY
    );
    assert!(sensor.subscribe("factory/sensor-1/commands/#").allowed);
    assert!(sensor.receive("factory/sensor-1/commands/reboot").allowed);
    assert!(
        !sensor.subscribe("factory/+/commands/#").allowed,
        "not another sensor's commands"
    );
    assert!(!sensor.publish("factory/sensor-1/commands/x").allowed);
    let sys = sensor.publish("$SYS/broker/x");
    assert!(!sys.allowed);
    assert_eq!(line(&sys), rule(3));

    // A sensor connects only with its own name as client id.
    let takeover = Client::new("sensor-1", "sensor-2")
        .ou("sensors")
        .resolve(&p);
    assert_eq!(takeover.connect(), Decision::DEFAULT_DENY);
    // Without the OU, "sensor-1" is nobody.
    let no_ou = Client::new("sensor-1", "sensor-1").resolve(&p);
    assert!(!no_ou.connect().allowed);
    assert!(!no_ou.publish("factory/sensor-1/status").allowed);

    let alice = Client::new("alice", "alice-laptop").resolve(&p);
    assert_eq!(line(&alice.connect()), connect(1));
    assert!(Client::new("alice", "alice").resolve(&p).connect().allowed);
    assert!(!Client::new("alice", "bob").resolve(&p).connect().allowed);
    assert!(!Client::new("alice", "alice2").resolve(&p).connect().allowed);
    for topic in [
        "factory/line-1/x",
        "factory/sensor-1/commands/reboot",
        "factory",
    ] {
        assert_eq!(line(&alice.publish(topic)), rule(2), "{topic}");
        assert!(alice.receive(topic).allowed, "{topic}");
    }
    assert!(alice.subscribe("factory/#").allowed);
    assert!(alice.subscribe("factory/+/telemetry/#").allowed);
    assert!(!alice.subscribe("#").allowed);
    for sys in ["$SYS/#", "$SYS/broker/uptime"] {
        let d = alice.subscribe(sys);
        assert_eq!((d.allowed, line(&d)), (false, rule(3)), "{sys}");
    }
    assert_eq!(line(&alice.receive("$SYS/broker/uptime")), rule(3));

    let anon = Client::anonymous("x").resolve(&p);
    assert_eq!(anon.connect(), Decision::DEFAULT_DENY);
    assert_eq!(
        anon.receive("$SYS/broker/uptime"),
        Decision::DEFAULT_DENY,
        "any = true is not anonymous"
    );
    assert!(!anon.publish("factory/x").allowed);
}

/// Policy contract (`who` selectors): "all given selectors must match; within a list any entry".
#[test]
fn every_selector() {
    let src = r##"
version = 1
[groups]
ops = { principals = ["op-*"] }
[[rule]]
who = { principals = ["dev-*"] }
allow = ["publish"]
topics = ["principals"]
[[rule]]
who = { groups = ["ops"] }
allow = ["publish"]
topics = ["groups"]
[[rule]]
who = { cert_ou = ["blue", "red"] }
allow = ["publish"]
topics = ["cert_ou"]
[[rule]]
who = { listeners = ["internal"] }
allow = ["publish"]
topics = ["listeners"]
[[rule]]
who = { sources = ["192.168.0.0/16", "2001:db8::/32", "10.9.9.9"] }
allow = ["publish"]
topics = ["sources"]
[[rule]]
who = { any = true }
allow = ["publish"]
topics = ["any"]
[[rule]]
who = { anonymous = true }
allow = ["publish"]
topics = ["anonymous"]
[[rule]]
who = { principals = ["dev-*"], cert_ou = ["blue"], listeners = ["mqtts"] }
allow = ["publish"]
topics = ["all"]
"##;
    let p = policy(src);
    let allowed = |c: &Client| -> Vec<&'static str> {
        let cp = c.resolve(&p);
        [
            "principals",
            "groups",
            "cert_ou",
            "listeners",
            "sources",
            "any",
            "anonymous",
            "all",
        ]
        .into_iter()
        .filter(|t| cp.publish(t).allowed)
        .collect()
    };
    assert_eq!(allowed(&Client::new("dev-1", "c")), ["principals", "any"]);
    assert_eq!(allowed(&Client::new("op-1", "c")), ["groups", "any"]);
    assert_eq!(
        allowed(&Client::new("dev-1", "c").ou("blue")),
        ["principals", "cert_ou", "any", "all"]
    );
    assert_eq!(
        allowed(&Client::new("x", "c").ou("red")),
        ["cert_ou", "any"]
    );
    let mut internal = Client::new("x", "c");
    internal.listener = "internal";
    assert_eq!(allowed(&internal), ["listeners", "any"]);
    let mut blue_internal = Client::new("dev-1", "c").ou("blue");
    blue_internal.listener = "internal";
    assert_eq!(
        allowed(&blue_internal),
        ["principals", "cert_ou", "listeners", "any"]
    );
    for source in [
        "192.168.4.5",
        "::ffff:192.168.4.5",
        "2001:db8::1",
        "10.9.9.9",
    ] {
        let mut c = Client::new("x", "c");
        c.source = source.parse().unwrap();
        assert_eq!(allowed(&c), ["sources", "any"], "{source}");
    }
    let mut near = Client::new("x", "c");
    near.source = "10.9.9.8".parse().unwrap();
    assert_eq!(allowed(&near), ["any"]);
    let mut anon = Client::anonymous("c");
    anon.source = "192.168.1.1".parse().unwrap();
    assert_eq!(allowed(&anon), ["sources", "anonymous"]);
}

/// Policy contract: "A rule whose variable value holds '+', '#' or '/' does not match, so no client
/// can widen a rule by choosing its own name." DESIGN §3: "Every name a client chooses is hostile."
#[test]
fn hostile_variable_values_never_match() {
    let src = r##"
version = 1
[[rule]]
who = { any = true }
allow = ["publish", "subscribe", "receive"]
topics = ["dev/%c/#", "users/%u/inbox", "%c/own"]
"##;
    let p = policy(src);
    let good = Client::new("alice", "c1").resolve(&p);
    assert!(good.publish("dev/c1/x").allowed);
    assert!(good.subscribe("dev/c1/#").allowed);
    assert!(good.publish("users/alice/inbox").allowed);
    assert!(good.publish("c1/own").allowed);
    assert!(!good.subscribe("dev/+/#").allowed);
    for hostile in ["+", "#", "a/b", "", "a\0b", "x+", "#y"] {
        let c = Client {
            principal: Some(hostile),
            client_id: hostile,
            ..Client::new("", "")
        };
        let cp = c.resolve(&p);
        for topic in [
            "dev/a/b/c",
            "dev/x",
            "users/a/b/inbox",
            "users//inbox",
            "dev//x",
            "a/b/own",
            "/own",
        ] {
            assert!(!cp.publish(topic).allowed, "{hostile:?} {topic}");
            assert!(!cp.receive(topic).allowed, "{hostile:?} {topic}");
        }
        for filter in ["dev/+/#", "dev/#", "#", "users/+/inbox", "+/own"] {
            assert!(!cp.subscribe(filter).allowed, "{hostile:?} {filter}");
        }
    }
    // As a first level, a value starting with '$' would reach the broker's '$' topics.
    let sys = Client::new("alice", "$SYS").resolve(&p);
    assert!(!sys.publish("$SYS/own").allowed);
    assert!(
        sys.publish("dev/$SYS/x").allowed,
        "a '$' value is fine below the first level"
    );
    // No principal: %u rules never match.
    let anon = Client::anonymous("c1").resolve(&p);
    assert!(!anon.publish("users//inbox").allowed);
}

/// DESIGN §3: "Fail closed." Policy contract: "a matching deny beats any allow".
#[test]
fn deny_rules_with_unusable_values_fail_closed() {
    let src = r##"
version = 1
[[rule]]
who = { any = true }
allow = ["publish"]
topics = ["dev/#"]
[[rule]]
who = { any = true }
deny = ["publish"]
topics = ["dev/%c/config"]
"##;
    let p = policy(src);
    let good = Client::new("a", "c1").resolve(&p);
    assert!(!good.publish("dev/c1/config").allowed);
    assert!(good.publish("dev/c2/config").allowed);
    let hostile = Client::new("a", "x/y").resolve(&p);
    let d = hostile.publish("dev/x/y/config");
    assert_eq!(
        (d.allowed, line(&d)),
        (false, Some(header_line(src, "[[rule]]", 1)))
    );
    assert!(
        !hostile.publish("dev/other").allowed,
        "the whole dev/ subtree is denied"
    );
}

/// Policy contract: "a matching deny beats any allow; when nothing matches the answer is deny".
#[test]
fn deny_beats_allow_in_any_order() {
    let allow =
        "[[rule]]\nwho = { any = true }\nallow = [\"publish\", \"receive\"]\ntopics = [\"a/#\"]\n";
    let deny =
        "[[rule]]\nwho = { any = true }\ndeny = [\"publish\", \"receive\"]\ntopics = [\"a/b\"]\n";
    for deny_first in [false, true] {
        let src = if deny_first {
            format!("version = 1\n{deny}{allow}")
        } else {
            format!("version = 1\n{allow}{deny}")
        };
        let (deny_line, allow_line) = if deny_first { (2, 6) } else { (6, 2) };
        let cp = Client::new("u", "c").resolve(&policy(&src));
        for d in [cp.publish("a/b"), cp.receive("a/b")] {
            assert_eq!((d.allowed, line(&d)), (false, Some(deny_line)));
        }
        let d = cp.publish("a/x");
        assert_eq!((d.allowed, line(&d)), (true, Some(allow_line)));
    }
}

/// Policy contract: "a filter is allowed only when an allowed filter contains all of it
/// (factory/# contains factory/a/+, but factory/+ does not contain factory/#)".
#[test]
fn subscribe_needs_containment_and_no_overlapping_deny() {
    let src = r##"
version = 1
[[rule]]
who = { any = true }
allow = ["subscribe"]
topics = ["a/+", "b/#", "#"]
[[rule]]
who = { any = true }
deny = ["subscribe"]
topics = ["b/secret"]
"##;
    let p = policy(src);
    let cp = Client::new("u", "c").resolve(&p);
    assert!(cp.subscribe("a/x").allowed);
    assert!(cp.subscribe("a/+").allowed);
    let (allow_line, deny_line) = (
        header_line(src, "[[rule]]", 0),
        header_line(src, "[[rule]]", 1),
    );
    assert_eq!(
        line(&cp.subscribe("a/#")),
        Some(allow_line),
        "contained by '#', not by a/+"
    );
    let only_a = policy(
        "version = 1\n[[rule]]\nwho = { any = true }\nallow = [\"subscribe\"]\ntopics = [\"a/+\"]\n",
    );
    let cp_a = Client::new("u", "c").resolve(&only_a);
    assert!(!cp_a.subscribe("a/#").allowed, "a/+ does not contain a/#");
    assert!(!cp_a.subscribe("a").allowed);
    assert!(
        cp_a.subscribe("$share/g/a/x").allowed,
        "a shared subscription is judged by its filter"
    );
    assert!(!cp_a.subscribe("$share/g/a/#").allowed);
    // A deny overlapping the filter refuses it: b/# would deliver b/secret.
    for f in ["b/#", "b/+", "b/secret", "+/secret", "#"] {
        let d = cp.subscribe(f);
        assert_eq!((d.allowed, line(&d)), (false, Some(deny_line)), "{f}");
    }
    for f in ["b/public", "b/secret/x", "b/+/x", "a/b"] {
        assert!(cp.subscribe(f).allowed, "{f}");
    }
    assert!(!cp.subscribe("a/#/b").allowed, "invalid filters are denied");
    assert!(!cp.publish("a/+").allowed, "invalid topic names are denied");
}

/// Enforces [MQTT-4.7.2-1]: "The Server MUST NOT match Topic Filters starting with a wildcard
/// character (# or +) with Topic Names beginning with a $ character", in the policy as in the broker.
#[test]
fn leading_wildcards_never_reach_dollar_topics() {
    let src = r##"
version = 1
[[rule]]
who = { any = true }
allow = ["publish", "subscribe", "receive"]
topics = ["#", "+/x"]
[[rule]]
who = { principals = ["admin"] }
allow = ["receive", "subscribe"]
topics = ["$SYS/#"]
"##;
    let p = policy(src);
    let cp = Client::new("u", "c").resolve(&p);
    assert!(cp.publish("a/b").allowed);
    for t in ["$SYS/x", "$foo/x", "$SYS"] {
        assert!(!cp.publish(t).allowed, "{t}");
        assert!(!cp.receive(t).allowed, "{t}");
    }
    assert!(!cp.subscribe("$SYS/#").allowed);
    assert!(!cp.subscribe("$foo/x").allowed);
    let admin = Client::new("admin", "c").resolve(&p);
    assert!(admin.receive("$SYS/broker/uptime").allowed);
    assert!(admin.subscribe("$SYS/broker/+").allowed);
    assert!(!admin.publish("$SYS/broker/uptime").allowed);
}

#[path = "policy_engine/broken.rs"]
mod broken;
#[path = "policy_engine/mosquitto.rs"]
mod mosquitto;

/// Contract ("Command line"): `policy explain` "prints allow/deny and the rule (file:line) that
/// decided", the same decision the relay makes.
#[test]
fn explain_is_resolve_then_decide() {
    let p = Policy::from_sources(
        Some((EXAMPLE, "policy.toml")),
        Some((mosquitto::SAMPLE, "acl")),
        LISTENERS,
    )
    .unwrap();
    let clients = [
        Client::new("sensor-1", "sensor-1").ou("sensors"),
        Client::new("alice", "alice-1"),
        Client::new("operator-a", "x"),
        Client::anonymous("anon"),
        Client::new("a/b", "+"),
    ];
    let topics = [
        "factory/sensor-1/telemetry/t",
        "factory/#",
        "$SYS/broker/x",
        "devices/x/status",
        "users/alice/inbox/1",
        "#",
    ];
    for c in &clients {
        let resolved = c.resolve(&p);
        for action in [
            Action::Connect,
            Action::Publish,
            Action::Subscribe,
            Action::Receive,
        ] {
            for t in topics {
                assert_eq!(
                    p.explain(&c.facts(), action, t),
                    resolved.decide(action, t),
                    "{action} {t}"
                );
            }
        }
    }
}

/// Not a wire rule. DESIGN §4: snapshots are immutable and "published with `ArcSwap`", read by
/// every worker at once.
#[test]
fn shared_between_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<Policy>();
    send_sync::<ClientPolicy>();
    send_sync::<PolicyError>();
}

/// Every policy shipped in `policies/` loads as `run` and `check` load it (policies/README.md:
/// "examples cannot rot"): no mistake `check` would refuse, and `demo.toml`, which the demo runs
/// with, without any warning. (`example.toml` is the contract's example, copied unchanged: its
/// operators' `%u-*` is the one takeover warning, shown in the test above.) Its cost is measured
/// by `benches/src/bin/policy.rs`, not here.
#[test]
fn every_shipped_policy_loads_without_a_mistake() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let p = Policy::load(Some(&path), None, LISTENERS)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(p.rule_count() > 0, "{}", path.display());
        let mistakes: Vec<String> = p
            .warnings()
            .iter()
            .filter(|w| w.kind != mqtt_gateway::policy::WarningKind::Takeover)
            .map(ToString::to_string)
            .collect();
        assert!(mistakes.is_empty(), "{mistakes:#?}");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "demo.toml" {
            assert!(p.warnings().is_empty(), "{:#?}", p.warnings());
        }
        seen.push(name);
    }
    seen.sort();
    assert_eq!(
        seen,
        ["demo.toml", "example.toml"],
        "a new policy file: name it here"
    );
}

/// Classes naming exact principals are looked up by principal at resolution (an index, so that
/// 100,000 per-device rules cost a look-up): the rest of their `who` must still hold, glob
/// classes still apply, and a principal that is not indexed gets only the unindexed classes.
///
/// Policy contract (`who` selectors): "all given selectors must match; within a list any entry".
#[test]
fn principal_index_keeps_every_selector() {
    let p = policy(
        r##"version = 1
[[connect]]
who = { any = true }
client_ids = ["*"]
[[rule]]
who = { principals = ["dev-1", "dev-2"], cert_ou = ["sensors"] }
allow = ["publish"]
topics = ["exact/#"]
[[rule]]
who = { principals = ["dev-*"] }
allow = ["publish"]
topics = ["glob/#"]
[[rule]]
who = { principals = ["dev-2"] }
deny = ["publish"]
topics = ["exact/secret"]
"##,
    );
    let c = Client::new("dev-1", "dev-1").ou("sensors").resolve(&p);
    assert!(c.publish("exact/a").allowed && c.publish("glob/a").allowed);
    let c = Client::new("dev-1", "dev-1").resolve(&p);
    assert!(
        !c.publish("exact/a").allowed,
        "cert_ou is still checked for an indexed class"
    );
    assert!(c.publish("glob/a").allowed);
    let c = Client::new("dev-2", "dev-2").ou("sensors").resolve(&p);
    assert!(
        c.publish("exact/a").allowed && !c.publish("exact/secret").allowed,
        "deny from another indexed class"
    );
    let c = Client::new("dev-3", "dev-3").ou("sensors").resolve(&p);
    assert!(!c.publish("exact/a").allowed && c.publish("glob/a").allowed);
}
