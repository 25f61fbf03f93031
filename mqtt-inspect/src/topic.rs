//! Topic names and topic filters: validation, matching, containment and shared subscriptions.
//!
//! The rules are those of MQTT 5.0 §4.7 and §4.8 (identical in 3.1.1 §4.7): wildcards only in
//! filters and only as whole levels, `#` only last, and a filter that starts with a wildcard never
//! matches a topic that starts with `$` ([MQTT-4.7.2-1]).

use crate::error::DecodeError;

/// A validated Topic Name: non-empty, no wildcard, no U+0000 ([MQTT-3.3.2-2], [MQTT-4.7.3-1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicName<'a>(&'a str);

impl<'a> TopicName<'a> {
    /// Validates a topic name.
    ///
    /// # Errors
    /// [`DecodeError::InvalidTopicName`] when it is empty, holds `+`, `#` or U+0000, or is longer
    /// than 65,535 bytes.
    pub fn new(s: &'a str) -> Result<Self, DecodeError> {
        if s.is_empty() {
            return Err(DecodeError::InvalidTopicName("empty"));
        }
        if s.len() > usize::from(u16::MAX) {
            return Err(DecodeError::InvalidTopicName("longer than 65535 bytes"));
        }
        if s.bytes().any(|b| b == b'+' || b == b'#' || b == 0) {
            return Err(DecodeError::InvalidTopicName(
                "wildcard or NUL in a topic name",
            ));
        }
        Ok(Self(s))
    }

    /// A topic name from a string whose [`scan`](crate::reader::scan) flags are known: the
    /// wildcard check without a second pass. The string is already valid UTF-8 without NUL.
    pub(crate) fn from_scanned(s: &'a str, flags: u8) -> Result<Self, DecodeError> {
        if s.is_empty() {
            return Err(DecodeError::InvalidTopicName("empty"));
        }
        if flags & crate::reader::WILDCARD != 0 {
            return Err(DecodeError::InvalidTopicName(
                "wildcard or NUL in a topic name",
            ));
        }
        Ok(Self(s))
    }

    /// The topic as a string.
    #[must_use]
    pub const fn as_str(&self) -> &'a str {
        self.0
    }
}

/// A validated Topic Filter. `$share/<group>/<filter>` is accepted when both parts are valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicFilter<'a>(&'a str);

impl<'a> TopicFilter<'a> {
    /// Validates a topic filter.
    ///
    /// # Errors
    /// [`DecodeError::InvalidTopicFilter`] for an empty filter or a misplaced wildcard;
    /// [`DecodeError::InvalidSharedSubscription`] for a bad `$share/<group>/<filter>`.
    pub fn new(s: &'a str) -> Result<Self, DecodeError> {
        if let Some(rest) = s.strip_prefix("$share/") {
            let Some((group, filter)) = rest.split_once('/') else {
                return Err(DecodeError::InvalidSharedSubscription(
                    "no filter after the share name",
                ));
            };
            // [MQTT-4.8.2-1]: a ShareName is at least one character and holds no '/', '+' or '#'.
            if group.is_empty() || group.bytes().any(|b| b == b'+' || b == b'#') {
                return Err(DecodeError::InvalidSharedSubscription("invalid share name"));
            }
            // [MQTT-4.8.2-2]: the Topic Filter part is a valid, non-empty filter.
            check_filter(filter)
                .map_err(|_| DecodeError::InvalidSharedSubscription("invalid filter"))?;
            return Ok(Self(s));
        }
        check_filter(s)?;
        Ok(Self(s))
    }

    /// A filter already validated (by the decoder of the packet that holds it).
    pub(crate) const fn trusted(s: &'a str) -> Self {
        Self(s)
    }

    /// The filter as sent, `$share/...` prefix included.
    #[must_use]
    pub const fn as_str(&self) -> &'a str {
        self.0
    }

    /// For `$share/<group>/<filter>`: the group and the filter. `None` for a plain filter.
    #[must_use]
    pub fn shared(&self) -> Option<(&'a str, TopicFilter<'a>)> {
        let rest = self.0.strip_prefix("$share/")?;
        let (group, filter) = rest.split_once('/')?;
        Some((group, TopicFilter(filter)))
    }

    /// The filter that decides what is delivered: `<filter>` of a shared subscription, else itself.
    #[must_use]
    pub fn effective(&self) -> TopicFilter<'a> {
        self.shared().map_or(*self, |(_, f)| f)
    }

    /// True when the filter holds `+` or `#`.
    #[must_use]
    pub fn has_wildcards(&self) -> bool {
        self.0.bytes().any(|b| b == b'+' || b == b'#')
    }

    /// Whether this filter matches `topic` (see [`matches`]).
    #[must_use]
    pub fn matches(&self, topic: &str) -> bool {
        matches(self.0, topic)
    }

    /// Whether every topic `other` matches is also matched by `self` (see [`contains`]).
    #[must_use]
    pub fn contains(&self, other: &TopicFilter<'_>) -> bool {
        contains(self.0, other.0)
    }
}

