//! `[cluster] redis`: several gateway instances act as one on bans. Authentication failures are
//! counted in Redis (one Lua script per failure, counters that expire `ban_window` after their
//! first failure), bans are stored there with their expiry and published on [`decide::CHANNEL`],
//! so every instance applies a ban (or an unban) as soon as one decides it.
//!
//! Never on the relay path, never fail open on what is known, never block the door:
//! - Redis is asked only after a failed authentication (the script), or for a CONNECT an account
//!   ban would refuse (did the owner log in from there through another instance?), with
//!   [`TIMEOUT`]. Any other CONNECT never waits on Redis: the ban checks read the local ban book,
//!   which the events keep current; a login is told to Redis in the background.
//! - Every failure is also counted locally, and local bans are enforced whatever Redis says.
//!   While Redis is unreachable (`mqtt_gateway_cluster_up` 0, a `warn` line) the instance counts
//!   alone; when it is back, the instance subscribes again, pushes the bans it holds that Redis
//!   does not (and publishes them) and reads every shared ban back.
//! - A Redis that accepts and never answers costs a failing CONNECT at most [`TIMEOUT`], once:
//!   the timeout marks the cluster down at once, and the background task reconnects.
//!
//! For the admin API: [`Cluster::publish_ban`], [`Cluster::publish_unban`],
//! [`Cluster::publish_kick`] and [`Cluster::kicks`] (kick events to act on).

pub mod decide;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::sync::{Notify, broadcast};

use crate::auth::ban::{Banned, Bans};
use crate::shared::Gateway;
pub use decide::check_url;
use decide::{Event, ban_key, fail_key};

/// The longest a CONNECT waits on Redis.
pub const TIMEOUT: Duration = Duration::from_millis(200);
/// Connecting, subscribing and the read-back (in the background, never on a client's path).
const SETUP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the background task checks that Redis answers.
const PING_EVERY: Duration = Duration::from_secs(1);
/// Commands per pipeline in the push and the read-back.
const BATCH: usize = 1_000;
/// At most this many shared bans are read back (the local book holds at most
/// `3 * auth::ban::MAX_ENTRIES`).
const MAX_READ_BACK: usize = 3 * crate::auth::ban::MAX_ENTRIES;

/// Why a cluster operation did not reach the other instances.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No `[cluster]` in the configuration: the action applies to this instance only.
    #[error("no [cluster] configured")]
    NotConfigured,
    /// Redis is unreachable now: the action applied to this instance only.
    #[error("Redis is unreachable: applied on this instance only")]
    Down,
    /// The key is not one of that kind (`auth::ban::shared_keys`), or the local ban book is full
    /// of live bans: nothing was done.
    #[error("{0}")]
    BadKey(String),
    /// Redis did not answer in time, or refused.
    #[error("Redis: {0}")]
    Redis(String),
}

/// The connection to the shared state, or its absence.
#[derive(Debug)]
pub struct Cluster {
    client: Option<redis::Client>,
    /// The command connection while the cluster is up.
    conn: std::sync::Mutex<Option<MultiplexedConnection>>,
    up: AtomicBool,
    /// Wakes the background task when a command on the connect path failed.
    lost: Notify,
    kicks: broadcast::Sender<String>,
}

impl Cluster {
    /// For `[cluster]` (already validated), or a stand-alone instance when `None`.
    #[must_use]
    pub fn new(config: Option<&crate::config::ClusterConfig>) -> Self {
        let client = config.and_then(|c| match client(c) {
            Ok(client) => Some(client),
            Err(e) => {
                // The server checked it before start (`client` there): not expected.
                tracing::error!(error = %e, "[cluster] cannot be used; running stand-alone");
                None
            }
        });
        if client.is_some() {
            crate::metrics::cluster_up(false);
        }
        Self {
            client,
            conn: std::sync::Mutex::new(None),
            up: AtomicBool::new(false),
            lost: Notify::new(),
            kicks: broadcast::channel(64).0,
        }
    }

