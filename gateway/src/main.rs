//! `mqtt-gateway` command line entry point: parse the command line and dispatch to `cli::*`.

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mqtt-gateway: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: several of our errors already name
/// their cause in their own message (`policy: FILE:LINE: ...`), and `{:#}` would repeat it.
fn report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::report;

    #[derive(Debug, thiserror::Error)]
    #[error("policy: {0}")]
    struct Outer(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("policy.toml:1: missing `version = 1`")]
    struct Inner;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated_and_a_new_one_is_added() {
        let e = anyhow::Error::new(Outer(Inner));
        assert_eq!(report(&e), "policy: policy.toml:1: missing `version = 1`");
        let e = anyhow::Error::new(Inner).context("cannot start");
        assert_eq!(
            report(&e),
            "cannot start: policy.toml:1: missing `version = 1`"
        );
    }
}
