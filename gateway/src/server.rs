//! Starting the gateway: load and validate everything (fail closed: no policy, an unreadable
//! password file, CRL or certificate → no start), bind every listener and the admin listener,
//! then serve until the shutdown token is cancelled and drain the connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::task::JoinHandle;

use crate::audit::Audit;
use crate::auth::PasswordFile;
use crate::auth::token::TokenKeys;
use crate::config::Config;
use crate::metrics as m;
use crate::policy::Policy;
use crate::session::ListenerCtx;
use crate::shared::{Gateway, Snapshot};
use crate::{admin, listener, tls};

/// Time the connections get to close after shutdown before the gateway exits anyway.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(8);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The policy is missing or invalid.
    #[error("policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    /// The password file is unreadable or invalid.
    #[error("password file: {0}")]
    Passwords(#[from] crate::auth::PasswordFileError),
    /// The JWKS of `[auth.token]` is unreadable or invalid.
    #[error("auth.token.jwks_file: {0}")]
    Jwks(#[from] crate::auth::token::JwksError),
    /// The admin API's token file is unreadable or invalid.
    #[error("admin.api_tokens_file: {0}")]
    AdminTokens(#[source] crate::api::tokens::TokenFileError),
    /// The admin listener's certificate or key could not be loaded.
    #[error("admin.tls: {0}")]
    AdminTls(#[source] tls::TlsError),
    /// A certificate, key, CA or CRL could not be loaded.
    #[error("listener {listener}: {source}")]
    Tls {
        /// The listener.
        listener: String,
        /// What failed.
        #[source]
        source: tls::TlsError,
    },
    /// A listener could not be bound.
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: String,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `crl_urls` CRL is neither cached nor fetchable.
    #[error(transparent)]
    CrlFetch(#[from] crate::crl_fetch::StartError),
    /// The EST listener (`[enrollment]`) could not be set up.
    #[error(transparent)]
    Enrollment(#[from] crate::enroll::EnrollError),
    /// `[cluster]`: its `ca` does not load.
    #[error("{0}")]
    Cluster(String),
    /// The audit log could not be opened.
    #[error("audit log {}: {source}", path.as_ref().map_or("stderr".into(), |p| p.display().to_string()))]
    Audit {
        /// The file.
        path: Option<PathBuf>,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Loads the policy and the password file named by `config` into a snapshot.
///
/// # Errors
/// Either file is missing or invalid.
pub fn load_snapshot(config: Arc<Config>, generation: u64) -> Result<Snapshot, StartError> {
    let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    let policy = Policy::load(
        config.policy.file.as_deref(),
        config.policy.mosquitto_acl_file.as_deref(),
        &names,
    )?;
    let passwords = match &config.auth.password_file {
        Some(p) => Some(Arc::new(PasswordFile::load(p)?)),
        None => None,
    };
    let tokens = match &config.auth.token {
        Some(t) => Some(Arc::new(TokenKeys::load(&t.jwks_file)?)),
        None => None,
    };
    let admin_tokens = match config
        .admin
        .as_ref()
        .and_then(|a| a.api_tokens_file.as_ref())
    {
        Some(p) => Some(Arc::new(
            crate::api::tokens::AdminTokens::load(p).map_err(StartError::AdminTokens)?,
        )),
        None => None,
    };
    let mut verifiers = HashMap::new();
    for l in &config.listeners {
        if let Some(t) = &l.tls {
            let v = tls::client_verifier(t).map_err(|source| StartError::Tls {
                listener: l.name.clone(),
                source,
            })?;
            if let Some(v) = v {
                verifiers.insert(l.name.clone(), v);
            }
        }
    }
    Ok(Snapshot {
        config,
        policy: Arc::new(policy),
        passwords,
        tokens,
        admin_tokens,
        verifiers,
        generation,
    })
}

/// The process-wide Prometheus recorder (installed once; tests may start several gateways).
pub fn metrics_handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(m::TLS_HANDSHAKE_DURATION_SECONDS.into()),
                    m::HANDSHAKE_BUCKETS,
                )
                .ok()?
                .set_buckets_for_metric(
                    Matcher::Full(m::CLIENT_CERT_REMAINING_DAYS.into()),
                    m::CLIENT_CERT_DAYS_BUCKETS,
                )
                .ok()?;
            let handle = builder.install_recorder().ok()?;
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}

/// A started gateway.
#[derive(Debug)]
pub struct Running {
    /// Shared state (shutdown token, current snapshot).
    pub gateway: Arc<Gateway>,
    /// Bound address of each listener, by name.
    pub listeners: HashMap<String, SocketAddr>,
    /// Bound address of the admin listener.
    pub admin: Option<SocketAddr>,
    /// Bound address of the EST listener (`[enrollment]`).
    pub enrollment: Option<SocketAddr>,
    /// TLS configuration of each TLS listener, by name (swapped on reload).
    pub tls: HashMap<String, Arc<ArcSwap<crate::tls::ServerTls>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The bound address of a listener.
    #[must_use]
    pub fn addr(&self, listener: &str) -> Option<SocketAddr> {
        self.listeners.get(listener).copied()
    }

    /// Stops accepting, tells every client (DISCONNECT where the protocol allows), and waits up to
    /// [`DRAIN_TIMEOUT`] for the connections to close.
    pub async fn shutdown(self) {
        self.gateway.begin_shutdown();
        self.gateway.tracker.close();
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, self.gateway.tracker.wait()).await;
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Loads everything, binds every listener, and starts serving, every connection on the calling
/// runtime.
///
/// # Errors
/// Any file that cannot be loaded or address that cannot be bound: the gateway does not start.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_on(config, &[]).await
}

/// As [`start`], but each listener is accepted on by every runtime of `workers` (one
/// single-threaded runtime per core, `mqtt-gateway run`), and a connection stays on the runtime
/// that accepted it: both directions of a session, its timers and its TLS run on one thread, with
/// no hand-over between threads on the relay path. The rest (admin, reload, sweeps, the audit
/// writer) stays on the calling runtime. Empty `workers`: as [`start`].
///
/// # Errors
/// As [`start`].
pub async fn start_on(
    config: Config,
    workers: &[tokio::runtime::Handle],
) -> Result<Running, StartError> {
    let config = Arc::new(config);
    let metrics = metrics_handle();
    // Before anything loads the CRL files: the cached copies of `crl_urls` are among them.
    let crl_fetches = crate::crl_fetch::prepare(&config).await?;
    let snapshot = load_snapshot(Arc::clone(&config), 1)?;
    let audit =
        Audit::start(config.log.audit_file.as_deref()).map_err(|source| StartError::Audit {
            path: config.log.audit_file.clone(),
            source,
        })?;
    let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    m::init(&names);
    crate::metrics_tls::init(&config);
    m::policy_generation(snapshot.generation);
    if let Some(c) = &config.cluster {
        crate::cluster::client(c).map_err(StartError::Cluster)?;
    }
    let gateway = Arc::new(Gateway::new(snapshot, audit));
    crate::crl_fetch::record_start(&gateway, &config, &crl_fetches);
    crate::ocsp::start(&gateway, &config);

    let mut bound = Vec::new();
    let mut tls_configs = HashMap::new();
    let mut addrs = HashMap::new();
    for l in &config.listeners {
        let tls = match &l.tls {
            Some(t) => {
                // The snapshot's verifier, so that both hold one instance (and one memory).
                let verifier = gateway.current().verifiers.get(&l.name).cloned();
                let server =
                    tls::build_server_tls_with(t, verifier).map_err(|source| StartError::Tls {
                        listener: l.name.clone(),
                        source,
                    })?;
                let swap = Arc::new(ArcSwap::new(server));
                tls_configs.insert(l.name.clone(), Arc::clone(&swap));
                Some(swap)
            }
            None => None,
        };
        let socket = listener::bind(l.bind).map_err(|source| StartError::Bind {
            what: format!("listener {}", l.name),
            addr: l.bind,
            source,
        })?;
        let local = socket.local_addr().unwrap_or(l.bind);
        addrs.insert(l.name.clone(), local);
        let ctx = Arc::new(ListenerCtx {
            name: Arc::from(l.name.as_str()),
            tls,
            gateway: Arc::clone(&gateway),
            proxy_from: l.proxy_protocol.then(|| l.proxy_protocol_from.clone()),
            local,
            websocket: (l.protocol == crate::config::ListenerProtocol::Websocket).then(|| {
                crate::transport::websocket::WsSettings {
                    path: l.websocket_path().to_owned(),
                    origins: l.websocket_origins.clone(),
                    secure: l.tls.is_some(),
                }
            }),
        });
        bound.push((socket, ctx));
    }
    let mut tasks = Vec::new();
    let mut admin_addr = None;
    if let Some(a) = &config.admin {
        let socket = listener::bind(a.listen).map_err(|source| StartError::Bind {
            what: "admin".into(),
            addr: a.listen,
            source,
        })?;
        admin_addr = Some(socket.local_addr().unwrap_or(a.listen));
        let admin_tls = a
            .tls
            .as_ref()
            .map(crate::api::server_tls)
            .transpose()
            .map_err(StartError::AdminTls)?;
        tasks.push(tokio::spawn(admin::serve(
            socket,
            Arc::clone(&gateway),
            metrics,
            admin_tls,
        )));
    }
    let enrollment = crate::enroll::start(&config, &gateway, &mut tasks)?;
    tasks.push(tokio::spawn(admin::probe_upstream(Arc::clone(&gateway))));
    tasks.push(tokio::spawn(sweep(Arc::clone(&gateway))));
    if gateway.cluster.configured() {
        tasks.push(tokio::spawn(crate::cluster::maintain(Arc::clone(&gateway))));
        tasks.push(tokio::spawn(crate::api::cluster_kicks(Arc::clone(
            &gateway,
        ))));
    }
    for (socket, ctx) in bound {
        tracing::info!(listener = %ctx.name, addr = ?socket.local_addr().ok(), tls = ctx.tls.is_some(), "listening");
        if workers.is_empty() {
            tasks.push(tokio::spawn(listener::serve(socket, ctx)));
            continue;
        }
        // One listening socket, registered with every worker's poller: whichever is free first
        // takes the next connection.
        let bind_error = |source| StartError::Bind {
            what: format!("listener {}", ctx.name),
            addr: ctx.local,
            source,
        };
        let shared = socket.into_std().map_err(bind_error)?;
        for worker in workers {
            let own = shared.try_clone().map_err(bind_error)?;
            let socket = {
                // Registered with that worker's poller, so that it is the one woken.
                let _on_worker = worker.enter();
                tokio::net::TcpListener::from_std(own).map_err(bind_error)?
            };
            tasks.push(worker.spawn(listener::serve(socket, Arc::clone(&ctx))));
        }
    }
    Ok(Running {
        gateway,
        listeners: addrs,
        admin: admin_addr,
        enrollment,
        tls: tls_configs,
        tasks,
    })
}

/// Every 10 s: forget idle per-address rate state, expired ban entries and ended audit budgets
/// (writing their summaries), so memory follows the live attackers, not every address ever seen.
async fn sweep(gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = gateway.shutdown.cancelled() => return,
        }
        gateway.conn_limits.sweep();
        gateway.bans.sweep(std::time::Instant::now());
        gateway.audit.sweep_refusals(std::time::Instant::now());
    }
}
