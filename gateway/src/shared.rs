//! What every connection of the gateway shares: the current snapshot of config, policy and
//! password file (read lock-free per packet through `ArcSwap`), the audit log, the shutdown token,
//! the task tracker and the cap on concurrent password verifications.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use mqtt_inspect::Direction;
use rustls::server::danger::ClientCertVerifier;
use tokio::sync::{Semaphore, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::Audit;
use crate::auth::PasswordFile;
use crate::config::Config;
use crate::metrics::PacketCounters;
use crate::policy::Policy;

/// Concurrent password verifications (each is CPU-heavy by design: PBKDF2 or argon2id).
pub const AUTH_CONCURRENCY: usize = 4;

/// One consistent generation of everything reloadable.
#[derive(Debug)]
pub struct Snapshot {
    /// The configuration.
    pub config: Arc<Config>,
    /// The compiled policy.
    pub policy: Arc<Policy>,
    /// The password file, when one is configured.
    pub passwords: Option<Arc<PasswordFile>>,
    /// The client-certificate verifier of each TLS listener that asks for certificates (by name),
    /// built from the same CA and CRL files as its `ServerConfig`: live sessions' chains are
    /// re-verified against it after a reload.
    pub verifiers: HashMap<String, Arc<dyn ClientCertVerifier>>,
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
    /// Unix milliseconds of the last successful connection to the upstream broker.
    upstream_ok_ms: AtomicU64,
    /// The generation of the current snapshot, for live sessions to wake on.
    generation_tx: watch::Sender<u64>,
    /// Connection limits checked before the TLS handshake; they follow `[limits]` on reload.
    pub conn_limits: crate::limits::ConnLimits,
    /// Bans earned by authentication failures; the settings follow `[limits]` on reload.
    pub bans: crate::auth::ban::Bans,
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
        Self {
            conn_limits,
            bans,
            generation_tx,
            snapshot: ArcSwap::from_pointee(snapshot),
            audit,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            auth_permits: Arc::new(Semaphore::new(AUTH_CONCURRENCY)),
            c2b: PacketCounters::new(Direction::ClientToServer),
            b2c: PacketCounters::new(Direction::ServerToClient),
            upstream_ok_ms: AtomicU64::new(0),
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
    }

    /// A receiver that wakes on each new snapshot.
    #[must_use]
    pub fn watch_generation(&self) -> watch::Receiver<u64> {
        self.generation_tx.subscribe()
    }

    /// Notes a successful upstream connection.
    pub fn upstream_ok(&self) {
        self.upstream_ok_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Milliseconds since the last successful upstream connection (`u64::MAX` if never).
    #[must_use]
    pub fn upstream_age_ms(&self) -> u64 {
        match self.upstream_ok_ms.load(Ordering::Relaxed) {
            0 => u64::MAX,
            t => now_ms().saturating_sub(t),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
