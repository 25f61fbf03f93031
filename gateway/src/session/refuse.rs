//! Refusals before a session, in one place: the listener's before TLS (a banned address, the
//! connection limits, a PROXY header), the handshake's and the connect phase's ([`Refused`]). Each
//! [`Why`] is counted and audited by [`Why::record`]; [`Refused::answer`] then says what its kind
//! allows (a CONNACK in the client's version, the answer a malformed first frame may get, a clean
//! TLS close, or nothing) and closes.

#[allow(clippy::wildcard_imports)] // the session's own vocabulary, shared with mod.rs
use super::*;

/// Why a connection ended before its session: the client's stream, when there is one to answer
/// or to close after counting, and why ([`Why`]).
pub(super) struct Refused {
    client: Option<ClientStream>,
    why: Why,
}

/// The ways a connection ends before its session (in the listener, before TLS, or in the connect
/// phase); each knows its metrics, its audit line and its answer.
pub(crate) enum Why {
    /// A banned address, refused before TLS: `auth_failures_total{reason="banned"}`,
    /// `connections_total{outcome="banned"}` and a `banned` line.
    AddressBanned,
    /// A connection cap or the per-address connection rate, before TLS:
    /// `rate_limited_total{limit="connections"}`, `connections_total{outcome="rate_limited"}` and a
    /// `rate_limited` line naming the limit.
    ConnLimit(crate::limits::ConnRefusal),
    /// Nothing to say (a handshake that timed out, a refused WebSocket upgrade, a CONNECT that
    /// did not come in time): `connections_total{outcome}` and an `event` line with `reason`.
    Early {
        outcome: ConnectOutcome,
        event: &'static str,
        reason: &'static str,
    },
    /// The client closed before its CONNECT: counted as a timeout, not audited.
    Closed,
    /// The TLS handshake failed, or a resumed session is no longer acceptable (its stream is then
    /// closed cleanly, before a byte of the client's is read). No MQTT answer.
    Tls {
        reason: HandshakeFailure,
        detail: String,
    },
    /// A first frame that is not an acceptable CONNECT (`level`: see [`connect_level`]).
    Malformed {
        level: Option<u8>,
        error: DecodeError,
    },
    /// A refused CONNECT: a CONNACK in the client's version.
    Connect {
        version: ProtocolVersion,
        client_id: String,
        cert: Option<ClientIdentity>,
        refusal: Box<Refusal>,
    },
}

impl Refused {
    /// A refusal with no stream left to answer or close.
    pub(super) const fn bare(why: Why) -> Self {
        Self { client: None, why }
    }

    /// A refusal of `client`.
    pub(super) const fn with(client: ClientStream, why: Why) -> Self {
        Self {
            client: Some(client),
            why,
        }
    }

    /// A refused CONNECT.
    pub(super) fn connect(
        client: ClientStream,
        version: ProtocolVersion,
        client_id: &str,
        cert: Option<ClientIdentity>,
        refusal: Refusal,
    ) -> Self {
        let why = Why::Connect {
            version,
            client_id: client_id.to_owned(),
            cert,
            refusal: Box::new(refusal),
        };
        Self::with(client, why)
    }

    /// Counts and audits the refusal, then answers the client as its kind requires and closes.
    pub(super) async fn answer(self, ctx: &ListenerCtx, peer: SocketAddr) {
        self.why.record(ctx, peer);
        let Some(mut client) = self.client else {
            return;
        };
        match self.why {
            Why::AddressBanned | Why::ConnLimit(_) | Why::Early { .. } | Why::Closed => {}
            Why::Tls { .. } => {
                // rustls has no way to send a fatal alert after the handshake: close cleanly.
                let _ = timeout(GOODBYE_TIMEOUT, client.shutdown()).await;
            }
            Why::Malformed { level, error } => answer_malformed(&mut client, level, error).await,
            Why::Connect {
                version, refusal, ..
            } => {
                // The slot first: a client that reads this CONNACK may reconnect at once.
                crate::limits::release_slot();
                let connack = refusing_connack(version, refusal.reason);
                let mut bytes = Vec::new();
                if connack.encode(version, &mut bytes).is_ok() {
                    let _ = timeout(GOODBYE_TIMEOUT, async {
                        client.write_all(&bytes).await?;
                        client.shutdown().await
                    })
                    .await;
                }
            }
        }
    }
}

