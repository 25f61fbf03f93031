//! Hot reload: one path for SIGHUP, file changes and a slow safety poll.
//!
//! Every reloadable source (the config file, the policy and acl file, the password file, each TLS
//! listener's certificate, key, CA and CRLs) is re-read and compared by content hash with what was
//! last tried; a changed source is parsed and validated whole, off the async workers. A source that
//! fails is refused whole: its last good version stays, `reloads_total{source,result="rejected"}`
//! and an audit line say what and where. Sources are independent, so a broken policy file does not
//! hold back a new CRL. A CA or CRL change builds a fresh `ServerConfig` (no session cache carried
//! over: a resumed TLS session would skip the new checks); a change of the server certificate only
//! affects new handshakes. Each applied change publishes a new snapshot generation, which wakes
//! every live session to re-check its certificate, password and connect rule.
//!
//! The watcher watches the parent directories (never the files: an editor's rename-on-save or a
//! Kubernetes ConfigMap `..data` symlink swap replaces the inode), debounced, and reacts to any event
//! in them; the content hashes make spurious events free.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{Debouncer, RecommendedCache, new_debouncer};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::audit::AuditEvent;
use crate::auth::PasswordFile;
use crate::auth::token::TokenKeys;
use crate::config::{Config, TlsConfig};
use crate::metrics::ReloadSource;
use crate::policy::Policy;
use crate::shared::{Gateway, Snapshot};
use crate::tls;

/// Events closer together than this are one reload.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// The safety net for file systems without inotify (NFS, some overlays) and lost watches.
pub const POLL: Duration = Duration::from_secs(30);

type Hash = [u8; 32];

/// What one reload did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Sources applied.
    pub applied: Vec<ReloadSource>,
    /// Sources refused, with the error (file:line where known).
    pub rejected: Vec<(ReloadSource, String)>,
    /// Changes that need a restart (listener addresses).
    pub needs_restart: Vec<String>,
}

/// The reloader: last tried content of every source, and where to publish.
pub struct Reloader {
    config_path: PathBuf,
    gateway: Arc<Gateway>,
    tls: HashMap<String, Arc<ArcSwap<crate::tls::ServerTls>>>,
    tried: Mutex<HashMap<String, Hash>>,
    /// One reload at a time (the watcher's and the admin API's).
    one: Mutex<()>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

fn hash_files<'a>(label: &str, paths: impl IntoIterator<Item = &'a Path>) -> Hash {
    let mut h = Sha256::new();
    h.update(label.as_bytes());
    for p in paths {
        h.update(p.as_os_str().as_encoded_bytes());
        match std::fs::read(p) {
            Ok(bytes) => {
                h.update(b"\x01");
                h.update(&bytes);
            }
            Err(e) => h.update(format!("\x02{e}").as_bytes()),
        }
    }
    h.finalize().into()
}

/// The files of a TLS listener; the CRL files include the cached copies of its `crl_urls`.
fn tls_files(t: &TlsConfig) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = vec![t.cert.clone(), t.key.clone()];
    v.extend(t.client_ca.clone());
    v.extend(t.crl_files());
    v
}

fn tls_hash(t: &TlsConfig) -> Hash {
    hash_files(&format!("{t:?}"), tls_files(t).iter().map(PathBuf::as_path))
}

fn crl_hash(t: &TlsConfig) -> Hash {
    hash_files("crl", t.crl_files().iter().map(PathBuf::as_path))
}

/// What the background CRL fetchers were started with (`crate::crl_fetch::spawn`).
fn crl_fetching(l: &crate::config::ListenerConfig) -> Option<(&[String], Option<&Path>, Duration)> {
    l.tls.as_ref().map(|t| {
        (
            t.crl_urls.as_slice(),
            t.crl_cache_dir.as_deref(),
            t.crl_refresh_interval,
        )
    })
}

fn policy_hash(c: &Config) -> Hash {
    hash_files(
        "policy",
        c.policy
            .file
            .as_deref()
            .into_iter()
            .chain(c.policy.mosquitto_acl_file.as_deref()),
    )
}

fn passwords_hash(c: &Config) -> Hash {
    hash_files("passwords", c.auth.password_file.as_deref())
}

fn admin_tokens_file(c: &Config) -> Option<&Path> {
    c.admin.as_ref().and_then(|a| a.api_tokens_file.as_deref())
}

fn admin_tokens_hash(c: &Config) -> Hash {
    hash_files("admin_tokens", admin_tokens_file(c))
}

fn jwks_hash(c: &Config) -> Hash {
    hash_files("jwks", c.auth.token.as_ref().map(|t| t.jwks_file.as_path()))
}