    /// Whether `[cluster]` is configured.
    #[must_use]
    pub fn configured(&self) -> bool {
        self.client.is_some()
    }

    /// Whether Redis is reachable now (the shared state is in use).
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Kick events (client ids) from every instance, this one included: for the admin API to
    /// close the matching sessions.
    #[must_use]
    pub fn kicks(&self) -> broadcast::Receiver<String> {
        self.kicks.subscribe()
    }

    fn connection(&self) -> Option<MultiplexedConnection> {
        if !self.is_up() {
            return None;
        }
        self.conn.lock().ok().and_then(|c| c.clone())
    }

    fn set_up(&self, conn: Option<MultiplexedConnection>) {
        let up = conn.is_some();
        if let Ok(mut c) = self.conn.lock() {
            *c = conn;
        }
        if self.up.swap(up, Ordering::AcqRel) != up {
            crate::metrics::cluster_up(up);
        }
    }

    /// A command on a client's path failed: down now (no other CONNECT waits on it), and the
    /// background task reconnects.
    fn lose(&self, why: &str) {
        if self.up.swap(false, Ordering::AcqRel) {
            crate::metrics::cluster_up(false);
            tracing::warn!(
                why,
                "cluster: Redis unreachable, counting failures and banning locally until it is back"
            );
        }
        self.lost.notify_one();
    }

    /// Counts one authentication failure in the shared state (the local count is the caller's,
    /// `Bans::failure`, done first: `local` is what it banned). Applies the bans the shared count
    /// reaches; a ban decided only locally is shared too. Waits at most [`TIMEOUT`]; without
    /// Redis, does nothing (the local count stands). Returns what the shared count banned.
    pub async fn failure(
        &self,
        bans: &Bans,
        keys: &[(Banned, String)],
        local: Option<Banned>,
        now: Instant,
    ) -> Option<Banned> {
        let mut conn = self.connection()?;
        let (address, identity) = bans.thresholds();
        let (window, duration) = bans.timing();
        let mut script = redis::cmd("EVAL");
        script.arg(decide::FAILURE_SCRIPT).arg(keys.len() * 2);
        for (what, key) in keys {
            script.arg(fail_key(*what, key));
        }
        for (what, key) in keys {
            script.arg(ban_key(*what, key));
        }
        script
            .arg(window.as_millis().max(1).to_string())
            .arg(duration.as_millis().max(1).to_string())
            .arg(decide::CHANNEL);
        for (what, _) in keys {
            // What the local count banned is banned in the shared state at once.
            let threshold = match what {
                _ if local == Some(*what) => 1,
                Banned::Address => address,
                Banned::User | Banned::Certificate => identity,
            };
            script.arg(threshold);
        }
        for (what, key) in keys {
            script.arg(format!("{} {key}", what.tag()));
        }
        let left: Vec<i64> =
            match tokio::time::timeout(TIMEOUT, script.query_async(&mut conn)).await {
                Ok(Ok(left)) => left,
                Ok(Err(e)) => {
                    self.lose(&format!("failure script: {e}"));
                    return None;
                }
                Err(_) => {
                    self.lose("failure script: no answer in time");
                    return None;
                }
            };
        let mut banned = None;
        for ((what, key), pttl) in keys.iter().zip(left) {
            if let Some(ttl) = decide::ban_left(pttl) {
                bans.impose(*what, key, decide::until(now, ttl), now);
                banned = banned.or(Some(*what));
            }
        }
        banned
    }

    /// Tells the other instances that the account logged in from that address
    /// (`auth::ban::known_good_key`), so that its ban spares the address there too. In the
    /// background (never delays the CONNECT), at most [`TIMEOUT`]; nothing without Redis.
    pub fn share_success(&self, pair: &str) {
        let Some(mut conn) = self.connection() else {
            return;
        };
        let key = decide::good_key(pair);
        let ms = crate::auth::ban::KNOWN_GOOD_FOR.as_millis().to_string();
        tokio::spawn(async move {
            let mut set = redis::cmd("SET");
            set.arg(key).arg(1).arg("PX").arg(ms);
            let _ = tokio::time::timeout(TIMEOUT, set.query_async::<()>(&mut conn)).await;
        });
    }

