//! OCSP for client certificates: `[listener.tls] ocsp = "off" | "soft" | "hard"`.
//!
//! Checked after the TLS handshake, when the CONNECT is admitted ([`Ocsp::admit`], called from
//! `session::connect::admit`): the handshake itself (rustls' synchronous verifier) cannot wait
//! on a responder, and refusing at CONNECT answers the client with a CONNACK that says why
//! (0x87 Not authorized; 3.1.1: 5) instead of a bare TLS alert.
//!
//! * The responder is `ocsp_responder` when set, else the leaf's AIA `id-ad-ocsp` URL (`http://`
//!   only). The issuer is the certificate of the presented chain or of `client_ca` whose subject
//!   is the leaf's issuer.
//! * Answers are validated in full ([`validate::judge`]) and cached by (issuer key hash, serial)
//!   until their `nextUpdate` ([`MAX_ENTRIES`] at most; when full, the unused entries that expire
//!   first are evicted). A cached answer is used without touching the network.
//! * No usable answer: one query, within `ocsp_timeout`, at most [`MAX_QUERIES`] at a time
//!   gateway-wide. A failed query is remembered for `min(ocsp_refresh_interval, 30s)`: connects
//!   in that time do not query again.
//! * `good` admits. `revoked` refuses (audited `ocsp_revoked`). `unknown`, no responder, or no
//!   valid answer: `hard` refuses, `soft` admits (and keeps asking in the background).
//! * While a session using the certificate lives (a [`Lease`]), the answer is fetched again every
//!   `ocsp_refresh_interval` (sooner when half the time to `nextUpdate` is shorter). A `revoked`
//!   answer wakes every session: those of that certificate end with DISCONNECT 0x98
//!   (`sessions_revoked_total{reason="ocsp"}`), audited `ocsp_revoked` once.
//!   A refresh that fails leaves live sessions alone (only `revoked` cuts, in both modes).

pub mod staple;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::sync::{Semaphore, watch};

use crate::audit::AuditEvent;
use crate::config::{OcspMode, TlsConfig};
use crate::labels::OcspStatus;
use crate::shared::Gateway;
use validate::{Answer, Issuer, Status};

/// The most cached answers (one per certificate).
pub const MAX_ENTRIES: usize = 100_000;
/// The most distinct issuer certificates kept parsed.
const MAX_ISSUERS: usize = 1024;
/// The most OCSP queries in flight, gateway-wide.
pub const MAX_QUERIES: usize = 32;
/// The largest answer read from a responder.
pub const MAX_BYTES: usize = 64 * 1024;
/// The longest a failed query is remembered (connects meanwhile do not query again).
const ERROR_MEMORY: i64 = 30;
/// How often the background refresh looks for due entries.
const TICK: Duration = Duration::from_millis(500);

/// The cache key: the issuer's key hash and the serial.
type Key = ([u8; 20], Vec<u8>);

/// What is needed to ask about one certificate again.
#[derive(Debug)]
struct Query {
    listener: Arc<str>,
    url: Arc<str>,
    issuer: Arc<Issuer>,
    serial: Box<[u8]>,
    timeout: Duration,
    refresh: Duration,
}

#[derive(Debug)]
struct Entry {
    query: Arc<Query>,
    answer: Option<Answer>,
    /// Unix seconds until which a failed query is not repeated at connect.
    failed_until: i64,
    /// Why the last query failed (the `detail` of a refused CONNECT's audit line).
    last_error: &'static str,
    /// Live sessions using the certificate.
    leases: u32,
    /// When the background refresh asks again (unix seconds).
    refresh_at: i64,
}

impl Entry {
    fn usable(&self, now: i64) -> Option<Answer> {
        self.answer
            .filter(|a| now <= a.valid_until.saturating_add(validate::LEEWAY))
    }
}

/// The issuers of one listener's `client_ca`, loaded once per snapshot generation.
#[derive(Debug)]
struct Anchors {
    generation: u64,
    issuers: Arc<Vec<Arc<Issuer>>>,
}

/// The OCSP state of a gateway: the cache, the query permits, the revocation signal.
#[derive(Debug)]
pub struct Ocsp {
    cache: Mutex<HashMap<Key, Entry>>,
    anchors: Mutex<HashMap<String, Anchors>>,
    /// Every issuer seen (by its DER), parsed and hashed once; at most [`MAX_ISSUERS`].
    issuers: Mutex<HashMap<Vec<u8>, Arc<Issuer>>>,
    permits: Semaphore,
    revoked: watch::Sender<u64>,
}

