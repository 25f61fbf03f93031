//! `mqtt-gateway check --config FILE`: load and validate the configuration, the policy, the
//! password file, certificates and CRLs with the same functions `run` uses; print every problem
//! with file:line and exit 1, or a summary (with the authentication methods of each listener) and
//! exit 0.
//!
//! Problems in a named file point into that file (`policy.toml:12: ...`, `passwords:3: ...`). A
//! file that cannot be read or does not parse as a whole (a certificate, a key, a CRL) points at
//! the line of gateway.toml that names it. Two things `run` accepts are refused here: policy rules
//! that can never match (unknown group or listener, contradictory `who`; a deny that never matches
//! lets through what it was written to stop) and a CRL past its nextUpdate (the gateway would
//! refuse every certificate it covers). Policy shapes that hand out session takeovers (`[[connect]]`
//! `client_ids = ["*"]`, a `*` next to `%u`) are warned about (`file:line: warning: ...` on
//! stderr): legal, perhaps meant, so `check` still exits 0 when there is nothing else.

use std::error::Error;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use mqtt_gateway::auth::{PasswordFile, PasswordFileError};
use mqtt_gateway::config::{Config, TlsConfig};
use mqtt_gateway::line_file::{Entries as _, LineFileError};
use mqtt_gateway::policy::{Policy, PolicyError, WarningKind};
use mqtt_gateway::tls::{self, TlsError};
use toml::de::{DeTable, DeValue};

pub(super) fn check(path: &Path) -> ExitCode {
    let src = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: cannot read the config file: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    let config = match Config::from_str(&src, path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let at = Located { path, src: &src };
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let rules = check_policy(&config, &at, &mut problems, &mut warnings);
    // Warnings are printed whatever the outcome; they never make `check` fail.
    for w in &warnings {
        eprintln!("{w}");
    }
    let users = check_passwords(&config, &at, &mut problems);
    let keys = check_jwks(&config, &at, &mut problems);
    let admin_tokens = check_admin(&config, &at, &mut problems);
    for (i, l) in config.listeners.iter().enumerate() {
        if let Some(t) = &l.tls {
            check_tls(i, t, &at, &mut problems);
        }
    }
    check_enrollment(&config, &at, &mut problems);
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        eprintln!("{}: {} problem(s)", path.display(), problems.len());
        return ExitCode::FAILURE;
    }
    println!(
        "{}: ok: {} listener(s), {} policy rule(s), {} password entr{}{}",
        path.display(),
        config.listeners.len(),
        rules,
        users,
        if users == 1 { "y" } else { "ies" },
        if warnings.is_empty() {
            String::new()
        } else {
            format!(", {} warning(s)", warnings.len())
        }
    );
    if let Some(keys) = keys {
        println!("auth.token: {keys} key(s) in the JWKS");
    }
    if let Some(n) = admin_tokens {
        println!("admin: /api/v1 enabled, {n} token(s)");
    }
    for l in &config.listeners {
        println!(
            "listener {}: accepts {}",
            l.name,
            methods(&config, l).join(", ")
        );
    }
    let binds: Vec<String> = config
        .listeners
        .iter()
        .map(|l| format!("{} {}", l.name, l.bind))
        .chain(config.admin.iter().map(|a| format!("admin {}", a.listen)))
        .chain(
            config
                .enrollment
                .iter()
                .map(|e| format!("enrollment {}", e.bind)),
        )
        .collect();
    println!(
        "note: listener addresses ({}) are bound at start: a change to them needs a restart; \
         everything else here is applied by a reload (SIGHUP or a file change)",
        binds.join(", ")
    );
    ExitCode::SUCCESS
}

/// The authentication methods `l` accepts: its `auth` list, or every method `[auth]` enables.
fn methods(config: &Config, l: &mqtt_gateway::config::ListenerConfig) -> Vec<&'static str> {
    use mqtt_gateway::config::{AuthMethod, ClientAuth, PrincipalFrom};
    if let Some(list) = &l.auth {
        return list.iter().map(|m| m.as_str()).collect();
    }
    let auth = &config.auth;
    let asks_certificate = l
        .tls
        .as_ref()
        .is_some_and(|t| t.client_auth != ClientAuth::None);
    [
        (
            AuthMethod::Certificate,
            asks_certificate && auth.principal_from != PrincipalFrom::Username,
        ),
        (AuthMethod::Password, auth.password_file.is_some()),
        (AuthMethod::Token, auth.token.is_some()),
        (AuthMethod::Anonymous, auth.allow_anonymous),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(m, _)| m.as_str())
    .collect()
}

