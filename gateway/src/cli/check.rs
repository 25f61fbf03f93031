//! `mqtt-gateway check --config FILE`: load and validate the configuration, the policy, the
//! password file, certificates and CRLs exactly as `run` would; print every problem with
//! file:line and exit 1, or a one-line summary and exit 0.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use mqtt_gateway::config::Config;
use mqtt_gateway::{server, tls};

pub fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let mut problems = 0usize;
    let snapshot = match server::load_snapshot(Arc::clone(&config), 0) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("{e}");
            problems += 1;
            None
        }
    };
    for l in &config.listeners {
        if let Some(t) = &l.tls
            && let Err(e) = tls::build_server_config(t)
        {
            eprintln!("listener {}: {e}", l.name);
            problems += 1;
        }
    }
    if let Some(s) = &snapshot {
        for w in s.policy.warnings() {
            eprintln!("warning: {w}");
        }
    }
    if problems > 0 {
        return ExitCode::FAILURE;
    }
    let rules = snapshot.as_ref().map_or(0, |s| s.policy.rule_count());
    let users = snapshot
        .as_ref()
        .and_then(|s| s.passwords.as_ref())
        .map_or(0, |p| p.len());
    println!(
        "{}: ok: {} listener(s), {} policy rule(s), {} password entr{}",
        path.display(),
        config.listeners.len(),
        rules,
        users,
        if users == 1 { "y" } else { "ies" }
    );
    ExitCode::SUCCESS
}
