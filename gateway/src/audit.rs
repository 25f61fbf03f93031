//! The JSON-lines audit log: one object per line for every security decision that refuses
//! something (TLS failure, auth failure, ban, ACL deny, rate limit, revocation of a live session).
//!
//! Lines are formatted on the caller's task and handed to one writer thread through a bounded
//! queue, so a slow disk never stalls the relay; when the queue is full the line is dropped and
//! counted in `mqtt_gateway_audit_dropped_total` (a flood that large is itself visible in the other
//! metrics). The file is reopened on request (SIGHUP), for logrotate. Passwords and whole packets
//! are never part of an event: the fields are fixed below.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::SystemTime;

use serde::Serialize;

/// Name of the counter of audit lines lost to a full queue.
pub const AUDIT_DROPPED_TOTAL: &str = "mqtt_gateway_audit_dropped_total";

/// Lines that may wait for the writer thread.
const QUEUE: usize = 8192;

/// One audit event. Optional fields are left out of the JSON when unknown.
#[derive(Debug, Default, Serialize)]
pub struct AuditEvent<'a> {
    /// What happened: `tls_failed`, `auth_failed`, `banned`, `acl_denied`, `rate_limited`,
    /// `session_revoked`, `quota_exceeded`, `malformed`, `reload_rejected`, ...
    pub event: &'static str,
    /// The listener's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listener: Option<&'a str>,
    /// The client's address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<SocketAddr>,
    /// The authenticated principal, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<&'a str>,
    /// The MQTT client id, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
    /// Why (a metric label value, e.g. `revoked`, `bad_credentials`).
    pub reason: &'a str,
    /// The policy rule that decided, as `file:line`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The action of an ACL decision (`publish`, `subscribe`, `receive`, `will`, `connect`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<&'a str>,
    /// The topic or filter of an ACL decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<&'a str>,
    /// SHA-256 fingerprint of the client certificate (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_fingerprint: Option<&'a str>,
    /// Serial number of the client certificate (hex).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_serial: Option<&'a str>,
    /// Free text for the operator (an error message with file:line for a rejected reload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    #[serde(flatten)]
    event: &'a AuditEvent<'a>,
}

enum Msg {
    Line(String),
    Reopen,
}

/// The JSON line of `event` at `time`, newline included. The code points that reorder or break
/// what an operator reads (U+2028, U+2029, the bidi controls U+202A..U+202E and U+2066..U+2069)
/// are written as `\uXXXX` escapes: the decoder refuses them in MQTT strings, but a certificate's
/// CN or a file name can still carry them. They can only occur inside JSON strings, where the
/// escape means the same character.
fn format_line(event: &AuditEvent<'_>, time: SystemTime) -> Option<String> {
    let line = Line {
        time: humantime::format_rfc3339_millis(time).to_string(),
        event,
    };
    let text = serde_json::to_string(&line).ok()?;
    let mut out = String::with_capacity(text.len() + 1);
    for c in text.chars() {
        if is_reordering(c) {
            let _ = std::fmt::Write::write_fmt(&mut out, format_args!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out.push('\n');
    Some(out)
}

/// Line/paragraph separators and the bidi embeddings, overrides and isolates.
fn is_reordering(c: char) -> bool {
    matches!(u32::from(c), 0x2028..=0x202e | 0x2066..=0x2069)
}

/// Handle to the audit log; cheap to clone.
#[derive(Debug, Clone)]
pub struct Audit {
    tx: SyncSender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Msg")
    }
}

impl Audit {
    /// Starts the writer thread: appending to `path`, or to stderr when `None`.
    ///
    /// # Errors
    /// The file cannot be opened for appending.
    pub fn start(path: Option<&Path>) -> io::Result<Self> {
        let sink = Sink::open(path.map(Path::to_path_buf))?;
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || writer(sink, rx))?;
        Ok(Self { tx })
    }

    /// Records an event (never blocks).
    pub fn record(&self, event: &AuditEvent<'_>) {
        let Some(text) = format_line(event, SystemTime::now()) else {
            return;
        };
        match self.tx.try_send(Msg::Line(text)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => metrics::counter!(AUDIT_DROPPED_TOTAL).increment(1),
            Err(TrySendError::Disconnected(_)) => {
                tracing::error!("audit log writer has stopped; event lost");
            }
        }
    }

    /// Asks the writer to reopen its file (after logrotate moved it).
    pub fn reopen(&self) {
        let _ = self.tx.try_send(Msg::Reopen);
    }
}

struct Sink {
    path: Option<PathBuf>,
    out: BufWriter<Box<dyn Write + Send>>,
}

impl Sink {
    fn open(path: Option<PathBuf>) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = match &path {
            Some(p) => Box::new(open_append(p)?),
            None => Box::new(io::stderr()),
        };
        Ok(Self {
            path,
            out: BufWriter::new(out),
        })
    }
}

fn open_append(p: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(p)
}

fn writer(mut sink: Sink, rx: Receiver<Msg>) {
    while let Ok(msg) = rx.recv() {
        handle(&mut sink, msg);
        // Drain what else is queued, then flush once.
        while let Ok(msg) = rx.try_recv() {
            handle(&mut sink, msg);
        }
        if let Err(e) = sink.out.flush() {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

fn handle(sink: &mut Sink, msg: Msg) {
    match msg {
        Msg::Line(text) => {
            if let Err(e) = sink.out.write_all(text.as_bytes()) {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        }
        Msg::Reopen => {
            let _ = sink.out.flush();
            match Sink::open(sink.path.clone()) {
                Ok(new) => *sink = new,
                Err(e) => {
                    tracing::error!(error = %e, "cannot reopen the audit log; keeping the old file")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20, item 11: separators and bidi controls never reach an audit line raw, whatever
    /// field carries them; the line is still one JSON object that reads back to the same text.
    #[test]
    fn reordering_code_points_are_escaped_in_every_field() {
        let nasty = "dev\u{202e}gpj.exe\u{2028}x\u{2069}";
        let event = AuditEvent {
            event: "acl_denied",
            principal: Some(nasty),
            client_id: Some(nasty),
            reason: "publish",
            topic: Some(nasty),
            detail: Some(nasty),
            ..AuditEvent::default()
        };
        let line = format_line(&event, SystemTime::UNIX_EPOCH).unwrap();
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line}"
        );
        assert!(!line.chars().any(is_reordering), "{line}");
        assert!(line.contains("dev\\u202egpj.exe\\u2028x\\u2069"), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        for field in ["principal", "client_id", "topic", "detail"] {
            assert_eq!(back[field], nasty, "{field}");
        }
        // The good case: other non-ASCII text is written as it is.
        let event = AuditEvent {
            event: "acl_denied",
            topic: Some("capteurs/é/€/\u{5e9}"),
            ..AuditEvent::default()
        };
        let line = format_line(&event, SystemTime::UNIX_EPOCH).unwrap();
        assert!(line.contains("capteurs/é/€/\u{5e9}"), "{line}");
    }
}
