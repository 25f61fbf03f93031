//! Bans: `auth_failures_before_ban` authentication failures within `ban_window` ban the source
//! address for `ban_duration`. Failures are also counted per username and per certificate
//! fingerprint (with twice the threshold), so a botnet spread over many addresses against one
//! account or one stolen certificate is stopped too. The username is the account whose password
//! is checked (`session::connect::password_account`): a ban stops guessing that password, and
//! never refuses a client whose certificate is its credential. So that such an attack cannot lock the real
//! owner out ("smart lockout"), an account ban does not apply to an address from which that account
//! authenticated successfully within [`KNOWN_GOOD_FOR`].
//!
//! Pure and clock-injected (`now` is a parameter); each map is capped ([`MAX_ENTRIES`]) and swept
//! of expired entries, so memory stays bounded whatever the number of distinct attackers. When a
//! map is full of live entries, new keys are not tracked (documented degradation: the per-address
//! connection rate limit still applies).

use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use sha2::{Digest, Sha256};

/// Entries per map at most.
pub const MAX_ENTRIES: usize = 100_000;
/// How long a successful login keeps its (account, address) pair exempt from the account's ban.
pub const KNOWN_GOOD_FOR: Duration = Duration::from_secs(7 * 24 * 3600);
/// A known-good pair is shared again with the other instances after this long.
pub const KNOWN_GOOD_REFRESH: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
struct Entry {
    window_start: Instant,
    failures: u32,
    banned_until: Option<Instant>,
}

#[derive(Debug)]
struct Counter<K: Eq + Hash> {
    map: DashMap<K, Entry>,
    threshold: AtomicU32,
}

impl<K: Eq + Hash + Clone> Counter<K> {
    fn new(threshold: u32) -> Self {
        Self {
            map: DashMap::new(),
            threshold: AtomicU32::new(threshold),
        }
    }

    fn is_banned(&self, key: &K, now: Instant) -> bool {
        self.map
            .get(key)
            .and_then(|e| e.banned_until)
            .is_some_and(|until| now < until)
    }

    /// Counts a failure; true when it (newly or already) bans the key.
    fn fail(&self, key: K, now: Instant, window: Duration, duration: Duration) -> bool {
        if self.map.len() >= MAX_ENTRIES && !self.map.contains_key(&key) {
            return false;
        }
        let mut e = self.map.entry(key).or_insert(Entry {
            window_start: now,
            failures: 0,
            banned_until: None,
        });
        if now.duration_since(e.window_start) > window {
            e.window_start = now;
            e.failures = 0;
        }
        e.failures = e.failures.saturating_add(1);
        if e.failures >= self.threshold.load(Ordering::Acquire) {
            e.banned_until = Some(now + duration);
        }
        e.banned_until.is_some_and(|until| now < until)
    }

    /// Bans `key` until `until` (or later, if it already is). False when the map is full of live
    /// bans and `key` is not among them (bounded: the ban is not kept here).
    fn impose(&self, key: K, until: Instant, now: Instant) -> bool {
        if self.map.len() >= MAX_ENTRIES && !self.map.contains_key(&key) {
            // Make room by dropping a failure count (never a live ban).
            let spare = self
                .map
                .iter()
                .find(|e| e.banned_until.is_none_or(|u| now >= u))
                .map(|e| e.key().clone());
            match spare {
                Some(k) => {
                    self.map.remove(&k);
                }
                None => return false,
            }
        }
        let mut e = self.map.entry(key).or_insert(Entry {
            window_start: now,
            failures: 0,
            banned_until: None,
        });
        e.banned_until = Some(e.banned_until.map_or(until, |u| u.max(until)));
        true
    }

    fn lift(&self, key: &K) -> bool {
        self.map.remove(key).is_some()
    }

    fn active(&self, now: Instant) -> Vec<(K, Duration)> {
        self.map
            .iter()
            .filter_map(|e| {
                e.banned_until
                    .filter(|u| now < *u)
                    .map(|u| (e.key().clone(), u.duration_since(now)))
            })
            .collect()
    }