/// Every file the gateway loads.
fn loaded_files(config_path: &Path, c: &Config) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = vec![config_path.to_owned()];
    files.extend(c.policy.file.clone());
    files.extend(c.policy.mosquitto_acl_file.clone());
    files.extend(c.auth.password_file.clone());
    files.extend(c.auth.token.as_ref().map(|t| t.jwks_file.clone()));
    files.extend(admin_tokens_file(c).map(Path::to_owned));
    for l in &c.listeners {
        if let Some(t) = &l.tls {
            files.extend(tls_files(t));
        }
    }
    files
}

/// Every directory whose files the gateway loads.
#[must_use]
pub fn watched_dirs(config_path: &Path, c: &Config) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = loaded_files(config_path, c)
        .iter()
        .filter_map(|f| {
            f.parent().map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_owned()
                }
            })
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The file names whose changes start a reload: those of the loaded files, and Kubernetes'
/// `..data` / `..<timestamp>` entries (a mounted ConfigMap or Secret changes by swapping them;
/// no event names the file itself). Anything else in a watched directory — the audit log, a
/// broker's files, editor swap files — is ignored, so that writing it never costs a reload
/// (an ACL-denial flood writes the audit log continuously).
fn relevant_names(config_path: &Path, c: &Config) -> HashSet<std::ffi::OsString> {
    loaded_files(config_path, c)
        .iter()
        .filter_map(|f| f.file_name().map(std::ffi::OsStr::to_os_string))
        .collect()
}

fn is_relevant(names: &HashSet<std::ffi::OsString>, path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| names.contains(n) || n.as_encoded_bytes().starts_with(b".."))
}

impl Reloader {
    /// A reloader for a gateway started from `config_path`, with the TLS configurations it serves.
    #[must_use]
    pub fn new(
        config_path: &Path,
        gateway: Arc<Gateway>,
        tls: HashMap<String, Arc<ArcSwap<crate::tls::ServerTls>>>,
    ) -> Self {
        let snap = gateway.current();
        let c = &snap.config;
        let mut tried = HashMap::new();
        tried.insert("config".to_owned(), hash_files("config", [config_path]));
        tried.insert("policy".to_owned(), policy_hash(c));
        tried.insert("passwords".to_owned(), passwords_hash(c));
        tried.insert("jwks".to_owned(), jwks_hash(c));
        tried.insert("admin_tokens".to_owned(), admin_tokens_hash(c));
        for l in &c.listeners {
            if let Some(t) = &l.tls {
                tried.insert(format!("tls:{}", l.name), tls_hash(t));
                tried.insert(format!("crl:{}", l.name), crl_hash(t));
            }
        }
        Self {
            config_path: config_path.to_owned(),
            gateway,
            tls,
            tried: Mutex::new(tried),
            one: Mutex::new(()),
        }
    }

    /// True when `key`'s content differs from what was last tried (and records it).
    fn changed(&self, key: &str, hash: Hash) -> bool {
        let Ok(mut tried) = self.tried.lock() else {
            return true;
        };
        tried.insert(key.to_owned(), hash) != Some(hash)
    }

    fn reject(&self, report: &mut ReloadReport, source: ReloadSource, error: String) {
        tracing::error!(source = source.as_str(), %error, "reload rejected; the previous version stays in force");
        self.gateway.audit.record(&AuditEvent {
            event: "reload_rejected",
            reason: source.as_str(),
            detail: Some(&error),
            ..AuditEvent::default()
        });
        crate::metrics::reload_result(source, false, self.gateway.generation());
        report.rejected.push((source, error));
    }

