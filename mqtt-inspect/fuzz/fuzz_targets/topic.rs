//! Fuzz target `topic`: topic name and filter validation, matching and containment.
//!
//! Input: up to three strings separated by NUL bytes (`a \0 b \0 t`), each read as UTF-8 lossily.
//! Nothing may panic, and:
//! - `TopicName::new` and `TopicFilter::new` accept exactly what the reference validators below
//!   (written from MQTT 5.0 §4.7 and §4.8) accept;
//! - for valid filters `a`, `b` and a valid topic `t`: `matches` agrees with the reference matcher,
//!   and `contains(a, b)` and `matches(b, t)` imply `matches(a, t)` (containment is sound).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt_inspect::topic::{contains, matches};
use mqtt_inspect::{TopicFilter, TopicName, check_utf8};

fn reference_name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= 65_535 && !s.contains(['+', '#', '\0'])
}

fn reference_plain_filter_ok(s: &str) -> bool {
    if s.is_empty() || s.len() > 65_535 || s.contains('\0') {
        return false;
    }
    let n = s.split('/').count();
    s.split('/').enumerate().all(|(i, l)| {
        if l.contains('#') {
            l == "#" && i + 1 == n
        } else {
            !l.contains('+') || l == "+"
        }
    })
}

fn reference_filter_ok(s: &str) -> bool {
    match s.strip_prefix("$share/") {
        Some(rest) => match rest.split_once('/') {
            Some((group, filter)) => {
                !group.is_empty()
                    && !group.contains(['+', '#'])
                    && reference_plain_filter_ok(filter)
            }
            None => false,
        },
        None => reference_plain_filter_ok(s),
    }
}

fn reference_matches(filter: &str, topic: &str) -> bool {
    fn go(f: &[&str], t: &[&str]) -> bool {
        match (f.split_first(), t.split_first()) {
            (Some((&"#", _)), _) | (None, None) => true,
            (Some((&"+", fr)), Some((_, tr))) => go(fr, tr),
            (Some((fl, fr)), Some((tl, tr))) => fl == tl && go(fr, tr),
            _ => false,
        }
    }
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let f: Vec<&str> = filter.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    go(&f, &t)
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0);
    let mut next = || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
    let (a, b, t) = (next(), next(), next());

    for s in [&a, &b, &t] {
        let _ = check_utf8(s.as_bytes(), "fuzz");
        assert_eq!(
            TopicName::new(s).is_ok(),
            reference_name_ok(s),
            "name {s:?}"
        );
        let filter = TopicFilter::new(s);
        assert_eq!(filter.is_ok(), reference_filter_ok(s), "filter {s:?}");
        if let Ok(f) = filter {
            // The effective filter is a valid PLAIN filter. (Not necessarily a valid `TopicFilter`:
            // in `$share/g/$share/x` it is `$share/x`, which `TopicFilter::new` reads as a share.)
            assert!(reference_plain_filter_ok(f.effective().as_str()));
            assert_eq!(f.shared().is_some(), s.starts_with("$share/"));
            let _ = f.has_wildcards();
            let _ = f.matches(&t);
        }
    }
    // Arbitrary strings: no panic.
    let _ = matches(&a, &b);
    let _ = contains(&a, &b);
    let _ = contains(&b, &a);

    let valid_filter = |s: &str| TopicFilter::new(s).is_ok();
    if TopicName::new(&t).is_ok() {
        for f in [&a, &b] {
            if valid_filter(f) {
                assert_eq!(matches(f, &t), reference_matches(f, &t), "{f:?} vs {t:?}");
            }
        }
        if valid_filter(&a) && valid_filter(&b) {
            for (outer, inner) in [(&a, &b), (&b, &a)] {
                if contains(outer, inner) && matches(inner, &t) {
                    assert!(
                        matches(outer, &t),
                        "{outer:?} contains {inner:?}, {inner:?} matches {t:?}, {outer:?} does not"
                    );
                }
            }
        }
    }
});
