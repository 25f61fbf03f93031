//! Abuse limits that are not about credentials (those are in `auth::ban`).
//!
//! Before the TLS handshake, so that an abusive address costs almost nothing: the global
//! connection cap, concurrent connections per address, and new connections per address per second
//! (governor's keyed GCRA, burst = rate). IPv6 addresses are keyed by their /64, so one host cannot
//! mint 2^64 keys; every map keyed by address has a cap and is swept of idle entries.
//!
//! Per client, after CONNECT: packets and bytes per second (governor direct limiters owned by the
//! connection, no shared state). Every packet the client sends counts as a message (PINGREQ,
//! SUBSCRIBE, ... too), except the acknowledgements of QoS 1/2 messages the broker delivered to it
//! (see `session::relay`). Over the rate the gateway stops reading (TCP pushes back on the client);
//! a client that stays over it for [`SUSTAINED_OVER_RATE`] is disconnected (MQTT 5: 0x96 Message
//! rate too high, 0x97 Quota exceeded for bytes). "Stays over it": its pauses follow each other
//! with less than [`CALM`] between them, however small each batch read is (a TLS stream hands over
//! at most a record or so per read, a TCP socket up to 64 KiB).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitsConfig;

/// Addresses whose connection rate is tracked at once; beyond it, idle entries are swept first and
/// new addresses then share one overflow limiter.
pub const MAX_TRACKED_ADDRESSES: usize = 200_000;
/// A client over its message or byte rate for this long, continuously, is disconnected.
pub const SUSTAINED_OVER_RATE: Duration = Duration::from_secs(5);
/// A client that needed no pause for this long after its last one is back under its rate (the
/// buckets, a second's worth of burst, have refilled): a later pause starts a new episode.
pub const CALM: Duration = Duration::from_secs(1);

/// The address a limit is keyed by: the IPv4 address, or the /64 of an IPv6 address.
#[must_use]
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            for b in o.iter_mut().skip(8) {
                *b = 0;
            }
            IpAddr::V6(o.into())
        }
    }
}

/// Why a connection was refused before its TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    /// `max_connections` reached.
    Global,
    /// `max_connections_per_ip` reached for this address.
    PerIp,
    /// `connections_per_ip_per_second` exceeded.
    Rate,
}

/// Connection-level limits shared by all listeners. Their settings follow the config on reload
/// ([`ConnLimits::configure`]); connections already admitted are never dropped by a lower limit.
#[derive(Debug)]
pub struct ConnLimits {
    open: Arc<AtomicUsize>,
    max_open: AtomicUsize,
    per_ip_max: AtomicU32,
    per_ip: Arc<DashMap<IpAddr, AtomicU32>>,
    rate_per_second: AtomicU32,
    rate: ArcSwap<Limiters>,
}

/// The per-address rate limiter and the shared one for addresses beyond the tracking cap.
#[derive(Debug)]
struct Limiters {
    keyed: DefaultKeyedRateLimiter<IpAddr>,
    overflow: RateLimiter<
        NotKeyed,
        InMemoryState,
        governor::clock::DefaultClock,
        NoOpMiddleware<governor::clock::QuantaInstant>,
    >,
}

impl Limiters {
    fn new(rate: NonZeroU32) -> Self {
        let overflow_rate = rate.saturating_mul(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN));
        Self {
            keyed: RateLimiter::keyed(Quota::per_second(rate)),
            overflow: RateLimiter::direct(Quota::per_second(overflow_rate)),
        }
    }
}

/// Held for the life of a connection: releases its global and per-address slots when dropped.
#[derive(Debug)]
pub struct ConnPermit {
    open: Arc<AtomicUsize>,
    ip: IpAddr,
    per_ip: Arc<DashMap<IpAddr, AtomicU32>>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
        // Remove the entry when the last connection of the address goes, so the map holds only
        // addresses with live connections.
        self.per_ip
            .remove_if(&self.ip, |_, n| n.fetch_sub(1, Ordering::AcqRel) <= 1);
    }
}

tokio::task_local! {
    /// The slots of the connection this task serves, held until [`release_slot`] or the task ends.
    static SLOT: std::cell::RefCell<Option<ConnPermit>>;
}

