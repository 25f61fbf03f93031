//! Builds the rustls server side of one TLS listener from its `[listener.tls]`
//! table: server certificate and key, client-certificate verifier (trust
//! anchors, CRLs, revocation scope), protocol versions and a fresh session
//! cache. Also the pieces live revocation needs: the verifier on its own and
//! [`reverify`] for the stored chains of live sessions.
//!
//! Security decisions made here (DEPENDENCIES.md §1.3–1.5):
//! - The crypto provider is always passed explicitly (aws-lc-rs); nothing relies
//!   on the process-default provider, which panics when two are compiled in.
//! - Unknown revocation status is refused (rustls' default, kept): a certificate
//!   that must be checked but whose issuer has no CRL here is refused.
//! - An expired CRL (past `nextUpdate`) refuses **every** client certificate it
//!   would be consulted for (`enforce_revocation_expiration`): fail closed rather
//!   than trust stale revocation data. Watch the CRL dates ([`crl_metadata`]) and
//!   publish a new CRL before `nextUpdate`.
//! - Every build gets a new, empty session cache. A resumed TLS session skips the
//!   client-certificate and CRL checks (rustls copies the stored chain without
//!   re-verifying it), so a cache carried over a CA/CRL reload would let a just-revoked
//!   client back in by resumption.
//! - Within one build time still passes: a session resumed after its certificate's
//!   `notAfter`, or after the CRL's `nextUpdate`, must be refused as a full handshake
//!   would be. Every resumed handshake is judged again by [`judge_resumption`] with the
//!   listener's current verifier at the current time before its first packet is read. The
//!   verifier remembers the chains it accepted and the window in which each verdict holds
//!   ([`ListenerVerifier`]), so a resumption inside it costs no signature check.
//! - The server picks the cipher suite: AES-128-GCM first, unless the client lists
//!   ChaCha20-Poly1305 first (a device without AES instructions), which then gets it
//!   ([`ServerTls`], [`client_hello`]). Both configs of a listener share one session cache.

pub mod client_hello;
pub mod failure;
mod load;
pub mod stream;
mod verified;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ServerSessionMemoryCache, VerifierBuilderError, WebPkiClientVerifier};
use rustls::{ServerConfig, SupportedProtocolVersion};

use crate::config::{ClientAuth, CrlScope, TlsConfig, TlsVersion};

pub use failure::{HandshakeFailure, classify, classify_rustls};
pub use load::{CrlInfo, crl_metadata, load_certs, load_crls, load_private_key, load_roots};
pub use stream::TlsStream;
pub use verified::{ListenerVerifier, MAX_REMEMBERED, earliest_next_update};

/// Sessions kept for resumption per `ServerConfig` (rustls' own default size).
const SESSION_CACHE_SIZE: usize = 256;

/// Why the TLS material of a listener could not be turned into a server config.
///
/// The larger sources are boxed to keep this (and the errors that wrap it) small.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}: cannot read", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("{}: invalid PEM", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the PEM reader found.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A file holds no item of the expected kind.
    #[error("{}: no {what} found", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
        /// `"certificate"`, `"private key"` or `"CRL"`.
        what: &'static str,
    },
    /// A CA certificate is not usable as a trust anchor.
    #[error("{}: certificate #{index} is not a usable trust anchor", .path.display())]
    Anchor {
        /// The `client_ca` file.
        path: PathBuf,
        /// 0-based position of the certificate in the file.
        index: usize,
        /// Why rustls refused it.
        #[source]
        source: Box<rustls::Error>,
    },
    /// A CRL does not parse (or uses an unsupported feature, e.g. delta CRLs).
    #[error("{}: CRL #{index} is invalid", .path.display())]
    Crl {
        /// The CRL file.
        path: PathBuf,
        /// 0-based position of the CRL in the file.
        index: usize,
        /// Why rustls-webpki refused it.
        #[source]
        source: Box<webpki::Error>,
    },
    /// The dates of a CRL could not be read.
    #[error("{}: CRL #{index}: cannot read thisUpdate/nextUpdate", .path.display())]
    CrlDates {
        /// The CRL file.
        path: PathBuf,
        /// 0-based position of the CRL in the file.
        index: usize,
        /// Why x509-parser refused it.
        #[source]
        source: x509_parser::error::X509Error,
    },
    /// The client-certificate verifier could not be built.
    #[error("{}: client certificate verifier refused its trust anchors or CRLs", .client_ca.display())]
    Verifier {
        /// The `client_ca` file.
        client_ca: PathBuf,
        /// Why rustls refused.
        #[source]
        source: Box<VerifierBuilderError>,
    },
    /// `client_auth` asks for client certificates but no `client_ca` was given.
    #[error("client_auth requires client_ca")]
    MissingClientCa,
    /// The server certificate chain and key do not form a usable pair.
    #[error("{} / {}: server certificate chain and private key refused", .cert.display(), .key.display())]
    CertKey {
        /// The `cert` file.
        cert: PathBuf,
        /// The `key` file.
        key: PathBuf,
        /// Why rustls refused (e.g. the key does not match the leaf certificate).
        #[source]
        source: Box<rustls::Error>,
    },
    /// The crypto provider does not support the configured protocol versions.
    #[error("TLS protocol versions refused by the crypto provider")]
    Versions {
        /// Why rustls refused.
        #[source]
        source: Box<rustls::Error>,
    },
}

