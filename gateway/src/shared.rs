//! What every connection of the gateway shares: the current snapshot of config, policy and
//! password file (read lock-free per packet through `ArcSwap`), the audit log, the shutdown token,
//! the task tracker and the cap on concurrent password verifications.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use mqtt_inspect::Direction;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::Audit;
use crate::auth::PasswordFile;
use crate::config::Config;
use crate::metrics::PacketCounters;
use crate::policy::Policy;

pub use crate::auth::AUTH_CONCURRENCY;

/// One consistent generation of everything reloadable.
#[derive(Debug)]
pub struct Snapshot {
    /// The configuration.
    pub config: Arc<Config>,
    /// The compiled policy.
    pub policy: Arc<Policy>,
    /// The password file, when one is configured.
    pub passwords: Option<Arc<PasswordFile>>,
    /// The JWKS of `[auth.token]`, when tokens are accepted.
    pub tokens: Option<Arc<crate::auth::token::TokenKeys>>,
    /// The admin API's tokens (`[admin] api_tokens_file`), when the API is enabled.
    pub admin_tokens: Option<Arc<crate::api::tokens::AdminTokens>>,
    /// The client-certificate verifier of each TLS listener that asks for certificates (by name),
    /// the same instance as in its `ServerConfig`: resumed sessions are judged by it, and live
    /// sessions' chains are re-verified against it after a reload.
    pub verifiers: HashMap<String, Arc<crate::tls::ListenerVerifier>>,
    /// Bumped on every successful reload.
    pub generation: u64,
}

/// State shared by all listeners and connections.
#[derive(Debug)]
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    /// The audit log.
    pub audit: Audit,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// Every connection task, for the drain at shutdown.
    pub tracker: TaskTracker,
    /// Permits for password verification.
    pub auth_permits: Arc<Semaphore>,
    /// Per-packet counters, client to broker.
    pub c2b: PacketCounters,
    /// Per-packet counters, broker to client.
    pub b2c: PacketCounters,
    /// When a broker was last seen alive (a packet from it to a session, or a probe's CONNACK).
    pub broker_seen: BrokerSeen,
    /// The generation of the current snapshot, for live sessions to wake on.
    generation_tx: watch::Sender<u64>,
    /// Connection limits checked before the TLS handshake; they follow `[limits]` on reload.
    pub conn_limits: crate::limits::ConnLimits,
    /// Bans earned by authentication failures; the settings follow `[limits]` on reload.
    pub bans: crate::auth::ban::Bans,
    /// OCSP answers for client certificates (`[listener.tls] ocsp`).
    pub ocsp: Arc<crate::ocsp::Ocsp>,
    /// The live sessions (admin API).
    pub sessions: crate::api::registry::Registry,
    /// The reloader, once `reload::spawn` started it (admin API `POST /api/v1/reload`).
    pub reloader: std::sync::OnceLock<std::sync::Weak<crate::reload::Reloader>>,
    /// `[cluster]`: the bans and failure counters shared with other instances (read at start).
    pub cluster: crate::cluster::Cluster,
}

impl Gateway {
    /// State for a first snapshot.
    #[must_use]
    pub fn new(snapshot: Snapshot, audit: Audit) -> Self {
        let (generation_tx, _) = watch::channel(snapshot.generation);
        let l = &snapshot.config.limits;
        let conn_limits = crate::limits::ConnLimits::new(l);
        let bans = crate::auth::ban::Bans::new(
            l.auth_failures_before_ban.get(),
            l.ban_window,
            l.ban_duration,
        );
        let cluster = crate::cluster::Cluster::new(snapshot.config.cluster.as_ref());
        Self {
            conn_limits,
            bans,
            cluster,
            generation_tx,
            snapshot: ArcSwap::from_pointee(snapshot),
            audit,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            auth_permits: Arc::new(Semaphore::new(AUTH_CONCURRENCY)),
            c2b: PacketCounters::new(Direction::ClientToServer),
            b2c: PacketCounters::new(Direction::ServerToClient),
            broker_seen: BrokerSeen::new(),
            ocsp: Arc::default(),
            sessions: crate::api::registry::Registry::default(),
            reloader: std::sync::OnceLock::new(),
        }
    }

