//! The pure part of the cluster: the Redis URL check, the names of keys and the channel, the
//! events instances exchange (encoded and parsed here, tested as tables), the failure script and
//! how its answer is read.

use std::time::Duration;

use crate::auth::ban::Banned;

/// Every key the gateway writes in Redis starts with this.
pub const PREFIX: &str = "mqtt-gateway:";
/// The pub/sub channel of ban, unban and kick events.
pub const CHANNEL: &str = "mqtt-gateway:events";
/// An event longer than this is ignored (a client id is at most 65,535 bytes).
pub const MAX_EVENT: usize = 70_000;
/// A ban stored without an expiry (by hand, say) is held this long locally, until the next
/// read-back.
pub const NO_EXPIRY_HELD_FOR: Duration = Duration::from_secs(24 * 3600);

/// The longest ban taken from Redis or an event: a longer one (a key set by hand, a bad event) is
/// held this long, so that a number from outside never overflows the clock.
pub const MAX_BAN: Duration = Duration::from_secs(365 * 24 * 3600);

/// When a ban of `ttl` from `now` ends, `ttl` capped at [`MAX_BAN`].
#[must_use]
pub fn until(now: std::time::Instant, ttl: Duration) -> std::time::Instant {
    let ttl = ttl.min(MAX_BAN);
    now.checked_add(ttl).unwrap_or(now)
}

/// The failure count of one key: `mqtt-gateway:fail:{tag}:{key}`.
#[must_use]
pub fn fail_key(what: Banned, key: &str) -> String {
    format!("{PREFIX}fail:{}:{key}", what.tag())
}

/// The ban of one key: `mqtt-gateway:ban:{tag}:{key}`, with the ban's expiry as its own.
#[must_use]
pub fn ban_key(what: Banned, key: &str) -> String {
    format!("{PREFIX}ban:{}:{key}", what.tag())
}

/// An (account, address) pair that logged in lately: `mqtt-gateway:good:{pair}`.
#[must_use]
pub fn good_key(pair: &str) -> String {
    format!("{PREFIX}good:{pair}")
}

/// The pattern of every ban key (for the read-back with SCAN).
#[must_use]
pub fn ban_pattern() -> String {
    format!("{PREFIX}ban:*")
}

/// What a ban key names; `None` for a key that is not one of ours.
#[must_use]
pub fn parse_ban_key(redis_key: &str) -> Option<(Banned, &str)> {
    let rest = redis_key.strip_prefix(PREFIX)?.strip_prefix("ban:")?;
    let (tag, key) = rest.split_once(':')?;
    Some((Banned::from_tag(tag)?, key)).filter(|(_, k)| !k.is_empty())
}

/// An event on [`CHANNEL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `ban {tag} {key} {ms}`: banned for `ms` from when it is received.
    Ban {
        /// What kind of key.
        what: Banned,
        /// The key, as `auth::ban::shared_keys` names it.
        key: String,
        /// How long.
        ttl: Duration,
    },
    /// `unban {tag} {key}`.
    Unban {
        /// What kind of key.
        what: Banned,
        /// The key.
        key: String,
    },
    /// `kick {client id}`: every instance closes the sessions of that client id.
    Kick {
        /// The client id (may hold spaces).
        client_id: String,
    },
}

impl Event {
    /// The event as published.
    #[must_use]
    pub fn encode(&self) -> String {
        match self {
            Self::Ban { what, key, ttl } => {
                format!("ban {} {key} {}", what.tag(), ttl.as_millis())
            }
            Self::Unban { what, key } => format!("unban {} {key}", what.tag()),
            Self::Kick { client_id } => format!("kick {client_id}"),
        }
    }

    /// An event as received; `None` when it is not one (ignored, and logged by the caller).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() > MAX_EVENT {
            return None;
        }
        let (verb, rest) = s.split_once(' ')?;
        match verb {
            "kick" => Some(Self::Kick {
                client_id: rest.to_owned(),
            }),
            "ban" => {
                let mut parts = rest.split(' ');
                let what = Banned::from_tag(parts.next()?)?;
                let key = parts.next().filter(|k| !k.is_empty())?.to_owned();
                let ttl = Duration::from_millis(parts.next()?.parse().ok()?);
                parts
                    .next()
                    .is_none()
                    .then_some(Self::Ban { what, key, ttl })
            }
            "unban" => {
                let (tag, key) = rest.split_once(' ')?;
                let what = Banned::from_tag(tag)?;
                (!key.is_empty() && !key.contains(' ')).then(|| Self::Unban {
                    what,
                    key: key.to_owned(),
                })
            }
            _ => None,
        }
    }
}

/// One failure, counted atomically for every key given (address, account, certificate).
/// `KEYS[1..n]`: failure counters, `KEYS[n+1..2n]`: bans. `ARGV[1]`: ban_window in ms,
/// `ARGV[2]`: ban_duration in ms, `ARGV[3]`: the channel, `ARGV[3+i]`: the threshold of key i,
/// `ARGV[3+n+i]`: key i as an event names it (`a 192.0.2.1`). A counter expires ban_window after
/// its first failure (the fixed window of the local counters); at the threshold the ban key is set
/// with ban_duration as its expiry and the ban is published. Returns per key the time left of its
/// ban in ms (the PTTL: -2 not banned, -1 banned without expiry).
pub const FAILURE_SCRIPT: &str = r"
local n = #KEYS / 2
local out = {}
for i = 1, n do
  local c = redis.call('INCR', KEYS[i])
  if c == 1 then redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
  local ttl = redis.call('PTTL', KEYS[n + i])
  if ttl == -2 and c >= tonumber(ARGV[3 + i]) then
    redis.call('SET', KEYS[n + i], '1', 'PX', ARGV[2])
    redis.call('PUBLISH', ARGV[3], 'ban ' .. ARGV[3 + n + i] .. ' ' .. ARGV[2])
    ttl = tonumber(ARGV[2])
  end
  out[i] = ttl
