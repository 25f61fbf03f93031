//! CRLs fetched over HTTP: `[listener.tls] crl_urls`.
//!
//! Each URL is fetched at start and then in the background: again at half the time left to the
//! nextUpdate of the CRL in force, at least every `crl_refresh_interval`, never more often than
//! [`decide::FLOOR`]; a failure is retried with a doubling wait. A fetched CRL must be a CRL
//! signed by a CA of the listener's `client_ca` ([`verify`]) and a later issue than the one in
//! force, and not already stale ([`decide::judge`]). Only then is it written to `crl_cache_dir`
//! (temporary file, fsync, rename) and a reload is asked for: the cached file is one of the
//! listener's CRL files ([`crate::config::TlsConfig::crl_files`]), so a new CRL takes the path of
//! a changed CRL file: a new verifier, a new TLS config with an empty session cache, and every
//! live session judged again (a revoked one gets DISCONNECT 0x98).
//!
//! Anything else (no answer, a timeout, an HTTP error, a body over [`MAX_BYTES`], not a CRL, a
//! foreign or bad signature, a rollback) keeps the CRL in force, counts in
//! `crl_fetches_total{listener,result}` and is audited as `crl_fetch_failed` (at the start of a
//! failure streak, when its reason changes, and hourly: [`decide::audit_failure`]). The CRL in
//! force still expires at its nextUpdate: past it the listener refuses every certificate it would
//! check (fail closed), as with a CRL file.
//!
//! At start a URL whose cached copy is missing (or does not verify) is fetched before the
//! listener serves ([`START_ATTEMPTS`] tries); if none succeeds the gateway does not start. A
//! restart without network starts from the cached copies.

pub mod decide;
pub mod http;
pub mod verify;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::Uri;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::audit::AuditEvent;
use crate::config::Config;
use crate::labels::CrlFetchResult;
use crate::shared::Gateway;
use decide::{CrlFacts, Verdict};
use verify::Refusal;

/// At most this many `crl_urls` per listener.
pub const MAX_URLS: usize = 16;
/// The largest CRL body accepted (a CA's CRL with a few hundred thousand entries).
pub const MAX_BYTES: usize = 32 * 1024 * 1024;
/// The deadline of one fetch, connection to last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries at start for a URL without a cached copy.
pub const START_ATTEMPTS: u32 = 3;

/// The cached copy of the CRL of `url` in `dir`: named by a hash of the URL (DER).
#[must_use]
pub fn cache_file(dir: &Path, url: &str) -> PathBuf {
    let digest = Sha256::digest(url.as_bytes());
    let name: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    dir.join(format!("crl-{name}.der"))
}

/// One `crl_urls` entry of one listener.
#[derive(Debug, Clone)]
struct Source {
    listener: String,
    url: String,
    uri: Uri,
    cache: PathBuf,
    client_ca: PathBuf,
    interval: Duration,
}

/// Every `crl_urls` entry of `config` (URLs were checked when the config was loaded).
fn sources(config: &Config) -> Vec<Source> {
    let mut out = Vec::new();
    for l in &config.listeners {
        let Some(t) = &l.tls else { continue };
        let (Some(dir), Some(client_ca)) = (&t.crl_cache_dir, &t.client_ca) else {
            continue;
        };
        for url in &t.crl_urls {
            if let Ok(uri) = http::check_url(url) {
                out.push(Source {
                    listener: l.name.clone(),
                    url: url.clone(),
                    uri,
                    cache: cache_file(dir, url),
                    client_ca: client_ca.clone(),
                    interval: t.crl_refresh_interval,
                });
            }
        }
    }
    out
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The facts of `der` if it verifies against the current `client_ca` of `src`.
fn check(src: &Source, der: &[u8]) -> Result<CrlFacts, Refusal> {
    let issuers = crate::tls::load_certs(&src.client_ca)
        .map_err(|e| (CrlFetchResult::UnknownIssuer, format!("client_ca: {e}")))?;
    verify::verify(der, &issuers)
}

/// The cached copy of `src`'s CRL, if there is one and it still verifies.
fn read_cache(src: &Source) -> Option<CrlFacts> {
    let der = std::fs::read(&src.cache).ok()?;
    match check(src, &der) {
        Ok(facts) => Some(facts),
        Err((result, detail)) => {
            tracing::warn!(listener = %src.listener, url = %src.url, file = %src.cache.display(), result = result.as_str(), %detail, "the cached CRL does not verify; fetching it again");
            None
        }
    }
}

/// Writes `bytes` to `path` so that a reader sees the old or the new file, never a part: a
/// temporary file beside it, flushed to disk, renamed over it.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

fn describe(facts: &CrlFacts) -> String {
    let number = facts.number.as_ref().map_or_else(
        || "none".to_owned(),
        |n| n.iter().map(|b| format!("{b:02x}")).collect(),
    );
    format!("thisUpdate {}, number {number}", facts.this_update)
}

/// One fetch of `src`, judged against `current`; on success the cache holds the new CRL and
/// `current` its facts.
async fn fetch_once(
    src: &Source,
    current: &mut Option<CrlFacts>,
) -> Result<CrlFetchResult, Refusal> {
    let body = http::get(&src.uri, MAX_BYTES, FETCH_TIMEOUT).await?;
    let der = verify::to_der(body)?;
    let facts = check(src, &der)?;
    match decide::judge(current.as_ref(), &facts, now_unix()) {
        Verdict::Unchanged => Ok(CrlFetchResult::Unchanged),
        Verdict::Keep(result) => {
            let in_force = current.as_ref().map_or_else(String::new, describe);
            Err((
                result,
                format!(
                    "fetched CRL ({}) refused; the CRL in force ({in_force}) stays",
                    describe(&facts)
                ),
            ))
        }
        Verdict::Take => {
            let path = src.cache.clone();
            tokio::task::spawn_blocking(move || write_atomic(&path, &der))
                .await
                .map_err(|e| (CrlFetchResult::CacheError, e.to_string()))?
                .map_err(|e| {
                    (
                        CrlFetchResult::CacheError,
                        format!("{}: {e}", src.cache.display()),
                    )
                })?;
            *current = Some(facts);
            Ok(CrlFetchResult::Updated)
        }
    }
}

/// A fetch's outcome, to count and (failures) audit once the metrics and the audit log run.
#[derive(Debug, Clone)]
pub struct Outcome {
    listener: String,
    url: String,
    result: CrlFetchResult,
    detail: Option<String>,
}

/// A URL with no usable CRL at start.
#[derive(Debug, thiserror::Error)]
#[error(
    "listener {listener}: crl_urls {url}: no CRL (none cached in crl_cache_dir, and the fetch failed: {detail})"
)]
pub struct StartError {
    /// The listener.
    pub listener: String,
    /// The URL.
    pub url: String,
    /// The last failure.
    pub detail: String,
}

