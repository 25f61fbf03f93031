//! The last topic one direction's policy allowed: a device publishing to the same topic again and
//! again is judged once per policy generation.

use crate::policy::Decision;

/// Topics longer than this are judged every time.
const LAST_TOPIC_MAX: usize = 48;

/// The last topic one direction's policy allowed, with the generation of the policy that allowed
/// it, so that a device publishing to the same topic again and again is not judged again each
/// time (the policy walk was the largest part of the gateway's own CPU per message, BENCHMARKS.md).
/// Only an allow is kept: every denial is judged, counted and audited. A policy reload is a new
/// generation, which misses. The topic is kept inline (no allocation; a few dozen bytes per
/// session).
#[derive(Debug)]
pub(super) struct LastAllowed {
    generation: u64,
    /// 0: nothing kept.
    len: u8,
    topic: [u8; LAST_TOPIC_MAX],
}

impl Default for LastAllowed {
    fn default() -> Self {
        Self {
            generation: 0,
            len: 0,
            topic: [0; LAST_TOPIC_MAX],
        }
    }
}

impl LastAllowed {
    /// The decision for `topic` under the policy of `generation`: "allowed" when it is the topic
    /// last allowed under that same generation, else `judge(topic)` (kept when it allows).
    pub(super) fn decide(
        &mut self,
        generation: u64,
        topic: &str,
        judge: impl FnOnce(&str) -> Decision,
    ) -> Decision {
        if self.len != 0
            && self.generation == generation
            && self.topic.get(..usize::from(self.len)) == Some(topic.as_bytes())
        {
            return Decision {
                allowed: true,
                rule: None,
            };
        }
        let decision = judge(topic);
        let bytes = topic.as_bytes();
        match (u8::try_from(bytes.len()), self.topic.get_mut(..bytes.len())) {
            (Ok(len), Some(room)) if decision.allowed && len > 0 => {
                room.copy_from_slice(bytes);
                self.len = len;
                self.generation = generation;
            }
            _ => self.len = 0,
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::{Decision, LastAllowed};

    fn allow(_: &str) -> Decision {
        Decision {
            allowed: true,
            rule: None,
        }
    }

    #[test]
    fn the_last_allowed_topic_is_reused_only_for_the_same_topic_and_generation() {
        let mut last = LastAllowed::default();
        let judged = std::cell::Cell::new(0);
        let counting = |allowed: bool| {
            let judged = &judged;
            move |_: &str| {
                judged.set(judged.get() + 1);
                Decision {
                    allowed,
                    rule: None,
                }
            }
        };
        assert!(last.decide(1, "plant/a/temp", counting(true)).allowed);
        assert!(last.decide(1, "plant/a/temp", counting(false)).allowed);
        assert_eq!(
            judged.get(),
            1,
            "the same topic under the same policy is not judged again"
        );
        // A new policy generation is judged (and here denies).
        assert!(!last.decide(2, "plant/a/temp", counting(false)).allowed);
        assert!(!last.decide(2, "plant/a/temp", counting(false)).allowed);
        assert_eq!(judged.get(), 3, "a denial is never kept");
        // Other topics, prefixes and extensions of the kept one are judged.
        assert!(last.decide(2, "plant/a/temp", counting(true)).allowed);
        for other in [
            "plant/a/tem",
            "plant/a/temp/x",
            "plant/a/tempX",
            "plant/b/temp",
        ] {
            let before = judged.get();
            assert!(!last.decide(2, other, counting(false)).allowed, "{other}");
            assert_eq!(judged.get(), before + 1, "{other} was not judged");
        }
        // The denials above forgot the kept topic.
        assert!(!last.decide(2, "plant/a/temp", counting(false)).allowed);
    }

    #[test]
    fn long_topics_are_judged_every_time() {
        let mut last = LastAllowed::default();
        let long = "x/".repeat(40);
        assert!(last.decide(1, &long, allow).allowed);
        let mut judged = false;
        let d = last.decide(1, &long, |_| {
            judged = true;
            Decision {
                allowed: false,
                rule: None,
            }
        });
        assert!(judged && !d.allowed);
    }
}