    /// The current snapshot, for a connection to keep.
    #[must_use]
    pub fn current(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The current generation number (a cheap lock-free read, done per packet).
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.snapshot.load().generation
    }

    /// Publishes a new snapshot and wakes every live session to re-check itself against it.
    pub fn store(&self, snapshot: Snapshot) {
        let generation = snapshot.generation;
        let l = &snapshot.config.limits;
        if *l != self.snapshot.load().config.limits {
            self.conn_limits.configure(l);
            self.bans.configure(
                l.auth_failures_before_ban.get(),
                l.ban_window,
                l.ban_duration,
            );
        }
        self.snapshot.store(Arc::new(snapshot));
        self.generation_tx.send_replace(generation);
        self.sessions
            .signal_all(crate::api::registry::signal::RECHECK);
    }

    /// Starts the shutdown: every task waiting on `shutdown` ends, and every live session is told
    /// (a session that registers later sees the token cancelled: `session::finish::Watch`).
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
        self.sessions
            .signal_all(crate::api::registry::signal::SHUTDOWN);
    }

    /// A receiver that wakes on each new snapshot.
    #[must_use]
    pub fn watch_generation(&self) -> watch::Receiver<u64> {
        self.generation_tx.subscribe()
    }

    /// Notes that a broker answered in MQTT just now (a session's packet from it, a probe's
    /// CONNACK).
    pub fn upstream_ok(&self) {
        self.broker_seen.record();
    }

    /// Milliseconds since a broker was last seen alive (`u64::MAX` if never).
    #[must_use]
    pub fn upstream_age_ms(&self) -> u64 {
        self.broker_seen.age_ms()
    }
}

/// When an upstream broker last proved alive by speaking MQTT: lock-free, written by every
/// session as packets come from its broker, read by `/readyz` and by the prober, which connects
/// only when no session has shown the broker alive lately (`admin::probe_upstream`).
///
/// Monotonic (a wall-clock step does not make the gateway ready or unready). Many sessions record
/// at once: the shared value is written at most once per [`BrokerSeen::RESOLUTION_MS`], so that
/// busy sessions do not keep taking its cache line from each other; between writes they only read.
#[derive(Debug)]
pub struct BrokerSeen {
    epoch: Instant,
    /// Milliseconds since `epoch`, plus one, of the last proof; 0: none yet.
    at: AtomicU64,
}

impl BrokerSeen {
    /// How stale a record may be left, in milliseconds (far below the prober's interval).
    pub const RESOLUTION_MS: u64 = 100;

    /// Nothing seen yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            at: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    /// A broker spoke MQTT just now.
    pub fn record(&self) {
        self.record_at(self.now());
    }

    /// Milliseconds since the last record (`u64::MAX` if none).
    #[must_use]
    pub fn age_ms(&self) -> u64 {
        self.age_at(self.now())
    }

    /// [`Self::record`] at `now` (milliseconds since the epoch, plus one).
    fn record_at(&self, now: u64) {
        let last = self.at.load(Ordering::Relaxed);
        if last == 0 || now.saturating_sub(last) >= Self::RESOLUTION_MS {
            self.at.store(now, Ordering::Relaxed);
        }
    }

    /// [`Self::age_ms`] at `now`.
    fn age_at(&self, now: u64) -> u64 {
        match self.at.load(Ordering::Relaxed) {
            0 => u64::MAX,
            t => now.saturating_sub(t),
        }
    }
}

impl Default for BrokerSeen {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::BrokerSeen;

    #[test]
    fn broker_seen_keeps_the_last_proof_to_its_resolution() {
        let seen = BrokerSeen::new();
        assert_eq!(seen.age_at(1), u64::MAX, "never seen");
        // (record at, then age asked at, expected age)
        for (record, at, age) in [
            (1, 1, 0),
            (1, 2_001, 2_000),
            // Within the resolution of the last write: not written again.
            (50, 2_001, 2_000),
            (101, 2_001, 1_900),
            (5_000, 5_000, 0),
            // Clocks do not run backwards; an age is never negative.
            (5_000, 4_000, 0),
        ] {
            seen.record_at(record);
            assert_eq!(seen.age_at(at), age, "record {record}, at {at}");
        }
    }
}
