//! A listener's client-certificate verifier, and what it remembers of the chains it verified.
//!
//! rustls verifies the client's chain in a full handshake (webpki: signatures up to a trust anchor,
//! key usage, the validity windows, the CRLs and their freshness) and does not in a resumed one: it
//! restores the chain stored with the session. Every resumption is therefore judged again
//! ([`super::judge_resumption`]), which cost a full chain verification (ECDSA/RSA signature checks)
//! per resumed handshake. [`ListenerVerifier`] wraps the listener's webpki verifier and remembers,
//! for each chain it accepted, the time window in which that verdict holds; a resumption inside
//! the window is admitted without checking the signatures again.
//!
//! Why that is the same verdict:
//! - One verifier has fixed trust anchors, CRLs and options: a reload builds a new one, with an
//!   empty memory, so a new CRL or CA is never answered from the old verdicts.
//! - For one verifier and one chain, webpki's verdict depends on the time only through the
//!   certificates' validity (`notBefore ≤ now ≤ notAfter`) and the CRLs' freshness
//!   (`now < nextUpdate`). A chain accepted once is accepted at any time from the latest
//!   `notBefore` of its certificates to the earliest of their `notAfter` and of every CRL's
//!   `nextUpdate`. The window is taken over every certificate the client sent, used in the path or
//!   not, and over every CRL of the verifier, consulted or not: it can only be narrower than the
//!   true one, and `notAfter` is taken as exclusive, one second early.
//! - The key is the SHA-256 of the exact chain, leaf first, each certificate length-prefixed.
//! - Only acceptances are remembered; a refused chain is verified again every time.
//! - A full handshake always verifies; it is what fills the memory. The proof of possession (the
//!   client's `CertificateVerify` signature) is never remembered: it is checked in every full
//!   handshake, and a resumption proves possession of the session's secret instead.
//!
//! Bound: at most [`MAX_REMEMBERED`] chains per verifier, about 80 B each (≈ 5 MiB). A client can
//! only add a chain the verifier accepts, so only with a certificate the operator's CA issued and
//! has not revoked. When the memory is full it is emptied before the next chain is added
//! (amortised O(1) per handshake; the chains are verified again as they come back).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::{Digest, Sha256};

/// Chains remembered per verifier at most.
pub const MAX_REMEMBERED: usize = 65_536;

/// The client-certificate verifier of one TLS listener (in its `ServerConfig` and in the
/// snapshot, one instance for both), with its memory of accepted chains.
#[derive(Debug)]
pub struct ListenerVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// The earliest `nextUpdate` of the verifier's CRLs (unix seconds); `None` without CRLs.
    crls_until: Option<u64>,
    accepted: Mutex<HashMap<[u8; 32], Window>>,
    max: usize,
    /// Chains verified in full (by `inner`), accepted or not.
    verified: AtomicU64,
}

/// When a remembered verdict holds: `from <= now < until`, unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    from: u64,
    until: u64,
}

impl Window {
    fn holds(self, now: u64) -> bool {
        self.from <= now && now < self.until
    }
}

impl ListenerVerifier {
    /// Wraps `inner`, a verifier whose CRLs' earliest `nextUpdate` is `crls_until`
    /// ([`earliest_next_update`] of exactly the CRLs it was built with).
    #[must_use]
    pub fn new(inner: Arc<dyn ClientCertVerifier>, crls_until: Option<u64>) -> Self {
        Self::with_max(inner, crls_until, MAX_REMEMBERED)
    }

    /// As [`ListenerVerifier::new`], remembering at most `max` chains.
    #[must_use]
    pub fn with_max(
        inner: Arc<dyn ClientCertVerifier>,
        crls_until: Option<u64>,
        max: usize,
    ) -> Self {
        Self {
            inner,
            crls_until,
            accepted: Mutex::new(HashMap::new()),
            max,
            verified: AtomicU64::new(0),
        }
    }