impl Default for Ocsp {
    fn default() -> Self {
        Self {
            cache: Mutex::default(),
            anchors: Mutex::default(),
            issuers: Mutex::default(),
            permits: Semaphore::new(MAX_QUERIES),
            revoked: watch::channel(0).0,
        }
    }
}

/// A live session's hold on a cached answer: while one lives, the answer is refreshed.
#[derive(Debug)]
pub struct Lease {
    ocsp: Arc<Ocsp>,
    key: Key,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut cache = self.ocsp.lock();
        if let Some(e) = cache.get_mut(&self.key) {
            e.leases = e.leases.saturating_sub(1);
        }
    }
}

impl Lease {
    /// Whether the cached answer now says revoked.
    #[must_use]
    pub fn revoked(&self) -> bool {
        let cache = self.ocsp.lock();
        cache
            .get(&self.key)
            .and_then(|e| e.answer)
            .is_some_and(|a| matches!(a.status, Status::Revoked(_)))
    }
}

/// Why a client certificate is refused by OCSP at CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The responder says revoked.
    Revoked,
    /// `hard`: no good answer. Why: `unknown`, `no_responder`, `issuer_not_found`, a query
    /// failure (`network`, `timeout`, `http_status`, `too_large`, `busy`) or a refused answer
    /// (`malformed`, `responder_status`, `signature`, `other_certificate`, `stale`, `future`).
    NoGoodAnswer(&'static str),
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The AIA `id-ad-ocsp` `http://` URL of `leaf`, and its issuer name and serial.
fn leaf_facts(leaf: &[u8]) -> Option<(Vec<u8>, Vec<u8>, Option<String>)> {
    use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};
    let (_, cert) = X509Certificate::from_der(leaf).ok()?;
    let mut url = None;
    for ext in cert.extensions() {
        if let ParsedExtension::AuthorityInfoAccess(aia) = ext.parsed_extension() {
            for d in &aia.accessdescs {
                if d.access_method.to_id_string() == "1.3.6.1.5.5.7.48.1"
                    && let GeneralName::URI(u) = d.access_location
                    && u.starts_with("http://")
                    && url.is_none()
                {
                    url = Some(u.to_owned());
                }
            }
        }
    }
    Some((
        cert.issuer().as_raw().to_vec(),
        cert.raw_serial().to_vec(),
        url,
    ))
}

