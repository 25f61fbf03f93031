//! OCSP stapling of the gateway's own certificate: `[listener.tls] staple_ocsp = true`.
//!
//! The listener's `ServerConfig` resolves its certificate through a [`StapleResolver`], which
//! adds the latest good, validated OCSP response for that certificate file, and only while it is
//! in force ([`in_force`]: from `thisUpdate` to `nextUpdate`, no leeway past the end): a
//! response is never served stale; without one the handshake goes on unstapled (stapling is
//! advisory, RFC 6066 §8).
//!
//! [`run`] fetches the responses in the background: the responder is the certificate's AIA
//! `http://` OCSP URL, else the listener's `ocsp_responder`; the issuer is the next certificate
//! of the `cert` chain (it must be there). Again every `ocsp_refresh_interval`, or at half the
//! time left to `nextUpdate` when sooner; a failure is retried after `min(interval, 30 s)`. An
//! answer is validated as a client certificate's is ([`super::validate::judge`]); only `good` is
//! stapled, and a `revoked` or `unknown` answer withdraws the staple in force at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::validate::{self, Issuer, Status};
use crate::shared::Gateway;

/// A validated `good` response for one certificate.
#[derive(Debug)]
pub struct Stapled {
    /// SHA-256 of the certificate it is for (a rotated certificate is never served the
    /// previous one's response).
    pub leaf: [u8; 32],
    /// The `OCSPResponse`, DER, as served.
    pub der: Vec<u8>,
    /// `thisUpdate`, unix seconds.
    pub this_update: i64,
    /// `nextUpdate` (or `thisUpdate` + 24 h without one), unix seconds.
    pub valid_until: i64,
}

/// Whether a response from `this_update` to `valid_until` may be served at `now`: not before its
/// `thisUpdate` (5 min leeway: the client's clock may be ahead of ours), never after its end.
#[must_use]
pub const fn in_force(this_update: i64, valid_until: i64, now: i64) -> bool {
    this_update <= now.saturating_add(validate::LEEWAY) && now < valid_until
}

/// The staple of one certificate file, shared by every `ServerConfig` built from it.
#[derive(Debug, Default)]
pub struct Staple {
    current: ArcSwapOption<Stapled>,
}

impl Staple {
    /// The response for the certificate `leaf` (SHA-256) in force at `now`, if any.
    #[must_use]
    pub fn now(&self, leaf: &[u8; 32], now: i64) -> Option<Arc<Stapled>> {
        self.current
            .load_full()
            .filter(|s| s.leaf == *leaf && in_force(s.this_update, s.valid_until, now))
    }
}

/// Every certificate file's staple, by path.
static STAPLES: LazyLock<Mutex<HashMap<PathBuf, Arc<Staple>>>> = LazyLock::new(Mutex::default);

/// The staple of the certificate file `path`.
#[must_use]
pub fn staple_for(path: &Path) -> Arc<Staple> {
    let mut all = STAPLES.lock().unwrap_or_else(PoisonError::into_inner);
    Arc::clone(all.entry(path.to_owned()).or_default())
}

/// SHA-256 of a certificate.
#[must_use]
pub fn leaf_hash(cert: &CertificateDer<'_>) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(cert.as_ref()).into()
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The certificate, stapled while a response is in force.
#[derive(Debug)]
pub struct StapleResolver {
    plain: Arc<CertifiedKey>,
    leaf: [u8; 32],
    staple: Arc<Staple>,
    /// The stapled key last built, and the response it carries.
    built: ArcSwapOption<(Arc<Stapled>, Arc<CertifiedKey>)>,
}

impl StapleResolver {
    /// Serves `key` stapled with the responses of `staple`.
    #[must_use]
    pub fn new(key: CertifiedKey, staple: Arc<Staple>) -> Self {
        let leaf = key.cert.first().map_or([0; 32], |c| leaf_hash(c));
        Self {
            leaf,
            plain: Arc::new(key),
            staple,
            built: ArcSwapOption::empty(),
        }
    }

    /// The key to serve at `now`.
    #[must_use]
    pub fn key_at(&self, now: i64) -> Arc<CertifiedKey> {
        let Some(stapled) = self.staple.now(&self.leaf, now) else {
            return Arc::clone(&self.plain);
        };
        if let Some(built) = self.built.load_full()
            && Arc::ptr_eq(&built.0, &stapled)
        {
            return Arc::clone(&built.1);
        }
        let key = Arc::new(CertifiedKey {
            cert: self.plain.cert.clone(),
            key: Arc::clone(&self.plain.key),
            ocsp: Some(stapled.der.clone()),
        });
        self.built
            .store(Some(Arc::new((stapled, Arc::clone(&key)))));
        key
    }
}

impl ResolvesServerCert for StapleResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key_at(now_unix()))
    }
}

/// One certificate file to staple.
struct Target {
    listener: String,
    cert: PathBuf,
    responder: Option<String>,
    refresh: i64,
    timeout: std::time::Duration,
}

/// The AIA OCSP URL of `leaf`, else `fallback`.
fn responder_of(leaf: &[u8], fallback: Option<&str>) -> Option<String> {
    super::leaf_facts(leaf)
        .and_then(|(_, _, url)| url)
        .or_else(|| fallback.map(str::to_owned))
}