/// Runs `session` holding `permit`: its slots are given back by [`release_slot`], or when the
/// session ends. A plain function returning the scope future, not an `async fn`: an `async`
/// wrapper would keep room for `session` twice (its argument and the awaited scope), which cost
/// 4.5 KiB per idle connection (BENCHMARKS.md, 2026-12-07).
pub fn holding<F: Future>(permit: ConnPermit, session: F) -> impl Future<Output = F::Output> {
    SLOT.scope(std::cell::RefCell::new(Some(permit)), session)
}

/// Gives the current connection's global and per-address slots back now: called when the gateway
/// ends a connection, before the client is told (a refusing CONNACK, a DISCONNECT, the close), so
/// that a client which sees the end and reconnects at once is not refused for its own old
/// connection (with `max_connections_per_ip = 1`, say). What a closing connection still holds
/// meanwhile is bounded by the goodbye timeout and the connection rate. No-op outside a session.
pub fn release_slot() {
    let _ = SLOT.try_with(|slot| slot.borrow_mut().take());
}

impl ConnLimits {
    /// Limits from `[limits]`.
    #[must_use]
    pub fn new(l: &LimitsConfig) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            max_open: AtomicUsize::new(
                usize::try_from(l.max_connections.get()).unwrap_or(usize::MAX),
            ),
            per_ip_max: AtomicU32::new(l.max_connections_per_ip.get()),
            per_ip: Arc::new(DashMap::new()),
            rate_per_second: AtomicU32::new(l.connections_per_ip_per_second.get()),
            rate: ArcSwap::from_pointee(Limiters::new(l.connections_per_ip_per_second)),
        }
    }

    /// Applies the `[limits]` of a reloaded config: new connections are judged by them; those
    /// already open stay. A changed rate starts from fresh per-address rate state.
    pub fn configure(&self, l: &LimitsConfig) {
        self.max_open.store(
            usize::try_from(l.max_connections.get()).unwrap_or(usize::MAX),
            Ordering::Release,
        );
        self.per_ip_max
            .store(l.max_connections_per_ip.get(), Ordering::Release);
        let rate = l.connections_per_ip_per_second;
        if self.rate_per_second.swap(rate.get(), Ordering::AcqRel) != rate.get() {
            self.rate.store(Arc::new(Limiters::new(rate)));
        }
    }

    /// Admits a new connection from `ip`, or says why not.
    ///
    /// # Errors
    /// The limit that refused it.
    pub fn admit(&self, ip: IpAddr) -> Result<ConnPermit, ConnRefusal> {
        let key = address_key(ip);
        let rate = self.rate.load();
        let rate_ok = if rate.keyed.len() < MAX_TRACKED_ADDRESSES {
            rate.keyed.check_key(&key).is_ok()
        } else {
            rate.overflow.check().is_ok()
        };
        if !rate_ok {
            return Err(ConnRefusal::Rate);
        }
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        let entry = self.per_ip.entry(key).or_insert_with(|| AtomicU32::new(0));
        let n = entry.fetch_add(1, Ordering::AcqRel);
        drop(entry);
        // From here on the permit's Drop gives both slots back, also when refused below.
        let permit = ConnPermit {
            open: Arc::clone(&self.open),
            ip: key,
            per_ip: Arc::clone(&self.per_ip),
        };
        if open >= self.max_open.load(Ordering::Acquire) {
            return Err(ConnRefusal::Global);
        }
        if n >= self.per_ip_max.load(Ordering::Acquire) {
            return Err(ConnRefusal::PerIp);
        }
        Ok(permit)
    }

    /// Forgets addresses whose rate state is indistinguishable from fresh (call periodically).
    pub fn sweep(&self) {
        let rate = self.rate.load();
        rate.keyed.retain_recent();
        rate.keyed.shrink_to_fit();
    }

    /// Addresses tracked by the rate limiter now.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.rate.load().keyed.len()
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, GivenClock, NoOpMiddleware<Nanos>>;

/// The clock of a [`ClientThrottle`]'s limiters: the time the throttle was last given (the `now`
/// of [`ClientThrottle::account`]), as nanoseconds since it was made. The throttle is a pure
/// decision, tested with times passed in; only the relay reads the real clock.
#[derive(Debug, Default)]
struct GivenClock(AtomicU64);

impl Clone for GivenClock {
    fn clone(&self) -> Self {
        Self(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

impl Clock for GivenClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.0.load(Ordering::Relaxed))
    }
}

