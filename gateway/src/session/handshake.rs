//! The TLS handshake of a connection (for a TLS listener), within the connect deadline: on
//! failure the reason class, metric and audit line; on success the client's verified chain and
//! the identity read from it ([`PeerCert`]).

use super::refuse::{Refused, Why};
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
) -> Result<(ClientStream, PeerCert), Refused> {
    let (stream, cert) = tls_handshake(tcp, ctx, deadline).await?;
    let Some(ws) = &ctx.websocket else {
        return Ok((stream, cert));
    };
    match timeout_at(
        deadline,
        crate::transport::websocket::accept(stream, ws, max_packet),
    )
    .await
    {
        Ok(Ok(ws)) => Ok((ClientStream::Ws(Box::new(ws)), cert)),
        Ok(Err(why)) => {
            let outcome_label = if why == crate::transport::websocket::WsRefusal::Origin {
                ConnectOutcome::Denied
            } else {
                ConnectOutcome::Malformed
            };
            tracing::info!(%peer, reason = why.as_str(), "WebSocket upgrade refused");
            Err(Refused::bare(Why::Early {
                outcome: outcome_label,
                event: "connection_refused",
                reason: why.as_str(),
            }))
        }
        Err(_) => Err(Refused::bare(Why::Early {
            outcome: ConnectOutcome::Timeout,
            event: "timeout",
            reason: "websocket_handshake_timeout",
        })),
    }
}

async fn tls_handshake(
    tcp: TcpStream,
    ctx: &ListenerCtx,
    deadline: Instant,
) -> Result<(ClientStream, PeerCert), Refused> {
    let Some(tls) = &ctx.tls else {
        return Ok((ClientStream::Plain(tcp), Ok(None)));
    };
    let started = std::time::Instant::now();
    match timeout_at(
        deadline,
        crate::tls::TlsStream::accept_choosing(tcp, &tls.load_full()),
    )
    .await
    {
        Err(_) => Err(Refused::bare(Why::Early {
            outcome: ConnectOutcome::Timeout,
            event: "timeout",
            reason: "tls_handshake_timeout",
        })),
        Ok(Err(e)) => Err(Refused::bare(Why::Tls {
            reason: classify(&e),
            detail: e.to_string(),
        })),
        Ok(Ok(stream)) => {
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
                // Closed cleanly (no alert) before a byte of the client's is read.
                let why = Why::Tls {
                    reason: crate::tls::classify_rustls(&e),
                    detail: format!("resumed TLS session: {e}"),
                };
                return Err(Refused::with(ClientStream::Tls(Box::new(stream)), why));
            }
            let cert = chain
                .map(|chain| {
                    ClientIdentity::from_chain(&chain).map(|identity| CertInfo { chain, identity })
                })
                .transpose();
            if let Ok(Some(c)) = &cert {
                crate::metrics_tls::observe_client_certificate(c.identity.not_after_unix);
            }
            Ok((ClientStream::Tls(Box::new(stream)), cert))
        }
    }
}
