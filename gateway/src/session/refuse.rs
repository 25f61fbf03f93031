//! Refusals of the connect phase: a CONNACK that says why, in the client's protocol version
//! (or, for a first frame that is not an acceptable CONNECT, the answer the specification allows),
//! with its metric and audit line, then the close.

#[allow(clippy::wildcard_imports)] // the session's own vocabulary, shared with mod.rs
use super::*;

/// Answers a refused CONNECT with a CONNACK in the client's version, counts and audits it.
pub(super) async fn refuse(
    client: &mut ClientStream,
    ctx: &ListenerCtx,
    peer: SocketAddr,
    version: ProtocolVersion,
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
        ..AuditEvent::default()
    });
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

/// Closes a connection whose first frame is not an acceptable CONNECT. An unsupported protocol
/// version gets the 3.1.1 CONNACK return code 1 ([MQTT-3.1.2-2]); an MQTT 5 CONNECT that is
/// malformed gets a CONNACK with the reason; anything else is just closed.
pub(super) async fn refuse_malformed(
    client: &mut ClientStream,
    ctx: &ListenerCtx,
    peer: SocketAddr,
    level: Option<u8>,
    e: DecodeError,
) {
    outcome(&ctx.name, ConnectOutcome::Malformed);
    ctx.gateway.c2b.malformed();
    ctx.gateway.audit.record_refusal(&AuditEvent {
        event: "malformed",
        listener: Some(&ctx.name),
        peer: Some(peer),
        reason: "malformed",
        detail: Some(&e.to_string()),
        ..AuditEvent::default()
    });
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