    fn sweep(&self, now: Instant, window: Duration) {
        self.map.retain(|_, e| {
            e.banned_until.is_some_and(|until| now < until)
                || now.duration_since(e.window_start) <= window
        });
    }
}

/// What is banned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Banned {
    /// The source address.
    Address,
    /// The username.
    User,
    /// The certificate.
    Certificate,
}

impl Banned {
    /// Every kind, in the order a failure is counted.
    pub const ALL: [Self; 3] = [Self::Address, Self::User, Self::Certificate];

    /// Its tag in the keys and events the instances of a cluster share.
    #[must_use]
    pub const fn tag(self) -> &'static str {
        match self {
            Self::Address => "a",
            Self::User => "u",
            Self::Certificate => "c",
        }
    }

    /// The kind of a tag.
    #[must_use]
    pub fn from_tag(tag: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|b| b.tag() == tag)
    }
}

/// A CONNECT as bans see it: the address it comes from, the account a password will be checked
/// for, and the fingerprint of its client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt<'a> {
    /// The source address.
    pub ip: IpAddr,
    /// The account a password will be checked for.
    pub user: Option<&'a str>,
    /// The SHA-256 fingerprint (hex) of the client certificate.
    pub fingerprint: Option<&'a str>,
}

impl<'a> Attempt<'a> {
    /// An attempt from `ip` that names no account and shows no certificate.
    #[must_use]
    pub const fn at(ip: IpAddr) -> Self {
        Self {
            ip,
            user: None,
            fingerprint: None,
        }
    }

    /// The same attempt for the account `user`.
    #[must_use]
    pub const fn user(self, user: &'a str) -> Self {
        Self {
            user: Some(user),
            ..self
        }
    }

    /// The same attempt with a certificate of this fingerprint.
    #[must_use]
    pub const fn fingerprint(self, fingerprint: &'a str) -> Self {
        Self {
            fingerprint: Some(fingerprint),
            ..self
        }
    }
}

/// What a failure counts against, as the instances of a cluster name it: the address key
/// (IPv6 by /64), the SHA-256 of the account in hex (never the name itself), the certificate
/// fingerprint. Same order as [`Bans::failure`] counts them.
#[must_use]
pub fn shared_keys(attempt: Attempt<'_>) -> Vec<(Banned, String)> {
    let Attempt {
        ip,
        user,
        fingerprint,
    } = attempt;
    let mut keys = vec![(Banned::Address, crate::limits::address_key(ip).to_string())];
    if let Some(u) = user {
        keys.push((Banned::User, hex(&user_key(u))));
    }
    if let Some(f) = fingerprint {
        keys.push((Banned::Certificate, f.to_owned()));
    }
    keys
}

/// A username as the shared state names it (`shared_keys`): the hex SHA-256 of the name.
#[must_use]
pub fn user_hex(user: &str) -> String {
    hex(&user_key(user))
}

/// An (account, address) pair as the instances of a cluster name it: the SHA-256 of the account in
/// hex, `:`, the address key.
#[must_use]
pub fn known_good_key(ip: IpAddr, user: &str) -> String {
    format!(
        "{}:{}",
        hex(&user_key(user)),
        crate::limits::address_key(ip)
    )
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn parse_user_key(s: &str) -> Option<UserKey> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(key)
}