    /// Whether another instance saw the account log in from that address lately (asked only for
    /// a CONNECT its account's ban would refuse), within [`TIMEOUT`]. No answer: false (the ban
    /// applies).
    pub async fn known_good(&self, pair: &str) -> bool {
        let Some(mut conn) = self.connection() else {
            return false;
        };
        let mut exists = redis::cmd("EXISTS");
        exists.arg(decide::good_key(pair));
        match tokio::time::timeout(TIMEOUT, exists.query_async::<u64>(&mut conn)).await {
            Ok(Ok(n)) => n > 0,
            Ok(Err(e)) => {
                self.lose(&format!("known-good lookup: {e}"));
                false
            }
            Err(_) => {
                self.lose("known-good lookup: no answer in time");
                false
            }
        }
    }

    /// Bans `key` (as `auth::ban::shared_keys` names it) for `duration` on this instance at
    /// once, then on every instance through Redis. `Err(Down)`: this instance only for now; the
    /// ban is pushed when Redis is back.
    ///
    /// # Errors
    /// [`ClusterError`]: the ban did not (yet) reach the other instances.
    pub async fn publish_ban(
        &self,
        bans: &Bans,
        what: Banned,
        key: &str,
        duration: Duration,
    ) -> Result<(), ClusterError> {
        let now = Instant::now();
        if !bans.impose(what, key, decide::until(now, duration), now) {
            return Err(ClusterError::BadKey(format!(
                "{key:?} is not a {what:?} key, or the ban book is full"
            )));
        }
        let mut conn = self.shared()?;
        let ms = duration.as_millis().max(1);
        let event = Event::Ban {
            what,
            key: key.to_owned(),
            ttl: Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)),
        };
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(ban_key(what, key))
            .arg(1)
            .arg("PX")
            .arg(ms.to_string())
            .ignore();
        publish(&mut pipe, &event);
        self.run(&mut conn, &pipe).await
    }

    /// Lifts a ban on this instance and, through Redis, on every instance (and forgets the
    /// shared failure count). `Err(Down)`: lifted here only; another instance may still hold it.
    ///
    /// # Errors
    /// [`ClusterError`]: the unban did not reach the other instances.
    pub async fn publish_unban(
        &self,
        bans: &Bans,
        what: Banned,
        key: &str,
    ) -> Result<(), ClusterError> {
        bans.lift(what, key);
        let mut conn = self.shared()?;
        let event = Event::Unban {
            what,
            key: key.to_owned(),
        };
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(ban_key(what, key))
            .arg(fail_key(what, key))
            .ignore();
        publish(&mut pipe, &event);
        self.run(&mut conn, &pipe).await
    }

    /// Asks every instance to close the sessions of `client_id` (the event comes back to this
    /// instance's [`Cluster::kicks`] too). Without Redis it goes to this instance only, and
    /// `Err` says so.
    ///
    /// # Errors
    /// [`ClusterError`]: the kick did not reach the other instances.
    pub async fn publish_kick(&self, client_id: &str) -> Result<(), ClusterError> {
        let mut conn = match self.shared() {
            Ok(c) => c,
            Err(e) => {
                let _ = self.kicks.send(client_id.to_owned());
                return Err(e);
            }
        };
        let event = Event::Kick {
            client_id: client_id.to_owned(),
        };
        let mut pipe = redis::pipe();
        publish(&mut pipe, &event);
        let sent = self.run(&mut conn, &pipe).await;
        if sent.is_err() {
            let _ = self.kicks.send(client_id.to_owned());
        }
        sent
    }

    fn shared(&self) -> Result<MultiplexedConnection, ClusterError> {
        if !self.configured() {
            return Err(ClusterError::NotConfigured);
        }
        self.connection().ok_or(ClusterError::Down)
    }

    async fn run(
        &self,
        conn: &mut MultiplexedConnection,
        pipe: &redis::Pipeline,
    ) -> Result<(), ClusterError> {
        match tokio::time::timeout(TIMEOUT, pipe.query_async::<()>(conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.lose(&e.to_string());
                Err(ClusterError::Redis(e.to_string()))
            }
            Err(_) => {
                self.lose("no answer in time");
                Err(ClusterError::Redis("no answer in time".to_owned()))
            }
        }
    }
}

