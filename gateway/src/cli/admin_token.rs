//! `mqtt-gateway admin-token FILE NAME --role read|operate [--delete]`: adds or replaces NAME in
//! the admin API's token file (`[admin] api_tokens_file`) with a new random 256-bit secret, hashed
//! as argon2id like `passwd` hashes passwords, and prints the token `NAME:SECRET` once (it is
//! stored nowhere else); or removes NAME. The file is edited atomically (the same writer as
//! `passwd`), checked whole before and after.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use mqtt_gateway::api::tokens::{AdminTokens, Role, new_secret, valid_name};
use mqtt_gateway::auth::hash_argon2id;
use mqtt_gateway::auth::passwd_file::{edit_text, write_atomic};

#[derive(Debug, Args)]
pub(super) struct AdminTokenArgs {
    /// The token file (created with mode 0600 if absent).
    file: PathBuf,
    /// The token's NAME (audit lines name it): 1 to 64 of A-Z a-z 0-9 . _ -
    name: String,
    /// `read` (GET endpoints) or `operate` (every endpoint).
    #[arg(long, required_unless_present = "delete")]
    role: Option<String>,
    /// Remove NAME instead.
    #[arg(long, conflicts_with = "role")]
    delete: bool,
}

pub(super) fn run(a: &AdminTokenArgs) -> anyhow::Result<()> {
    if !valid_name(&a.name) {
        bail!("NAME must be 1 to 64 of A-Z a-z 0-9 . _ -");
    }
    let existing = std::fs::metadata(&a.file).ok();
    let src = match &existing {
        Some(_) => std::fs::read_to_string(&a.file)
            .with_context(|| format!("{}: cannot read", a.file.display()))?,
        None => String::new(),
    };
    let name = a.file.display().to_string();
    AdminTokens::parse(&src, &name)?;
    let (line, secret) = if a.delete {
        (None, None)
    } else {
        let role = a.role.as_deref().and_then(Role::parse);
        let Some(role) = role else {
            bail!("--role must be read or operate");
        };
        let secret = new_secret().context("no random secret")?;
        let hash = hash_argon2id(secret.as_bytes())?;
        (Some(format!("{}:{hash}", role.as_str())), Some(secret))
    };
    let Some((text, _)) = edit_text(&src, &a.name, line.as_deref()) else {
        bail!("{}: no token {:?}", a.file.display(), a.name);
    };
    AdminTokens::parse(&text, &name)?;
    write_atomic(&a.file, text.as_bytes(), existing.as_ref())?;
    match secret {
        Some(s) => {
            eprintln!(
                "{}: token {} written; it is shown once:",
                a.file.display(),
                a.name
            );
            println!("{}:{s}", a.name);
        }
        None => println!("{}: deleted {}", a.file.display(), a.name),
    }
    Ok(())
}