/// A certificate fingerprint as the gateway writes it: 64 lowercase hex digits.
fn is_fingerprint(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The ban book of the gateway.
#[derive(Debug)]
pub struct Bans {
    addresses: Counter<IpAddr>,
    /// Keyed by [`user_key`]: a username is the client's to choose (up to 64 KiB), a digest is
    /// 32 bytes, so the capped map stays small whatever the names.
    users: Counter<UserKey>,
    certs: Counter<String>,
    /// (account, address key) → last successful authentication.
    known_good: DashMap<(UserKey, IpAddr), Instant>,
    /// Bans given by an operator (admin API), checked with these at CONNECT.
    pub manual: super::ban_manual::ManualBans,
    /// `ban_window` and `ban_duration` in milliseconds (they follow the config on reload).
    window_ms: AtomicU64,
    duration_ms: AtomicU64,
}

/// The SHA-256 of a username: the key of its failure count and known-good addresses.
type UserKey = [u8; 32];

fn user_key(user: &str) -> UserKey {
    Sha256::digest(user.as_bytes()).into()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Bans {
    /// Bans after `threshold` failures within `window`, for `duration`.
    #[must_use]
    pub fn new(threshold: u32, window: Duration, duration: Duration) -> Self {
        let per_identity = threshold.saturating_mul(2);
        Self {
            addresses: Counter::new(threshold),
            users: Counter::new(per_identity),
            certs: Counter::new(per_identity),
            known_good: DashMap::new(),
            manual: super::ban_manual::ManualBans::default(),
            window_ms: AtomicU64::new(millis(window)),
            duration_ms: AtomicU64::new(millis(duration)),
        }
    }

    /// Applies reloaded settings to failures counted from now on; bans already given run their
    /// course.
    pub fn configure(&self, threshold: u32, window: Duration, duration: Duration) {
        self.addresses.threshold.store(threshold, Ordering::Release);
        let per_identity = threshold.saturating_mul(2);
        self.users.threshold.store(per_identity, Ordering::Release);
        self.certs.threshold.store(per_identity, Ordering::Release);
        self.window_ms.store(millis(window), Ordering::Release);
        self.duration_ms.store(millis(duration), Ordering::Release);
    }

    fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms.load(Ordering::Acquire))
    }

    fn duration(&self) -> Duration {
        Duration::from_millis(self.duration_ms.load(Ordering::Acquire))
    }

    /// Whether the address (keyed like the connection limits: IPv6 by /64) is banned.
    #[must_use]
    pub fn address_banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.addresses
            .is_banned(&crate::limits::address_key(ip), now)
    }

    /// Whether a CONNECT from `ip` with this username or certificate fingerprint is banned. An
    /// account ban spares the addresses the account recently logged in from.
    #[must_use]
    pub fn identity_banned(&self, attempt: Attempt<'_>, now: Instant) -> Option<Banned> {
        if let Some(b) = self.manual.matching(attempt, now) {
            return Some(b);
        }
        let Attempt {
            ip,
            user,
            fingerprint,
        } = attempt;
        if let Some(u) = user.map(user_key)
            && self.users.is_banned(&u, now)
        {
            let known = self
                .known_good
                .get(&(u, crate::limits::address_key(ip)))
                .is_some_and(|t| now.duration_since(*t) < KNOWN_GOOD_FOR);
            if !known {
                return Some(Banned::User);
            }
        }
        if fingerprint.is_some_and(|f| self.certs.is_banned(&f.to_owned(), now)) {
            return Some(Banned::Certificate);
        }
        None
    }

    /// Records a successful authentication of `user` from `ip`. True when the pair is new here, or
    /// was last recorded [`KNOWN_GOOD_REFRESH`] ago or more (worth telling the other instances).
    pub fn success(&self, ip: IpAddr, user: &str, now: Instant) -> bool {
        let key = (user_key(user), crate::limits::address_key(ip));
        if self.known_good.len() < MAX_ENTRIES || self.known_good.contains_key(&key) {
            return self
                .known_good
                .insert(key, now)
                .is_none_or(|t| now.duration_since(t) >= KNOWN_GOOD_REFRESH);
        }
        false
    }

    /// Records an authentication failure; returns what it banned, if anything.
    pub fn failure(&self, attempt: Attempt<'_>, now: Instant) -> Option<Banned> {
        let Attempt {
            ip,
            user,
            fingerprint,
        } = attempt;
        let mut banned = None;
        let (window, duration) = (self.window(), self.duration());
        if self
            .addresses
            .fail(crate::limits::address_key(ip), now, window, duration)
        {
            banned = Some(Banned::Address);
        }
        if let Some(u) = user
            && self.users.fail(user_key(u), now, window, duration)
        {
            banned = banned.or(Some(Banned::User));
        }
        if let Some(f) = fingerprint
            && self.certs.fail(f.to_owned(), now, window, duration)
        {
            banned = banned.or(Some(Banned::Certificate));
        }
        banned
    }

    /// The bans that failures earned (or another instance or an operator imposed), in force at
    /// `now`: what, the key (an address, the hex SHA-256 of a username, a certificate
    /// fingerprint), and when each ends.
    #[must_use]
    pub fn in_force(&self, now: Instant) -> Vec<(Banned, String, Instant)> {
        self.active(now)
            .into_iter()
            .map(|(what, key, left)| (what, key, now + left))
            .collect()
    }

    /// The thresholds in force: per address, per account or certificate.
    #[must_use]
    pub fn thresholds(&self) -> (u32, u32) {
        (
            self.addresses.threshold.load(Ordering::Acquire),
            self.users.threshold.load(Ordering::Acquire),
        )
    }

    /// `ban_window` and `ban_duration` in force.
    #[must_use]
    pub fn timing(&self) -> (Duration, Duration) {
        (self.window(), self.duration())
    }

    /// Applies a ban decided elsewhere (another instance, an operator) on a key named as by
    /// [`shared_keys`], until `until`. False when the key is malformed or cannot be kept (the
    /// map is full of live bans).
    pub fn impose(&self, what: Banned, key: &str, until: Instant, now: Instant) -> bool {
        match what {
            Banned::Address => key.parse::<IpAddr>().is_ok_and(|ip| {
                self.addresses
                    .impose(crate::limits::address_key(ip), until, now)
            }),
            Banned::User => parse_user_key(key).is_some_and(|k| self.users.impose(k, until, now)),
            Banned::Certificate => {
                is_fingerprint(key) && self.certs.impose(key.to_owned(), until, now)
            }
        }
    }

    /// Lifts a ban (and forgets the failures counted) on a key named as by [`shared_keys`]. True
    /// when something was there.
    pub fn lift(&self, what: Banned, key: &str) -> bool {
        match what {
            Banned::Address => key
                .parse::<IpAddr>()
                .is_ok_and(|ip| self.addresses.lift(&crate::limits::address_key(ip))),
            Banned::User => parse_user_key(key).is_some_and(|k| self.users.lift(&k)),
            Banned::Certificate => self.certs.lift(&key.to_owned()),
        }
    }

    /// Every ban in force at `now`, with its key (as [`shared_keys`] names it) and the time left.
    #[must_use]
    pub fn active(&self, now: Instant) -> Vec<(Banned, String, Duration)> {
        let mut out: Vec<(Banned, String, Duration)> = self
            .addresses
            .active(now)
            .into_iter()
            .map(|(k, d)| (Banned::Address, k.to_string(), d))
            .collect();
        out.extend(
            self.users
                .active(now)
                .into_iter()
                .map(|(k, d)| (Banned::User, hex(&k), d)),
        );
        out.extend(
            self.certs
                .active(now)
                .into_iter()
                .map(|(k, d)| (Banned::Certificate, k, d)),
        );
        out
    }

    /// Drops expired entries (call periodically).
    pub fn sweep(&self, now: Instant) {
        let window = self.window();
        self.addresses.sweep(now, window);
        self.users.sweep(now, window);
        self.certs.sweep(now, window);
        self.known_good
            .retain(|_, t| now.duration_since(*t) < KNOWN_GOOD_FOR);
    }

    /// Entries held now, all maps together.
    #[must_use]
    pub fn len(&self) -> usize {
        self.addresses.map.len() + self.users.map.len() + self.certs.map.len()
    }

    /// True when nothing is tracked.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_banned_after_threshold_within_window_then_expires() {
        let b = Bans::new(3, Duration::from_secs(60), Duration::from_secs(600));
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(b.failure(Attempt::at(ip), t0), None);
        assert_eq!(b.failure(Attempt::at(ip), t0), None);
        assert!(!b.address_banned(ip, t0));
        assert_eq!(b.failure(Attempt::at(ip), t0), Some(Banned::Address));
        assert!(b.address_banned(ip, t0 + Duration::from_secs(599)));
        assert!(
            !b.address_banned(ip, t0 + Duration::from_secs(601)),
            "the ban expires"
        );
        assert!(
            !b.address_banned("198.51.100.10".parse().unwrap(), t0),
            "others unaffected"
        );
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let b = Bans::new(2, Duration::from_secs(60), Duration::from_secs(600));
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        let t0 = Instant::now();
        b.failure(Attempt::at(ip), t0);
        assert_eq!(
            b.failure(Attempt::at(ip), t0 + Duration::from_secs(61)),
            None
        );
    }

    #[test]
    fn long_usernames_are_counted_whole_by_a_fixed_size_key() {
        // Two 64 KiB names that differ only in their last byte are two accounts; the map holds a
        // 32-byte digest for each, not the names.
        let b = Bans::new(1, Duration::from_secs(60), Duration::from_secs(600));
        let t0 = Instant::now();
        let mut name = "x".repeat(usize::from(u16::MAX));
        for i in 0..2u8 {
            b.failure(Attempt::at(IpAddr::from([203, 0, 113, i])).user(&name), t0);
        }
        let home: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            b.identity_banned(Attempt::at(home).user(&name), t0),
            Some(Banned::User)
        );
        name.pop();
        name.push('y');
        assert_eq!(b.identity_banned(Attempt::at(home).user(&name), t0), None);
        assert_eq!(std::mem::size_of::<UserKey>(), 32);
    }

    #[test]
    fn one_account_from_many_addresses() {
        let b = Bans::new(3, Duration::from_secs(60), Duration::from_secs(600));
        let t0 = Instant::now();
        for i in 0..6u8 {
            let ip = IpAddr::from([203, 0, 113, i]);
            b.failure(Attempt::at(ip).user("alice"), t0);
        }
        let home: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            b.identity_banned(Attempt::at(home).user("alice"), t0),
            Some(Banned::User)
        );
        assert_eq!(b.identity_banned(Attempt::at(home).user("bob"), t0), None);
        // The owner's usual address, where alice logged in before, is not locked out.
        b.success(home, "alice", t0);
        assert_eq!(b.identity_banned(Attempt::at(home).user("alice"), t0), None);
        let elsewhere: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(
            b.identity_banned(Attempt::at(elsewhere).user("alice"), t0),
            Some(Banned::User)
        );
    }

    #[test]
    fn earned_bans_are_listed_and_lifted_by_their_key() {
        let b = Bans::new(1, Duration::from_secs(60), Duration::from_secs(600));
        let ip: IpAddr = "198.51.100.9".parse().unwrap();
        let t0 = Instant::now();
        // Users and certificates are banned at twice the threshold.
        for _ in 0..2 {
            b.failure(Attempt::at(ip).user("alice").fingerprint("fp"), t0);
        }
        let mut shown = b.in_force(t0);
        shown.sort_by_key(|(_, k, _)| k.clone());
        let keys: Vec<(Banned, &str)> = shown.iter().map(|(w, k, _)| (*w, k.as_str())).collect();
        let alice = "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90";
        assert_eq!(
            keys,
            [
                (Banned::Address, "198.51.100.9"),
                (Banned::User, alice),
                (Banned::Certificate, "fp")
            ]
        );
        assert!(b.lift(Banned::Address, "198.51.100.9") && b.lift(Banned::User, alice));
        assert!(b.lift(Banned::Certificate, "fp") && !b.lift(Banned::Certificate, "fp"));
        assert!(!b.address_banned(ip, t0));
        assert_eq!(
            b.identity_banned(Attempt::at(ip).user("alice").fingerprint("fp"), t0),
            None
        );
        assert!(b.in_force(t0).is_empty());
    }

    #[test]
    fn bans_named_by_shared_keys_are_imposed_listed_and_lifted() {
        let b = Bans::new(3, Duration::from_secs(60), Duration::from_secs(600));
        let t0 = Instant::now();
        let fp = "ab".repeat(32);
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let keys = shared_keys(Attempt::at(v6).user("alice").fingerprint(&fp));
        assert_eq!(keys.len(), 3);
        for (what, key) in &keys {
            assert!(
                b.impose(*what, key, t0 + Duration::from_secs(10), t0),
                "{key}"
            );
        }
        // The same /64, the account from anywhere, the certificate.
        let neighbour: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert!(b.address_banned(neighbour, t0));
        let home: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            b.identity_banned(Attempt::at(home).user("alice"), t0),
            Some(Banned::User)
        );
        assert_eq!(
            b.identity_banned(Attempt::at(home).fingerprint(&fp), t0),
            Some(Banned::Certificate)
        );
        let mut active = b.active(t0 + Duration::from_secs(4));
        active.sort_by(|x, y| x.1.cmp(&y.1));
        let mut expected: Vec<_> = keys
            .iter()
            .map(|(w, k)| (*w, k.clone(), Duration::from_secs(6)))
            .collect();
        expected.sort_by(|x, y| x.1.cmp(&y.1));
        assert_eq!(active, expected, "keys round-trip, time left");
        // A later imposition never shortens a ban.
        assert!(b.impose(
            Banned::Address,
            "2001:db8::",
            t0 + Duration::from_secs(1),
            t0
        ));
        assert!(b.address_banned(v6, t0 + Duration::from_secs(9)));
        for (what, key) in &keys {
            assert!(b.lift(*what, key));
        }
        assert!(!b.address_banned(v6, t0));
        assert_eq!(
            b.identity_banned(Attempt::at(home).user("alice").fingerprint(&fp), t0),
            None
        );
        // Malformed keys are refused, not guessed at.
        for (what, key) in [
            (Banned::Address, "not-an-ip"),
            (Banned::User, "alice"),
            (Banned::User, &"zz".repeat(32)),
            (Banned::Certificate, "AB"),
        ] {
            assert!(
                !b.impose(what, key, t0 + Duration::from_secs(10), t0),
                "{key}"
            );
        }
        assert!(b.is_empty());
    }

    #[test]
    fn an_imposed_ban_takes_the_place_of_a_failure_count_never_of_a_ban() {
        let b = Bans::new(5, Duration::from_secs(60), Duration::from_secs(600));
        let t0 = Instant::now();
        for i in 0..u32::try_from(MAX_ENTRIES).unwrap() {
            b.failure(Attempt::at(IpAddr::from(i.to_be_bytes())), t0);
        }
        let until = t0 + Duration::from_secs(60);
        assert!(b.impose(Banned::Address, "203.0.113.250", until, t0));
        assert!(b.address_banned("203.0.113.250".parse().unwrap(), t0));
        assert_eq!(b.len(), MAX_ENTRIES);
        let full = Bans::new(1, Duration::from_secs(60), Duration::from_secs(600));
        for i in 0..u32::try_from(MAX_ENTRIES).unwrap() {
            full.failure(Attempt::at(IpAddr::from(i.to_be_bytes())), t0);
        }
        assert!(!full.impose(Banned::Address, "203.0.113.250", until, t0));
        assert_eq!(full.active(t0).len(), MAX_ENTRIES, "no ban dropped");
    }

    #[test]
    fn memory_is_bounded_and_swept() {
        let b = Bans::new(5, Duration::from_secs(1), Duration::from_secs(1));
        let t0 = Instant::now();
        for i in 0..(u32::try_from(MAX_ENTRIES).unwrap() + 1000) {
            b.failure(Attempt::at(IpAddr::from(i.to_be_bytes())), t0);
        }
        assert_eq!(b.len(), MAX_ENTRIES);
        b.sweep(t0 + Duration::from_secs(5));
        assert!(b.is_empty());
    }
}