/// Before the listeners are built: makes every `crl_cache_dir`, and fetches each URL that has no
/// usable cached copy ([`START_ATTEMPTS`] tries, 1 s then 2 s apart).
///
/// # Errors
/// A cache directory that cannot be made, or a URL with no cached copy that could not be fetched.
pub async fn prepare(config: &Config) -> Result<Vec<Outcome>, StartError> {
    let mut outcomes = Vec::new();
    for src in sources(config) {
        if let Some(dir) = src.cache.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StartError {
                listener: src.listener.clone(),
                url: src.url.clone(),
                detail: format!("crl_cache_dir {}: {e}", dir.display()),
            })?;
        }
        let mut current = read_cache(&src);
        let mut last = String::new();
        let mut attempt = 0;
        while current.is_none() && attempt < START_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
            }
            attempt += 1;
            let (result, detail) = match fetch_once(&src, &mut current).await {
                Ok(result) => (result, None),
                Err((result, detail)) => {
                    last.clone_from(&detail);
                    (result, Some(detail))
                }
            };
            outcomes.push(Outcome {
                listener: src.listener.clone(),
                url: src.url.clone(),
                result,
                detail,
            });
        }
        if current.is_none() {
            return Err(StartError {
                listener: src.listener,
                url: src.url,
                detail: last,
            });
        }
    }
    Ok(outcomes)
}

/// Sets `crl_fetches_total` of every listener to 0 (the contract's "every family from start-up",
/// as the other `listener` families), then counts (and audits) the fetches [`prepare`] made.
pub fn record_start(gateway: &Gateway, config: &Config, outcomes: &[Outcome]) {
    for l in &config.listeners {
        crate::metrics::init_crl_fetches(&l.name);
    }
    for o in outcomes {
        crate::metrics::crl_fetch(&o.listener, o.result);
        if let Some(detail) = &o.detail {
            audit_failure(gateway, &o.listener, &o.url, o.result, detail);
        }
    }
}

fn audit_failure(
    gateway: &Gateway,
    listener: &str,
    url: &str,
    result: CrlFetchResult,
    detail: &str,
) {
    gateway.audit.record(&AuditEvent {
        event: "crl_fetch_failed",
        listener: Some(listener),
        url: Some(url),
        reason: result.as_str(),
        detail: Some(detail),
        ..AuditEvent::default()
    });
}

/// Starts the background fetch of every `crl_urls` entry of the running gateway's configuration.
/// A new CRL sends on `reload` (what SIGHUP does).
pub fn spawn(gateway: &Arc<Gateway>, reload: &mpsc::Sender<()>) {
    let config = Arc::clone(&gateway.current().config);
    for src in sources(&config) {
        tokio::spawn(run(src, Arc::clone(gateway), reload.clone()));
    }
}

/// Fetches `src` until shutdown: at once, then as [`decide::next_fetch`] and
/// [`decide::retry_after`] say.
async fn run(src: Source, gateway: Arc<Gateway>, reload: mpsc::Sender<()>) {
    let mut current = read_cache(&src);
    let mut failures: u32 = 0;
    let mut last_audited: Option<(CrlFetchResult, i64)> = None;
    let mut wait = Duration::ZERO;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = gateway.shutdown.cancelled() => return,
        }
        let outcome = fetch_once(&src, &mut current).await;
        let now = now_unix();
        let next_update = current.as_ref().and_then(|c| c.next_update);
        match outcome {
            Ok(result) => {
                crate::metrics::crl_fetch(&src.listener, result);
                if result == CrlFetchResult::Updated {
                    tracing::info!(listener = %src.listener, url = %src.url, crl = %current.as_ref().map(describe).unwrap_or_default(), "new CRL fetched; reloading");
                    // A reload is already queued if this fails: it will read the new file.
                    let _ = reload.try_send(());
                }
                if failures > 0 {
                    tracing::info!(listener = %src.listener, url = %src.url, failures, "CRL fetch works again");
                }
                failures = 0;
                last_audited = None;
                wait = decide::next_fetch(next_update, now, src.interval);
            }
            Err((result, detail)) => {
                crate::metrics::crl_fetch(&src.listener, result);
                failures = failures.saturating_add(1);
                wait = decide::retry_after(failures, next_update, now, src.interval);
                tracing::warn!(listener = %src.listener, url = %src.url, result = result.as_str(), %detail, failures, retry_in = ?wait, "CRL fetch failed; the CRL in force stays");
                if decide::audit_failure(last_audited, result, now) {
                    audit_failure(&gateway, &src.listener, &src.url, result, &detail);
                    last_audited = Some((result, now));
                }
            }
        }
    }
}
