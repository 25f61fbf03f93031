//! The decisions of CRL fetching, without I/O: is a fetched (and signature-checked) CRL taken
//! instead of the one in force, when is the next fetch, and is a failure audited. Time is passed
//! in (unix seconds), so every rule is a table test.

use std::cmp::Ordering;
use std::time::Duration;

use crate::labels::CrlFetchResult;

/// The shortest wait between two fetches of one URL (lower when `crl_refresh_interval` is).
pub const FLOOR: Duration = Duration::from_secs(10);
/// A failure streak with the same result is audited again after this long (once at its start,
/// and whenever its result changes): an unreachable server costs an audit line an hour, not one
/// per retry.
pub const AUDIT_EVERY_SECS: i64 = 3600;

/// What matters of one CRL for the decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrlFacts {
    /// `thisUpdate`, unix seconds.
    pub this_update: i64,
    /// `nextUpdate`, unix seconds (optional in X.509).
    pub next_update: Option<i64>,
    /// The CRL number extension, big-endian unsigned, when present.
    pub number: Option<Vec<u8>>,
    /// SHA-256 of the DER.
    pub digest: [u8; 32],
}

/// What to do with a fetched CRL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Take it: store it and swap it in.
    Take,
    /// It is the one in force.
    Unchanged,
    /// Keep the one in force; the fetch failed with this result ([`CrlFetchResult::Rollback`]
    /// or [`CrlFetchResult::Stale`]).
    Keep(CrlFetchResult),
}

/// Compares two unsigned big-endian numbers of any length.
fn cmp_unsigned(a: &[u8], b: &[u8]) -> Ordering {
    let strip = |x: &[u8]| -> usize { x.iter().take_while(|&&byte| byte == 0).count() };
    let (a, b) = (
        a.get(strip(a)..).unwrap_or(&[]),
        b.get(strip(b)..).unwrap_or(&[]),
    );
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// Is `fetched` a later issue than `current`? Never when its thisUpdate is earlier; with CRL
/// numbers on both, a higher number (or the same number with a later thisUpdate); without, a
/// later thisUpdate.
fn later(current: &CrlFacts, fetched: &CrlFacts) -> bool {
    if fetched.this_update < current.this_update {
        return false;
    }
    match (&current.number, &fetched.number) {
        (Some(cur), Some(new)) => match cmp_unsigned(new, cur) {
            Ordering::Greater => true,
            Ordering::Equal => fetched.this_update > current.this_update,
            Ordering::Less => false,
        },
        _ => fetched.this_update > current.this_update,
    }
}

/// Judges a fetched CRL whose signature verified, against the one in force (`None`: there is
/// none yet, at a first start) at `now`.
///
/// - The same bytes: [`Verdict::Unchanged`].
/// - Not a later issue than the one in force: a rollback (an old CRL replayed, or a server
///   serving a stale copy), kept out, whatever it says.
/// - Already past its nextUpdate, while a CRL is in force: stale, kept out (taking it would only
///   make the listener refuse every certificate). With none in force it is taken: the listener
///   then fails closed, as with a stale CRL file.
#[must_use]
pub fn judge(current: Option<&CrlFacts>, fetched: &CrlFacts, now: i64) -> Verdict {
    let Some(current) = current else {
        return Verdict::Take;
    };
    if current.digest == fetched.digest {
        return Verdict::Unchanged;
    }
    if !later(current, fetched) {
        return Verdict::Keep(CrlFetchResult::Rollback);
    }
    if fetched.next_update.is_some_and(|next| next <= now) {
        return Verdict::Keep(CrlFetchResult::Stale);
    }
    Verdict::Take
}

/// The shortest wait for a listener whose longest is `interval`.
#[must_use]
pub fn floor(interval: Duration) -> Duration {
    FLOOR.min(interval)
}

/// How long until the next fetch after a success, for the CRL in force (its `next_update`) at
/// `now`: half the time left to its nextUpdate, between [`floor`] and `interval`; `interval`
/// when it has no nextUpdate.
#[must_use]
pub fn next_fetch(next_update: Option<i64>, now: i64, interval: Duration) -> Duration {
    let Some(next) = next_update else {
        return interval;
    };
    let half = u64::try_from(next.saturating_sub(now) / 2).unwrap_or(0);
    Duration::from_secs(half).clamp(floor(interval), interval)
}

/// How long until the next try after `failures` failures in a row (≥ 1): doubling from
/// [`floor`], never longer than [`next_fetch`] would wait for the CRL in force.
#[must_use]
pub fn retry_after(
    failures: u32,
    next_update: Option<i64>,
    now: i64,
    interval: Duration,
) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let backoff = floor(interval).saturating_mul(1u32 << exponent);
    backoff
        .min(next_fetch(next_update, now, interval))
        .max(floor(interval))
}