impl GivenClock {
    /// Sets the time to `since` after the throttle began (never backwards).
    fn set(&self, since: Duration) {
        let nanos = u64::try_from(since.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_max(nanos, Ordering::Relaxed);
    }
}

/// Which per-client limit was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientLimit {
    /// `messages_per_client_per_second`.
    Messages,
    /// `bytes_per_client_per_second`.
    Bytes,
}

impl ClientLimit {
    /// Its `rate_limited_total` label.
    #[must_use]
    pub const fn label(self) -> crate::metrics::RateLimit {
        match self {
            Self::Messages => crate::metrics::RateLimit::Messages,
            Self::Bytes => crate::metrics::RateLimit::Bytes,
        }
    }

    /// The `rate_limited_total` label value (also the `reason` of its audit line).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        self.label().as_str()
    }
}

/// The per-client message and byte limiters of one connection.
#[derive(Debug)]
pub struct ClientThrottle {
    messages: Direct,
    bytes: Direct,
    messages_burst: u32,
    bytes_burst: u32,
    messages_rate: u32,
    bytes_rate: u32,
    /// When the throttle was made: the limiters' clocks count from here.
    origin: std::time::Instant,
    /// When the current episode over the rate began.
    over_since: Option<std::time::Instant>,
    /// When the last pause ends.
    paused_until: Option<std::time::Instant>,
    /// Messages and bytes read but not yet charged (their batch is waiting).
    pending: (u32, u32),
}

/// What the relay does after a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Throttle {
    /// Go on reading.
    Go,
    /// Stop reading for this long (the first time: count `rate_limited_total{limit}`).
    Wait(Duration, ClientLimit, bool),
    /// Over this limit for too long: close (the session ends as `CloseReason::RateLimited`).
    Close(ClientLimit),
}

impl ClientThrottle {
    /// Limiters from `[limits]`, with bursts of one second's worth (bytes: at least one maximum
    /// packet, so that any legal packet can pass), starting at `now`.
    #[must_use]
    pub fn new(l: &LimitsConfig, now: std::time::Instant) -> Self {
        let messages_burst = l.messages_per_client_per_second;
        let byte_rate =
            NonZeroU32::new(u32::try_from(l.bytes_per_client_per_second.0).unwrap_or(u32::MAX))
                .unwrap_or(NonZeroU32::MIN);
        let packet = NonZeroU32::new(u32::try_from(l.max_packet_size.0).unwrap_or(u32::MAX))
            .unwrap_or(NonZeroU32::MIN);
        let bytes_burst = byte_rate.max(packet);
        Self {
            messages: RateLimiter::direct_with_clock(
                Quota::per_second(messages_burst),
                GivenClock::default(),
            ),
            bytes: RateLimiter::direct_with_clock(
                Quota::per_second(byte_rate).allow_burst(bytes_burst),
                GivenClock::default(),
            ),
            messages_burst: messages_burst.get(),
            bytes_burst: bytes_burst.get(),
            messages_rate: messages_burst.get(),
            bytes_rate: byte_rate.get(),
            origin: now,
            over_since: None,
            paused_until: None,
            pending: (0, 0),
        }
    }

    /// Accounts for a batch of `messages` packets and `bytes` bytes read at `now`, and says
    /// whether to read on, pause, or close. After a pause, call it again with `(0, 0)`: what could
    /// not be charged before is charged then.
    pub fn account(&mut self, messages: u32, bytes: usize, now: std::time::Instant) -> Throttle {
        let since = now.saturating_duration_since(self.origin);
        self.messages.clock().set(since);
        self.bytes.clock().set(since);
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        self.pending.0 = self.pending.0.saturating_add(messages);
        self.pending.1 = self.pending.1.saturating_add(bytes);
        let (wait_m, left_m) = take(&self.messages, self.pending.0, self.messages_burst);
        let (wait_b, left_b) = take(&self.bytes, self.pending.1, self.bytes_burst);
        self.pending = (left_m, left_b);
        // The backlog beyond the first waiting chunk needs this much more time at the rate.
        let backlog = backlog(left_m, self.messages_burst, self.messages_rate).max(backlog(
            left_b,
            self.bytes_burst,
            self.bytes_rate,
        ));
        let (wait, limit) = if wait_b > wait_m {
            (wait_b, ClientLimit::Bytes)
        } else {
            (wait_m, ClientLimit::Messages)
        };
        // The episode ends only after a calm second, not as soon as one pause is over: a client
        // whose every read fits in the burst (small reads, as over TLS) but that is over the rate
        // again right after each pause is continuously over it.
        if self
            .paused_until
            .is_some_and(|p| now.saturating_duration_since(p) >= CALM)
        {
            self.over_since = None;
            self.paused_until = None;
        }
        if wait.is_zero() {
            return Throttle::Go;
        }
        let first = self.over_since.is_none();
        let since = *self.over_since.get_or_insert(now);
        if now.duration_since(since) + wait + backlog > SUSTAINED_OVER_RATE {
            return Throttle::Close(limit);
        }
        self.paused_until = Some(now + wait);
        Throttle::Wait(wait, limit, first)
    }
}

