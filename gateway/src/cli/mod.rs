//! The command line of the contract (`../shared/spec/README.md`, "Command line"): one file per
//! subcommand, each thin, calling library modules.

mod admin_token;
mod api_client;
mod check;
mod enroll;
mod explain;
mod passwd;
mod pki;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A security gateway for MQTT, in front of an unmodified broker.
#[derive(Debug, Parser)]
#[command(name = "mqtt-gateway", version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How the admin API commands reach the gateway (`--admin`, `--token`, `--cacert`, `--json`).
    #[command(flatten)]
    conn: api_client::Conn,
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
    /// Add, replace (--mosquitto: a `$7$` hash Mosquitto reads too) or --delete USER in a password
    /// file; the password is read from stdin, or asked twice on a terminal.
    Passwd(passwd::PasswdArgs),
    /// Add or replace (--role read|operate) or --delete NAME in the admin API's token file; the
    /// new token NAME:SECRET is printed once.
    AdminToken(admin_token::AdminTokenArgs),
    /// Admin API commands: sessions, kick, bans, ban, unban, revoke.
    #[command(flatten)]
    Api(api_client::ApiCommand),
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// A small certificate authority: CA, device and server certificates, CRL.
    Pki {
        #[command(subcommand)]
        command: pki::PkiCommand,
    },
    /// EST client for a device: first enrollment with a one-time token, then renewal with the
    /// current certificate when it is due (for a systemd timer or cron).
    Enroll(enroll::EnrollArgs),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Print allow/deny for one action and the rule (file:line) that decided; exit 0 allow, 3 deny.
    Explain(explain::ExplainArgs),
}

/// Runs the chosen subcommand.
pub(crate) fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config } => run::run(&config),
        Command::Check { config } => Ok(check::check(&config)),
        Command::Passwd(args) => passwd::run(&args).map(|()| ExitCode::SUCCESS),
        Command::AdminToken(args) => admin_token::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Api(cmd) => api_client::run(&cli.conn, &cmd),
        Command::Policy {
            command: PolicyCommand::Explain(args),
        } => explain::explain(&args),
        Command::Pki { command } => pki::run(command).map(|()| ExitCode::SUCCESS),
        Command::Enroll(args) => enroll::run(args),
    }
}