fn check_filter(s: &str) -> Result<(), DecodeError> {
    if s.is_empty() {
        return Err(DecodeError::InvalidTopicFilter("empty"));
    }
    if s.len() > usize::from(u16::MAX) {
        return Err(DecodeError::InvalidTopicFilter("longer than 65535 bytes"));
    }
    let flags = crate::reader::scan(s.as_bytes());
    if flags & crate::reader::CONTROL != 0 && s.as_bytes().contains(&0) {
        return Err(DecodeError::InvalidTopicFilter("NUL in a topic filter"));
    }
    if flags & crate::reader::WILDCARD == 0 {
        return Ok(());
    }
    // One pass: each wildcard must fill its level; '#' must also be the last character.
    let bytes = s.as_bytes();
    let mut prev = b'/';
    for (i, &b) in bytes.iter().enumerate() {
        let next = bytes.get(i + 1).copied().unwrap_or(b'/');
        match b {
            // [MQTT-4.7.1-1]: '#' alone in its level and the last level.
            b'#' if prev != b'/' || i + 1 != bytes.len() => {
                return Err(DecodeError::InvalidTopicFilter(
                    "'#' must be the whole last level",
                ));
            }
            // [MQTT-4.7.1-2]: '+' occupies an entire level.
            b'+' if prev != b'/' || next != b'/' => {
                return Err(DecodeError::InvalidTopicFilter("'+' must be a whole level"));
            }
            _ => {}
        }
        prev = b;
    }
    Ok(())
}

fn starts_with_wildcard(filter: &str) -> bool {
    filter.starts_with('+') || filter.starts_with('#')
}

/// Whether the (valid) `filter` matches the (valid) `topic` name.
///
/// `#` matches its parent level and any number of child levels; `+` matches exactly one level,
/// which may be empty; a filter starting with a wildcard does not match a topic starting with `$`
/// ([MQTT-4.7.2-1]). `$share/` prefixes are not interpreted here: pass [`TopicFilter::effective`].
#[must_use]
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && starts_with_wildcard(filter) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) => {
                if fl != tl {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

/// Whether `outer` contains `inner`: every topic that `inner` matches, `outer` matches too.
///
/// `a/#` ⊇ `a/+/b` and ⊇ `a`; `a/+` ⊉ `a/#`; `#` ⊉ `$SYS/x` ([MQTT-4.7.2-1]). The answer is
/// conservative: where containment holds only through a corner case (`+/#` ⊇ `#`), it says no,
/// which for an ACL means deny.
#[must_use]
pub fn contains(outer: &str, inner: &str) -> bool {
    if starts_with_wildcard(outer) && inner.starts_with('$') {
        return false;
    }
    let mut o = outer.split('/');
    let mut i = inner.split('/');
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some("#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(ol), Some(il)) => {
                if il == "+" || il == "#" || ol != il {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert!(TopicName::new("a/b").is_ok());
        assert!(TopicName::new("/").is_ok());
        assert!(TopicName::new("$SYS/x").is_ok());
        for bad in ["", "a/+", "a/#", "+", "a/b#", "a\0b"] {
            assert!(TopicName::new(bad).is_err(), "{bad:?}"); // [MQTT-3.3.2-2]
        }
    }

    #[test]
    fn topic_filters() {
        for good in [
            "#",
            "+",
            "a/#",
            "a/+/b",
            "+/+",
            "/+",
            "a//b",
            "$SYS/#",
            "$share/g/a/#",
            "$share/g/#",
        ] {
            assert!(TopicFilter::new(good).is_ok(), "{good:?}");
        }
        // [MQTT-4.7.1-1] [MQTT-4.7.1-2] [MQTT-4.7.3-1]
        for bad in ["", "a/#/b", "a#", "a/b#", "#/", "a+", "a/+b", "+a/b"] {
            assert!(
                matches!(
                    TopicFilter::new(bad),
                    Err(DecodeError::InvalidTopicFilter(_))
                ),
                "{bad:?}"
            );
        }
        // [MQTT-4.8.2-1] [MQTT-4.8.2-2]
        for bad in [
            "$share/g",
            "$share//a",
            "$share/g+/a",
            "$share/g#/a",
            "$share/g/",
            "$share/g/a#",
        ] {
            assert!(
                matches!(
                    TopicFilter::new(bad),
                    Err(DecodeError::InvalidSharedSubscription(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn shared_split() {
        let f = TopicFilter::new("$share/grp/factory/+/x").unwrap();
        let (g, inner) = f.shared().unwrap();
        assert_eq!(g, "grp");
        assert_eq!(inner.as_str(), "factory/+/x");
        assert_eq!(f.effective().as_str(), "factory/+/x");
        assert_eq!(TopicFilter::new("a/b").unwrap().shared(), None);
    }

    #[test]
    fn matching_table() {
        // MQTT 5.0 §4.7.1.2 and §4.7.1.3 examples, §4.7.2 for '$'.
        let table = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "anything/at/all", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("#", "$SYS/uptime", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
        ];
        for (filter, topic, want) in table {
            assert_eq!(matches(filter, topic), want, "{filter} vs {topic}");
        }
    }

    #[test]
    fn containment_table() {
        let table = [
            ("a/#", "a/+/b", true),
            ("a/#", "a/#", true),
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/+", "a/#", false),
            ("a/+", "a/b", true),
            ("a/+", "a/+", true),
            ("a/+", "a/b/c", false),
            ("a/b", "a/+", false),
            ("a/b", "a/b", true),
            ("#", "$SYS/x", false),
            ("#", "$SYS/#", false),
            ("+/x", "$SYS/x", false),
            ("$SYS/#", "$SYS/x", true),
            ("#", "a/b", true),
            ("#", "#", true),
            ("#", "+/b", true),
            ("+/+", "a/+", true),
            ("+/+", "+/#", false),
            ("a/+/c", "a/b/c", true),
            ("a/+/c", "a/b/d", false),
            (
                "factory/sensor-1/telemetry/#",
                "factory/+/telemetry/#",
                false,
            ),
        ];
        for (outer, inner, want) in table {
            assert_eq!(contains(outer, inner), want, "{outer} ⊇ {inner}");
        }
    }
}