/// The crypto provider of the gateway, always passed explicitly.
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// `min_version = "1.2"`.
static TLS12_AND_UP: [&SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];
/// `min_version = "1.3"`.
static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

/// Protocol versions from `min_version`.
fn versions(min: TlsVersion) -> &'static [&'static SupportedProtocolVersion] {
    match min {
        TlsVersion::Tls12 => &TLS12_AND_UP,
        TlsVersion::Tls13 => &TLS13_ONLY,
    }
}

/// The server side of one TLS listener: two rustls configs that differ only in the order of
/// their cipher suites, and share the certificate, the verifier and the session cache.
#[derive(Debug)]
pub struct ServerTls {
    /// AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305; for clients that put an AES suite first.
    aes_first: Arc<ServerConfig>,
    /// ChaCha20-Poly1305 first; for clients that put it first.
    chacha_first: Arc<ServerConfig>,
}

impl ServerTls {
    /// The config for a client whose connection starts with `head` (its ClientHello, or part
    /// of it): see [`client_hello::prefers_chacha`].
    #[must_use]
    pub fn for_client_hello(&self, head: &[u8]) -> Arc<ServerConfig> {
        if client_hello::prefers_chacha(head) == Some(true) {
            Arc::clone(&self.chacha_first)
        } else {
            Arc::clone(&self.aes_first)
        }
    }

    /// The config most clients get (AES-128-GCM preferred).
    #[must_use]
    pub fn default_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.aes_first)
    }
}

/// The provider's suites, stably reordered by `rank` (lower first).
fn ordered_provider(rank: fn(&rustls::SupportedCipherSuite) -> u8) -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites.sort_by_key(rank);
    Arc::new(provider)
}

/// AES-128-GCM before AES-256-GCM before the rest (ChaCha20), keeping the provider's order
/// (TLS 1.3 before 1.2) within each.
fn aes128_first(suite: &rustls::SupportedCipherSuite) -> u8 {
    let code = u16::from(suite.suite());
    if client_hello::AES_128_GCM.contains(&code) {
        0
    } else if client_hello::AES_256_GCM.contains(&code) {
        1
    } else {
        2
    }
}

/// ChaCha20 first, then the order of [`aes128_first`].
fn chacha_first(suite: &rustls::SupportedCipherSuite) -> u8 {
    if client_hello::CHACHA.contains(&u16::from(suite.suite())) {
        0
    } else {
        1 + aes128_first(suite)
    }
}

/// Builds a complete, new [`ServerTls`] for one listener: reads every file again, builds a new
/// verifier and a new, empty session cache (see the module doc for why the cache must never be
/// carried over), shared by its two configs.
///
/// # Errors
/// Any [`TlsError`]; each names the file that failed.
pub fn build_server_tls(tls: &TlsConfig) -> Result<Arc<ServerTls>, TlsError> {
    build_server_tls_with(tls, client_verifier(tls)?)
}

/// As [`build_server_tls`], with `verifier` (the listener's, from [`client_verifier`] of the
/// same `tls`) as its client-certificate verifier: the one instance the snapshot also holds,
/// so that a resumption is judged by the verifier that accepted the chain in full.
///
/// # Errors
/// Any [`TlsError`]; each names the file that failed.
pub fn build_server_tls_with(
    tls: &TlsConfig,
    verifier: Option<Arc<ListenerVerifier>>,
) -> Result<Arc<ServerTls>, TlsError> {
    let chain = load_certs(&tls.cert)?;
    let key = load_private_key(&tls.key)?;
    let cache: Arc<dyn rustls::server::StoresServerSessions> =
        ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    let build = |provider: Arc<CryptoProvider>| -> Result<Arc<ServerConfig>, TlsError> {
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions(tls.min_version))
            .map_err(|e| TlsError::Versions {
                source: Box::new(e),
            })?;
        let builder = match &verifier {
            Some(v) => {
                let v: Arc<dyn ClientCertVerifier> = v.clone();
                builder.with_client_cert_verifier(v)
            }
            None => builder.with_no_client_auth(),
        };
        let cert_key_error = |e: rustls::Error| TlsError::CertKey {
            cert: tls.cert.clone(),
            key: tls.key.clone(),
            source: Box::new(e),
        };
        let mut config = if tls.staple_ocsp {
            let certified =
                rustls::sign::CertifiedKey::from_der(chain.clone(), key.clone_key(), &provider)
                    .map_err(cert_key_error)?;
            builder.with_cert_resolver(Arc::new(crate::ocsp::staple::StapleResolver::new(
                certified,
                crate::ocsp::staple::staple_for(&tls.cert),
            )))
        } else {
            builder
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(cert_key_error)?
        };
        // The server's order decides; see the module doc.
        config.ignore_client_order = true;
        // rustls' builder already makes a new cache; set this build's own explicitly so that
        // the "never share the cache across builds" rule does not depend on a default.
        config.session_storage = Arc::clone(&cache);
        Ok(Arc::new(config))
    };
    Ok(Arc::new(ServerTls {
        aes_first: build(ordered_provider(aes128_first))?,
        chacha_first: build(ordered_provider(chacha_first))?,
    }))
}

