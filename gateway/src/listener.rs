//! Listeners: bind each `[[listener]]` with a large backlog (reconnect storms after a broker
//! restart are normal in IoT fleets), accept, and spawn one tracked task per connection. The TLS
//! handshake happens inside that task, never in the accept loop, so one slow client cannot stall
//! the others.
//!
//! Behind a load balancer (`proxy_protocol = true`) only the balancers may connect; the task first
//! reads their PROXY header (within `connect_timeout`), and the address it carries is the client's
//! from then on: the ban and limit checks below, `sources` rules, metrics and audit lines.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tracing::Instrument;

use crate::metrics::ConnectOutcome;
use crate::session::{self, ListenerCtx};

/// Pending connections the kernel may queue per listener.
pub const BACKLOG: u32 = 4096;

/// Binds `addr` with `SO_REUSEADDR` and a backlog of [`BACKLOG`].
///
/// # Errors
/// The address cannot be bound.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Accepts connections until shutdown.
pub async fn serve(listener: TcpListener, ctx: Arc<ListenerCtx>) {
    let gw = Arc::clone(&ctx.gateway);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = gw.shutdown.cancelled() => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                if let Some(from) = &ctx.proxy_from {
                    let lb = peer.ip().to_canonical();
                    if !from.iter().any(|net| net.contains(&lb)) {
                        session::refused(
                            &ctx,
                            peer,
                            ConnectOutcome::Denied,
                            "connection_refused",
                            "proxy_source_not_allowed",
                        );
                        drop(tcp);
                        continue;
                    }
                    let span = tracing::info_span!("conn", listener = %ctx.name, balancer = %peer);
                    gw.tracker
                        .spawn(behind_balancer(tcp, peer, Arc::clone(&ctx)).instrument(span));
                    continue;
                }
                let Some(permit) = admit(&ctx, peer) else {
                    // Refused before TLS: dropping the socket closes it, costing us nothing more.
                    drop(tcp);
                    continue;
                };
                let span = tracing::info_span!("conn", listener = %ctx.name, %peer);
                gw.tracker
                    .spawn(session::run(tcp, peer, Arc::clone(&ctx), permit).instrument(span));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = %ctx.name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// A connection from a load balancer: its PROXY header first, then the usual admission under
/// the client's address.
async fn behind_balancer(
    mut tcp: tokio::net::TcpStream,
    balancer: SocketAddr,
    ctx: Arc<ListenerCtx>,
) {
    let limit = ctx.gateway.current().config.limits.connect_timeout;
    let client = match tokio::time::timeout(
        limit,
        crate::transport::proxy_protocol::read_header(&mut tcp),
    )
    .await
    {
        Ok(Ok(client)) => client.unwrap_or(balancer),
        Ok(Err(e)) => {
            tracing::info!(error = %e, "PROXY protocol header refused");
            session::refused(
                &ctx,
                balancer,
                ConnectOutcome::Malformed,
                "connection_refused",
                e.as_str(),
            );
            return;
        }
        Err(_) => {
            session::refused(
                &ctx,
                balancer,
                ConnectOutcome::Timeout,
                "timeout",
                "proxy_header_timeout",
            );
            return;
        }
    };
    let Some(permit) = admit(&ctx, client) else {
        return;
    };
    session::run(tcp, client, Arc::clone(&ctx), permit)
        .instrument(tracing::info_span!("client", peer = %client))
        .await;
}

/// The checks made before the TLS handshake: a banned address, the global and per-address
/// connection caps, the per-address connection rate. Counts and audits a refusal.
fn admit(ctx: &ListenerCtx, peer: SocketAddr) -> Option<crate::limits::ConnPermit> {
    use crate::metrics as m;
    let gw = &ctx.gateway;
    let ip = peer.ip();
    let refused = |outcome: ConnectOutcome, event: &'static str, reason: &'static str| {
        metrics::counter!(m::CONNECTIONS_TOTAL, "listener" => ctx.name.to_string(), "outcome" => outcome.as_str()).increment(1);
        gw.audit.record_refusal(&crate::audit::AuditEvent {
            event,
            listener: Some(&ctx.name),
            peer: Some(peer),
            reason,
            ..crate::audit::AuditEvent::default()
        });
    };
    if gw.bans.address_banned(ip, std::time::Instant::now()) {
        metrics::counter!(m::AUTH_FAILURES_TOTAL, "listener" => ctx.name.to_string(), "reason" => m::AuthFailure::Banned.as_str()).increment(1);
        refused(ConnectOutcome::Banned, "banned", "address");
        return None;
    }
    match gw.conn_limits.admit(ip) {
        Ok(permit) => Some(permit),
        Err(why) => {
            metrics::counter!(m::RATE_LIMITED_TOTAL, "limit" => m::RateLimit::Connections.as_str())
                .increment(1);
            refused(
                ConnectOutcome::RateLimited,
                "rate_limited",
                match why {
                    crate::limits::ConnRefusal::Global => "max_connections",
                    crate::limits::ConnRefusal::PerIp => "max_connections_per_ip",
                    crate::limits::ConnRefusal::Rate => "connections_per_ip_per_second",
                },
            );
            None
        }
    }
}