fn check_policy(
    config: &Config,
    at: &Located<'_>,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> usize {
    let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    let (file, acl) = (
        config.policy.file.as_deref(),
        config.policy.mosquitto_acl_file.as_deref(),
    );
    match Policy::load(file, acl, &names) {
        Ok(policy) => {
            for w in policy.warnings() {
                let token_groups = config
                    .auth
                    .token
                    .as_ref()
                    .is_some_and(|t| t.groups_claim.is_some());
                match w.kind {
                    WarningKind::Mistake => problems.push(w.to_string()),
                    WarningKind::TokenGroup if !token_groups => problems.push(format!(
                        "{w} (and auth.token.groups_claim is not set: this entry never matches)"
                    )),
                    WarningKind::Takeover | WarningKind::TokenGroup => {
                        warnings.push(w.to_string());
                    }
                }
            }
            policy.rule_count()
        }
        Err(e) => {
            problems.push(match &e {
                PolicyError::File(LineFileError::Read { path, .. }) => {
                    let key = if file.is_some_and(|f| f.display().to_string() == *path) {
                        "file"
                    } else {
                        "mosquitto_acl_file"
                    };
                    at.key(&[Seg::Key("policy"), Seg::Key(key)], &chain(&e))
                }
                _ => chain(&e),
            });
            0
        }
    }
}

fn check_passwords(config: &Config, at: &Located<'_>, problems: &mut Vec<String>) -> usize {
    let Some(file) = &config.auth.password_file else {
        return 0;
    };
    match PasswordFile::load(file) {
        Ok(p) => p.len(),
        Err(e) => {
            problems.push(match &e {
                PasswordFileError::Read { .. } => {
                    at.key(&[Seg::Key("auth"), Seg::Key("password_file")], &chain(&e))
                }
                PasswordFileError::Invalid { .. } => chain(&e),
            });
            0
        }
    }
}

/// The admin API's token file and `[admin.tls]`: the number of tokens, or the problems.
fn check_admin(config: &Config, at: &Located<'_>, problems: &mut Vec<String>) -> Option<usize> {
    use mqtt_gateway::api::tokens::{AdminTokens, TokenFileError};
    let admin = config.admin.as_ref()?;
    if let Some(t) = &admin.tls
        && let Err(e) = mqtt_gateway::api::server_tls(t)
    {
        problems.push(at.key(&[Seg::Key("admin"), Seg::Key("tls")], &chain(&e)));
    }
    let file = admin.api_tokens_file.as_ref()?;
    match AdminTokens::load(file) {
        Ok(t) => Some(t.len()),
        Err(e) => {
            problems.push(match &e {
                TokenFileError::Read { .. } => at.key(
                    &[Seg::Key("admin"), Seg::Key("api_tokens_file")],
                    &chain(&e),
                ),
                TokenFileError::Invalid { .. } => chain(&e),
            });
            None
        }
    }
}

/// The key set of `[auth.token]`: its number of keys, or its problem at `auth.token.jwks_file`.
fn check_jwks(config: &Config, at: &Located<'_>, problems: &mut Vec<String>) -> Option<usize> {
    let token = config.auth.token.as_ref()?;
    match mqtt_gateway::auth::token::TokenKeys::load(&token.jwks_file) {
        Ok(keys) => Some(keys.len()),
        Err(e) => {
            problems.push(at.key(
                &[Seg::Key("auth"), Seg::Key("token"), Seg::Key("jwks_file")],
                &chain(&e),
            ));
            None
        }
    }
}