/// Time to pay off `left` cells beyond the first chunk of `burst`, at `rate` per second.
fn backlog(left: u32, burst: u32, rate: u32) -> Duration {
    let beyond = u64::from(left.saturating_sub(burst));
    Duration::from_millis(beyond.saturating_mul(1000) / u64::from(rate.max(1)))
}

/// Charges `n` cells to `limiter` in chunks of at most `burst`, stopping at the first chunk that
/// does not conform yet: returns how long until it does (zero: all charged) and how many cells are
/// still uncharged. A batch is thus charged exactly once, after its pause.
fn take(limiter: &Direct, n: u32, burst: u32) -> (Duration, u32) {
    let mut left = n;
    while left > 0 {
        let chunk = left.min(burst);
        let Some(cells) = NonZeroU32::new(chunk) else {
            break;
        };
        match limiter.check_n(cells) {
            Ok(Ok(())) => left -= chunk,
            Ok(Err(not_until)) => {
                return (not_until.wait_time_from(limiter.clock().now()), left);
            }
            // Cannot happen (chunks never exceed the burst); do not let it block forever.
            Err(_) => left -= chunk,
        }
    }
    (Duration::ZERO, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, per_ip: u32, global: u32) -> LimitsConfig {
        LimitsConfig {
            connections_per_ip_per_second: NonZeroU32::new(rate).unwrap(),
            max_connections_per_ip: NonZeroU32::new(per_ip).unwrap(),
            max_connections: NonZeroU32::new(global).unwrap(),
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn per_ip_and_global_caps_release_on_drop() {
        let l = ConnLimits::new(&limits(1000, 2, 3));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.admit(a).unwrap();
        let p2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).unwrap_err(), ConnRefusal::PerIp);
        let p3 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).unwrap_err(), ConnRefusal::Global);
        drop(p1);
        let _p4 = l.admit(b).unwrap();
        drop((p2, p3));
        assert!(
            l.per_ip.get(&a).is_none(),
            "an address without connections leaves the map"
        );
    }

    #[test]
    fn reconfigured_caps_apply_to_new_connections_and_keep_open_ones() {
        let l = ConnLimits::new(&limits(1000, 10, 10));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let held = (l.admit(a).unwrap(), l.admit(a).unwrap());
        l.configure(&limits(1000, 1, 10));
        assert_eq!(l.admit(a).unwrap_err(), ConnRefusal::PerIp);
        l.configure(&limits(1000, 10, 2));
        assert_eq!(
            l.admit("10.0.0.2".parse().unwrap()).unwrap_err(),
            ConnRefusal::Global
        );
        l.configure(&limits(1000, 10, 3));
        let _third = l.admit(a).unwrap();
        // A new rate starts from fresh state: 2 per second, whatever was used before.
        l.configure(&limits(2, 10, 100));
        let b: IpAddr = "10.0.0.3".parse().unwrap();
        let _ok = (l.admit(b).unwrap(), l.admit(b).unwrap());
        assert_eq!(l.admit(b).unwrap_err(), ConnRefusal::Rate);
        drop(held);
    }

    #[test]
    fn connection_rate_per_address_with_burst() {
        let l = ConnLimits::new(&limits(5, 100, 1000));
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(l.admit(a).unwrap());
        }
        assert_eq!(l.admit(a).unwrap_err(), ConnRefusal::Rate);
        // Another address is not affected.
        assert!(l.admit("192.0.2.8".parse().unwrap()).is_ok());
    }

    #[test]
    fn ipv6_keyed_by_slash_64_and_mapped_v4_canonical() {
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:1234".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(
            address_key(a),
            address_key("2001:db8:0:1::1".parse().unwrap())
        );
        assert_eq!(
            address_key("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn throttle_pauses_then_closes_when_sustained() {
        let l = LimitsConfig {
            messages_per_client_per_second: NonZeroU32::new(10).unwrap(),
            ..LimitsConfig::default()
        };
        let mut now = std::time::Instant::now();
        let mut t = ClientThrottle::new(&l, now);
        assert_eq!(t.account(10, 100, now), Throttle::Go, "the burst passes");
        let Throttle::Wait(d, ClientLimit::Messages, true) = t.account(10, 100, now) else {
            panic!()
        };
        assert_eq!(d, Duration::from_secs(1), "the batch of ten at 10/s");
        // After the pause the waiting batch is charged, not forgotten.
        now += d;
        assert_eq!(t.account(0, 0, now), Throttle::Go);
        assert!(
            matches!(t.account(1, 1, now), Throttle::Wait(..)),
            "the bucket is empty again"
        );
        // Far over the rate: more than SUSTAINED_OVER_RATE of debt closes.
        assert_eq!(
            t.account(1000, 100, now),
            Throttle::Close(ClientLimit::Messages)
        );
    }

    /// A client that does what the throttle says: sends `batch` packets, waits exactly the pauses
    /// it is given, then waits `between`; returns the verdict that ended the run (`Go` when
    /// `batches` were all served) and how many batches were sent. Time is passed in, not slept.
    fn drive(l: &LimitsConfig, batch: u32, between: Duration, batches: u32) -> (Throttle, u32) {
        let mut now = std::time::Instant::now();
        let mut t = ClientThrottle::new(l, now);
        for sent in 1..=batches {
            let mut verdict = t.account(batch, usize::try_from(batch).unwrap() * 10, now);
            while let Throttle::Wait(d, _, _) = verdict {
                now += d;
                verdict = t.account(0, 0, now);
            }
            if let Throttle::Close(_) = verdict {
                return (verdict, sent);
            }
            now += between;
        }
        (Throttle::Go, batches)
    }

    /// Issue 20, item 8: batches that each fit in the burst, sent again as soon as each pause is
    /// over (what a flooding client looks like through a TLS stream, which hands over about one
    /// record per read), are one episode over the rate: closed once it has lasted
    /// SUSTAINED_OVER_RATE. Before, every pause's end started the count again, so such a client
    /// was slowed forever and never cut.
    #[test]
    fn small_batches_over_the_rate_are_one_episode_and_close() {
        let l = LimitsConfig {
            messages_per_client_per_second: NonZeroU32::new(400).unwrap(),
            ..LimitsConfig::default()
        };
        let (verdict, batches) = drive(&l, 200, Duration::ZERO, 30);
        assert_eq!(
            verdict,
            Throttle::Close(ClientLimit::Messages),
            "not closed after 30 batches (15 s at twice the rate)"
        );
        // Twice the rate: the 400 burst, then 200 every half second. Closed when the episode
        // reached SUSTAINED_OVER_RATE (about ten pauses), not at the first pause.
        assert!((8..=14).contains(&batches), "{batches}");
    }

    /// The good case beside it, as a table: clients under their rate, with bursts and calm between
    /// them, or steady at the rate, are paused at most briefly and never closed.
    #[test]
    fn bursts_with_calm_between_them_are_never_closed() {
        let l = LimitsConfig {
            messages_per_client_per_second: NonZeroU32::new(400).unwrap(),
            ..LimitsConfig::default()
        };
        let rows = [
            // 600 at once (the 400 burst passes, 200 wait half a second), then quiet for longer
            // than CALM plus a full refill.
            (600, CALM + Duration::from_millis(1100), 3),
            // Exactly the rate, forever: 40 every 100 ms.
            (40, Duration::from_millis(100), 200),
            // A keep-alive: one PINGREQ a minute.
            (1, Duration::from_secs(60), 100),
        ];
        for (batch, between, batches) in rows {
            assert_eq!(
                drive(&l, batch, between, batches),
                (Throttle::Go, batches),
                "{batch} every {between:?}"
            );
        }
    }
}
