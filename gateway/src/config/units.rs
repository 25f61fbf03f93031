//! Strict parsers for the two unit-bearing value kinds of the configuration:
//! durations (`"10s"`, `"500ms"`, `"2m"`, `"1h"`) and byte sizes (`"256KiB"`,
//! `"1MiB"`, `"1GiB"`, `"512B"` or a plain integer byte count).
//!
//! The grammar is deliberately narrow (integer + one unit, no spaces, no
//! fractions, no decimal `KB`/`MB`): a typo must be an error, never a
//! different value. Whether zero is acceptable is decided by the config
//! validation, not here.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The duration grammar, used in error messages.
const DURATION_EXPECTED: &str =
    r#"an integer followed by ms, s, m or h, without spaces (e.g. "500ms", "10s", "2m", "1h")"#;

/// The size grammar, used in error messages.
const SIZE_EXPECTED: &str = r#"an integer byte count, or an integer followed by B, KiB, MiB or GiB, without spaces (e.g. "512B", "256KiB", "1MiB")"#;

/// Why a duration or size string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text does not follow the duration grammar.
    #[error("invalid duration {text:?}: expected {DURATION_EXPECTED}")]
    BadDuration {
        /// The offending text.
        text: String,
    },
    /// The text does not follow the size grammar.
    #[error("invalid size {text:?}: expected {SIZE_EXPECTED}")]
    BadSize {
        /// The offending text.
        text: String,
    },
    /// The number is well-formed but too large to represent.
    #[error("{text:?} is too large")]
    Overflow {
        /// The offending text.
        text: String,
    },
}

/// Splits `"123unit"` into `(123, "unit")`. `None` when there is no leading
/// digit or the number does not fit in a `u64`; the bool says which (`true` =
/// overflow).
fn split_number(text: &str) -> Result<(u64, &str), bool> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(false);
    }
    // Only ASCII digits remain, so the only possible failure is overflow.
    digits.parse::<u64>().map(|n| (n, unit)).map_err(|_| true)
}

/// Parses a duration: an integer followed by exactly one of `ms`, `s`, `m`, `h`.
///
/// # Errors
/// [`UnitError::BadDuration`] for anything outside the grammar (including a
/// missing unit, spaces, signs, fractions) and [`UnitError::Overflow`] when
/// the value does not fit a `Duration` counted in milliseconds as `u64`.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::BadDuration {
        text: text.to_owned(),
    };
    let overflow = || UnitError::Overflow {
        text: text.to_owned(),
    };
    let (n, unit) = split_number(text).map_err(|o| if o { overflow() } else { bad() })?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(bad()),
    };
    let millis = n.checked_mul(millis_per_unit).ok_or_else(overflow)?;
    Ok(Duration::from_millis(millis))
}

/// A number of bytes, parsed from `"256KiB"`-style strings or plain integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The number of bytes.
    #[must_use]
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes", self.0)
    }
}

/// Parses a size: an integer optionally followed by `B`, `KiB`, `MiB` or `GiB`
/// (binary multiples only: `KB`/`MB` are refused because they are ambiguous).
///
/// # Errors
/// [`UnitError::BadSize`] outside the grammar, [`UnitError::Overflow`] when the
/// byte count does not fit a `u64`.
pub fn parse_size(text: &str) -> Result<ByteSize, UnitError> {
    let bad = || UnitError::BadSize {
        text: text.to_owned(),
    };
    let overflow = || UnitError::Overflow {
        text: text.to_owned(),
    };
    let (n, unit) = split_number(text).map_err(|o| if o { overflow() } else { bad() })?;
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(bad()),
    };
    n.checked_mul(multiplier).map(ByteSize).ok_or_else(overflow)
}

// === serde ===

/// Serde adapter for `Duration` fields: `#[serde(deserialize_with = "units::duration")]`.
///
/// # Errors
/// A serde error carrying the [`UnitError`] text, or a type error when the value
/// is not a string (durations are always strings in the contract).
pub fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    struct DurationVisitor;
    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a duration string: {DURATION_EXPECTED}")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
    }
    deserializer.deserialize_str(DurationVisitor)
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a size: {SIZE_EXPECTED}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| {
                    E::custom(format_args!("invalid size {v}: expected {SIZE_EXPECTED}"))
                })
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_in_the_grammar() {
        let cases = [
            ("500ms", Duration::from_millis(500)),
            ("10s", Duration::from_secs(10)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("0s", Duration::ZERO),
            ("007s", Duration::from_secs(7)),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn durations_outside_the_grammar() {
        for text in [
            "", "10", "s", "10 s", " 10s", "10s ", "+10s", "-1s", "1.5s", "10S", "10sec", "1h30m",
            "10d", "10us", "ms", "1e3ms", "１s",
        ] {
            assert_eq!(
                parse_duration(text),
                Err(UnitError::BadDuration { text: text.into() }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn duration_overflow_is_an_error() {
        let big = format!("{}h", u64::MAX / 1000);
        assert_eq!(
            parse_duration(&big),
            Err(UnitError::Overflow { text: big.clone() })
        );
        let huge = "99999999999999999999999ms";
        assert_eq!(
            parse_duration(huge),
            Err(UnitError::Overflow { text: huge.into() })
        );
        assert_eq!(
            parse_duration(&format!("{}ms", u64::MAX)),
            Ok(Duration::from_millis(u64::MAX))
        );
    }

    #[test]
    fn sizes_in_the_grammar() {
        let cases = [
            ("512B", 512),
            ("512", 512),
            ("256KiB", 256 * 1024),
            ("1MiB", 1 << 20),
            ("1GiB", 1 << 30),
            ("0B", 0),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), Ok(ByteSize(want)), "{text}");
        }
    }

    #[test]
    fn sizes_outside_the_grammar() {
        for text in [
            "",
            "KiB",
            "12 apples",
            "1 MiB",
            "1KB",
            "1MB",
            "1kib",
            "1.5MiB",
            "-1B",
            "+1B",
            "1TiB",
            "1MiB ",
        ] {
            assert_eq!(
                parse_size(text),
                Err(UnitError::BadSize { text: text.into() }),
                "{text:?}"
            );
        }
        let big = format!("{}GiB", u64::MAX);
        assert_eq!(
            parse_size(&big),
            Err(UnitError::Overflow { text: big.clone() })
        );
    }

    #[test]
    fn error_messages_name_the_value_and_the_grammar() {
        let msg = parse_size("12 apples").unwrap_err().to_string();
        assert!(
            msg.starts_with(r#"invalid size "12 apples": expected "#),
            "{msg}"
        );
        let msg = parse_duration("10").unwrap_err().to_string();
        assert!(
            msg.starts_with(r#"invalid duration "10": expected "#),
            "{msg}"
        );
    }

    proptest! {
        #[test]
        fn any_u32_round_trips_as_millis(n: u32) {
            prop_assert_eq!(parse_duration(&format!("{n}ms")), Ok(Duration::from_millis(u64::from(n))));
        }

        #[test]
        fn any_u32_round_trips_as_kib(n: u32) {
            prop_assert_eq!(parse_size(&format!("{n}KiB")), Ok(ByteSize(u64::from(n) * 1024)));
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,24}") {
            let _ = parse_duration(&text);
            let _ = parse_size(&text);
        }
    }
}
