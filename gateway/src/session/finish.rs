//! How a session ends: watching for a reload that revokes it, then, once one [`CloseReason`] has
//! ended the relay, its metric and audit line and the last packets to the client and the broker
//! (a DISCONNECT or a refusing CONNACK; a DISCONNECT that discards a Will the policy now refuses).

#[allow(clippy::wildcard_imports)] // the session's own vocabulary, shared with mod.rs
use super::*;

impl Session<'_> {
    /// Ends the session for `reason`: counted, audited where it is a security decision, and
    /// answered to the client (and, for a revoked session whose Will is now refused, the broker)
    /// before both connections are shut down.
    pub(super) async fn finish<C, B>(
        &self,
        identity: &SessionIdentity,
        reason: &CloseReason,
        (said_goodbye, connack_relayed): (bool, bool),
        mut client: Out<C>,
        mut broker: Out<B>,
    ) where
        C: tokio::io::AsyncWrite + Unpin,
        B: tokio::io::AsyncWrite + Unpin,
    {
        let gw = &self.ctx.gateway;
        tracing::debug!(peer = %identity.peer, client_id = %identity.client_id, reason = reason.as_str(), "session closed");
        counter!(m::SESSIONS_CLOSED_TOTAL, "reason" => reason.as_str()).increment(1);
        self.flush_denials(identity);
        match reason {
            CloseReason::Malformed { direction, error } => gw.audit.record(&AuditEvent {
                detail: Some(&error.to_string()),
                ..self.event(identity, "malformed", direction.as_str())
            }),
            CloseReason::Revoked(why) => {
                let why = why.as_str();
                counter!(m::SESSIONS_REVOKED_TOTAL, "reason" => why).increment(1);
                tracing::info!(peer = %identity.peer, client_id = %identity.client_id, reason = why, "live session revoked");
                gw.audit.record(&AuditEvent {
                    cert_fingerprint: identity.fingerprint(),
                    cert_serial: identity.serial(),
                    ..self.event(identity, "session_revoked", why)
                });
            }
            CloseReason::RateLimited(limit) => {
                gw.audit
                    .record(&self.event(identity, "rate_limited", limit.as_str()));
            }
            CloseReason::QuotaExceeded => {
                gw.audit
                    .record(&self.event(identity, "quota_exceeded", reason.as_str()));
            }
            CloseReason::AuthNotSupported => {
                // An attempt to re-authenticate (MQTT 5 AUTH) after CONNECT: refused, and the
                // identity bound at CONNECT stays; a security decision, so audited.
                gw.audit.record(&AuditEvent {
                    cert_fingerprint: identity.fingerprint(),
                    cert_serial: identity.serial(),
                    ..self.event(identity, "auth_failed", reason.as_str())
                });
            }
            CloseReason::CredentialExpired => {
                let which = identity
                    .credential_end()
                    .map_or("certificate", |(_, c)| c.as_str());
                tracing::info!(peer = %identity.peer, client_id = %identity.client_id, credential = which, "session ended: its credential expired");
                gw.audit.record(&AuditEvent {
                    cert_fingerprint: identity.fingerprint(),
                    cert_serial: identity.serial(),
                    ..self.event(identity, "credential_expired", which)
                });
            }
            CloseReason::BrokerClosed => {}
            CloseReason::Io(Direction::ServerToClient) => {
                counter!(m::UPSTREAM_ERRORS_TOTAL, "reason" => UpstreamFailure::Closed.as_str())
                    .increment(1);
            }
            _ => {}
        }
        // The slot before the goodbye: a client that reads it may reconnect at once.
        crate::limits::release_slot();
        if !client.is_dirty() {
            let ours = reason
                .disconnect_reason()
                .filter(|_| self.version.is_v5() && !said_goodbye);
            if matches!(
                reason,
                CloseReason::Revoked(_) | CloseReason::CredentialExpired | CloseReason::Kicked
            ) && !connack_relayed
            {
                // Revoked (or kicked) before the broker's CONNACK reached the client: the answer still due is
                // a refusing CONNACK, not a DISCONNECT ([MQTT-3.2.0-1]).
                let connack = refuse::refusing_connack(self.version, ReasonCode::NotAuthorized);
                write_goodbye(client.io_mut(), |b| connack.encode(self.version, b)).await;
            } else if let Some(code) = ours {
                write_goodbye(client.io_mut(), |b| {
                    Disconnect::new(code).encode(self.version, b)
                })
                .await;
            }
            let _ = timeout(GOODBYE_TIMEOUT, client.io_mut().shutdown()).await;
        }
        // A session whose credential ran out, or whose re-authentication failed, did not crash:
        // its Will is not published either (its access ended; a Will published afterwards would
        // be a message sent with a credential that is no longer valid).
        let discard_will = match reason {
            CloseReason::Revoked(_) => identity.will_refused(&gw.current()),
            CloseReason::CredentialExpired | CloseReason::ReauthenticationFailed => {
                identity.will.is_some()
            }
            _ => false,
        };
        if discard_will && !broker.is_dirty() {
            // A normal DISCONNECT makes the broker discard the Will ([MQTT-3.14.4-3], MQTT 5
            // [MQTT-3.1.2-10]): the broker must not publish a Will the policy now refuses. A Will
            // still allowed is left to the broker (a device's "offline" message, say). After the
            // client's own DISCONNECT this one is redundant, and harmless.
            write_goodbye(broker.io_mut(), |b| {
                Disconnect::new(ReasonCode::Success).encode(self.version, b)
            })
            .await;
        }
        let _ = timeout(GOODBYE_TIMEOUT, broker.io_mut().shutdown()).await;
    }
}