/// One fetch for `t`: the validated answer, or why not.
async fn fetch(
    t: &Target,
    chain: &[CertificateDer<'static>],
) -> Result<(Vec<u8>, validate::Answer), String> {
    let (Some(leaf), Some(issuer)) = (chain.first(), chain.get(1)) else {
        return Err("the cert file holds no issuer certificate after the leaf: nothing to check an OCSP answer with".to_owned());
    };
    let url = responder_of(leaf.as_ref(), t.responder.as_deref()).ok_or_else(|| {
        "the certificate names no http:// OCSP responder (AIA) and ocsp_responder is not set"
            .to_owned()
    })?;
    let uri = crate::crl_fetch::http::check_url(&url)?;
    let (_, serial, _) = super::leaf_facts(leaf.as_ref()).ok_or("unreadable certificate")?;
    let issuer = Issuer::new(CertificateDer::clone(issuer).into_owned())?;
    let cert_id = issuer.cert_id(&serial)?;
    let request = validate::request(&cert_id)?;
    let body = crate::crl_fetch::http::request(
        &uri,
        Some(("application/ocsp-request", &request)),
        super::MAX_BYTES,
        t.timeout,
    )
    .await
    .map_err(|(r, d)| format!("{url}: {}: {d}", r.as_str()))?;
    let answer =
        validate::judge(&body, &issuer, &cert_id, now_unix()).map_err(|e| format!("{url}: {e}"))?;
    Ok((body, answer))
}

fn targets(gateway: &Gateway) -> Vec<Target> {
    let config = Arc::clone(&gateway.current().config);
    config
        .listeners
        .iter()
        .filter_map(|l| {
            let t = l.tls.as_ref().filter(|t| t.staple_ocsp)?;
            Some(Target {
                listener: l.name.clone(),
                cert: t.cert.clone(),
                responder: t.ocsp_responder.clone(),
                refresh: i64::try_from(t.ocsp_refresh_interval.as_secs())
                    .unwrap_or(i64::MAX)
                    .max(1),
                timeout: t.ocsp_timeout,
            })
        })
        .collect()
}

/// Keeps the staples of every `staple_ocsp` listener fresh until shutdown (the listeners are
/// read from the snapshot in force at each round, so a reload that turns stapling on is
/// followed).
pub async fn run(gateway: Arc<Gateway>) {
    let mut next: HashMap<PathBuf, i64> = HashMap::new();
    loop {
        let now = now_unix();
        for t in targets(&gateway) {
            let chain = match crate::tls::load_certs(&t.cert) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(listener = %t.listener, error = %e, "OCSP stapling: the cert file cannot be read");
                    continue;
                }
            };
            let Some(leaf) = chain.first().map(leaf_hash) else {
                continue;
            };
            let staple = staple_for(&t.cert);
            // Due, or the certificate was replaced since the last answer.
            let rotated = staple
                .current
                .load()
                .as_ref()
                .is_some_and(|s| s.leaf != leaf);
            if !rotated && next.get(&t.cert).is_some_and(|at| *at > now) {
                continue;
            }
            let retry = now.saturating_add(t.refresh.min(30));
            let at = match fetch(&t, &chain).await {
                Ok((der, answer)) if answer.status == Status::Good => {
                    let half = (answer.valid_until - now) / 2;
                    tracing::debug!(listener = %t.listener, valid_until = answer.valid_until, "OCSP staple fetched");
                    staple.current.store(Some(Arc::new(Stapled {
                        leaf,
                        der,
                        this_update: answer.this_update,
                        valid_until: answer.valid_until,
                    })));
                    now.saturating_add(t.refresh.min(half.max(1)))
                }
                Ok((_, answer)) => {
                    tracing::warn!(listener = %t.listener, status = ?answer.status, "OCSP answer for the gateway's own certificate is not good: no staple");
                    staple.current.store(None);
                    retry
                }
                Err(detail) => {
                    let kept = staple.now(&leaf, now).is_some();
                    tracing::warn!(listener = %t.listener, %detail, kept_until_its_next_update = kept, "OCSP staple fetch failed");
                    retry
                }
            };
            next.insert(t.cert, at);
        }
        tokio::select! {
            () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            () = gateway.shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Never stale: served from `thisUpdate` (less the leeway) until, not at, its end.
    #[test]
    fn a_staple_is_served_only_while_in_force() {
        const T: i64 = 1_800_000_000;
        #[rustfmt::skip]
        let table = [
            ("fresh", T - 60, T + 600, T, true),
            ("one second before the end", T - 60, T + 1, T, true),
            ("at its end", T - 60, T, T, false),
            ("past its end", T - 600, T - 60, T, false),
            ("thisUpdate ahead within the leeway", T + 60, T + 600, T, true),
            ("thisUpdate far ahead", T + 3600, T + 7200, T, false),
        ];
        for (name, this_update, valid_until, now, want) in table {
            assert_eq!(in_force(this_update, valid_until, now), want, "{name}");
        }
    }
}
