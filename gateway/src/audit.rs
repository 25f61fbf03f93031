//! The JSON-lines audit log: one object per line for every security decision that refuses
//! something (TLS failure, auth failure, ban, ACL deny, rate limit, revocation of a live session).
//!
//! Lines are formatted on the caller's task and handed to one writer thread through a queue
//! bounded in bytes ([`MAX_QUEUED_BYTES`]), so a slow disk never stalls the relay and a stalled one
//! never holds more than that; when the queue is full the line is dropped and counted in
//! `mqtt_gateway_audit_dropped_total` (a flood that large is itself visible in the other metrics).
//! The file is reopened on request (SIGHUP), for logrotate. Passwords and whole packets are never
//! part of an event: the fields are fixed below, and the client-chosen strings in them (client id,
//! principal, topic) are cut at [`MAX_FIELD_BYTES`].
//!
//! A session's ACL denials have a budget ([`DenialBudget`]): the first
//! [`DENIAL_LINES_PER_INTERVAL`] of each [`DENIAL_INTERVAL`] are written in full, the rest are
//! counted and written as one `acl_denied_summary` line (counts per action), so one client
//! cannot fill the disk or the queue with denials. Refusals before a session have the same kind
//! of budget per client address ([`Audit::record_refusal`]: `refusals_summary`).

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde::{Serialize, Serializer};

/// Name of the counter of audit lines lost to a full queue.
pub const AUDIT_DROPPED_TOTAL: &str = "mqtt_gateway_audit_dropped_total";

/// Bytes of lines that may wait for the writer thread (a stalled disk holds no more than this).
pub const MAX_QUEUED_BYTES: usize = 8 * 1024 * 1024;

/// What a queued line costs besides its text (the `String` and the queue's node).
const LINE_OVERHEAD: usize = 64;

/// Client-chosen strings (client id, principal, topic: up to 64 KiB each in MQTT) are cut to this
/// many bytes in a line, at a character boundary, and end with `…` when cut.
pub const MAX_FIELD_BYTES: usize = 1024;

/// Denial lines a session writes in full per [`DENIAL_INTERVAL`]; the rest are summarised.
pub const DENIAL_LINES_PER_INTERVAL: u32 = 10;

/// The interval of a session's denial budget.
pub const DENIAL_INTERVAL: Duration = Duration::from_secs(60);

/// Connection refusal lines (before a session: bans, connection limits, TLS failures, refused
/// CONNECTs) one client address writes in full per [`DENIAL_INTERVAL`]; the rest are summarised.
pub const REFUSAL_LINES_PER_INTERVAL: u32 = 20;

/// Client addresses whose refusal budget is tracked at most; beyond, lines are written (the
/// queue's byte bound still holds) until the sweep frees entries.
pub const MAX_BUDGET_ADDRESSES: usize = 10_000;

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
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "cut")]
    pub principal: Option<&'a str>,
    /// The MQTT client id, when known.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "cut")]
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
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "cut")]
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
    /// `crl_fetch_failed`: the CRL URL.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "cut")]
    pub url: Option<&'a str>,
    /// `refusals_summary`: the client address (IPv6: its /64) whose lines were summarised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// `acl_denied_summary`, `refusals_summary`: the lines not written, by action or by event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<&'a BTreeMap<&'static str, u64>>,
    /// `acl_denied_summary`: when the first of them happened (RFC 3339 UTC, milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// `s` cut to at most [`MAX_FIELD_BYTES`] at a character boundary, `…` appended when cut.
fn cut_str(s: &str) -> std::borrow::Cow<'_, str> {
    if s.len() <= MAX_FIELD_BYTES {
        return s.into();
    }
    let mut end = MAX_FIELD_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or_default()).into()
}

#[allow(clippy::ref_option, clippy::trivially_copy_pass_by_ref)] // serde's `serialize_with` signature
fn cut<S: Serializer>(v: &Option<&str>, ser: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(s) => ser.serialize_str(&cut_str(s)),
        None => ser.serialize_none(),
    }
}

/// A session's budget of ACL denial lines: pure, time passed in. Per [`DENIAL_INTERVAL`] (from
/// the first denial of the interval), the first [`DENIAL_LINES_PER_INTERVAL`] denials are written
/// as lines; later ones are counted by action, and the counts are written as one
/// `acl_denied_summary` line when the next interval begins (at the session's next denial) or
/// when the session ends.
#[derive(Debug)]
pub struct DenialBudget {
    /// Lines written in full per interval.
    lines: u32,
    interval_start: Option<Instant>,
    written: u32,
    suppressed: BTreeMap<&'static str, u64>,
    since: Option<SystemTime>,
}

impl Default for DenialBudget {
    fn default() -> Self {
        Self::new(DENIAL_LINES_PER_INTERVAL)
    }
}

