//! Fuzz target `alias`: a sequence of `TopicAliases::resolve` calls driven by the input, checked
//! against a model (a map from alias to topic).
//!
//! Input: the Topic Alias Maximum (one byte, or 0xff and two more bytes, big-endian, for any u16),
//! then operations. Each operation is a control
//! byte `c`, then the alias, then the topic:
//! - alias, by `c & 3`: 0 none; 1 one byte taken modulo `maximum + 2` (mostly in range, sometimes
//!   0 or one past the maximum); 2 two bytes (any u16); 3 one byte (any small alias);
//! - topic: the next `(c >> 2) & 15` bytes (0: empty), as UTF-8 (lossily).
//!
//! Nothing may panic; every answer equals the model's; `get` agrees with the model; at the end the
//! table holds exactly the model's aliases, never more than `maximum`.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use mqtt_inspect::{DecodeError, TopicAliases};

struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let maximum = match input.byte() {
        None => return,
        // Large tables (up to 65,535 slots) are slow to build under ASan: reach them, rarely.
        Some(0xff) => u16::from_be_bytes([input.byte().unwrap_or(0), input.byte().unwrap_or(0)]),
        Some(b) => u16::from(b),
    };
    let mut table = TopicAliases::new(maximum);
    let mut model: HashMap<u16, String> = HashMap::new();
    while let Some(c) = input.byte() {
        let alias = match c & 3 {
            0 => None,
            1 => {
                let b = u32::from(input.byte().unwrap_or(0));
                let modulus = u32::from(maximum) + 2;
                Some(u16::try_from(b % modulus).unwrap_or(u16::MAX))
            }
            2 => Some(u16::from_be_bytes([
                input.byte().unwrap_or(0),
                input.byte().unwrap_or(0),
            ])),
            _ => Some(u16::from(input.byte().unwrap_or(0))),
        };
        let topic = String::from_utf8_lossy(input.take(usize::from((c >> 2) & 15))).into_owned();

        let got = table.resolve(&topic, alias).map(str::to_owned);
        let want: Option<String> = match alias {
            None if topic.is_empty() => None,
            None => Some(topic.clone()),
            Some(a) if a == 0 || a > maximum => None,
            Some(a) if topic.is_empty() => model.get(&a).cloned(),
            Some(a) => {
                model.insert(a, topic.clone());
                Some(topic.clone())
            }
        };
        assert_eq!(
            got.as_ref().ok(),
            want.as_ref(),
            "resolve({topic:?}, {alias:?})"
        );
        if let Err(e) = &got {
            assert!(
                matches!(
                    e,
                    DecodeError::TopicAliasInvalid | DecodeError::InvalidTopicName(_)
                ),
                "unexpected error {e:?}"
            );
        }
        if let Some(a) = alias {
            assert_eq!(table.get(a), model.get(&a).map(String::as_str));
        }
    }
    // `len` walks the whole table (up to 65,535 slots): once per input, not once per operation.
    assert!(table.len() <= usize::from(maximum));
    assert_eq!(table.len(), model.len());
    assert_eq!(table.is_empty(), model.is_empty());
    for (&a, topic) in &model {
        assert_eq!(table.get(a), Some(topic.as_str()));
    }
});
