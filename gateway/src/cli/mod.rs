//! The command line of the contract (`../shared/spec/README.md`, "Command line"): one file per
//! subcommand, each thin, calling library modules.

mod check;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A security gateway for MQTT, in front of an unmodified broker.
#[derive(Debug, Parser)]
#[command(name = "mqtt-gateway", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve until SIGTERM/SIGINT; SIGHUP reloads what is reloadable.
    Run {
        /// The gateway configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Load and validate the configuration and everything it names; exit 1 on any problem.
    Check {
        /// The gateway configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

/// Runs the chosen subcommand.
pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => run::run(&config),
        Command::Check { config } => Ok(check::check(&config)),
    }
}