/// Counts of denials not written as lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenialSummary {
    /// By action (`publish`, `subscribe`, `receive`, ...).
    pub suppressed: BTreeMap<&'static str, u64>,
    /// When the first of them happened.
    pub since: SystemTime,
}

impl DenialBudget {
    /// A budget of `lines` full lines per [`DENIAL_INTERVAL`].
    #[must_use]
    pub const fn new(lines: u32) -> Self {
        Self {
            lines,
            interval_start: None,
            written: 0,
            suppressed: BTreeMap::new(),
            since: None,
        }
    }

    /// Whether the current interval has ended at `now` (or none began).
    fn interval_over(&self, now: Instant) -> bool {
        self.interval_start
            .is_none_or(|start| now.saturating_duration_since(start) >= DENIAL_INTERVAL)
    }

    /// One denial of `action` at `now` (`wall`: the same moment on the wall clock): the summary
    /// of the interval that ended, if one is due, and whether this denial gets its own line.
    pub fn denial(
        &mut self,
        action: &'static str,
        now: Instant,
        wall: SystemTime,
    ) -> (Option<DenialSummary>, bool) {
        let mut due = None;
        if self.interval_over(now) {
            due = self.finish();
            self.interval_start = Some(now);
            self.written = 0;
        }
        if self.written < self.lines {
            self.written += 1;
            return (due, true);
        }
        let n = self.suppressed.entry(action).or_insert(0);
        *n = n.saturating_add(1);
        self.since.get_or_insert(wall);
        (due, false)
    }

    /// The summary still due (at the end of the session), if any denial was not written.
    pub fn finish(&mut self) -> Option<DenialSummary> {
        let since = self.since.take()?;
        Some(DenialSummary {
            suppressed: std::mem::take(&mut self.suppressed),
            since,
        })
    }
}

