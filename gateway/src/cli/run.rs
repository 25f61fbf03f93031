//! `mqtt-gateway run --config FILE`: start, serve, and on SIGTERM/SIGINT stop accepting, close
//! clients (DISCONNECT where the protocol allows) and exit 0 within 10 s. SIGHUP reopens the audit
//! log and reloads everything reloadable (as a file change does).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use mqtt_gateway::config::Config;
use tokio::signal::unix::{SignalKind, signal};

pub(super) fn run(path: &Path) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::load(path)?;
    let workers = mqtt_gateway::workers::Workers::start(worker_count(&config))
        .context("cannot start the worker threads")?;
    // Signals, reloads, the admin endpoint, sweeps and the audit writer run here; connections on
    // the workers.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let handles = workers.handles().to_vec();
    let outcome = runtime.block_on(async move {
        let running = mqtt_gateway::start_on(config, &handles).await?;
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let reload = mqtt_gateway::reload::spawn(path, &running);
        tracing::info!(workers = handles.len(), "mqtt-gateway running");
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reopening the audit log and reloading");
                    running.gateway.audit.reopen();
                    let _ = reload.try_send(());
                }
            }
        }
        tracing::info!("shutting down");
        running.shutdown().await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    });
    workers.stop();
    outcome
}

/// How many worker threads carry connections: `TOKIO_WORKER_THREADS` when set (the variable
/// operators already know from tokio), else one per core, less one when the broker runs on this
/// host ([`mqtt_gateway::workers::default_count`]).
fn worker_count(config: &Config) -> usize {
    if let Some(n) = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
    {
        return n;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let here = mqtt_gateway::workers::broker_on_this_host(&config.upstream);
    let n = mqtt_gateway::workers::default_count(cores, here);
    tracing::info!(
        cores,
        broker_on_this_host = here,
        workers = n,
        "worker threads (one per core, less one for a broker on this host)"
    );
    n
}