    /// Re-reads every source and applies what changed and validates. Blocking (file reads,
    /// parsing, certificate checks): run it off the async workers.
    pub fn reload(&self) -> ReloadReport {
        let _one = self
            .one
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut report = ReloadReport::default();
        let old = self.gateway.current();
        let mut config = Arc::clone(&old.config);
        if self.changed("config", hash_files("config", [self.config_path.as_path()])) {
            match Config::load(&self.config_path) {
                Ok(c) => {
                    for (new, cur) in c.listeners.iter().zip(&old.config.listeners) {
                        if new.name != cur.name
                            || new.bind != cur.bind
                            || new.tls.is_some() != cur.tls.is_some()
                            || new.proxy_protocol != cur.proxy_protocol
                            || new.proxy_protocol_from != cur.proxy_protocol_from
                            || new.protocol != cur.protocol
                            || new.websocket_path != cur.websocket_path
                            || new.websocket_origins != cur.websocket_origins
                            || crl_fetching(new) != crl_fetching(cur)
                        {
                            report.needs_restart.push(format!("listener {}", new.name));
                        }
                    }
                    if c.listeners.len() != old.config.listeners.len()
                        || c.admin != old.config.admin
                    {
                        report
                            .needs_restart
                            .push("listeners or admin address".to_owned());
                    }
                    // The Redis connection of `[cluster]` is made at start.
                    if c.cluster != old.config.cluster {
                        report.needs_restart.push("[cluster]".to_owned());
                    }
                    for what in &report.needs_restart {
                        tracing::warn!(%what, "changed in the config file: takes effect only after a restart");
                    }
                    config = Arc::new(c);
                    report.applied.push(ReloadSource::Config);
                }
                Err(e) => self.reject(&mut report, ReloadSource::Config, e.to_string()),
            }
        }
        let config_changed = report.applied.contains(&ReloadSource::Config);

        let mut policy = Arc::clone(&old.policy);
        if self.changed("policy", policy_hash(&config)) || config_changed {
            let names: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
            match Policy::load(
                config.policy.file.as_deref(),
                config.policy.mosquitto_acl_file.as_deref(),
                &names,
            ) {
                Ok(p) => {
                    policy = Arc::new(p);
                    report.applied.push(ReloadSource::Policy);
                }
                Err(e) => self.reject(&mut report, ReloadSource::Policy, e.to_string()),
            }
        }

        let mut passwords = old.passwords.clone();
        if self.changed("passwords", passwords_hash(&config)) || config_changed {
            match config
                .auth
                .password_file
                .as_deref()
                .map(PasswordFile::load)
                .transpose()
            {
                Ok(p) => {
                    passwords = p.map(Arc::new);
                    report.applied.push(ReloadSource::Passwords);
                }
                Err(e) => self.reject(&mut report, ReloadSource::Passwords, e.to_string()),
            }
        }

        let mut tokens = old.tokens.clone();
        if self.changed("jwks", jwks_hash(&config)) || config_changed {
            match config
                .auth
                .token
                .as_ref()
                .map(|t| TokenKeys::load(&t.jwks_file))
                .transpose()
            {
                Ok(t) => {
                    tokens = t.map(Arc::new);
                    report.applied.push(ReloadSource::Jwks);
                }
                Err(e) => self.reject(&mut report, ReloadSource::Jwks, e.to_string()),
            }
        }

        let mut admin_tokens = old.admin_tokens.clone();
        if self.changed("admin_tokens", admin_tokens_hash(&config)) || config_changed {
            match admin_tokens_file(&config)
                .map(crate::api::tokens::AdminTokens::load)
                .transpose()
            {
                Ok(t) => {
                    admin_tokens = t.map(Arc::new);
                    report.applied.push(ReloadSource::AdminTokens);
                }
                Err(e) => self.reject(&mut report, ReloadSource::AdminTokens, e.to_string()),
            }
        }

        let mut verifiers = old.verifiers.clone();
        for l in &config.listeners {
            let (Some(t), Some(swap)) = (&l.tls, self.tls.get(&l.name)) else {
                continue;
            };
            let key = format!("tls:{}", l.name);
            let crl_changed = self.changed(&format!("crl:{}", l.name), crl_hash(t));
            if !self.changed(&key, tls_hash(t)) && !config_changed {
                continue;
            }
            let source = if crl_changed {
                ReloadSource::Crl
            } else {
                ReloadSource::Certs
            };
            let built = tls::client_verifier(t)
                .and_then(|v| Ok((tls::build_server_tls_with(t, v.clone())?, v)));
            match built {
                Ok((server, verifier)) => {
                    swap.store(server);
                    match verifier {
                        Some(v) => verifiers.insert(l.name.clone(), v),
                        None => verifiers.remove(&l.name),
                    };
                    report.applied.push(source);
                }
                Err(e) => self.reject(&mut report, source, format!("listener {}: {e}", l.name)),
            }
        }

        if !report.applied.is_empty() {
            let generation = old.generation + 1;
            self.gateway.store(Snapshot {
                config,
                policy,
                passwords,
                tokens,
                admin_tokens,
                verifiers,
                generation,
            });
            report.applied.dedup();
            if report.applied.iter().any(|s| {
                matches!(
                    s,
                    ReloadSource::Config | ReloadSource::Crl | ReloadSource::Certs
                )
            }) {
                crate::metrics_tls::set_tls_file_gauges(&self.gateway.current().config);
            }
            for source in &report.applied {
                crate::metrics::reload_result(*source, true, generation);
            }
            let applied: Vec<&str> = report.applied.iter().map(|s| s.as_str()).collect();
            tracing::info!(generation, ?applied, "reloaded");
        }
        report
    }
}

/// Whether an event can mean new content. inotify also reports opens and reads (notify watches
/// `IN_OPEN`): counting them made every reload's own reading of the files start the next
/// reload, a loop that re-read and hashed every source (a 10 MB CRL included) about once a second
/// for as long as the gateway ran.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Any
        | EventKind::Create(_)
        | EventKind::Modify(_)
        | EventKind::Remove(_)
        | EventKind::Other => true,
    }
}

