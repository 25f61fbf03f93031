//! Every metric family of the contract (`../shared/spec/README.md`, "Metrics"), as constants, with
//! their closed label sets (the enums of [`crate::labels`], and [`HandshakeFailure`], [`CloseKind`],
//! [`PacketType`], [`Direction`]), described and every combination set to zero at start-up so
//! that dashboards and alerts work before the first event. No label ever holds a per-client value:
//! the only ones not from an enum come from the configuration (the listener name, a CRL's file
//! name, a deny rule's `file:line`).

use metrics::{
    Counter, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use mqtt_inspect::{Direction, PacketType};

use crate::close::CloseKind;
pub use crate::labels::{
    AclAction, AuthFailure, ConnectOutcome, RateLimit, ReauthResult, ReloadResult, ReloadSource,
    RevocationReason, UpstreamFailure,
};
use crate::tls::failure::HandshakeFailure;

/// `mqtt_gateway_connections_active{listener}`.
pub const CONNECTIONS_ACTIVE: &str = "mqtt_gateway_connections_active";
/// `mqtt_gateway_connections_total{listener,outcome}`.
pub const CONNECTIONS_TOTAL: &str = "mqtt_gateway_connections_total";
/// `mqtt_gateway_tls_handshake_failures_total{listener,reason}`.
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "mqtt_gateway_tls_handshake_failures_total";
/// `mqtt_gateway_auth_failures_total{listener,reason}`.
pub const AUTH_FAILURES_TOTAL: &str = "mqtt_gateway_auth_failures_total";
/// `mqtt_gateway_acl_denied_total{action}`.
pub const ACL_DENIED_TOTAL: &str = "mqtt_gateway_acl_denied_total";
/// `mqtt_gateway_rate_limited_total{limit}`.
pub const RATE_LIMITED_TOTAL: &str = "mqtt_gateway_rate_limited_total";
/// `mqtt_gateway_packets_total{direction,type}`.
pub const PACKETS_TOTAL: &str = "mqtt_gateway_packets_total";
/// `mqtt_gateway_bytes_total{direction}`.
pub const BYTES_TOTAL: &str = "mqtt_gateway_bytes_total";
/// `mqtt_gateway_malformed_packets_total{direction}`.
pub const MALFORMED_PACKETS_TOTAL: &str = "mqtt_gateway_malformed_packets_total";
/// `mqtt_gateway_upstream_errors_total{reason}`.
pub const UPSTREAM_ERRORS_TOTAL: &str = "mqtt_gateway_upstream_errors_total";
/// `mqtt_gateway_reloads_total{source,result}`.
pub const RELOADS_TOTAL: &str = "mqtt_gateway_reloads_total";
/// `mqtt_gateway_sessions_revoked_total{reason}`.
pub const SESSIONS_REVOKED_TOTAL: &str = "mqtt_gateway_sessions_revoked_total";
/// `mqtt_gateway_tls_handshake_duration_seconds{listener}` (histogram).
pub const TLS_HANDSHAKE_DURATION_SECONDS: &str = "mqtt_gateway_tls_handshake_duration_seconds";

/// Buckets of the handshake duration histogram, in seconds.
pub const HANDSHAKE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

// === Beyond the contract (README.md, "Metrics beyond the contract") ===

/// `mqtt_gateway_crl_this_update_timestamp_seconds{listener,crl}`: `thisUpdate` of a configured
/// CRL file (the oldest, when the file holds several), unix seconds. `crl` is the file name.
pub const CRL_THIS_UPDATE: &str = "mqtt_gateway_crl_this_update_timestamp_seconds";
/// `mqtt_gateway_crl_next_update_timestamp_seconds{listener,crl}`: `nextUpdate` of a configured
/// CRL file (the earliest, when the file holds several), unix seconds. Past it the gateway refuses
/// every certificate that CRL is consulted for. Absent for a file whose CRLs have no `nextUpdate`.
pub const CRL_NEXT_UPDATE: &str = "mqtt_gateway_crl_next_update_timestamp_seconds";
/// `mqtt_gateway_server_certificate_expiry_timestamp_seconds{listener}`: `notAfter` of the
/// listener's server certificate, unix seconds.
pub const SERVER_CERT_EXPIRY: &str = "mqtt_gateway_server_certificate_expiry_timestamp_seconds";
/// `mqtt_gateway_client_certificate_remaining_days` (histogram): days until the client
/// certificate's `notAfter`, observed at each successful handshake that presented one.
pub const CLIENT_CERT_REMAINING_DAYS: &str = "mqtt_gateway_client_certificate_remaining_days";
/// `mqtt_gateway_tls_resumptions_total{listener}`: handshakes that resumed a TLS session.
pub const TLS_RESUMPTIONS_TOTAL: &str = "mqtt_gateway_tls_resumptions_total";
/// `mqtt_gateway_sessions_closed_total{reason}`: every session that got past its CONNECT, counted
/// once when it ends, by [`crate::close::CloseReason::as_str`] (who ended it and why: a broker
/// restart shows as `broker_closed`, a resource quota as `quota_exceeded`, dead devices as
/// `keepalive_timeout`). Refused connect phases are `connections_total` outcomes instead.
pub const SESSIONS_CLOSED_TOTAL: &str = "mqtt_gateway_sessions_closed_total";
/// `mqtt_gateway_policy_deny_hits_total{rule}`: denials per deciding deny rule (`file:line`; the
/// rules are finite, so the label is bounded). A default deny (no rule matched) is not counted here.
pub const POLICY_DENY_HITS_TOTAL: &str = "mqtt_gateway_policy_deny_hits_total";
/// `mqtt_gateway_reauthentications_total{result}`: MQTT 5 re-authentications (AUTH 0x19 with a
/// fresh token), by [`ReauthResult`].
pub const REAUTHENTICATIONS_TOTAL: &str = "mqtt_gateway_reauthentications_total";

/// Buckets of the client certificate remaining-days histogram.
pub const CLIENT_CERT_DAYS_BUCKETS: &[f64] =
    &[1.0, 7.0, 14.0, 30.0, 60.0, 90.0, 180.0, 365.0, 730.0];

/// Both directions.
pub const DIRECTIONS: [Direction; 2] = [Direction::ClientToServer, Direction::ServerToClient];

/// Describes every family and sets every known label combination to zero. Call once after the
/// recorder is installed, with the configured listener names.
pub fn init(listeners: &[&str]) {
    describe_gauge!(
        CONNECTIONS_ACTIVE,
        "Client connections open now, per listener."
    );
    describe_counter!(
        CONNECTIONS_TOTAL,
        "Client connections by how their connect phase ended."
    );
    describe_counter!(
        TLS_HANDSHAKE_FAILURES_TOTAL,
        "Failed TLS handshakes by reason."
    );
    describe_counter!(
        AUTH_FAILURES_TOTAL,
        "Refused CONNECTs by authentication failure reason."
    );
    describe_counter!(ACL_DENIED_TOTAL, "Policy denials by action.");
    describe_counter!(
        RATE_LIMITED_TOTAL,
        "Rate limit refusals and slow-downs by limit."
    );
    describe_counter!(
        PACKETS_TOTAL,
        "MQTT packets inspected, by direction and type."
    );
    describe_counter!(BYTES_TOTAL, "MQTT bytes inspected, by direction.");
    describe_counter!(
        MALFORMED_PACKETS_TOTAL,
        "Malformed packets refused, by direction."
    );
    describe_counter!(
        UPSTREAM_ERRORS_TOTAL,
        "Failures to reach or keep the upstream broker."
    );
    describe_counter!(RELOADS_TOTAL, "Reloads by source and result.");
    describe_counter!(
        SESSIONS_REVOKED_TOTAL,
        "Live sessions closed because their credentials were revoked."
    );
    describe_histogram!(
        TLS_HANDSHAKE_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "TLS handshake duration."
    );
    describe_gauge!(
        CRL_THIS_UPDATE,
        "thisUpdate of each configured CRL file, unix seconds."
    );
    describe_gauge!(
        CRL_NEXT_UPDATE,
        "nextUpdate of each configured CRL file, unix seconds; past it the gateway refuses the certificates that CRL covers."
    );
    describe_gauge!(
        SERVER_CERT_EXPIRY,
        "notAfter of each TLS listener's server certificate, unix seconds."
    );
    describe_histogram!(
        CLIENT_CERT_REMAINING_DAYS,
        "Days left on client certificates, observed at each successful handshake with one."
    );
    describe_counter!(
        TLS_RESUMPTIONS_TOTAL,
        "TLS handshakes that resumed an earlier session."
    );
    describe_gauge!(
        POLICY_GENERATION,
        "Generation of the configuration and policy in force (1 at start, +1 per applied reload)."
    );
    describe_gauge!(
        RELOAD_LAST_SUCCESS,
        "Time of the last applied reload, unix seconds (0: none yet)."
    );
    describe_gauge!(
        RELOAD_LAST_REJECTED,
        "Time of the last rejected reload, unix seconds (0: none yet)."
    );
    describe_counter!(
        POLICY_DENY_HITS_TOTAL,
        "Denials by the deny rule (file:line) that decided them."
    );
    describe_counter!(
        SESSIONS_CLOSED_TOTAL,
        "Sessions ended after their CONNECT was accepted, by who ended them and why."
    );
    describe_counter!(
        REAUTHENTICATIONS_TOTAL,
        "MQTT 5 re-authentications with a fresh token, by result."
    );
    describe_counter!(
        crate::audit::AUDIT_DROPPED_TOTAL,
        "Audit lines lost because the audit writer's queue was full."
    );

    for &listener in listeners {
        gauge!(CONNECTIONS_ACTIVE, "listener" => listener.to_owned()).set(0.0);
        for outcome in ConnectOutcome::ALL {
            counter!(CONNECTIONS_TOTAL, "listener" => listener.to_owned(), "outcome" => outcome.as_str())
                .absolute(0);
        }
        for reason in HandshakeFailure::ALL {
            counter!(TLS_HANDSHAKE_FAILURES_TOTAL, "listener" => listener.to_owned(), "reason" => reason.as_str()).absolute(0);
        }
        for reason in AuthFailure::ALL {
            counter!(AUTH_FAILURES_TOTAL, "listener" => listener.to_owned(), "reason" => reason.as_str())
                .absolute(0);
        }
    }
    for action in AclAction::ALL {
        counter!(ACL_DENIED_TOTAL, "action" => action.as_str()).absolute(0);
    }
    for limit in RateLimit::ALL {
        counter!(RATE_LIMITED_TOTAL, "limit" => limit.as_str()).absolute(0);
    }
    for d in DIRECTIONS {
        counter!(BYTES_TOTAL, "direction" => d.as_str()).absolute(0);
        counter!(MALFORMED_PACKETS_TOTAL, "direction" => d.as_str()).absolute(0);
        for t in PacketType::ALL {
            counter!(PACKETS_TOTAL, "direction" => d.as_str(), "type" => t.as_str()).absolute(0);
        }
    }
    for reason in UpstreamFailure::ALL {
        counter!(UPSTREAM_ERRORS_TOTAL, "reason" => reason.as_str()).absolute(0);
    }
    for source in ReloadSource::ALL {
        for result in ReloadResult::ALL {
            counter!(RELOADS_TOTAL, "source" => source.as_str(), "result" => result.as_str())
                .absolute(0);
        }
    }
    for reason in RevocationReason::ALL {
        counter!(SESSIONS_REVOKED_TOTAL, "reason" => reason.as_str()).absolute(0);
    }
    for reason in CloseKind::ALL {
        counter!(SESSIONS_CLOSED_TOTAL, "reason" => reason.as_str()).absolute(0);
    }
    crate::api::init_metrics();
    for result in ReauthResult::ALL {
        counter!(REAUTHENTICATIONS_TOTAL, "result" => result.as_str()).absolute(0);
    }
    // Registering a histogram exports it (empty buckets) before its first observation.
    let _ = histogram!(CLIENT_CERT_REMAINING_DAYS);
    // `increment(0.0)`: present at 0 on a fresh start, unchanged when a second gateway of the same
    // process (tests) starts.
    gauge!(RELOAD_LAST_SUCCESS).increment(0.0);
    gauge!(RELOAD_LAST_REJECTED).increment(0.0);
    counter!(crate::audit::AUDIT_DROPPED_TOTAL).absolute(0);
}

/// Sets `policy_generation` (at start; reloads set it through [`reload_result`]).
pub fn policy_generation(generation: u64) {
    gauge!(POLICY_GENERATION).set(exact_f64(generation));
}

/// Counts one denial in `policy_deny_hits_total{rule}`; nothing for a default deny (no rule).
pub fn deny_hit(rule: Option<&crate::policy::RuleRef>) {
    if let Some(rule) = rule {
        counter!(POLICY_DENY_HITS_TOTAL, "rule" => rule.to_string()).increment(1);
    }
}

/// `n` as f64; exact below 2^53, which generations and unix seconds stay far below.
#[allow(clippy::cast_precision_loss, clippy::as_conversions)]
pub(crate) fn exact_f64(n: u64) -> f64 {
    n as f64
}

/// Counter handles for the per-packet path, resolved once so that counting a packet is one atomic
/// add, not a registry look-up.
#[derive(Debug, Clone)]
pub struct PacketCounters {
    packets: Vec<Counter>,
    bytes: Counter,
    malformed: Counter,
}

impl PacketCounters {
    /// Handles for one direction.
    #[must_use]
    pub fn new(direction: Direction) -> Self {
        let d = direction.as_str();
        Self {
            packets: PacketType::ALL
                .iter()
                .map(|t| counter!(PACKETS_TOTAL, "direction" => d, "type" => t.as_str()))
                .collect(),
            bytes: counter!(BYTES_TOTAL, "direction" => d),
            malformed: counter!(MALFORMED_PACKETS_TOTAL, "direction" => d),
        }
    }

    /// Adds the packets of one read.
    pub fn add(&self, batch: &PacketBatch) {
        for (c, n) in self.packets.iter().zip(batch.packets) {
            if n > 0 {
                c.increment(u64::from(n));
            }
        }
        if batch.bytes > 0 {
            self.bytes.increment(u64::from(batch.bytes));
        }
    }

    /// Counts one malformed packet.
    pub fn malformed(&self) {
        self.malformed.increment(1);
    }
}

/// Packets counted locally over one read, added to the shared counters at once (one atomic add
/// per type seen, instead of two per packet). 32-bit counts: one read holds at most
/// `MAX_READ_CHUNK` bytes plus one frame, far fewer than 2^32 packets or bytes (the batch lives
/// on the stack while the relay judges one read).
#[derive(Debug, Clone, Copy, Default)]
pub struct PacketBatch {
    packets: [u32; PacketType::ALL.len()],
    bytes: u32,
}

impl PacketBatch {
    /// Counts one packet of `packet_type` and `len` bytes.
    pub fn add(&mut self, packet_type: PacketType, len: usize) {
        if let Some(c) = self.packets.get_mut(packet_type.index()) {
            *c = c.saturating_add(1);
        }
        self.bytes = self
            .bytes
            .saturating_add(u32::try_from(len).unwrap_or(u32::MAX));
    }
}

/// `mqtt_gateway_crl_fetches_total{listener,result}`: fetches of `crl_urls` CRLs
/// ([`crate::labels::CrlFetchResult`]).
pub const CRL_FETCHES_TOTAL: &str = "mqtt_gateway_crl_fetches_total";

/// Describes `crl_fetches_total` and sets every result of `listener` to 0 (called at start).
pub fn init_crl_fetches(listener: &str) {
    describe_counter!(
        CRL_FETCHES_TOTAL,
        "Fetches of crl_urls CRLs, by result; only updated and unchanged are successes."
    );
    for result in crate::labels::CrlFetchResult::ALL {
        counter!(CRL_FETCHES_TOTAL, "listener" => listener.to_owned(), "result" => result.as_str())
            .absolute(0);
    }
}

/// Counts one fetch of a `crl_urls` CRL.
pub fn crl_fetch(listener: &str, result: crate::labels::CrlFetchResult) {
    counter!(CRL_FETCHES_TOTAL, "listener" => listener.to_owned(), "result" => result.as_str())
        .increment(1);
}

/// `mqtt_gateway_cluster_up`: 1 while the Redis of `[cluster]` answers, 0 while this instance
/// counts and bans on its own. Present only when `[cluster]` is configured (0 from start-up).
pub const CLUSTER_UP: &str = "mqtt_gateway_cluster_up";

/// Sets `cluster_up` (and describes it).
pub fn cluster_up(up: bool) {
    describe_gauge!(
        CLUSTER_UP,
        "1 while the shared ban state (Redis, [cluster]) answers, 0 while this instance bans alone."
    );
    gauge!(CLUSTER_UP).set(if up { 1.0 } else { 0.0 });
}

/// `mqtt_gateway_policy_generation`: the generation of the snapshot in force.
pub const POLICY_GENERATION: &str = "mqtt_gateway_policy_generation";
/// `mqtt_gateway_reload_last_success_timestamp_seconds`.
pub const RELOAD_LAST_SUCCESS: &str = "mqtt_gateway_reload_last_success_timestamp_seconds";
/// `mqtt_gateway_reload_last_rejected_timestamp_seconds`.
pub const RELOAD_LAST_REJECTED: &str = "mqtt_gateway_reload_last_rejected_timestamp_seconds";

/// Counts one reload of `source` (`reloads_total{source,result}`) and sets the last success or
/// rejection time and the generation in force.
pub fn reload_result(source: ReloadSource, ok: bool, generation: u64) {
    let result = if ok {
        ReloadResult::Ok
    } else {
        ReloadResult::Rejected
    };
    counter!(RELOADS_TOTAL, "source" => source.as_str(), "result" => result.as_str()).increment(1);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    gauge!(if ok {
        RELOAD_LAST_SUCCESS
    } else {
        RELOAD_LAST_REJECTED
    })
    .set(now);
    // Generations stay far below 2^53: exact as f64.
    #[allow(clippy::cast_precision_loss, clippy::as_conversions)]
    gauge!(POLICY_GENERATION).set(generation as f64);
}

/// `mqtt_gateway_ocsp_responses_total{listener,status}`.
pub const OCSP_RESPONSES_TOTAL: &str = "mqtt_gateway_ocsp_responses_total";
/// `mqtt_gateway_ocsp_cache_entries`.
pub const OCSP_CACHE_ENTRIES: &str = "mqtt_gateway_ocsp_cache_entries";

/// Describes the OCSP families and sets them to 0 for every listener (called at start).
pub fn init_ocsp<'a>(listeners: impl Iterator<Item = &'a str>) {
    describe_counter!(
        OCSP_RESPONSES_TOTAL,
        "OCSP queries for client certificates, by what came back (error: no valid answer)."
    );
    metrics::describe_gauge!(
        OCSP_CACHE_ENTRIES,
        "OCSP answers cached (one per client certificate)."
    );
    for listener in listeners {
        for status in crate::labels::OcspStatus::ALL {
            counter!(OCSP_RESPONSES_TOTAL, "listener" => listener.to_owned(), "status" => status.as_str())
                .absolute(0);
        }
    }
    metrics::gauge!(OCSP_CACHE_ENTRIES).set(0.0);
}

/// Counts one OCSP query.
pub fn ocsp_response(listener: &str, status: crate::labels::OcspStatus) {
    counter!(OCSP_RESPONSES_TOTAL, "listener" => listener.to_owned(), "status" => status.as_str())
        .increment(1);
}

/// Sets the OCSP cache gauge.
#[allow(clippy::cast_precision_loss, clippy::as_conversions)]
pub fn ocsp_cache_entries(n: usize) {
    metrics::gauge!(OCSP_CACHE_ENTRIES).set(n as f64);
}