impl Ocsp {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many answers are cached.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no answer is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `der` as an issuer, parsed once (interned; the map is emptied when it reaches
    /// [`MAX_ISSUERS`]).
    fn issuer(&self, der: &CertificateDer<'_>) -> Option<Arc<Issuer>> {
        let mut issuers = self.issuers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = issuers.get(der.as_ref()) {
            return Some(Arc::clone(i));
        }
        let issuer = Arc::new(Issuer::new(der.clone().into_owned()).ok()?);
        if issuers.len() >= MAX_ISSUERS {
            issuers.clear();
        }
        issuers.insert(der.as_ref().to_vec(), Arc::clone(&issuer));
        Some(issuer)
    }

    /// The issuers of `client_ca` of `listener` under snapshot `generation`.
    fn anchors(&self, listener: &str, tls: &TlsConfig, generation: u64) -> Arc<Vec<Arc<Issuer>>> {
        let mut anchors = self.anchors.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(a) = anchors.get(listener)
            && a.generation == generation
        {
            return Arc::clone(&a.issuers);
        }
        let certs = tls
            .client_ca
            .as_deref()
            .and_then(|p| crate::tls::load_certs(p).ok())
            .unwrap_or_default();
        let issuers: Arc<Vec<Arc<Issuer>>> =
            Arc::new(certs.iter().filter_map(|c| self.issuer(c)).collect());
        anchors.insert(
            listener.to_owned(),
            Anchors {
                generation,
                issuers: Arc::clone(&issuers),
            },
        );
        issuers
    }

    /// The OCSP decision at CONNECT for the client whose verified chain is `chain` (leaf first),
    /// on `listener` with `tls` (its `ocsp` is not off). `Ok(Some(lease))`: admitted, and the
    /// answer is kept fresh while the lease lives.
    ///
    /// # Errors
    /// [`Refused`]: the CONNECT is refused.
    pub async fn admit(
        self: &Arc<Self>,
        listener: &Arc<str>,
        tls: &TlsConfig,
        generation: u64,
        chain: &[CertificateDer<'static>],
    ) -> Result<Option<Arc<Lease>>, Refused> {
        let hard = tls.ocsp == OcspMode::Hard;
        let soft_or = |why: &'static str| {
            if hard {
                Err(Refused::NoGoodAnswer(why))
            } else {
                Ok(None)
            }
        };
        let Some(leaf) = chain.first() else {
            return soft_or("no_certificate");
        };
        let Some((issuer_name, serial, aia)) = leaf_facts(leaf.as_ref()) else {
            return soft_or("unreadable_certificate");
        };
        let Some(url) = tls.ocsp_responder.clone().or(aia) else {
            tracing::warn!(%listener, "OCSP: the client certificate names no http:// OCSP responder (AIA) and ocsp_responder is not set");
            return soft_or("no_responder");
        };
        let anchors = self.anchors(listener, tls, generation);
        let presented = chain.iter().skip(1).filter_map(|c| self.issuer(c));
        let issuer = presented
            .chain(anchors.iter().cloned())
            .find(|i| i.subject == issuer_name);
        let Some(issuer) = issuer else {
            return soft_or("issuer_not_found");
        };
        let key: Key = (issuer.key_hash, serial.clone());
        let now = now_unix();
        let known = {
            let cache = self.lock();
            cache
                .get(&key)
                .map(|e| (e.usable(now), e.failed_until > now, e.last_error))
        };
        let mut why = "no_answer";
        let answer = match known {
            Some((Some(a), _, _)) => Some(a),
            Some((None, true, last)) => {
                why = last;
                None
            }
            _ => {
                if crate::crl_fetch::http::check_url(&url).is_err() {
                    return soft_or("bad_responder_url");
                }
                let query = Arc::new(Query {
                    listener: Arc::clone(listener),
                    url: Arc::from(url),
                    issuer,
                    serial: serial.clone().into_boxed_slice(),
                    timeout: tls.ocsp_timeout,
                    refresh: tls.ocsp_refresh_interval,
                });
                let result = self.query(&query).await;
                if let Err((kind, _)) = &result {
                    why = kind;
                }
                self.store(None, &key, &query, result)
            }
        };
        let lease = |ocsp: &Arc<Self>| -> Option<Arc<Lease>> {
            let mut cache = ocsp.lock();
            let e = cache.get_mut(&key)?;
            e.leases = e.leases.saturating_add(1);
            Some(Arc::new(Lease {
                ocsp: Arc::clone(ocsp),
                key: key.clone(),
            }))
        };
        match answer.map(|a| a.status) {
            Some(Status::Good) => Ok(lease(self)),
            Some(Status::Revoked(_)) => Err(Refused::Revoked),
            Some(Status::Unknown) if hard => Err(Refused::NoGoodAnswer("unknown")),
            None if hard => Err(Refused::NoGoodAnswer(why)),
            Some(Status::Unknown) | None => Ok(lease(self)),
        }
    }

    /// One query: the validated answer, or why not (logged).
    async fn query(&self, q: &Query) -> Result<Answer, (&'static str, String)> {
        // One deadline for the slot and the exchange.
        let deadline = tokio::time::Instant::now() + q.timeout;
        let permit = tokio::time::timeout_at(deadline, self.permits.acquire()).await;
        let Ok(Ok(_permit)) = permit else {
            return Err((
                "busy",
                format!(
                    "{MAX_QUERIES} OCSP queries already in flight for {:?}",
                    q.timeout
                ),
            ));
        };
        let bad = |e: String| ("bad_request", e);
        let uri = crate::crl_fetch::http::check_url(&q.url).map_err(bad)?;
        let cert_id = q.issuer.cert_id(&q.serial).map_err(bad)?;
        let request = validate::request(&cert_id).map_err(bad)?;
        let body = crate::crl_fetch::http::request(
            &uri,
            Some(("application/ocsp-request", &request)),
            MAX_BYTES,
            deadline.saturating_duration_since(tokio::time::Instant::now()),
        )
        .await
        .map_err(|(result, detail)| (result.as_str(), detail))?;
        validate::judge(&body, &q.issuer, &cert_id, now_unix()).map_err(|e| (e.kind, e.detail))
    }

    /// Records a query's outcome in the cache and the metrics; returns the usable answer. An
    /// answer that turns to revoked wakes every session; found by the background refresh
    /// (`audit` given), it is audited `ocsp_revoked` here.
    fn store(
        &self,
        audit: Option<&Gateway>,
        key: &Key,
        q: &Arc<Query>,
        result: Result<Answer, (&'static str, String)>,
    ) -> Option<Answer> {
        let background = audit.is_some();
        let now = now_unix();
        let label = result
            .as_ref()
            .map_or(OcspStatus::Error, |a| a.status.label());
        crate::metrics::ocsp_response(&q.listener, label);
        let refresh_secs = i64::try_from(q.refresh.as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        let mut turned_revoked = None;
        let answer = {
            let mut cache = self.lock();
            if !cache.contains_key(key) && cache.len() >= MAX_ENTRIES {
                evict(&mut cache, now);
            }
            if !cache.contains_key(key) && cache.len() >= MAX_ENTRIES {
                tracing::warn!(listener = %q.listener, "OCSP cache full of answers in use; this answer is not cached");
                return result
                    .ok()
                    .filter(|a| now <= a.valid_until.saturating_add(validate::LEEWAY));
            }
            let e = cache.entry(key.clone()).or_insert_with(|| Entry {
                query: Arc::clone(q),
                answer: None,
                failed_until: 0,
                last_error: "no_answer",
                leases: 0,
                refresh_at: now,
            });
            // The latest settings (a reload may have changed the responder or the interval).
            e.query = Arc::clone(q);
            match &result {
                Ok(a) => {
                    let was_revoked = e
                        .answer
                        .is_some_and(|old| matches!(old.status, Status::Revoked(_)));
                    let half = (a.valid_until - now) / 2;
                    e.refresh_at = now + refresh_secs.min(half.max(1));
                    e.failed_until = 0;
                    e.answer = Some(*a);
                    if let Status::Revoked(at) = a.status
                        && !was_revoked
                    {
                        turned_revoked = Some(at);
                    }
                }
                Err((kind, detail)) => {
                    tracing::warn!(listener = %q.listener, url = %q.url, serial = %hex(&q.serial), reason = kind, %detail, background, "OCSP query failed: the answer is not used");
                    e.last_error = kind;
                    e.failed_until = now + refresh_secs.min(ERROR_MEMORY);
                    e.refresh_at = now + refresh_secs;
                }
            }
            let usable = e.usable(now);
            crate::metrics::ocsp_cache_entries(cache.len());
            usable
        };
        if turned_revoked.is_some() {
            // Live sessions of this certificate (admitted by "soft" without an answer, say) end.
            self.revoked.send_modify(|g| *g = g.wrapping_add(1));
        }
        // Found by the background refresh: audited here, once (at CONNECT the refusal is
        // audited with the client's address).
        if let (Some(at), Some(gateway)) = (turned_revoked, audit) {
            let serial_hex = hex(&q.serial);
            tracing::info!(listener = %q.listener, url = %q.url, serial = %serial_hex, revoked_at = at, "OCSP: certificate revoked");
            let detail = format!("responder {}: revoked at {at} (unix)", q.url);
            gateway.audit.record(&AuditEvent {
                event: "ocsp_revoked",
                listener: Some(&q.listener),
                cert_serial: Some(&serial_hex),
                url: Some(&q.url),
                reason: "revoked",
                detail: Some(&detail),
                ..AuditEvent::default()
            });
        }
        answer
    }

    /// Caches `answer` for the certificate `serial` issued by `issuer`, as a query's answer is
    /// (for the cache-bound test and its memory measurement in BENCHMARKS.md).
    #[doc(hidden)]
    pub fn remember(
        &self,
        listener: &Arc<str>,
        issuer: &CertificateDer<'static>,
        serial: &[u8],
        answer: Answer,
    ) {
        let Some(issuer) = self.issuer(issuer) else {
            return;
        };
        let key: Key = (issuer.key_hash, serial.to_vec());
        let query = Arc::new(Query {
            listener: Arc::clone(listener),
            url: Arc::from("http://ocsp.invalid/"),
            issuer,
            serial: serial.into(),
            timeout: std::time::Duration::from_secs(5),
            refresh: std::time::Duration::from_secs(300),
        });
        self.store(None, &key, &query, Ok(answer));
    }

    /// One round of the background refresh: every entry in use whose time has come is asked
    /// again (at most [`MAX_QUERIES`] at a time); unused entries past their end are dropped.
    async fn refresh_due(self: &Arc<Self>, gateway: &Arc<Gateway>) {
        let now = now_unix();
        let due: Vec<(Key, Arc<Query>)> = {
            let mut cache = self.lock();
            cache.retain(|_, e| e.leases > 0 || e.usable(now).is_some() || e.failed_until > now);
            crate::metrics::ocsp_cache_entries(cache.len());
            cache
                .iter_mut()
                .filter(|(_, e)| e.leases > 0 && e.refresh_at <= now)
                .map(|(k, e)| {
                    // Not picked again while this query runs.
                    e.refresh_at = now.saturating_add(3600);
                    (k.clone(), Arc::clone(&e.query))
                })
                .collect()
        };
        let mut tasks = tokio::task::JoinSet::new();
        for (key, q) in due {
            let ocsp = Arc::clone(self);
            let gw = Arc::clone(gateway);
            tasks.spawn(async move {
                let result = ocsp.query(&q).await;
                ocsp.store(Some(&gw), &key, &q, result);
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

/// Drops 1% of the entries not in use, those whose answers end first.
fn evict(cache: &mut HashMap<Key, Entry>, now: i64) {
    let mut unused: Vec<(i64, Key)> = cache
        .iter()
        .filter(|(_, e)| e.leases == 0)
        .map(|(k, e)| (e.usable(now).map_or(i64::MIN, |a| a.valid_until), k.clone()))
        .collect();
    let n = (MAX_ENTRIES / 100).max(1).min(unused.len());
    if n == 0 {
        return;
    }
    if n < unused.len() {
        unused.select_nth_unstable(n);
    }
    for (_, k) in unused.into_iter().take(n) {
        cache.remove(&k);
    }
}

/// At start: every listener's `ocsp_responses_total` at 0, the cache gauge at 0, and the
/// background refresh (until shutdown).
pub fn start(gateway: &Arc<Gateway>, config: &crate::config::Config) {
    crate::metrics::init_ocsp(config.listeners.iter().map(|l| l.name.as_str()));
    tokio::spawn(staple::run(Arc::clone(gateway)));
    // An answer that turns to revoked: every live session looks at its own certificate's.
    let gw = Arc::clone(gateway);
    tokio::spawn(async move {
        let mut revoked = gw.ocsp.revoked.subscribe();
        loop {
            tokio::select! {
                changed = revoked.changed() => if changed.is_err() { return },
                () = gw.shutdown.cancelled() => return,
            }
            gw.sessions.signal_all(crate::api::registry::signal::OCSP);
        }
    });
    let gw = Arc::clone(gateway);
    tokio::spawn(async move {
        let ocsp = Arc::clone(&gw.ocsp);
        loop {
            tokio::select! {
                () = tokio::time::sleep(TICK) => {}
                () = gw.shutdown.cancelled() => return,
            }
            ocsp.refresh_due(&gw).await;
        }
    });
}

/// The setting of `listener` in `config`, when it checks OCSP.
#[must_use]
pub fn listener_tls<'a>(
    config: &'a crate::config::Config,
    listener: &str,
) -> Option<&'a TlsConfig> {
    config
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .and_then(|l| l.tls.as_ref())
        .filter(|t| t.ocsp != OcspMode::Off)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use rcgen::{CertificateParams, CustomExtension, KeyPair};

    use super::*;

    /// An AuthorityInfoAccessSyntax of one access description (`method` = last arc of
    /// id-ad: 1 ocsp, 2 caIssuers) for `url`.
    fn aia(method: u8, url: &str) -> Vec<u8> {
        let len = |n: usize| u8::try_from(n).unwrap();
        let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, method];
        let mut location = vec![0x86, len(url.len())];
        location.extend_from_slice(url.as_bytes());
        let mut d = vec![0x30, len(oid.len() + location.len())];
        d.extend_from_slice(&oid);
        d.extend_from_slice(&location);
        let mut out = vec![0x30, len(d.len())];
        out.extend_from_slice(&d);
        out
    }

    fn leaf(aia: Option<Vec<u8>>) -> Vec<u8> {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x0a, 0xbc]));
        if let Some(content) = aia {
            p.custom_extensions = vec![CustomExtension::from_oid_content(
                &[1, 3, 6, 1, 5, 5, 7, 1, 1],
                content,
            )];
        }
        p.self_signed(&KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec()
    }

    /// RFC 5280 §4.2.2.1: the responder is the `id-ad-ocsp` access description's `http://` URI.
    #[test]
    fn the_responder_comes_from_the_aia_ocsp_http_uri() {
        type Row = (&'static str, Option<Vec<u8>>, Option<&'static str>);
        #[rustfmt::skip]
        let table: [Row; 4] = [
            ("ocsp, http", Some(aia(1, "http://ocsp.example/ca")), Some("http://ocsp.example/ca")),
            ("ocsp, https (not fetched: the answer is signed, RFC 6960 A.1)", Some(aia(1, "https://ocsp.example")), None),
            ("caIssuers only", Some(aia(2, "http://pki.example/ca.cer")), None),
            ("no AIA", None, None),
        ];
        for (name, ext, want) in table {
            let (_, serial, url) = leaf_facts(&leaf(ext)).unwrap();
            assert_eq!(url.as_deref(), want, "{name}");
            assert_eq!(serial, [0x0a, 0xbc], "{name}");
        }
        assert!(leaf_facts(b"not a certificate").is_none());
    }
}
