//! The live sessions, for `GET /api/v1/sessions` and kicks: one [`LiveSession`] per session that
//! got past its CONNECT, inserted when its relay starts and removed when it ends (a guard), so the
//! table holds exactly the live sessions and is bounded by the connection caps.
//!
//! The relay never takes a lock here: a session writes only its own entry's counters (relaxed
//! atomics, one add per packet). The table is a sharded map, touched twice per session (insert,
//! remove) and read shard by shard by a listing.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use dashmap::DashMap;
use futures_util::task::AtomicWaker;
use serde::Serialize;

use crate::session::connect::SessionIdentity;

/// What the registry knows of one live session: its identity (shared with the session, not
/// copied), when it started, its counters, and what it is asked from outside (a kick, a
/// re-check).
#[derive(Debug)]
pub struct LiveSession {
    /// Its id in the API (unique for the process's life).
    pub id: u64,
    /// Who it is (principal, client id, listener, peer, certificate, token).
    pub identity: Arc<SessionIdentity>,
    /// 3 (3.1), 4 (3.1.1) or 5.
    pub protocol: u8,
    /// Kicked: its end wakes the kicker ([`Registry::ended`]).
    kicked: std::sync::atomic::AtomicBool,
    /// When the relay started (unix seconds).
    pub since: u64,
    /// Bytes and packets, client to broker and broker to client.
    pub c2b_bytes: AtomicU64,
    /// See `c2b_bytes`.
    pub c2b_packets: AtomicU64,
    /// See `c2b_bytes`.
    pub b2c_bytes: AtomicU64,
    /// See `c2b_bytes`.
    pub b2c_packets: AtomicU64,
    /// What is asked of the session from outside its packets ([`signal`] bits), taken by its
    /// watch (`session::finish::Watch`) when `waker` wakes it.
    signals: AtomicU8,
    /// The session's task, woken by [`Self::signal`] and [`Self::kick`].
    pub waker: AtomicWaker,
}

/// What a [`LiveSession`] can be asked to do, as bits: set by whoever knows (a reload, an OCSP
/// answer, the shutdown, the session itself after a re-authentication), taken by the session.
/// One byte and a waker per session, in place of a wait on each source: an idle session's task
/// holds no future per source, and a wake-up costs one load.
pub mod signal {
    /// A new snapshot: re-check the session against it (CRLs, CA, tokens' keys, the policy's
    /// Will).
    pub const RECHECK: u8 = 1;
    /// An OCSP answer turned to revoked: look at the session's certificate's.
    pub const OCSP: u8 = 2;
    /// The gateway is shutting down.
    pub const SHUTDOWN: u8 = 4;
    /// The session's credential changed (a re-authentication): its end moved.
    pub const CREDENTIAL: u8 = 8;
}

impl LiveSession {
    /// Asks the session to end (DISCONNECT 0x98 and close).
    pub fn kick(&self) {
        self.kicked.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Asks the session to act on `bits` ([`signal`]) and wakes it.
    pub fn signal(&self, bits: u8) {
        self.signals.fetch_or(bits, Ordering::Release);
        self.waker.wake();
    }

    /// The bits asked since the last call (one load when there are none).
    pub fn take_signals(&self) -> u8 {
        if self.signals.load(Ordering::Relaxed) == 0 {
            return 0;
        }
        self.signals.swap(0, Ordering::Acquire)
    }

    /// Whether it was kicked already.
    #[must_use]
    pub fn kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }

