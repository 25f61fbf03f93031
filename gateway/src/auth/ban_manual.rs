//! Bans given by an operator (admin API `POST /api/v1/bans`): an address or CIDR, a user, or a
//! certificate fingerprint, until an expiry or until lifted. Held beside the bans that failures
//! earn ([`super::ban::Bans`]) and checked with them at CONNECT, where a banned client gets
//! CONNACK 0x8A (3.1.1: 5) and the refusal is counted and audited like any ban.
//!
//! Read lock-free on every CONNECT (an `ArcSwap` of the list; an empty list costs one load);
//! changed rarely, by copying the list under a mutex. At most [`MAX_MANUAL`] bans.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use super::ban::{Attempt, Banned};

/// At most this many operator bans at once.
pub const MAX_MANUAL: usize = 10_000;

/// What an operator ban matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every address in the network (a single address is a /32 or /128).
    Address(ipnet::IpNet),
    /// The account whose password is checked (as brute-force user bans are).
    User(String),
    /// A client certificate, by SHA-256 fingerprint (lowercase hex).
    Certificate(String),
}

impl Target {
    /// `address`, `user` or `certificate`.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Address(_) => "address",
            Self::User(_) => "user",
            Self::Certificate(_) => "certificate",
        }
    }

    /// The value as shown.
    #[must_use]
    pub fn value(&self) -> String {
        match self {
            Self::Address(n) => n.to_string(),
            Self::User(u) | Self::Certificate(u) => u.clone(),
        }
    }
}

/// One operator ban.
#[derive(Debug, Clone)]
pub struct ManualBan {
    /// Its id (`DELETE /api/v1/bans/m{id}`).
    pub id: u64,
    /// What it bans.
    pub target: Target,
    /// When it ends (monotonic), `None`: until lifted.
    until: Option<Instant>,
    /// The same, unix seconds (for display).
    pub until_unix: Option<u64>,
    /// When it was given, unix seconds.
    pub created_unix: u64,
    /// Who gave it (the admin token's NAME).
    pub by: String,
}

impl ManualBan {
    fn live(&self, now: Instant) -> bool {
        self.until.is_none_or(|u| now < u)
    }
}

/// The operator bans.
#[derive(Debug, Default)]
pub struct ManualBans {
    list: ArcSwap<Vec<ManualBan>>,
    write: std::sync::Mutex<u64>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ManualBans {
    /// Adds a ban for `duration` (`None`: until lifted); its id, or `None` when [`MAX_MANUAL`]
    /// live bans are held.
    pub fn add(
        &self,
        target: Target,
        duration: Option<Duration>,
        by: &str,
        now: Instant,
    ) -> Option<ManualBan> {
        let mut next = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut list: Vec<ManualBan> = self
            .list
            .load()
            .iter()
            .filter(|b| b.live(now))
            .cloned()
            .collect();
        if list.len() >= MAX_MANUAL {
            return None;
        }
        *next = next.saturating_add(1);
        let created_unix = unix_now();
        let ban = ManualBan {
            id: *next,
            target,
            until: duration.and_then(|d| now.checked_add(d)),
            until_unix: duration.map(|d| created_unix.saturating_add(d.as_secs())),
            created_unix,
            by: by.to_owned(),
        };
        list.push(ban.clone());
        self.list.store(Arc::new(list));
        Some(ban)
    }

    /// Lifts ban `id`; whether it was there.
    pub fn remove(&self, id: u64) -> bool {
        let _w = self
            .write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.list.load_full();
        let list: Vec<ManualBan> = old.iter().filter(|b| b.id != id).cloned().collect();
        let found = list.len() != old.len();
        self.list.store(Arc::new(list));
        found
    }

    /// The live bans.
    #[must_use]
    pub fn list(&self, now: Instant) -> Vec<ManualBan> {
        self.list
            .load()
            .iter()
            .filter(|b| b.live(now))
            .cloned()
            .collect()
    }

    /// The live ban that matches a CONNECT, if any.
    #[must_use]
    pub fn matching(&self, attempt: Attempt<'_>, now: Instant) -> Option<Banned> {
        let list = self.list.load();
        if list.is_empty() {
            return None;
        }
        let Attempt {
            ip,
            user,
            fingerprint,
        } = attempt;
        let ip = ip.to_canonical();
        list.iter().filter(|b| b.live(now)).find_map(|b| {
            let hit = match &b.target {
                Target::Address(n) => n.contains(&ip),
                Target::User(u) => user == Some(u.as_str()),
                Target::Certificate(f) => fingerprint.is_some_and(|g| g.eq_ignore_ascii_case(f)),
            };
            hit.then_some(match b.target {
                Target::Address(_) => Banned::Address,
                Target::User(_) => Banned::User,
                Target::Certificate(_) => Banned::Certificate,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_match_their_target_until_they_expire_or_are_lifted() {
        let b = ManualBans::default();
        let t0 = Instant::now();
        let (a, other) = ("10.1.2.3".parse().unwrap(), "10.2.0.1".parse().unwrap());
        assert_eq!(b.matching(Attempt::at(a), t0), None);
        let net = b
            .add(
                Target::Address("10.1.0.0/16".parse().unwrap()),
                Some(Duration::from_secs(60)),
                "ops",
                t0,
            )
            .unwrap();
        b.add(Target::User("alice".into()), None, "ops", t0)
            .unwrap();
        b.add(Target::Certificate("ab".repeat(32)), None, "ops", t0)
            .unwrap();
        assert_eq!(b.matching(Attempt::at(a), t0), Some(Banned::Address));
        let mapped: std::net::IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(b.matching(Attempt::at(mapped), t0), Some(Banned::Address));
        assert_eq!(b.matching(Attempt::at(other), t0), None);
        assert_eq!(
            b.matching(Attempt::at(other).user("alice"), t0),
            Some(Banned::User)
        );
        assert_eq!(b.matching(Attempt::at(other).user("bob"), t0), None);
        let fp = "AB".repeat(32);
        assert_eq!(
            b.matching(Attempt::at(other).fingerprint(&fp), t0),
            Some(Banned::Certificate)
        );
        let later = t0 + Duration::from_secs(61);
        assert_eq!(b.matching(Attempt::at(a), later), None, "expired");
        assert_eq!(b.list(later).len(), 2);
        assert!(b.remove(net.id) && !b.remove(net.id));
        assert_eq!(b.list(t0).len(), 2);
    }
}
