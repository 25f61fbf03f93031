//! `mqtt-gateway enroll`: the EST client of `mqtt_gateway::enroll::client`, for a systemd timer
//! or cron on a Linux device.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use mqtt_gateway::enroll::client::{self, Done, EnrollOptions};

#[derive(Debug, Args)]
pub(super) struct EnrollArgs {
    /// The EST server: https://host[:port].
    #[arg(long)]
    server: String,
    /// CA certificate(s) (PEM) the server must chain to.
    #[arg(long)]
    ca: PathBuf,
    /// The device's name (its certificate's CN).
    #[arg(long)]
    name: String,
    /// The device's certificate and key are OUT.pem and OUT.key.
    #[arg(long)]
    out: PathBuf,
    /// A file holding the one-time token, for the first enrollment (read only when needed).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Renew when less than this percentage of the certificate's life is left.
    #[arg(long, default_value_t = 33, value_parser = clap::value_parser!(u8).range(1..=100))]
    renew_below: u8,
}

pub(super) fn run(args: EnrollArgs) -> anyhow::Result<ExitCode> {
    let token = match &args.token_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let opts = EnrollOptions {
        server: args.server,
        ca: args.ca,
        name: args.name,
        stem: args.out,
        token,
        renew_below_percent: args.renew_below,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(client::run(&opts)) {
        Ok(Done::Enrolled(serial)) => println!("enrolled {}: serial {serial}", opts.name),
        Ok(Done::Renewed(serial)) => println!("renewed {}: serial {serial}", opts.name),
        Ok(Done::NotDue(until)) => println!(
            "{}: not due (valid until {})",
            opts.name,
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(u64::try_from(until).unwrap_or(0))
            )
        ),
        Err(e) => {
            eprintln!("mqtt-gateway enroll: {e}");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}