    /// Counts one packet of `len` bytes from the client.
    pub fn from_client(&self, len: usize) {
        self.c2b_packets.fetch_add(1, Ordering::Relaxed);
        self.c2b_bytes
            .fetch_add(u64::try_from(len).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Counts one packet of `len` bytes from the broker.
    pub fn from_broker(&self, len: usize) {
        self.b2c_packets.fetch_add(1, Ordering::Relaxed);
        self.b2c_bytes
            .fetch_add(u64::try_from(len).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Its JSON view.
    #[must_use]
    pub fn view(&self) -> SessionView<'_> {
        let i = &*self.identity;
        SessionView {
            id: self.id,
            principal: i.principal.as_deref().map(cut),
            client_id: cut(&i.client_id),
            listener: &i.listener,
            peer: i.peer.to_string(),
            protocol: self.protocol,
            cert_serial: i.serial(),
            cert_fingerprint: i.fingerprint(),
            credential_expiry: i.credential_end().map(|(at, _)| at),
            connected_since: self.since,
            bytes_in: self.c2b_bytes.load(Ordering::Relaxed),
            bytes_out: self.b2c_bytes.load(Ordering::Relaxed),
            packets_in: self.c2b_packets.load(Ordering::Relaxed),
            packets_out: self.b2c_packets.load(Ordering::Relaxed),
        }
    }
}

/// A session as `GET /api/v1/sessions` shows it (`_in`: from the client; `_out`: to it).
#[derive(Debug, Serialize)]
pub struct SessionView<'a> {
    /// See [`LiveSession`].
    pub id: u64,
    /// See [`LiveSession`] (at most [`MAX_SHOWN`] bytes, then `…`).
    pub principal: Option<Cow<'a, str>>,
    /// See [`LiveSession`] (at most [`MAX_SHOWN`] bytes, then `…`).
    pub client_id: Cow<'a, str>,
    /// See [`LiveSession`].
    pub listener: &'a str,
    /// See [`LiveSession`].
    pub peer: String,
    /// See [`LiveSession`].
    pub protocol: u8,
    /// See [`LiveSession`].
    pub cert_serial: Option<&'a str>,
    /// See [`LiveSession`].
    pub cert_fingerprint: Option<&'a str>,
    /// Unix seconds.
    pub credential_expiry: Option<u64>,
    /// Unix seconds.
    pub connected_since: u64,
    /// See [`LiveSession`].
    pub bytes_in: u64,
    /// See [`LiveSession`].
    pub bytes_out: u64,
    /// See [`LiveSession`].
    pub packets_in: u64,
    /// See [`LiveSession`].
    pub packets_out: u64,
}

/// A client id or principal is the client's to choose (up to 64 KiB): a listing shows at most
/// this many bytes of each (as audit lines do), so that a page of 1,000 stays small.
pub const MAX_SHOWN: usize = 1024;

/// `s` cut to at most [`MAX_SHOWN`] bytes at a character boundary, `…` appended when cut.
pub(crate) fn cut(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_SHOWN {
        return Cow::Borrowed(s);
    }
    let mut end = MAX_SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", s.get(..end).unwrap_or_default()))
}

/// The table of live sessions.
#[derive(Debug, Default)]
pub struct Registry {
    map: DashMap<u64, Arc<LiveSession>>,
    next: AtomicU64,
    /// Woken when a kicked session leaves the table (only those: no lock on other ends).
    removed: tokio::sync::Notify,
}

/// Removes its session from the registry when dropped.
#[derive(Debug)]
pub struct Registered<'a> {
    registry: &'a Registry,
    /// The entry.
    pub entry: Arc<LiveSession>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.registry.map.remove(&self.entry.id);
        if self.entry.kicked.load(Ordering::Acquire) {
            self.registry.removed.notify_waiters();
        }
    }
}

/// Filters of a listing (all given ones must match; `address` matches the peer's IP).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Exact principal.
    pub principal: Option<String>,
    /// Exact client id.
    pub client_id: Option<String>,
    /// Exact listener name.
    pub listener: Option<String>,
    /// An IP address or a CIDR the peer's address is in.
    pub address: Option<ipnet::IpNet>,
}

impl Filter {
    fn matches(&self, s: &LiveSession) -> bool {
        let i = &*s.identity;
        self.principal
            .as_deref()
            .is_none_or(|p| i.principal.as_deref() == Some(p))
            && self.client_id.as_deref().is_none_or(|c| i.client_id == c)
            && self.listener.as_deref().is_none_or(|l| &*i.listener == l)
            && self
                .address
                .is_none_or(|a| a.contains(&i.peer.ip().to_canonical()))
    }
}