impl DenialSummary {
    /// Its audit line, with the session's fields from `base` (listener, peer, principal, client
    /// id, certificate).
    pub fn record(&self, audit: &Audit, base: AuditEvent<'_>) {
        audit.record(&AuditEvent {
            event: "acl_denied_summary",
            reason: "budget",
            suppressed: Some(&self.suppressed),
            since: Some(humantime::format_rfc3339_millis(self.since).to_string()),
            ..base
        });
    }
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
    tx: Sender<Msg>,
    /// Bytes of the lines in the queue (each counted with [`LINE_OVERHEAD`]).
    queued: Arc<AtomicUsize>,
    /// Per client address (IPv6 by /64), the budget of connection refusal lines.
    refusals: Arc<Mutex<HashMap<IpAddr, DenialBudget>>>,
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
        Self::start_sink(Sink::open(path.map(Path::to_path_buf))?)
    }

    /// Starts the writer thread on any writer (tests: a stalled sink).
    ///
    /// # Errors
    /// The thread cannot be started.
    pub fn start_writer(out: Box<dyn Write + Send>) -> io::Result<Self> {
        Self::start_sink(Sink {
            path: None,
            out: BufWriter::new(out),
        })
    }

    fn start_sink(sink: Sink) -> io::Result<Self> {
        let (tx, rx) = channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer_queued = Arc::clone(&queued);
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || writer(sink, &rx, &writer_queued))?;
        Ok(Self {
            tx,
            queued,
            refusals: Arc::default(),
        })
    }

    /// Records a refusal of a connection before its session (its `peer` is the client), within
    /// the address's budget: the first [`REFUSAL_LINES_PER_INTERVAL`] of an interval in full, the
    /// rest counted by event into one `refusals_summary` line (at the address's next refusal
    /// after the interval, or at [`Audit::sweep_refusals`]).
    pub fn record_refusal(&self, event: &AuditEvent<'_>) {
        let Some(peer) = event.peer else {
            return self.record(event);
        };
        let address = crate::limits::address_key(peer.ip());
        let (due, write) = {
            let mut map = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
            if map.len() >= MAX_BUDGET_ADDRESSES && !map.contains_key(&address) {
                (None, true)
            } else {
                map.entry(address)
                    .or_insert_with(|| DenialBudget::new(REFUSAL_LINES_PER_INTERVAL))
                    .denial(event.event, Instant::now(), SystemTime::now())
            }
        };
        if let Some(summary) = due {
            self.record_refusals_summary(address, &summary);
        }
        if write {
            self.record(event);
        }
    }

    fn record_refusals_summary(&self, address: IpAddr, summary: &DenialSummary) {
        self.record(&AuditEvent {
            event: "refusals_summary",
            reason: "budget",
            address: Some(address),
            suppressed: Some(&summary.suppressed),
            since: Some(humantime::format_rfc3339_millis(summary.since).to_string()),
            ..AuditEvent::default()
        });
    }

    /// Writes the summaries of the addresses whose interval has ended and forgets them (called
    /// every few seconds, so that an address that went quiet is summarised too).
    pub fn sweep_refusals(&self, now: Instant) {
        let mut due = Vec::new();
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|address, budget| {
                if !budget.interval_over(now) {
                    return true;
                }
                if let Some(summary) = budget.finish() {
                    due.push((*address, summary));
                }
                false
            });
        for (address, summary) in due {
            self.record_refusals_summary(address, &summary);
        }
    }

    /// Client addresses whose refusal budget is tracked now.
    #[must_use]
    pub fn refusal_addresses(&self) -> usize {
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Bytes of lines waiting for the writer now.
    #[must_use]
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    /// Records an event (never blocks).
    pub fn record(&self, event: &AuditEvent<'_>) {
        let Some(text) = format_line(event, SystemTime::now()) else {
            return;
        };
        let cost = text.len() + LINE_OVERHEAD;
        let before = self.queued.fetch_add(cost, Ordering::AcqRel);
        if before.saturating_add(cost) > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(cost, Ordering::AcqRel);
            metrics::counter!(AUDIT_DROPPED_TOTAL).increment(1);
            return;
        }
        if self.tx.send(Msg::Line(text)).is_err() {
            self.queued.fetch_sub(cost, Ordering::AcqRel);
            tracing::error!("audit log writer has stopped; event lost");
        }
    }

    /// Asks the writer to reopen its file (after logrotate moved it).
    pub fn reopen(&self) {
        let _ = self.tx.send(Msg::Reopen);
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

fn writer(mut sink: Sink, rx: &Receiver<Msg>, queued: &AtomicUsize) {
    while let Ok(msg) = rx.recv() {
        handle(&mut sink, msg, queued);
        // Drain what else is queued, then flush once.
        while let Ok(msg) = rx.try_recv() {
            handle(&mut sink, msg, queued);
        }
        if let Err(e) = sink.out.flush() {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

fn handle(sink: &mut Sink, msg: Msg, queued: &AtomicUsize) {
    match msg {
        Msg::Line(text) => {
            // Off the queue's budget once taken (the write below may stall on the disk).
            queued.fetch_sub(text.len() + LINE_OVERHEAD, Ordering::AcqRel);
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

    /// A sink that never returns from `write`: the disk has stalled.
    struct Stalled;

    impl Write for Stalled {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            loop {
                std::thread::park();
            }
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Field finding (issue 20, item 5): with a stalled sink, long-topic denials held 177 MiB in
    /// a queue bounded by lines. Bounded by bytes, the queue holds at most `MAX_QUEUED_BYTES`
    /// whatever the lines, and each client-chosen field is cut at `MAX_FIELD_BYTES`.
    #[test]
    fn a_stalled_sink_holds_at_most_the_byte_bound() {
        let audit = Audit::start_writer(Box::new(Stalled)).unwrap();
        let topic = "t/".repeat(32 * 1024);
        let client_id = "c".repeat(65_535);
        let mut most = 0;
        for _ in 0..20_000 {
            audit.record(&AuditEvent {
                event: "acl_denied",
                reason: "publish",
                action: Some("publish"),
                topic: Some(&topic),
                client_id: Some(&client_id),
                principal: Some(&client_id),
                ..AuditEvent::default()
            });
            most = most.max(audit.queued_bytes());
        }
        assert!(
            most <= MAX_QUEUED_BYTES,
            "{most} bytes queued, bound {MAX_QUEUED_BYTES}"
        );
        assert!(most > MAX_QUEUED_BYTES / 2, "{most}: the queue filled up");
    }

    #[test]
    fn client_chosen_fields_are_cut_at_a_character_boundary() {
        assert_eq!(cut_str("short"), "short");
        let exact = "x".repeat(MAX_FIELD_BYTES);
        assert_eq!(cut_str(&exact), exact);
        // 'é' is two bytes: the cut backs off to the boundary before it.
        let long = format!("{}é{}", "x".repeat(MAX_FIELD_BYTES - 1), "y".repeat(10));
        let cut = cut_str(&long);
        assert_eq!(cut, format!("{}…", "x".repeat(MAX_FIELD_BYTES - 1)));
        let line = serde_json::to_string(&AuditEvent {
            event: "acl_denied",
            reason: "publish",
            topic: Some(&long),
            ..AuditEvent::default()
        })
        .unwrap();
        assert!(line.len() < MAX_FIELD_BYTES + 100, "{}", line.len());
    }

    /// A writer whose bytes the test can read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        /// The lines written, once `done` holds for them (the writer thread runs on its own).
        fn lines_when(
            &self,
            done: impl Fn(&[serde_json::Value]) -> bool,
        ) -> Vec<serde_json::Value> {
            for _ in 0..500 {
                let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
                let lines: Vec<serde_json::Value> = text
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect();
                if done(&lines) {
                    return lines;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("the audit writer never wrote the lines awaited");
        }
    }

    /// Connection refusals before a session have a per-address budget: 20 lines a minute in full,
    /// the rest counted by event into one `refusals_summary` line, written by the sweep once the
    /// minute is over. Another address beside it keeps every line.
    #[test]
    fn refusals_of_one_address_beyond_its_budget_become_one_summary_line() {
        let out = Captured::default();
        let audit = Audit::start_writer(Box::new(out.clone())).unwrap();
        let flood: SocketAddr = "198.51.100.7:40000".parse().unwrap();
        let other: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        for i in 0..50 {
            audit.record_refusal(&AuditEvent {
                event: if i < 3 { "auth_failed" } else { "banned" },
                listener: Some("plain"),
                peer: Some(flood),
                reason: "address",
                ..AuditEvent::default()
            });
        }
        for _ in 0..3 {
            audit.record_refusal(&AuditEvent {
                event: "tls_failed",
                listener: Some("plain"),
                peer: Some(other),
                reason: "unknown_ca",
                ..AuditEvent::default()
            });
        }
        audit.sweep_refusals(Instant::now());
        assert_eq!(audit.refusal_addresses(), 2, "the minute is not over");
        audit.sweep_refusals(Instant::now() + DENIAL_INTERVAL);
        assert_eq!(audit.refusal_addresses(), 0, "ended budgets are forgotten");
        let lines = out.lines_when(|l| l.iter().any(|v| v["event"] == "refusals_summary"));
        let from = |ip: &str| {
            lines
                .iter()
                .filter(|v| v["peer"].as_str().is_some_and(|p| p.starts_with(ip)))
                .count()
        };
        assert_eq!(from("198.51.100.7:"), 20);
        assert_eq!(from("203.0.113.9:"), 3);
        let summaries: Vec<_> = lines
            .iter()
            .filter(|v| v["event"] == "refusals_summary")
            .collect();
        assert_eq!(summaries.len(), 1, "{summaries:?}");
        let s = summaries[0];
        assert_eq!(s["address"], "198.51.100.7", "{s}");
        assert_eq!(s["reason"], "budget", "{s}");
        assert_eq!(s["suppressed"], serde_json::json!({"banned": 30}), "{s}");
        assert!(s["since"].is_string(), "{s}");
    }

    #[test]
    fn refusal_budgets_track_a_bounded_number_of_addresses() {
        let audit = Audit::start_writer(Box::new(io::sink())).unwrap();
        for i in 0..u32::try_from(MAX_BUDGET_ADDRESSES).unwrap() + 100 {
            audit.record_refusal(&AuditEvent {
                event: "banned",
                peer: Some(SocketAddr::from((i.to_be_bytes(), 1))),
                reason: "address",
                ..AuditEvent::default()
            });
        }
        assert_eq!(audit.refusal_addresses(), MAX_BUDGET_ADDRESSES);
    }

    /// The budget as a table over time: ten lines per interval, the rest counted by action and
    /// summarised when the next interval begins or the session ends.
    #[test]
    fn denial_budget_writes_the_first_lines_then_one_summary_per_interval() {
        let mut b = DenialBudget::default();
        let t0 = Instant::now();
        let w0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |s: u64| (t0 + Duration::from_secs(s), w0 + Duration::from_secs(s));
        let mut written = 0;
        for i in 0..25 {
            let (now, wall) = at(i % 30);
            let action = if i % 5 == 0 { "subscribe" } else { "publish" };
            let (due, write) = b.denial(action, now, wall);
            assert_eq!(due, None, "no summary within the interval ({i})");
            written += u32::from(write);
        }
        assert_eq!(written, DENIAL_LINES_PER_INTERVAL);
        // The next interval: the summary of the previous one, and this denial written again.
        let (now, wall) = at(61);
        let (due, write) = b.denial("receive", now, wall);
        let due = due.expect("the previous interval's summary");
        assert!(write);
        assert_eq!(
            due.suppressed,
            BTreeMap::from([("publish", 12), ("subscribe", 3)])
        );
        assert_eq!(due.since, w0 + Duration::from_secs(10), "the 11th denial");
        // Nothing suppressed since: nothing due at the end.
        assert_eq!(b.finish(), None);
        // A quiet session never writes a summary; a noisy one does at its end.
        for s in 62..61 + u64::from(DENIAL_LINES_PER_INTERVAL) {
            let (now, wall) = at(s);
            assert_eq!(b.denial("publish", now, wall), (None, true));
        }
        let (now, wall) = at(100);
        assert_eq!(b.denial("publish", now, wall), (None, false));
        assert_eq!(
            b.finish().map(|s| s.suppressed),
            Some(BTreeMap::from([("publish", 1)]))
        );
    }

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