/// Watches `dirs` (debounced) and sends on `tx` when a change touches one of `names` (see
/// [`is_relevant`] and [`is_change`]). `None` when the platform has no watcher: SIGHUP and the
/// poll still work.
fn watch(
    dirs: &[PathBuf],
    names: HashSet<std::ffi::OsString>,
    tx: mpsc::Sender<()>,
) -> Option<Debouncer<RecommendedWatcher, RecommendedCache>> {
    let watcher = new_debouncer(
        DEBOUNCE,
        None,
        move |result: notify_debouncer_full::DebounceEventResult| {
            let relevant = result.is_ok_and(|events| {
                events
                    .iter()
                    .any(|e| is_change(&e.kind) && e.paths.iter().any(|p| is_relevant(&names, p)))
            });
            if relevant {
                // A reload is already queued if this fails: that one will read the files anew.
                let _ = tx.try_send(());
            }
        },
    );
    match watcher {
        Ok(mut w) => {
            for d in dirs {
                if let Err(e) = w.watch(d, RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot watch; relying on SIGHUP and the poll");
                }
            }
            Some(w)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no file watcher; relying on SIGHUP and the poll");
            None
        }
    }
}

/// Runs reloads for SIGHUP (`hup`), file changes under the watched directories, and every
/// [`POLL`], until shutdown.
pub async fn run(reloader: Arc<Reloader>, mut hup: mpsc::Receiver<()>) {
    let gateway = Arc::clone(&reloader.gateway);
    let (tx, mut events) = mpsc::channel::<()>(1);
    let snap = gateway.current();
    let dirs = watched_dirs(&reloader.config_path, &snap.config);
    let names = relevant_names(&reloader.config_path, &snap.config);
    drop(snap);
    let _watcher = watch(&dirs, names, tx);
    let mut poll = tokio::time::interval(POLL);
    poll.tick().await;
    loop {
        tokio::select! {
            Some(()) = hup.recv() => {}
            Some(()) = events.recv() => {}
            _ = poll.tick() => {}
            () = gateway.shutdown.cancelled() => return,
        }
        let r = Arc::clone(&reloader);
        match tokio::task::spawn_blocking(move || r.reload()).await {
            Ok(report) if !report.applied.is_empty() || !report.rejected.is_empty() => {
                tracing::debug!(?report, "reload finished");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "reload task failed; the previous version stays in force")
            }
        }
    }
}

/// Starts the reloader of a running gateway started from `config_path`. The returned sender
/// triggers a reload (what SIGHUP does).
#[must_use]
pub fn spawn(config_path: &Path, running: &crate::Running) -> mpsc::Sender<()> {
    let (tx, rx) = mpsc::channel(1);
    crate::crl_fetch::spawn(&running.gateway, &tx);
    let reloader = Arc::new(Reloader::new(
        config_path,
        Arc::clone(&running.gateway),
        running.tls.clone(),
    ));
    let _ = running.gateway.reloader.set(Arc::downgrade(&reloader));
    tokio::spawn(run(reloader, rx));
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loaded_files_and_kubernetes_swaps_are_relevant() {
        let names: HashSet<std::ffi::OsString> = ["gateway.toml", "policy.toml", "ca.crl"]
            .iter()
            .map(std::ffi::OsString::from)
            .collect();
        for (path, relevant) in [
            ("/etc/gw/policy.toml", true),
            ("/etc/gw/certs/ca.crl", true),
            ("/etc/gw/certs/..data", true),
            ("/etc/gw/certs/..2026_11_22_12_00_00.123", true),
            ("/etc/gw/audit.jsonl", false),
            ("/etc/gw/.policy.toml.swp", false),
            ("/etc/gw/policy.toml.tmp", false),
        ] {
            assert_eq!(is_relevant(&names, Path::new(path)), relevant, "{path}");
        }
    }

    /// Reading the watched files (what every reload does) must not start a reload; writing one
    /// must. Before, inotify's open events made each reload start the next, forever.
    #[tokio::test]
    async fn reading_the_files_starts_no_reload_writing_does() {
        let dir = std::env::temp_dir().join(format!("gw-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("policy.toml");
        std::fs::write(&file, "a").unwrap();
        let names = std::iter::once(std::ffi::OsString::from("policy.toml")).collect();
        let (tx, mut rx) = mpsc::channel(1);
        let watcher = watch(std::slice::from_ref(&dir), names, tx);
        assert!(watcher.is_some());
        for _ in 0..5 {
            assert_eq!(std::fs::read_to_string(&file).unwrap(), "a");
            tokio::time::sleep(DEBOUNCE / 2).await;
        }
        tokio::time::sleep(DEBOUNCE * 3).await;
        assert!(rx.try_recv().is_err(), "a read started a reload");
        std::fs::write(&file, "b").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
        assert_eq!(got.ok().flatten(), Some(()), "a write started no reload");
        drop(watcher);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