/// Writes the last packet of a closing connection, as `encode` writes it, within
/// [`GOODBYE_TIMEOUT`]; a peer that does not take it is closed all the same.
async fn write_goodbye<W: tokio::io::AsyncWrite + Unpin>(
    io: &mut W,
    encode: impl FnOnce(&mut Vec<u8>) -> Result<(), mqtt_inspect::EncodeError>,
) {
    let mut bytes = Vec::new();
    if encode(&mut bytes).is_ok() {
        let _ = timeout(GOODBYE_TIMEOUT, io.write_all(&bytes)).await;
    }
}

/// What can end a session from outside its packets: a new snapshot that revokes it (each is
/// re-checked), an OCSP answer that turns to revoked, the end of its credential (the
/// certificate's notAfter, the token's `exp`, moved by re-authentications), a kick from the admin
/// API, the shutdown. The sources set bits in the session's [`LiveSession`] and wake it; the
/// credential's end is an alarm on the relay's timer ([`Relay::set_alarm`]). So the watch holds
/// no future of its own: a few words per session, and one load per wake-up.
///
/// [`LiveSession`]: crate::api::registry::LiveSession
/// [`Relay::set_alarm`]: super::relay::Relay::set_alarm
pub(super) struct Watch<'a> {
    gw: &'a Gateway,
    identity: &'a SessionIdentity,
    live: &'a crate::api::registry::LiveSession,
    /// The credential's end: unix seconds, and the instant it falls at on the monotonic clock.
    end: Option<(u64, Instant)>,
}

impl<'a> Watch<'a> {
    /// The watch of a session just put in the registry, whose snapshot is of `generation`.
    /// What happened before it was there to be told (a reload since its snapshot was read, an
    /// OCSP answer, the shutdown) is looked at on its first poll.
    pub(super) fn new(
        gw: &'a Gateway,
        identity: &'a SessionIdentity,
        live: &'a crate::api::registry::LiveSession,
        generation: u64,
    ) -> Self {
        use crate::api::registry::signal;
        let mut first = signal::OCSP | signal::CREDENTIAL;
        if gw.generation() != generation {
            first |= signal::RECHECK;
        }
        if gw.shutdown.is_cancelled() {
            first |= signal::SHUTDOWN;
        }
        live.signal(first);
        Self {
            gw,
            identity,
            live,
            end: None,
        }
    }

    /// Ready when the session must end. Registers the task's waker first, so that a signal set
    /// after the look below wakes it.
    /// `chain`: the client's certificate chain, as its TLS connection holds it.
    pub(super) fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
        chain: &[rustls_pki_types::CertificateDer<'static>],
    ) -> Poll<CloseReason> {
        use crate::api::registry::signal;
        self.live.waker.register(cx.waker());
        if self.live.kicked() {
            // The admin API's `DELETE /api/v1/sessions/{id}`.
            return Poll::Ready(CloseReason::Kicked);
        }
        let bits = self.live.take_signals();
        if bits == 0 {
            return Poll::Pending;
        }
        if bits & signal::SHUTDOWN != 0 {
            return Poll::Ready(CloseReason::Shutdown);
        }
        if bits & (signal::OCSP | signal::RECHECK) != 0
            && self.identity.ocsp.as_ref().is_some_and(|l| l.revoked())
        {
            return Poll::Ready(CloseReason::Revoked(crate::labels::RevocationReason::Ocsp));
        }
        if bits & signal::RECHECK != 0
            && let Some(reason) = self.identity.recheck_chain(&self.gw.current(), chain)
        {
            return Poll::Ready(CloseReason::Revoked(reason));
        }
        if bits & signal::CREDENTIAL != 0 {
            self.set_end();
        }
        Poll::Pending
    }

    /// When the credential ends, on the monotonic clock.
    pub(super) fn alarm(&self) -> Option<Instant> {
        self.end.map(|(_, at)| at)
    }

    /// The alarm rang: true when the credential has ended on the wall clock; otherwise (a wall
    /// clock that lags the monotonic one) the alarm is set again.
    pub(super) fn expired(&mut self) -> bool {
        match self.end {
            Some((at, _)) if !before(at) => true,
            Some(_) => {
                self.set_end();
                false
            }
            None => false,
        }
    }

    fn set_end(&mut self) {
        self.end = self
            .identity
            .credential_end()
            .map(|(at, _)| (at, in_time(until(at))));
    }
}

/// The instant `d` from now; past the monotonic clock's range (a credential valid for ages), a
/// century from now.
fn in_time(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(now)
}

/// Whether the wall clock is still before `at` (unix seconds).
fn before(at: u64) -> bool {
    std::time::SystemTime::now() < std::time::UNIX_EPOCH + Duration::from_secs(at)
}

/// The time left until `at` (unix seconds) on the wall clock, zero when past.
fn until(at: u64) -> Duration {
    (std::time::UNIX_EPOCH + Duration::from_secs(at))
        .duration_since(std::time::SystemTime::now())
        .unwrap_or(Duration::ZERO)
}