/// [`build_server_tls`]'s config for clients that prefer AES (most of them).
///
/// # Errors
/// Any [`TlsError`]; each names the file that failed.
pub fn build_server_config(tls: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    build_server_tls(tls).map(|t| t.default_config())
}

/// Builds the client-certificate verifier of a listener from its `client_ca`,
/// `crl`, `crl_scope` and `client_auth`. `None` when `client_auth = "none"`
/// (no certificate is requested, so there is nothing to verify).
///
/// # Errors
/// Unreadable or invalid CA/CRL files, or `client_auth` without `client_ca`.
pub fn client_verifier(tls: &TlsConfig) -> Result<Option<Arc<ListenerVerifier>>, TlsError> {
    client_verifier_with(tls, provider())
}

fn client_verifier_with(
    tls: &TlsConfig,
    provider: Arc<CryptoProvider>,
) -> Result<Option<Arc<ListenerVerifier>>, TlsError> {
    if tls.client_auth == ClientAuth::None {
        return Ok(None);
    }
    let client_ca = tls.client_ca.as_ref().ok_or(TlsError::MissingClientCa)?;
    let roots = load_roots(client_ca)?;
    let mut crls = Vec::new();
    for path in &tls.crl_files() {
        crls.extend(load_crls(path)?);
    }
    // Read before the builder takes the CRLs: the window of every verdict the verifier remembers.
    let crls_until = earliest_next_update(&crls);
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .with_crls(crls)
        .enforce_revocation_expiration();
    if tls.crl_scope == CrlScope::Leaf {
        builder = builder.only_check_end_entity_revocation();
    }
    if tls.client_auth == ClientAuth::Optional {
        builder = builder.allow_unauthenticated();
    }
    let inner = builder.build().map_err(|e| TlsError::Verifier {
        client_ca: client_ca.clone(),
        source: Box::new(e),
    })?;
    Ok(Some(Arc::new(ListenerVerifier::new(inner, crls_until))))
}

/// Judges a completed handshake as a full one would have been judged at `now`. A full
/// handshake was verified by rustls and passes unchanged; a resumed one (TLS 1.2 session id,
/// TLS 1.3 ticket) was not verified at all (rustls restores the chain stored when the session
/// was made), so its `chain` is judged again by `verifier` ([`ListenerVerifier::judge_resumed`]):
/// validity window, CRLs and their freshness, key usage. `verifier` is the listener's current
/// one (`None` when the listener asks for no certificate).
///
/// # Errors
/// The rustls error a full handshake would have failed with (classify it with
/// [`classify_rustls`]).
pub fn judge_resumption(
    kind: Option<rustls::HandshakeKind>,
    verifier: Option<&ListenerVerifier>,
    chain: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), rustls::Error> {
    if kind != Some(rustls::HandshakeKind::Resumed) {
        return Ok(());
    }
    match verifier {
        Some(v) => v.judge_resumed(chain, now),
        None => Ok(()),
    }
}

/// Would `chain` (leaf first, as stored from a live session's
/// `peer_certificates()`) pass `verifier` in a new handshake at `now`?
/// Used after a CA/CRL reload to close live sessions whose certificate is no
/// longer acceptable.
///
/// An empty chain passes only if the verifier lets clients without a
/// certificate in (`client_auth = "optional"`); a verifier that never asks for
/// certificates passes every chain, as its handshakes would.
///
/// # Errors
/// The rustls error the handshake would have failed with, e.g.
/// `InvalidCertificate(Revoked)`; classify it with [`classify_rustls`].
pub fn reverify(
    verifier: &dyn ClientCertVerifier,
    chain: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<(), rustls::Error> {
    if !verifier.offer_client_auth() {
        // rustls' NoClientAuth verifier panics if asked to verify; nothing to check.
        return Ok(());
    }
    match chain.split_first() {
        Some((leaf, intermediates)) => verifier
            .verify_client_cert(leaf, intermediates, now)
            .map(|_| ()),
        None if verifier.client_auth_mandatory() => Err(rustls::Error::NoCertificatesPresented),
        None => Ok(()),
    }
}
