//! `mqtt-gateway` command line entry point: parse the command line and dispatch to `cli::*`.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mqtt-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}
