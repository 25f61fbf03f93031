//! `mqtt-gateway passwd FILE USER [--mosquitto [--iterations N]] [--delete]`: add or replace USER
//! in a password file (argon2id by default; `--mosquitto`: a `$7$` line that Mosquitto 2.0 reads
//! too, so one file serves both during a migration), or remove it. The password comes from stdin
//! (one line, the line end stripped) or, on a terminal, is asked twice without echo. The file edit
//! itself is `mqtt_gateway::auth::passwd_file` (atomic, keeps other lines, mode and owner).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use mqtt_gateway::auth::passwd_file::{self, EditOutcome};
use mqtt_gateway::auth::{
    MAX_PBKDF2_ITERATIONS, MOSQUITTO_PBKDF2_ITERATIONS, hash_argon2id, hash_mosquitto_pbkdf2,
};

#[derive(Debug, Args)]
pub(super) struct PasswdArgs {
    /// The password file (created with mode 0600 if absent).
    file: PathBuf,
    /// The user to add, replace or delete.
    user: String,
    /// Write a Mosquitto `$7$` (PBKDF2-HMAC-SHA512, 12-byte salt) hash that Mosquitto 2.0 accepts
    /// too, instead of argon2id.
    #[arg(long, conflicts_with = "delete")]
    mosquitto: bool,
    /// PBKDF2 iterations of a `--mosquitto` hash.
    #[arg(
        long,
        requires = "mosquitto",
        default_value_t = MOSQUITTO_PBKDF2_ITERATIONS,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_PBKDF2_ITERATIONS))
    )]
    iterations: u32,
    /// Remove USER instead (no password is read).
    #[arg(long)]
    delete: bool,
}

/// Runs the subcommand; any error leaves the file as it was.
pub(super) fn run(args: &PasswdArgs) -> anyhow::Result<()> {
    passwd_file::check_user(&args.user)?;
    if args.delete {
        passwd_file::delete_user(&args.file, &args.user)?;
        println!("{}: deleted {}", args.file.display(), args.user);
        return Ok(());
    }
    let password = read_password()?;
    let (hash, kind) = if args.mosquitto {
        (
            hash_mosquitto_pbkdf2(password.as_bytes(), args.iterations)?,
            format!("$7$ PBKDF2-SHA512, {} iterations", args.iterations),
        )
    } else {
        (hash_argon2id(password.as_bytes())?, "argon2id".to_owned())
    };
    let outcome = passwd_file::set_user(&args.file, &args.user, &hash)?;
    let done = match outcome {
        EditOutcome::Added => "added",
        EditOutcome::Replaced | EditOutcome::Deleted => "replaced",
    };
    println!("{}: {done} {} ({kind})", args.file.display(), args.user);
    Ok(())
}

/// One line from stdin, or a password typed twice on the terminal without echo.
fn read_password() -> anyhow::Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("cannot read the password")?;
        let again =
            rpassword::prompt_password("Password again: ").context("cannot read the password")?;
        if first != again {
            bail!("the passwords differ; nothing changed");
        }
        first
    } else {
        let mut line = String::new();
        let n = std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from stdin")?;
        if n == 0 {
            bail!("no password on stdin; nothing changed");
        }
        let line = line.strip_suffix('\n').unwrap_or(&line);
        line.strip_suffix('\r').unwrap_or(line).to_owned()
    };
    if password.is_empty() {
        bail!("empty password; nothing changed");
    }
    Ok(password)
}