impl Registry {
    /// Registers a session whose relay starts now; it leaves the table when the guard drops.
    pub fn register(
        &self,
        identity: Arc<SessionIdentity>,
        protocol: u8,
        since: u64,
    ) -> Registered<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let entry = Arc::new(LiveSession {
            id,
            identity,
            protocol,
            kicked: std::sync::atomic::AtomicBool::new(false),
            since,
            c2b_bytes: AtomicU64::new(0),
            c2b_packets: AtomicU64::new(0),
            b2c_bytes: AtomicU64::new(0),
            b2c_packets: AtomicU64::new(0),
            signals: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        });
        self.map.insert(id, Arc::clone(&entry));
        Registered {
            registry: self,
            entry,
        }
    }

    /// Asks every live session to act on `bits` ([`signal`]). A session that registers while
    /// this runs, and misses it, looks for itself once registered (`session::finish::Watch`).
    pub fn signal_all(&self, bits: u8) {
        for e in &self.map {
            e.signal(bits);
        }
    }

    /// Completes when a kicked session leaves the table (enable it before checking).
    pub fn ended(&self) -> tokio::sync::futures::Notified<'_> {
        self.removed.notified()
    }

    /// Live sessions now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when none is live.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// One session.
    #[must_use]
    pub fn get(&self, id: u64) -> Option<Arc<LiveSession>> {
        self.map.get(&id).map(|e| Arc::clone(e.value()))
    }

    /// Whether session `id` is still live.
    #[must_use]
    pub fn contains(&self, id: u64) -> bool {
        self.map.contains_key(&id)
    }

    /// The sessions that match `filter`, by id, from the first id above `after`, at most
    /// `limit`; and the number of matches in all. Memory: the matching ids (8 bytes each) and
    /// `limit` entries.
    #[must_use]
    pub fn list(
        &self,
        filter: &Filter,
        offset: usize,
        limit: usize,
    ) -> (Vec<Arc<LiveSession>>, usize) {
        let mut ids: Vec<u64> = self
            .map
            .iter()
            .filter(|e| filter.matches(e.value()))
            .map(|e| *e.key())
            .collect();
        ids.sort_unstable();
        let total = ids.len();
        let page = ids
            .into_iter()
            .skip(offset)
            .filter_map(|id| self.get(id))
            .take(limit)
            .collect();
        (page, total)
    }

    /// The live sessions of this client id not kicked yet (a cluster kick).
    #[must_use]
    pub fn with_client_id(&self, client_id: &str) -> Vec<Arc<LiveSession>> {
        self.map
            .iter()
            .filter(|e| e.identity.client_id == client_id && !e.kicked())
            .map(|e| Arc::clone(e.value()))
            .collect()
    }

    /// The live sessions whose client certificate has this serial (hex, any case).
    #[must_use]
    pub fn with_serial(&self, serial: &str) -> Vec<u64> {
        self.map
            .iter()
            .filter(|e| {
                e.identity
                    .serial()
                    .is_some_and(|s| s.eq_ignore_ascii_case(serial))
            })
            .map(|e| e.id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(id: u64, peer: &str, principal: Option<&str>) -> LiveSession {
        LiveSession {
            id,
            identity: Arc::new(SessionIdentity {
                listener: Arc::from("mqtts"),
                peer: peer.parse().unwrap(),
                principal: principal.map(Into::into),
                client_id: format!("client-{id}"),
                anonymous: false,
                cert: None,
                password_user: None,
                password_fingerprint: None,
                will: None,
                token: None,
                ocsp: None,
            }),
            protocol: 5,
            kicked: std::sync::atomic::AtomicBool::new(false),
            since: 0,
            c2b_bytes: AtomicU64::new(0),
            c2b_packets: AtomicU64::new(0),
            b2c_bytes: AtomicU64::new(0),
            b2c_packets: AtomicU64::new(0),
            signals: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        }
    }

    /// 10,000 live sessions: pages of at most `limit`, in id order, the total beside them; a
    /// filter narrows the total. (BENCHMARKS.md: the time of one page.)
    #[test]
    fn ten_thousand_sessions_are_paged() {
        let r = Registry::default();
        for id in 1..=10_000u64 {
            let who = if id % 10 == 0 { "ten" } else { "other" };
            r.map
                .insert(id, Arc::new(fake(id, "10.0.0.1:1", Some(who))));
        }
        let started = std::time::Instant::now();
        let (page, total) = r.list(&Filter::default(), 9_500, 1000);
        let took = started.elapsed();
        assert_eq!((page.len(), total), (500, 10_000));
        assert_eq!(page.first().map(|s| s.id), Some(9_501));
        let views = serde_json::to_vec(&page.iter().map(|s| s.view()).collect::<Vec<_>>()).unwrap();
        eprintln!(
            "10,000 sessions: one page in {took:?}, {} bytes of JSON for 500",
            views.len()
        );
        let ten = Filter {
            principal: Some("ten".into()),
            ..Filter::default()
        };
        let (page, total) = r.list(&ten, 0, 1000);
        assert_eq!((page.len(), total), (1000, 1000));
        assert!(page.windows(2).all(|w| w[0].id < w[1].id));
    }

    /// What a live session adds to an idle connection (BENCHMARKS.md: about 11.5 KiB each): the
    /// entry on the heap (the identity is the session's own, shared), an `Arc` header, and the
    /// map's slot.
    #[test]
    fn an_entry_stays_small() {
        let entry = std::mem::size_of::<LiveSession>();
        let slot = std::mem::size_of::<(u64, Arc<LiveSession>)>();
        let identity = std::mem::size_of::<SessionIdentity>();
        eprintln!(
            "LiveSession {entry} bytes, map slot {slot} bytes; the identity ({identity} bytes) moved into an Arc"
        );
        assert!(entry <= 128, "{entry} bytes");
        assert!(slot <= 16, "{slot} bytes");
    }

    #[test]
    fn filters_match_every_given_field() {
        let f = Filter {
            address: Some("10.0.0.0/8".parse().unwrap()),
            ..Filter::default()
        };
        let s = |peer: &str, principal: Option<&str>| fake(1, peer, principal);
        assert!(f.matches(&s("10.1.2.3:1", None)));
        assert!(!f.matches(&s("11.1.2.3:1", None)));
        let f = Filter {
            principal: Some("a".into()),
            listener: Some("mqtts".into()),
            ..f
        };
        assert!(f.matches(&s("10.1.2.3:1", Some("a"))));
        assert!(!f.matches(&s("10.1.2.3:1", Some("b"))));
        assert!(!f.matches(&s("10.1.2.3:1", None)));
        let mapped = s("[::ffff:10.1.2.3]:1", None);
        let net = Filter {
            address: Some("10.0.0.0/8".parse().unwrap()),
            ..Filter::default()
        };
        assert!(
            net.matches(&mapped),
            "an IPv4-mapped peer is matched as IPv4"
        );
        assert_eq!(mapped.view().credential_expiry, None);
        let long = "é".repeat(1000);
        let shown = cut(&long);
        assert!(
            shown.len() <= MAX_SHOWN + 3 && shown.ends_with('…'),
            "{}",
            shown.len()
        );
        assert_eq!(cut("short"), "short");
    }
}