end
return out
";

/// How long a key is banned for, from a PTTL (the script's answer, or the read-back's): `None`
/// when it is not banned.
#[must_use]
pub fn ban_left(pttl: i64) -> Option<Duration> {
    match pttl {
        -1 => Some(NO_EXPIRY_HELD_FOR),
        t if t > 0 => Some(Duration::from_millis(t.unsigned_abs())),
        _ => None,
    }
}

/// Wait before the next connection attempt after `failures` in a row: 250 ms doubling to 5 s.
#[must_use]
pub fn backoff(failures: u32) -> Duration {
    let ms = 250u64.saturating_mul(1u64 << failures.min(5));
    Duration::from_millis(ms.min(5_000))
}

/// Checks `[cluster] redis`: `redis://` or `rediss://`, a host, an optional port and database
/// number, the password (and user) in the user info.
///
/// # Errors
/// What is wrong with it, for the config error.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
        .ok_or("must start with redis:// or rediss:// (TLS)")?;
    let authority = rest.split_once('/').map_or(rest, |(a, _)| a);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') {
        return Err("needs a host: redis://host:6379/0".to_owned());
    }
    if let Some((_, db)) = rest.split_once('/')
        && !db.is_empty()
        && db.parse::<u32>().is_err()
    {
        return Err(format!("the database must be a number, not {db:?}"));
    }
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| format!("not a Redis URL: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_junk_is_refused() {
        let fp = "ab".repeat(32);
        for event in [
            Event::Ban {
                what: Banned::Address,
                key: "2001:db8::".to_owned(),
                ttl: Duration::from_millis(600_000),
            },
            Event::Ban {
                what: Banned::Certificate,
                key: fp.clone(),
                ttl: Duration::from_millis(1),
            },
            Event::Unban {
                what: Banned::User,
                key: fp.clone(),
            },
            Event::Kick {
                client_id: "sensor 7".to_owned(),
            },
        ] {
            assert_eq!(
                Event::parse(&event.encode()),
                Some(event.clone()),
                "{event:?}"
            );
        }
        for junk in [
            "",
            "ban",
            "ban a",
            "ban a 192.0.2.1",
            "ban x 192.0.2.1 10",
            "ban a 192.0.2.1 -5",
            "ban a 192.0.2.1 10 extra",
            "unban a",
            "unban a 192.0.2.1 extra",
            "kill 192.0.2.1",
            &format!("kick {}", "x".repeat(MAX_EVENT)),
        ] {
            assert_eq!(Event::parse(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn ban_keys_name_what_they_ban() {
        for (what, key) in [
            (Banned::Address, "192.0.2.1"),
            (Banned::Address, "2001:db8::"),
            (Banned::User, "0123"),
        ] {
            assert_eq!(parse_ban_key(&ban_key(what, key)), Some((what, key)));
        }
        for other in [
            "mqtt-gateway:fail:a:192.0.2.1",
            "mqtt-gateway:ban:x:192.0.2.1",
            "mqtt-gateway:ban:a:",
            "other:ban:a:192.0.2.1",
        ] {
            assert_eq!(parse_ban_key(other), None, "{other}");
        }
        assert_eq!(fail_key(Banned::User, "k"), "mqtt-gateway:fail:u:k");
    }

    #[test]
    fn a_ban_from_outside_never_overflows_the_clock() {
        let now = std::time::Instant::now();
        // An event with the largest number a u64 holds parses, and is held MAX_BAN.
        let huge = Event::parse(&format!("ban a 192.0.2.1 {}", u64::MAX)).unwrap();
        let Event::Ban { ttl, .. } = huge else {
            panic!("{huge:?}")
        };
        assert_eq!(until(now, ttl), now + MAX_BAN);
        assert_eq!(
            until(now, Duration::from_secs(600)),
            now + Duration::from_secs(600)
        );
        assert_eq!(
            until(now, ban_left(i64::MAX).unwrap()),
            now + MAX_BAN,
            "a PTTL set by hand"
        );
    }

    #[test]
    fn pttl_and_backoff() {
        for (pttl, left) in [
            (-2, None),
            (0, None),
            (-1, Some(NO_EXPIRY_HELD_FOR)),
            (1500, Some(Duration::from_millis(1500))),
        ] {
            assert_eq!(ban_left(pttl), left, "{pttl}");
        }
        let waits: Vec<u128> = (0..8).map(|n| backoff(n).as_millis()).collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
    }

    #[test]
    fn redis_urls() {
        for ok in [
            "redis://127.0.0.1:6379/0",
            "redis://redis",
            "rediss://:secret@redis.example:6380/2",
            "redis://gateway:secret@[::1]:6379",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:6379",
            "127.0.0.1:6379",
            "redis://",
            "redis://:6379",
            "redis://127.0.0.1:6379/zero",
            "redis://127.0.0.1:notaport",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}
