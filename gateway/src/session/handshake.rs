//! The TLS handshake of a connection (for a TLS listener), within the connect deadline: on
//! failure the reason class, metric and audit line; on success the client's verified chain and
//! the identity read from it ([`PeerCert`]).

#[allow(clippy::wildcard_imports)] // the session's own vocabulary, shared with mod.rs
use super::*;

/// The client's certificate after the handshake: none, or its verified chain with the identity
/// read from it, or a verified chain whose subject names cannot be read (refused at CONNECT: a
/// certificate must never count as absent because one of its names is unreadable, or an OU
/// deny rule could be dodged and the chain would escape every CRL re-check).
pub(super) type PeerCert = Result<Option<CertInfo>, crate::identity::IdentityError>;

/// The TLS handshake (for a TLS listener), then the WebSocket upgrade (for a WebSocket
/// listener), within the connect deadline.
pub(super) async fn handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: &ListenerCtx,
    deadline: Instant,
    max_packet: usize,
) -> Option<(ClientStream, PeerCert)> {
    let (stream, cert) = tls_handshake(tcp, peer, ctx, deadline).await?;
    let Some(ws) = &ctx.websocket else {
        return Some((stream, cert));
    };
    match timeout_at(
        deadline,
        crate::transport::websocket::accept(stream, ws, max_packet),
    )
    .await
    {
        Ok(Ok(ws)) => Some((ClientStream::Ws(Box::new(ws)), cert)),
        Ok(Err(why)) => {
            let outcome_label = if why == crate::transport::websocket::WsRefusal::Origin {
                ConnectOutcome::Denied
            } else {
                ConnectOutcome::Malformed
            };
            tracing::info!(%peer, reason = why.as_str(), "WebSocket upgrade refused");
            refused(ctx, peer, outcome_label, "connection_refused", why.as_str());
            None
        }
        Err(_) => {
            refused(
                ctx,
                peer,
                ConnectOutcome::Timeout,
                "timeout",
                "websocket_handshake_timeout",
            );
            None
        }
    }
}

async fn tls_handshake(
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: &ListenerCtx,
    deadline: Instant,
) -> Option<(ClientStream, PeerCert)> {
    let Some(tls) = &ctx.tls else {
        return Some((ClientStream::Plain(tcp), Ok(None)));
    };
    let started = std::time::Instant::now();
    match timeout_at(
        deadline,
        crate::tls::TlsStream::accept_choosing(tcp, &tls.load_full()),
    )
    .await
    {
        Err(_) => {
            refused(
                ctx,
                peer,
                ConnectOutcome::Timeout,
                "timeout",
                "tls_handshake_timeout",
            );
            None
        }
        Ok(Err(e)) => {
            tls_failed(ctx, peer, classify(&e), &e.to_string());
            None
        }
        Ok(Ok(mut stream)) => {
            histogram!(m::TLS_HANDSHAKE_DURATION_SECONDS, "listener" => ctx.name.to_string())
                .record(started.elapsed().as_secs_f64());
            crate::metrics_tls::count_resumption(&ctx.name, stream.common());
            let chain: Option<Vec<_>> = stream
                .common()
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.clone().into_owned()).collect());
            // A resumed session was not verified by this handshake: judge its stored chain now,
            // with the listener's current verifier, as a full handshake would be judged.
            let snap = ctx.gateway.current();
            if let Err(e) = crate::tls::judge_resumption(
                stream.common().handshake_kind(),
                snap.verifiers.get(&*ctx.name).map(AsRef::as_ref),
                chain.as_deref().unwrap_or_default(),
                rustls_pki_types::UnixTime::now(),
            ) {
                let reason = crate::tls::classify_rustls(&e);
                tls_failed(ctx, peer, reason, &format!("resumed TLS session: {e}"));
                // rustls has no way to send a fatal alert after the handshake: close cleanly
                // before reading a byte of the client's.
                let _ = timeout(GOODBYE_TIMEOUT, stream.shutdown()).await;
                return None;
            }
            let cert = chain
                .map(|chain| {
                    ClientIdentity::from_chain(&chain).map(|identity| CertInfo { chain, identity })
                })
                .transpose();
            if let Ok(Some(c)) = &cert {
                crate::metrics_tls::observe_client_certificate(c.identity.not_after_unix);
            }
            Some((ClientStream::Tls(Box::new(stream)), cert))
        }
    }
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
pub(crate) fn refused(
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
