//! `mqtt-gateway pki init|issue|revoke|crl|list|token DIR ...`: the small CA of `mqtt_gateway::pki`.

use std::path::PathBuf;

use clap::Subcommand;
use mqtt_gateway::pki::{CRL_DAYS, Ca};

#[derive(Debug, Subcommand)]
pub(super) enum PkiCommand {
    /// Create a CA (ECDSA P-256) in DIR: ca.pem, ca.key (0600), an empty ca.crl.
    Init {
        dir: PathBuf,
        /// Common name of the CA.
        #[arg(long, default_value = "mqtt-gateway CA")]
        cn: String,
        /// Validity of the CA in days.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
    /// Issue a device certificate (clientAuth; CN = NAME) or, with --server, a server certificate.
    Issue {
        dir: PathBuf,
        name: String,
        /// Organizational unit (the policy's `cert_ou` selector).
        #[arg(long)]
        ou: Option<String>,
        /// Validity in days.
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// A server certificate (serverAuth) instead of a device certificate.
        #[arg(long)]
        server: bool,
        /// Subject alternative names of a server certificate (DNS names or IP addresses).
        #[arg(long = "san")]
        sans: Vec<String>,
    },
    /// Revoke NAME and rewrite DIR/ca.crl (a running gateway picks it up).
    Revoke { dir: PathBuf, name: String },
    /// Re-sign DIR/ca.crl with a fresh validity period (do it before it expires).
    Crl { dir: PathBuf },
    /// List what DIR has issued.
    List { dir: PathBuf },
    /// Mint a one-time EST enrollment token for NAME (printed once; stored hashed in
    /// DIR/tokens.json): `simpleenroll` with user NAME and this password issues one certificate.
    Token {
        dir: PathBuf,
        name: String,
        /// Organizational unit of the certificate it enrolls (the policy's `cert_ou` selector);
        /// kept by renewals.
        #[arg(long)]
        ou: Option<String>,
        /// How long the token may be used (at most 30 days).
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
}

pub(super) fn run(cmd: PkiCommand) -> anyhow::Result<()> {
    match cmd {
        PkiCommand::Init { dir, cn, days } => {
            let ca = Ca::init(&dir, &cn, days)?;
            println!(
                "CA created: {} (key {}, CRL {})",
                ca.path("ca.pem").display(),
                ca.path("ca.key").display(),
                ca.path("ca.crl").display()
            );
        }
        PkiCommand::Issue {
            dir,
            name,
            ou,
            days,
            server,
            sans,
        } => {
            let ca = Ca::open(&dir)?;
            let e = ca.issue(&name, ou.as_deref(), days, server, &sans)?;
            println!(
                "issued {} certificate {} (serial {}): {} {}",
                e.kind,
                e.name,
                e.serial,
                ca.path(&format!("{name}.pem")).display(),
                ca.path(&format!("{name}.key")).display()
            );
        }
        PkiCommand::Revoke { dir, name } => {
            let ca = Ca::open(&dir)?;
            let e = ca.revoke(&name)?;
            println!(
                "revoked {} (serial {}); CRL rewritten: {}",
                e.name,
                e.serial,
                ca.path("ca.crl").display()
            );
        }
        PkiCommand::Crl { dir } => {
            let ca = Ca::open(&dir)?;
            ca.refresh_crl()?;
            println!(
                "CRL re-signed, valid {CRL_DAYS} days: {}",
                ca.path("ca.crl").display()
            );
        }
        PkiCommand::Token { dir, name, ou, ttl } => {
            let ca = Ca::open(&dir)?;
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let token =
                mqtt_gateway::enroll::token::mint_with_ou(&ca, &name, ou.as_deref(), ttl, now)?;
            eprintln!(
                "one-time enrollment token for {name}, valid {} (stored hashed in {}):",
                humantime::format_duration(ttl),
                ca.path(mqtt_gateway::enroll::token::TOKENS_FILE).display()
            );
            println!("{token}");
        }
        PkiCommand::List { dir } => {
            let ca = Ca::open(&dir)?;
            println!(
                "{:<24} {:<7} {:<34} {:<22} revoked",
                "name", "kind", "serial", "expires"
            );
            for e in ca.list()? {
                let expires = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs(u64::try_from(e.not_after).unwrap_or(0)),
                );
                let revoked = e.revoked_at.map_or_else(
                    || "-".to_owned(),
                    |t| {
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH
                                + std::time::Duration::from_secs(u64::try_from(t).unwrap_or(0)),
                        )
                        .to_string()
                    },
                );
                println!(
                    "{:<24} {:<7} {:<34} {:<22} {}",
                    e.name,
                    e.kind,
                    e.serial,
                    expires.to_string(),
                    revoked
                );
            }
        }
    }
    Ok(())
}