impl Why {
    /// Counts (`connections_total{outcome}` and the metrics of its kind) and audits a refusal.
    pub(crate) fn record(&self, ctx: &ListenerCtx, peer: SocketAddr) {
        match self {
            Self::AddressBanned => {
                counter!(m::AUTH_FAILURES_TOTAL, "listener" => ctx.name.to_string(), "reason" => AuthFailure::Banned.as_str())
                    .increment(1);
                refused(ctx, peer, ConnectOutcome::Banned, "banned", "address");
            }
            Self::ConnLimit(why) => {
                counter!(m::RATE_LIMITED_TOTAL, "limit" => m::RateLimit::Connections.as_str())
                    .increment(1);
                let reason = match why {
                    crate::limits::ConnRefusal::Global => "max_connections",
                    crate::limits::ConnRefusal::PerIp => "max_connections_per_ip",
                    crate::limits::ConnRefusal::Rate => "connections_per_ip_per_second",
                };
                refused(
                    ctx,
                    peer,
                    ConnectOutcome::RateLimited,
                    "rate_limited",
                    reason,
                );
            }
            Self::Early {
                outcome: label,
                event,
                reason,
            } => refused(ctx, peer, *label, event, reason),
            Self::Closed => outcome(&ctx.name, ConnectOutcome::Timeout),
            Self::Tls { reason, detail } => tls_failed(ctx, peer, *reason, detail),
            Self::Malformed { error, .. } => {
                outcome(&ctx.name, ConnectOutcome::Malformed);
                ctx.gateway.c2b.malformed();
                ctx.gateway.audit.record_refusal(&AuditEvent {
                    event: "malformed",
                    listener: Some(&ctx.name),
                    peer: Some(peer),
                    reason: "malformed",
                    detail: Some(&error.to_string()),
                    ..AuditEvent::default()
                });
            }
            Self::Connect {
                client_id,
                cert,
                refusal,
                ..
            } => record_connect(ctx, peer, client_id, cert.as_ref(), refusal),
        }
    }
}

/// Counts and audits a refused CONNECT.
fn record_connect(
    ctx: &ListenerCtx,
    peer: SocketAddr,
    client_id: &str,
    cert: Option<&ClientIdentity>,
    refusal: &Refusal,
) {
    outcome(&ctx.name, refusal.outcome);
    if let Some(r) = refusal.auth_reason {
        counter!(m::AUTH_FAILURES_TOTAL, "listener" => ctx.name.to_string(), "reason" => r.as_str())
            .increment(1);
    }
    if let Some(a) = refusal.acl_action {
        counter!(m::ACL_DENIED_TOTAL, "action" => a.as_str()).increment(1);
        m::deny_hit(refusal.rule.as_ref());
    }
    let rule = refusal.rule.as_ref().map(ToString::to_string);
    ctx.gateway.audit.record_refusal(&AuditEvent {
        // The audit event: the outcome's label, but `acl_denied` for a policy refusal.
        event: match refusal.outcome {
            ConnectOutcome::Denied => "acl_denied",
            other => other.as_str(),
        },
        listener: Some(&ctx.name),
        peer: Some(peer),
        client_id: Some(client_id),
        principal: refusal.principal.as_deref(),
        cert_fingerprint: cert.map(|c| c.fingerprint_sha256_hex.as_str()),
        cert_serial: cert.map(|c| c.serial_hex.as_str()),
        reason: refusal
            .auth_reason
            .map(AuthFailure::as_str)
            .or(refusal.acl_action.map(AclAction::as_str))
            .unwrap_or(refusal.outcome.as_str()),
        rule,
        action: refusal.acl_action.map(AclAction::as_str),
        topic: refusal.topic.as_deref(),
        detail: refusal.detail,
        ..AuditEvent::default()
    });
}

/// A CONNACK refusing the connection for `reason`, in the client's `version`.
pub(super) fn refusing_connack(version: ProtocolVersion, reason: ReasonCode) -> Connack<'static> {
    Connack {
        session_present: false,
        code: ConnackCode::for_version(version, reason),
        properties: mqtt_inspect::Properties::EMPTY,
    }
}

/// The protocol level of a first frame that did not decode, when it is a CONNECT whose level can
/// be read: after the fixed header, the protocol name (two length bytes and the name), then the
/// level. `None` for any other packet type: its sender's protocol version is unknown.
pub(super) fn connect_level(frame: &[u8]) -> Option<u8> {
    if frame.first()? >> 4 != 1 {
        return None;
    }
    let Ok(mqtt_inspect::Peek::Complete(header)) = mqtt_inspect::peek_frame(frame, u32::MAX) else {
        return None;
    };
    let at = usize::from(header.header_len);
    let name_len = u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]);
    // Without a Mosquitto bridge's high bit (0x85 is an MQTT 5 bridge).
    frame.get(at + 2 + usize::from(name_len)).map(|l| l & 0x7f)
}