    /// Would `chain` (leaf first) pass a full handshake at `now`? Answered from the memory when
    /// this verifier accepted the same chain and `now` is inside that verdict's window, else by
    /// verifying it ([`super::reverify`], which remembers an acceptance).
    ///
    /// # Errors
    /// The rustls error a full handshake would have failed with.
    pub fn judge_resumed(
        &self,
        chain: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        if let Some((leaf, intermediates)) = chain.split_first()
            && self.remembers(leaf, intermediates, now)
        {
            return Ok(());
        }
        super::reverify(self, chain, now)
    }

    /// How many chains are remembered now.
    #[must_use]
    pub fn remembered(&self) -> usize {
        self.lock().len()
    }

    /// How many chains this verifier has verified in full (signatures and all), accepted or not:
    /// what the memory saves is the difference to the judgements made.
    #[must_use]
    pub fn verified_in_full(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 32], Window>> {
        // The map is consistent after every statement; a panic elsewhere cannot break it.
        self.accepted.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remembers(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> bool {
        let key = chain_key(leaf, intermediates);
        self.lock()
            .get(&key)
            .is_some_and(|w| w.holds(now.as_secs()))
    }

    fn remember(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) {
        let key = chain_key(leaf, intermediates);
        if self
            .lock()
            .get(&key)
            .is_some_and(|w| w.holds(now.as_secs()))
        {
            // A returning device: its certificates are not parsed again.
            return;
        }
        let Some(window) = chain_window(leaf, intermediates, self.crls_until) else {
            return;
        };
        if !window.holds(now.as_secs()) {
            return;
        }
        let mut accepted = self.lock();
        if accepted.len() >= self.max && !accepted.contains_key(&key) {
            accepted.clear();
        }
        if self.max > 0 {
            accepted.insert(key, window);
        }
    }
}

impl ClientCertVerifier for ListenerVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.verified.fetch_add(1, Ordering::Relaxed);
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.remember(end_entity, intermediates, now);
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

/// SHA-256 of the chain, leaf first, each certificate prefixed by its length.
fn chain_key(leaf: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> [u8; 32] {
    let mut h = Sha256::new();
    for cert in std::iter::once(leaf).chain(intermediates) {
        // A certificate longer than 4 GiB cannot arrive in a TLS record; the length is only a
        // separator, so saturating keeps distinct chains distinct.
        let len = u32::try_from(cert.len()).unwrap_or(u32::MAX);
        h.update(len.to_be_bytes());
        h.update(cert.as_ref());
    }
    h.finalize().into()
}

/// The window in which a verdict on this chain holds: from the latest `notBefore` to the
/// earliest `notAfter` (exclusive) and `crls_until`. `None` (nothing remembered) when a
/// certificate's dates cannot be read or lie before 1970.
fn chain_window(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    crls_until: Option<u64>,
) -> Option<Window> {
    let mut window = Window {
        from: 0,
        until: crls_until.unwrap_or(u64::MAX),
    };
    for cert in std::iter::once(leaf).chain(intermediates) {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        let validity = parsed.validity();
        let from = u64::try_from(validity.not_before.timestamp()).ok()?;
        let until = u64::try_from(validity.not_after.timestamp()).ok()?;
        window.from = window.from.max(from);
        window.until = window.until.min(until);
    }
    Some(window)
}

/// The earliest `nextUpdate` of `crls` (unix seconds); `None` without CRLs. A CRL whose dates
/// cannot be read (webpki would not have loaded it) or that has no `nextUpdate` gives 0: nothing
/// is remembered.
#[must_use]
pub fn earliest_next_update(crls: &[CertificateRevocationListDer<'_>]) -> Option<u64> {
    crls.iter()
        .map(|der| {
            x509_parser::parse_x509_crl(der.as_ref())
                .ok()
                .and_then(|(_, crl)| crl.next_update())
                .and_then(|t| u64::try_from(t.timestamp()).ok())
                .unwrap_or(0)
        })
        .min()
}