/// Is a failure with `result` at `now` audited, after the last audited failure of this streak
/// (`None`: the streak starts)?
#[must_use]
pub fn audit_failure(
    last_audited: Option<(CrlFetchResult, i64)>,
    result: CrlFetchResult,
    now: i64,
) -> bool {
    match last_audited {
        None => true,
        Some((last, at)) => last != result || now.saturating_sub(at) >= AUDIT_EVERY_SECS,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn crl(this_update: i64, number: Option<u64>, tag: u8) -> CrlFacts {
        CrlFacts {
            this_update,
            next_update: Some(this_update + 7 * 86_400),
            number: number.map(|n| n.to_be_bytes().to_vec()),
            digest: [tag; 32],
        }
    }

    #[test]
    fn a_fetched_crl_is_taken_only_when_it_is_a_later_fresh_issue() {
        let now = 1_000_000;
        let in_force = crl(now - 100, Some(5), 1);
        let stale = CrlFacts {
            next_update: Some(now - 1),
            ..crl(now - 50, Some(6), 2)
        };
        let no_next = CrlFacts {
            next_update: None,
            ..crl(now - 50, Some(6), 2)
        };
        #[rustfmt::skip]
        let table: Vec<(&str, Option<&CrlFacts>, CrlFacts, Verdict)> = vec![
            ("first start: anything valid",      None,            crl(now - 100, Some(1), 2), Verdict::Take),
            ("first start: even a stale one",    None,            stale.clone(),              Verdict::Take),
            ("same bytes",                       Some(&in_force), crl(now - 100, Some(5), 1), Verdict::Unchanged),
            ("higher number, later",             Some(&in_force), crl(now - 50, Some(6), 2),  Verdict::Take),
            ("higher number, same thisUpdate",   Some(&in_force), crl(now - 100, Some(6), 2), Verdict::Take),
            ("higher number, earlier thisUpdate",Some(&in_force), crl(now - 200, Some(6), 2), Verdict::Keep(CrlFetchResult::Rollback)),
            ("lower number, later thisUpdate",   Some(&in_force), crl(now - 50, Some(4), 2),  Verdict::Keep(CrlFetchResult::Rollback)),
            ("lower number, earlier",            Some(&in_force), crl(now - 200, Some(4), 2), Verdict::Keep(CrlFetchResult::Rollback)),
            ("same number, later thisUpdate",    Some(&in_force), crl(now - 50, Some(5), 2),  Verdict::Take),
            ("same number and date, other bytes",Some(&in_force), crl(now - 100, Some(5), 2), Verdict::Keep(CrlFetchResult::Rollback)),
            ("no number: later thisUpdate",      Some(&in_force), crl(now - 50, None, 2),     Verdict::Take),
            ("no number: same thisUpdate",       Some(&in_force), crl(now - 100, None, 2),    Verdict::Keep(CrlFetchResult::Rollback)),
            ("later but already stale",          Some(&in_force), stale,                      Verdict::Keep(CrlFetchResult::Stale)),
            ("later, no nextUpdate",             Some(&in_force), no_next,                    Verdict::Take),
        ];
        for (name, current, fetched, want) in table {
            assert_eq!(judge(current, &fetched, now), want, "{name}");
        }
    }

    #[test]
    fn crl_numbers_compare_as_unsigned_integers_of_any_length() {
        #[rustfmt::skip]
        let table: [(&[u8], &[u8], Ordering); 6] = [
            (&[1], &[2], Ordering::Less),
            (&[0, 0, 3], &[3], Ordering::Equal),
            (&[1, 0], &[0xff], Ordering::Greater),
            (&[0x80], &[0x7f, 0xff], Ordering::Less),
            (&[], &[0], Ordering::Equal),
            (&[0, 0x01, 0x00, 0x00], &[0xff, 0xff], Ordering::Greater),
        ];
        for (a, b, want) in table {
            assert_eq!(cmp_unsigned(a, b), want, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn the_next_fetch_is_at_half_the_time_left_within_the_bounds() {
        let hour = Duration::from_secs(3600);
        let now = 1_000_000;
        #[rustfmt::skip]
        let table: [(Option<i64>, Duration, Duration); 7] = [
            (None,                 hour,                    hour),
            (Some(now + 7 * 86_400), hour,                  hour),                      // far: the interval
            (Some(now + 1800),     hour,                    Duration::from_secs(900)),  // half of 30 min
            (Some(now + 4),        hour,                    FLOOR),                     // near: the floor
            (Some(now - 100),      hour,                    FLOOR),                     // past: the floor
            (Some(now + 1800),     Duration::from_secs(1),  Duration::from_secs(1)),    // a 1 s interval
            (Some(now - 100),      Duration::from_secs(2),  Duration::from_secs(2)),    // floor ≤ interval
        ];
        for (next_update, interval, want) in table {
            assert_eq!(
                next_fetch(next_update, now, interval),
                want,
                "{next_update:?} {interval:?}"
            );
        }
    }

    #[test]
    fn retries_back_off_from_the_floor_and_never_past_the_next_fetch() {
        let hour = Duration::from_secs(3600);
        let now = 1_000_000;
        let far = Some(now + 30 * 86_400);
        #[rustfmt::skip]
        let table: [(u32, Option<i64>, Duration, Duration); 7] = [
            (1,  far,              hour, Duration::from_secs(10)),
            (2,  far,              hour, Duration::from_secs(20)),
            (5,  far,              hour, Duration::from_secs(160)),
            (20, far,              hour, hour),
            (u32::MAX, far,        hour, hour),
            (8,  Some(now + 600),  hour, Duration::from_secs(300)),  // half the time left
            (3,  far, Duration::from_secs(1), Duration::from_secs(1)),
        ];
        for (failures, next_update, interval, want) in table {
            assert_eq!(
                retry_after(failures, next_update, now, interval),
                want,
                "{failures}"
            );
        }
    }

    #[test]
    fn a_failure_streak_is_audited_at_its_start_on_a_new_reason_and_hourly() {
        use CrlFetchResult::{Network, Timeout};
        let now = 1_000_000;
        type Row = (Option<(CrlFetchResult, i64)>, CrlFetchResult, bool);
        #[rustfmt::skip]
        let table: [Row; 5] = [
            (None,                            Network, true),
            (Some((Network, now - 10)),       Network, false),
            (Some((Network, now - 10)),       Timeout, true),
            (Some((Network, now - 3599)),     Network, false),
            (Some((Network, now - 3600)),     Network, true),
        ];
        for (last, result, want) in table {
            assert_eq!(
                audit_failure(last, result, now),
                want,
                "{last:?} {result:?}"
            );
        }
    }
}
