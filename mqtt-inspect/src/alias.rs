//! `TopicAliases`: the MQTT 5 topic alias table of one direction of one connection (MQTT 5.0
//! §3.3.2.3.4), so that a PUBLISH with an empty topic is judged by the topic its alias stands for.
//!
//! Sans-I/O and bounded: at most `maximum` entries, where `maximum` is the Topic Alias Maximum the
//! receiver announced (capped by the caller); a topic is at most 65,535 bytes. Rebinding an alias to
//! a topic no longer than its previous one reuses the allocation. [`TopicAliases::heap_bytes`] says
//! how many topic bytes the table holds, for a caller that caps them.

use crate::error::DecodeError;

/// The alias → topic mapping of one direction.
#[derive(Debug, Clone, Default)]
pub struct TopicAliases {
    maximum: u16,
    /// Index `alias - 1`; an empty string is an unbound alias (a bound topic is never empty).
    topics: Vec<String>,
    /// The capacity of every topic string, added up.
    bytes: usize,
}

impl TopicAliases {
    /// A table accepting aliases `1..=maximum`; `maximum = 0` refuses every alias.
    #[must_use]
    pub const fn new(maximum: u16) -> Self {
        Self {
            maximum,
            topics: Vec::new(),
            bytes: 0,
        }
    }

    /// Bytes allocated for the bound topics: the sum of the longest topic each alias has held (a
    /// rebinding to a shorter topic keeps its allocation).
    #[must_use]
    pub const fn heap_bytes(&self) -> usize {
        self.bytes
    }

    /// The negotiated maximum.
    #[must_use]
    pub const fn maximum(&self) -> u16 {
        self.maximum
    }

    /// Number of aliases bound now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.topics.iter().filter(|t| !t.is_empty()).count()
    }

    /// True when no alias is bound.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves the topic of a PUBLISH that carries `topic` (possibly empty) and `alias`.
    ///
    /// - no alias: `topic` itself, which must not be empty ([MQTT-3.3.2-1]);
    /// - alias with a topic: binds the alias to the topic and returns the topic;
    /// - alias with an empty topic: the topic the alias is bound to.
    ///
    /// # Errors
    /// [`DecodeError::TopicAliasInvalid`] for alias 0 or above the maximum ([MQTT-3.3.2-9],
    /// [MQTT-3.3.2-10]) or an alias not bound yet; [`DecodeError::InvalidTopicName`] for an empty
    /// topic without an alias.
    pub fn resolve<'t>(
        &'t mut self,
        topic: &'t str,
        alias: Option<u16>,
    ) -> Result<&'t str, DecodeError> {
        let Some(alias) = alias else {
            return if topic.is_empty() {
                Err(DecodeError::InvalidTopicName(
                    "empty topic without a topic alias",
                ))
            } else {
                Ok(topic)
            };
        };
        if alias == 0 || alias > self.maximum {
            return Err(DecodeError::TopicAliasInvalid);
        }
        let index = usize::from(alias - 1);
        if topic.is_empty() {
            return match self.topics.get(index) {
                Some(bound) if !bound.is_empty() => Ok(bound.as_str()),
                _ => Err(DecodeError::TopicAliasInvalid),
            };
        }
        if self.topics.len() <= index {
            self.topics.resize_with(index + 1, String::new);
        }
        if let Some(slot) = self.topics.get_mut(index) {
            let before = slot.capacity();
            slot.clear();
            // Exactly what the topic needs: a String growing by itself would double its capacity.
            slot.reserve_exact(topic.len());
            slot.push_str(topic);
            self.bytes = self
                .bytes
                .saturating_sub(before)
                .saturating_add(slot.capacity());
        }
        Ok(topic)
    }

    /// Bytes allocated for the topic of `alias` (the longest it has been bound to; 0 if never).
    #[must_use]
    pub fn held_bytes(&self, alias: u16) -> usize {
        alias
            .checked_sub(1)
            .and_then(|i| self.topics.get(usize::from(i)))
            .map_or(0, String::capacity)
    }

    /// The topic `alias` is bound to, without changing anything.
    #[must_use]
    pub fn get(&self, alias: u16) -> Option<&str> {
        let index = usize::from(alias.checked_sub(1)?);
        self.topics
            .get(index)
            .filter(|t| !t.is_empty())
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_then_use() {
        let mut t = TopicAliases::new(10);
        assert_eq!(t.resolve("a/b", Some(3)), Ok("a/b"));
        assert_eq!(t.resolve("", Some(3)), Ok("a/b"));
        assert_eq!(t.get(3), Some("a/b"));
        assert_eq!(t.len(), 1);
        // Rebinding: [MQTT-3.3.2-...] a later PUBLISH with topic and alias replaces the mapping.
        assert_eq!(t.resolve("c", Some(3)), Ok("c"));
        assert_eq!(t.resolve("", Some(3)), Ok("c"));
    }

    #[test]
    fn heap_bytes_count_the_longest_topic_of_each_alias() {
        let mut t = TopicAliases::new(10);
        assert_eq!(t.heap_bytes(), 0);
        let long = "x".repeat(1000);
        t.resolve(&long, Some(1)).unwrap();
        assert!(t.heap_bytes() >= 1000);
        // Rebound to a short topic: the allocation (and the count) stays.
        t.resolve("s", Some(1)).unwrap();
        assert!(t.heap_bytes() >= 1000);
        t.resolve("abc", Some(2)).unwrap();
        assert_eq!(t.heap_bytes(), 1003);
        assert_eq!(
            (t.held_bytes(1), t.held_bytes(2), t.held_bytes(3)),
            (1000, 3, 0)
        );
        // Rebound to a slightly longer topic: exactly its length, not a doubled allocation.
        t.resolve(&"y".repeat(1001), Some(1)).unwrap();
        assert_eq!(t.heap_bytes(), 1004);
    }

    #[test]
    fn refusals() {
        let mut t = TopicAliases::new(2);
        assert_eq!(t.resolve("a", Some(0)), Err(DecodeError::TopicAliasInvalid));
        assert_eq!(t.resolve("a", Some(3)), Err(DecodeError::TopicAliasInvalid));
        assert_eq!(t.resolve("", Some(1)), Err(DecodeError::TopicAliasInvalid));
        assert!(matches!(
            t.resolve("", None),
            Err(DecodeError::InvalidTopicName(_))
        ));
        assert_eq!(t.resolve("plain", None), Ok("plain"));
        let mut none = TopicAliases::new(0);
        assert_eq!(
            none.resolve("a", Some(1)),
            Err(DecodeError::TopicAliasInvalid)
        );
        assert!(none.is_empty());
    }
}