fn check_tls(index: usize, t: &TlsConfig, at: &Located<'_>, problems: &mut Vec<String>) {
    // A `crl_urls` CRL not cached yet is fetched when the gateway starts (or it does not start):
    // say so, and check the rest.
    let mut t = t.clone();
    if let Some(dir) = t.crl_cache_dir.clone() {
        t.crl_urls.retain(|url| {
            let cached = mqtt_gateway::crl_fetch::cache_file(&dir, url).exists();
            if !cached {
                eprintln!(
                    "listener[{index}].tls.crl_urls: {url}: no CRL cached in {} yet; the gateway fetches it at start",
                    dir.display()
                );
            }
            cached
        });
    }
    let t = &t;
    let mut key = vec![Seg::Key("listener"), Seg::Index(index), Seg::Key("tls")];
    if let Err(e) = tls::build_server_config(t) {
        key.extend(tls_key(t, &e));
        problems.push(at.key(&key, &chain(&e)));
        return;
    }
    // The CRLs parsed; one past its nextUpdate makes the gateway refuse every certificate it covers.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    for info in tls::crl_metadata(&t.crl).unwrap_or_default() {
        if info.next_update_unix.is_some_and(|next| next <= now) {
            let j = t.crl.iter().position(|p| *p == info.path).unwrap_or(0);
            let mut key = key.clone();
            key.extend([Seg::Key("crl"), Seg::Index(j)]);
            problems.push(at.key(
                &key,
                &format!(
                    "{}: CRL #{} is past its nextUpdate: every client certificate it covers would be refused (publish a new CRL, e.g. `mqtt-gateway pki crl DIR`)",
                    info.path.display(),
                    info.index
                ),
            ));
        }
    }
}

/// The key of `[listener.tls]` whose file or value `e` is about.
fn tls_key(t: &TlsConfig, e: &TlsError) -> Vec<Seg> {
    let file = match e {
        TlsError::Read { path, .. }
        | TlsError::Pem { path, .. }
        | TlsError::Empty { path, .. }
        | TlsError::Crl { path, .. }
        | TlsError::CrlDates { path, .. } => path,
        TlsError::Anchor { .. } | TlsError::Verifier { .. } => return vec![Seg::Key("client_ca")],
        TlsError::MissingClientCa => return vec![Seg::Key("client_auth")],
        TlsError::CertKey { .. } => return vec![Seg::Key("cert")],
        TlsError::Versions { .. } => return vec![Seg::Key("min_version")],
    };
    if *file == t.cert {
        vec![Seg::Key("cert")]
    } else if *file == t.key {
        vec![Seg::Key("key")]
    } else if t.client_ca.as_ref() == Some(file) {
        vec![Seg::Key("client_ca")]
    } else if let Some(j) = t.crl.iter().position(|p| p == file) {
        vec![Seg::Key("crl"), Seg::Index(j)]
    } else {
        Vec::new()
    }
}

/// The error and its causes, each said once.
fn chain(e: &dyn Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// `[enrollment]`: the pki directory holds a CA whose key can be read, and the EST server's
/// certificate and key load, as at start.
fn check_enrollment(config: &Config, at: &Located<'_>, problems: &mut Vec<String>) {
    let Some(e) = &config.enrollment else { return };
    if let Err(err) = mqtt_gateway::enroll::Est::new(e) {
        let key: &[Seg] = match &err {
            mqtt_gateway::enroll::EnrollError::Pki(_) => {
                &[Seg::Key("enrollment"), Seg::Key("pki_dir")]
            }
            _ => &[Seg::Key("enrollment"), Seg::Key("tls")],
        };
        problems.push(at.key(key, &chain(&err)));
    }
}

/// One step of a key path in gateway.toml.
#[derive(Debug, Clone, Copy)]
enum Seg {
    Key(&'static str),
    Index(usize),
}

/// gateway.toml's text, to point a problem at the line of the key it is about.
struct Located<'a> {
    path: &'a Path,
    src: &'a str,
}

impl Located<'_> {
    /// `gateway.toml:LINE: listener[0].tls.cert: message` (the line of the deepest part of the
    /// key present in the file).
    fn key(&self, key: &[Seg], message: &str) -> String {
        let mut dotted = String::new();
        for seg in key {
            match seg {
                Seg::Key(k) if dotted.is_empty() => dotted.push_str(k),
                Seg::Key(k) => {
                    dotted.push('.');
                    dotted.push_str(k);
                }
                Seg::Index(i) => {
                    let _ = write!(dotted, "[{i}]");
                }
            }
        }
        match self.line(key) {
            Some(line) => format!("{}:{line}: {dotted}: {message}", self.path.display()),
            None => format!("{}: {dotted}: {message}", self.path.display()),
        }
    }

    fn line(&self, key: &[Seg]) -> Option<usize> {
        let root = DeValue::Table(DeTable::parse(self.src).ok()?.into_inner());
        let mut node = &root;
        let mut start = None;
        for seg in key {
            let child = match seg {
                Seg::Key(k) => node.get(*k),
                Seg::Index(i) => node.get(*i),
            };
            let Some(child) = child else { break };
            start = Some(child.span().start);
            node = child.get_ref();
        }
        let before = self.src.get(..start?)?;
        Some(before.matches('\n').count() + 1)
    }
}
