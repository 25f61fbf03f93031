//! `mqtt-gateway run --config FILE`: start, serve, and on SIGTERM/SIGINT stop accepting, close
//! clients (DISCONNECT where the protocol allows) and exit 0 within 10 s. SIGHUP reopens the audit
//! log and reloads everything reloadable (as a file change does).

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use mqtt_gateway::config::Config;
use tokio::signal::unix::{SignalKind, signal};

pub fn run(path: &Path) -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = Config::load(path)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let running = mqtt_gateway::start(config).await?;
        let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
        let reload = mqtt_gateway::reload::spawn(path, &running);
        tracing::info!("mqtt-gateway running");
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
    })
}
