//! The Mosquitto acl_file translation, with the sample of DEPENDENCIES.md §6.2.

use super::{Client, Decision, EXAMPLE, LISTENERS, Policy, line};

/// DEPENDENCIES.md §6.2, line for line.
pub(super) const SAMPLE: &str = "\
# anonymous clients (no username): only $SYS
topic read $SYS/#

user sensor-1
topic write factory/sensor-1/telemetry/#
topic read factory/sensor-1/commands/#
topic deny factory/sensor-1/commands/firmware

user operator-a
topic readwrite factory/#

# every client, wherever it appears in the file
pattern write devices/%c/status
pattern read users/%u/inbox/#
";

fn acl_only() -> Policy {
    Policy::from_sources(None, Some((SAMPLE, "acl")), LISTENERS).unwrap()
}

#[test]
fn sample_translates_line_for_line() {
    let p = acl_only();
    assert_eq!(p.rule_count(), 7);
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());

    let anon = Client::anonymous("a1").resolve(&p);
    assert!(
        anon.connect().allowed,
        "acl_file only: whoever authentication let in connects"
    );
    assert_eq!(anon.connect().rule.unwrap().to_string(), "acl");
    assert_eq!(line(&anon.receive("$SYS/broker/uptime")), Some(2));
    assert!(
        anon.subscribe("$SYS/broker/#").allowed,
        "read covers SUBSCRIBE too"
    );
    assert!(!anon.publish("$SYS/broker/uptime").allowed);
    assert!(!anon.receive("factory/x").allowed);
    assert!(
        !anon.receive("users//inbox/x").allowed,
        "no username: %u patterns skipped"
    );

    let s = Client::new("sensor-1", "sensor-1").resolve(&p);
    assert!(s.connect().allowed);
    assert_eq!(line(&s.publish("factory/sensor-1/telemetry/t")), Some(5));
    assert!(
        !s.receive("factory/sensor-1/telemetry/t").allowed,
        "write is not read"
    );
    assert_eq!(
        line(&s.receive("factory/sensor-1/commands/reboot")),
        Some(6)
    );
    let fw = s.receive("factory/sensor-1/commands/firmware");
    assert_eq!((fw.allowed, line(&fw)), (false, Some(7)));
    assert!(!s.publish("factory/sensor-1/commands/firmware").allowed);
    // Mosquitto filters per delivered message: the subscription itself stays allowed...
    assert_eq!(line(&s.subscribe("factory/sensor-1/commands/#")), Some(6));
    // ...unless the deny line contains all of it.
    assert_eq!(
        line(&s.subscribe("factory/sensor-1/commands/firmware")),
        Some(7)
    );
    assert_eq!(line(&s.publish("devices/sensor-1/status")), Some(13));
    assert!(!s.publish("devices/sensor-2/status").allowed);
    assert_eq!(line(&s.receive("users/sensor-1/inbox/m1")), Some(14));
    assert!(!s.receive("users/operator-a/inbox/m1").allowed);
    assert!(
        !s.receive("$SYS/broker/uptime").allowed,
        "anonymous lines are not for users"
    );

    let op = Client::new("operator-a", "op").resolve(&p);
    assert_eq!(
        line(&op.publish("factory/sensor-1/commands/firmware")),
        Some(10)
    );
    assert!(op.subscribe("factory/#").allowed);
    assert_eq!(
        line(&op.publish("factory/sensor-1/x")),
        Some(10),
        "sensor-1's deny is its own"
    );
    assert_eq!(line(&op.publish("devices/op/status")), Some(13));

    // Mosquitto: a username or client id with '+' or '#' gets no pattern access at all.
    for (user, id) in [("sensor-1", "a+b"), ("sensor-1", "x#"), ("sens+or", "c")] {
        let h = Client {
            principal: Some(user),
            client_id: id,
            ..Client::new("", "")
        }
        .resolve(&p);
        assert_eq!(
            h.receive("users/sensor-1/inbox/m1"),
            Decision::DEFAULT_DENY,
            "{user} {id}"
        );
    }
    let h = Client::new("sensor-1", "a+b").resolve(&p);
    assert!(
        h.publish("factory/sensor-1/telemetry/t").allowed,
        "user lines still apply"
    );
}

#[test]
fn policy_file_and_acl_file_together() {
    let p = Policy::from_sources(
        Some((EXAMPLE, "policy.toml")),
        Some((SAMPLE, "acl")),
        LISTENERS,
    )
    .unwrap();
    assert_eq!(p.rule_count(), 6 + 7);
    // Connect rules come from the policy file only: operator-a has none there.
    let op = Client::new("operator-a", "op").resolve(&p);
    assert_eq!(op.connect(), Decision::DEFAULT_DENY);
    assert!(
        op.publish("factory/x").allowed,
        "topic rules of both files apply"
    );
    // The policy file's `$SYS` deny (any = true) beats the acl_file's grants.
    let s = Client::new("sensor-1", "sensor-1")
        .ou("sensors")
        .resolve(&p);
    let d = s.receive("factory/sensor-1/commands/firmware");
    assert_eq!(d.rule.unwrap().to_string(), "acl:7");
    assert_eq!(s.connect().rule.unwrap().file.as_ref(), "policy.toml");
}

#[test]
fn acl_file_errors_name_the_line() {
    let e = Policy::from_sources(
        None,
        Some(("user a\ntopic read a/b\ntopic sometimes a/b\n", "acl")),
        LISTENERS,
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("acl:3: unknown access \"sometimes\""), "{e}");
}