/// Adds to `pipe` the publication of `event` to every instance (its answer ignored).
fn publish(pipe: &mut redis::Pipeline, event: &Event) {
    pipe.cmd("PUBLISH")
        .arg(decide::CHANNEL)
        .arg(event.encode())
        .ignore();
}

/// The Redis client of `[cluster]`: the URL, and with `ca` the CA certificates to verify the
/// server's (else the system's roots). Called by the server before it starts, so that a `ca` that
/// does not load stops the start.
///
/// # Errors
/// The `ca` file cannot be read or holds no certificate, or the URL is refused.
pub fn client(config: &crate::config::ClusterConfig) -> Result<redis::Client, String> {
    let Some(path) = &config.ca else {
        return redis::Client::open(config.redis.as_str())
            .map_err(|e| format!("cluster.redis: {e}"));
    };
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|e| format!("cluster.ca {}: {e}", path.display()))?;
    if !CertificateDer::pem_slice_iter(&pem).any(|c| c.is_ok()) {
        return Err(format!(
            "cluster.ca {}: no PEM certificate in it",
            path.display()
        ));
    }
    redis::Client::build_with_tls(
        config.redis.as_str(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    )
    .map_err(|e| format!("cluster.ca {}: {e}", path.display()))
}

/// The background task of `[cluster]` (started by the server when configured): connects,
/// subscribes, pushes local bans and reads the shared ones back, applies events, checks that
/// Redis answers; on any failure marks the cluster down and tries again with a backoff.
pub async fn maintain(gw: Arc<Gateway>) {
    let Some(client) = gw.cluster.client.clone() else {
        return;
    };
    let mut failures = 0u32;
    // Whether this stretch without Redis was logged (once per stretch, not per retry).
    let mut reported = false;
    loop {
        let outcome = tokio::select! {
            () = gw.shutdown.cancelled() => return,
            r = session(&gw, &client, &mut failures) => r,
        };
        if let Err(e) = outcome {
            if failures == 0 {
                reported = false;
            }
            if !reported {
                reported = true;
                tracing::warn!(error = %e, "cluster: Redis unreachable, counting failures and banning locally until it is back");
            }
            gw.cluster.set_up(None);
        }
        let wait = decide::backoff(failures);
        failures = failures.saturating_add(1);
        tokio::select! {
            () = gw.shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

type Outcome = Result<(), redis::RedisError>;

fn timed_out() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer in time",
    ))
}

async fn within<T>(
    d: Duration,
    f: impl Future<Output = Result<T, redis::RedisError>>,
) -> Result<T, redis::RedisError> {
    tokio::time::timeout(d, f).await.map_err(|_| timed_out())?
}

