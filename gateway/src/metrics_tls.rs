//! TLS metrics beyond the contract (README.md, "Metrics beyond the contract"): the dates of the
//! files an operator must renew in time (CRL `thisUpdate`/`nextUpdate`, server certificate
//! `notAfter`), the days left on the client certificates that connect, and session resumptions.
//!
//! [`set_tls_file_gauges`] reads the files named by the configuration; the reload code calls it
//! again after every reload that may have changed them. Label values come from the configuration
//! (listener names, CRL file names), so the series are bounded. A file that disappeared from the
//! configuration keeps its last series until restart (the recorder cannot drop a series).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use metrics::{counter, gauge, histogram};
use x509_parser::prelude::FromDer;

use crate::config::Config;
use crate::metrics as m;
use crate::tls;

const SECONDS_PER_DAY: f64 = 86_400.0;

/// Exports the per-TLS-listener families from start-up (resumptions at 0, the handshake duration
/// histogram with empty buckets) and sets the file gauges. Call once at start, after
/// [`crate::metrics::init`].
pub fn init(config: &Config) {
    for l in &config.listeners {
        if l.tls.is_some() {
            counter!(m::TLS_RESUMPTIONS_TOTAL, "listener" => l.name.clone()).absolute(0);
            let _ = histogram!(m::TLS_HANDSHAKE_DURATION_SECONDS, "listener" => l.name.clone());
        }
    }
    set_tls_file_gauges(config);
}

/// Sets `crl_this_update_timestamp_seconds` / `crl_next_update_timestamp_seconds` for every CRL
/// file of every TLS listener, and `server_certificate_expiry_timestamp_seconds` for every TLS
/// listener, from the files as they are now. A file that cannot be read is logged and skipped
/// (at start the same files were already loaded, so this only happens when one changes between
/// the two reads).
pub fn set_tls_file_gauges(config: &Config) {
    for l in &config.listeners {
        let Some(t) = &l.tls else { continue };
        match server_not_after(&t.cert) {
            Ok(not_after) => {
                gauge!(m::SERVER_CERT_EXPIRY, "listener" => l.name.clone())
                    .set(unix_f64(not_after));
            }
            Err(e) => {
                tracing::warn!(listener = %l.name, file = %t.cert.display(), error = %e, "cannot read the server certificate's expiry");
            }
        }
        let files = t.crl_files();
        let labels = crl_labels(&files);
        for (path, label) in files.iter().zip(labels) {
            let infos = match tls::crl_metadata(std::slice::from_ref(path)) {
                Ok(infos) => infos,
                Err(e) => {
                    tracing::warn!(listener = %l.name, file = %path.display(), error = %e, "cannot read the CRL's dates");
                    continue;
                }
            };
            if let Some(this) = infos.iter().map(|i| i.this_update_unix).min() {
                gauge!(m::CRL_THIS_UPDATE, "listener" => l.name.clone(), "crl" => label.clone())
                    .set(unix_f64(this));
            }
            if let Some(next) = infos.iter().filter_map(|i| i.next_update_unix).min() {
                gauge!(m::CRL_NEXT_UPDATE, "listener" => l.name.clone(), "crl" => label)
                    .set(unix_f64(next));
            }
        }
    }
}

/// Observes the days left until `not_after_unix` (a client certificate's `notAfter`).
pub fn observe_client_certificate(not_after_unix: i64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    histogram!(m::CLIENT_CERT_REMAINING_DAYS)
        .record((unix_f64(not_after_unix) - now) / SECONDS_PER_DAY);
}

/// Counts the handshake of `conn` in `tls_resumptions_total` when it resumed a session.
pub fn count_resumption(listener: &str, conn: &rustls::CommonState) {
    if conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        counter!(m::TLS_RESUMPTIONS_TOTAL, "listener" => listener.to_owned()).increment(1);
    }
}

/// The `crl` label of each file: its file name, or its whole path when two files of the same
/// listener share a file name.
fn crl_labels(paths: &[PathBuf]) -> Vec<String> {
    let name = |p: &Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let mut seen = HashSet::new();
    let clash: HashSet<String> = paths
        .iter()
        .map(|p| name(p))
        .filter(|n| !seen.insert(n.clone()))
        .collect();
    paths
        .iter()
        .map(|p| {
            let n = name(p);
            if clash.contains(&n) {
                p.display().to_string()
            } else {
                n
            }
        })
        .collect()
}

/// `notAfter` of the leaf (first certificate) of a PEM chain, unix seconds.
fn server_not_after(path: &Path) -> Result<i64, String> {
    let chain = tls::load_certs(path).map_err(|e| e.to_string())?;
    let leaf = chain.first().ok_or("no certificate")?;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| e.to_string())?;
    Ok(cert.validity().not_after.timestamp())
}

/// Unix seconds as f64 (exact: far below 2^53).
#[allow(clippy::cast_precision_loss, clippy::as_conversions)]
fn unix_f64(t: i64) -> f64 {
    t as f64
}

#[cfg(test)]
mod tests {
    use super::crl_labels;
    use std::path::PathBuf;

    #[test]
    fn crl_label_is_the_file_name_unless_two_files_share_it() {
        let labels = crl_labels(&[
            PathBuf::from("/pki/a/ca.crl"),
            PathBuf::from("/pki/b/ca.crl"),
            PathBuf::from("/pki/root.crl"),
        ]);
        assert_eq!(labels, ["/pki/a/ca.crl", "/pki/b/ca.crl", "root.crl"]);
    }
}