/// Answers a first frame that is not an acceptable CONNECT, then closes. An unsupported protocol
/// version gets the 3.1.1 CONNACK return code 1 ([MQTT-3.1.2-2]); an MQTT 5 CONNECT that is
/// malformed gets a CONNACK with the reason; anything else is just closed.
async fn answer_malformed(client: &mut ClientStream, level: Option<u8>, e: DecodeError) {
    let Some((version, code)) = malformed_connack(e, level) else {
        return shutdown_quietly(client).await;
    };
    let connack = Connack {
        session_present: false,
        code,
        properties: mqtt_inspect::Properties::EMPTY,
    };
    let mut bytes = Vec::new();
    if connack.encode(version, &mut bytes).is_err() {
        return shutdown_quietly(client).await;
    }
    crate::limits::release_slot();
    let _ = timeout(GOODBYE_TIMEOUT, client.write_all(&bytes)).await;
    shutdown_quietly(client).await;
}

/// The CONNACK answering a first frame that did not decode (`e`; `level`: see [`connect_level`]),
/// with the version it is encoded in; `None` when the frame gets no answer. An unknown protocol
/// version or name gets the 3.1.1 return code 1 (its sender's version is not one we speak); a
/// malformed MQTT 5 CONNECT gets the error's reason code.
fn malformed_connack(e: DecodeError, level: Option<u8>) -> Option<(ProtocolVersion, ConnackCode)> {
    match (e, level) {
        (DecodeError::UnsupportedProtocolVersion(_) | DecodeError::InvalidProtocolName, _) => {
            Some((
                ProtocolVersion::V311,
                ConnackCode::V3(mqtt_inspect::ConnectReturnCode::UnacceptableProtocolVersion),
            ))
        }
        (_, Some(5)) => Some((ProtocolVersion::V5, ConnackCode::V5(e.reason_code()))),
        _ => None,
    }
}

pub(super) async fn shutdown_quietly(client: &mut ClientStream) {
    crate::limits::release_slot();
    let _ = timeout(GOODBYE_TIMEOUT, client.shutdown()).await;
}

/// Counts and audits a TLS refusal: `tls_handshake_failures_total{reason}`,
/// `connections_total{outcome="tls_failed"}` and a `tls_failed` audit line with `detail`.
fn tls_failed(ctx: &ListenerCtx, peer: SocketAddr, reason: HandshakeFailure, detail: &str) {
    let reason = reason.as_str();
    outcome(&ctx.name, ConnectOutcome::TlsFailed);
    counter!(m::TLS_HANDSHAKE_FAILURES_TOTAL, "listener" => ctx.name.to_string(), "reason" => reason)
        .increment(1);
    tracing::info!(%peer, listener = %ctx.name, reason, detail, "TLS handshake failed");
    ctx.gateway.audit.record_refusal(&AuditEvent {
        event: "tls_failed",
        listener: Some(&ctx.name),
        peer: Some(peer),
        reason,
        detail: Some(detail),
        ..AuditEvent::default()
    });
}

/// Counts a connection that ends before its session (`connections_total{outcome}`) and audits
/// why.
fn refused(
    ctx: &ListenerCtx,
    peer: SocketAddr,
    outcome_label: ConnectOutcome,
    event: &'static str,
    reason: &str,
) {
    outcome(&ctx.name, outcome_label);
    ctx.gateway.audit.record_refusal(&AuditEvent {
        event,
        listener: Some(&ctx.name),
        peer: Some(peer),
        reason,
        ..AuditEvent::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(e: DecodeError, level: Option<u8>) -> Option<Vec<u8>> {
        let (version, code) = malformed_connack(e, level)?;
        let mut out = Vec::new();
        Connack {
            session_present: false,
            code,
            properties: mqtt_inspect::Properties::EMPTY,
        }
        .encode(version, &mut out)
        .ok()?;
        Some(out)
    }

    /// The bytes a client gets for a first frame that did not decode: [MQTT-3.1.2-2]'s CONNACK
    /// return code 1 for an unknown version (whatever level it claimed), the reason for a
    /// malformed MQTT 5 CONNECT, nothing for anything else.
    #[test]
    fn a_malformed_first_frame_gets_the_allowed_answer() {
        let v = DecodeError::UnsupportedProtocolVersion(9);
        assert_eq!(answer(v, Some(9)), Some(vec![0x20, 2, 0, 1]));
        assert_eq!(
            answer(DecodeError::InvalidProtocolName, None),
            Some(vec![0x20, 2, 0, 1])
        );
        let m = DecodeError::UnexpectedEnd("test");
        assert_eq!(
            answer(m, Some(5)),
            Some(vec![0x20, 3, 0, m.reason_code().to_u8(), 0])
        );
        assert_eq!(answer(m, Some(4)), None);
        assert_eq!(answer(m, None), None);
    }
}