/// One connection's life: set up, then events until it fails.
async fn session(gw: &Gateway, client: &redis::Client, failures: &mut u32) -> Outcome {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SETUP_TIMEOUT))
        .set_response_timeout(Some(SETUP_TIMEOUT));
    let mut conn = within(
        SETUP_TIMEOUT,
        client.get_multiplexed_async_connection_with_config(&config),
    )
    .await?;
    let mut pubsub = within(SETUP_TIMEOUT, client.get_async_pubsub()).await?;
    // Subscribed before the read-back: no ban falls between the two.
    within(SETUP_TIMEOUT, pubsub.subscribe(decide::CHANNEL)).await?;
    let (pushed, read) = within(SETUP_TIMEOUT * 10, resync(&gw.bans, &mut conn)).await?;
    gw.cluster.set_up(Some(conn.clone()));
    *failures = 0;
    tracing::info!(
        pushed,
        read,
        "cluster: Redis reachable; local bans pushed, shared bans read back"
    );
    let mut events = pubsub.into_on_message();
    let mut ping = tokio::time::interval(PING_EVERY);
    loop {
        tokio::select! {
            msg = events.next() => {
                let Some(msg) = msg else {
                    return Err(redis::RedisError::from(std::io::Error::other("subscription closed")));
                };
                apply(gw, msg.get_payload_bytes());
            }
            _ = ping.tick() => {
                within(PING_EVERY, redis::cmd("PING").query_async::<()>(&mut conn)).await?;
            }
            () = gw.cluster.lost.notified() => {
                return Err(redis::RedisError::from(std::io::Error::other("a command on the connect path failed")));
            }
        }
    }
}

/// Applies one event from the channel.
fn apply(gw: &Gateway, payload: &[u8]) {
    let Some(event) = std::str::from_utf8(payload).ok().and_then(Event::parse) else {
        tracing::warn!(
            len = payload.len(),
            "cluster: an event that is not ours, ignored"
        );
        return;
    };
    let now = Instant::now();
    match event {
        Event::Ban { what, key, ttl } => {
            if !gw.bans.impose(what, &key, decide::until(now, ttl), now) {
                tracing::warn!(?what, "cluster: a shared ban could not be applied");
            }
        }
        Event::Unban { what, key } => {
            gw.bans.lift(what, &key);
        }
        Event::Kick { client_id } => {
            let _ = gw.cluster.kicks.send(client_id);
        }
    }
}

/// Pushes the local bans Redis does not hold (publishing them), then reads every shared ban back
/// into the local book. Returns (pushed, read back).
async fn resync(
    bans: &Bans,
    conn: &mut MultiplexedConnection,
) -> Result<(usize, usize), redis::RedisError> {
    let now = Instant::now();
    let local = bans.active(now);
    let mut pushed = 0;
    for chunk in local.chunks(BATCH) {
        let mut set = redis::pipe();
        for (what, key, left) in chunk {
            set.cmd("SET")
                .arg(ban_key(*what, key))
                .arg(1)
                .arg("PX")
                .arg(left.as_millis().max(1).to_string())
                .arg("NX");
        }
        let fresh: Vec<Option<String>> = set.query_async(conn).await?;
        let mut batch = redis::pipe();
        let mut fresh_here = 0;
        for ((what, key, ttl), fresh) in chunk.iter().zip(fresh) {
            if fresh.is_some() {
                let event = Event::Ban {
                    what: *what,
                    key: key.clone(),
                    ttl: *ttl,
                };
                publish(&mut batch, &event);
                fresh_here += 1;
            }
        }
        pushed += fresh_here;
        if fresh_here > 0 {
            batch.query_async::<()>(conn).await?;
        }
    }
    let mut read = 0;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(decide::ban_pattern())
            .arg("COUNT")
            .arg(BATCH)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            let mut ttls = redis::pipe();
            for k in &keys {
                ttls.cmd("PTTL").arg(k);
            }
            let left: Vec<i64> = ttls.query_async(conn).await?;
            let now = Instant::now();
            for (k, pttl) in keys.iter().zip(left) {
                if let (Some((what, key)), Some(ttl)) =
                    (decide::parse_ban_key(k), decide::ban_left(pttl))
                    && bans.impose(what, key, decide::until(now, ttl), now)
                {
                    read += 1;
                }
            }
        }
        cursor = next;
        if cursor == 0 || read >= MAX_READ_BACK {
            break;
        }
    }
    Ok((pushed, read))
}

/// The keys a failure from `ip` with this account and certificate counts against.
#[must_use]
pub fn failure_keys(attempt: crate::auth::ban::Attempt<'_>) -> Vec<(Banned, String)> {
    crate::auth::ban::shared_keys(attempt)
}
