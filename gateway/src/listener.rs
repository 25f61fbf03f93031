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
use crate::session::{self, ListenerCtx, Why};

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
                        Why::Early {
                            outcome: ConnectOutcome::Denied,
                            event: "connection_refused",
                            reason: "proxy_source_not_allowed",
                        }
                        .record(&ctx, peer);
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
            Why::Early {
                outcome: ConnectOutcome::Malformed,
                event: "connection_refused",
                reason: e.as_str(),
            }
            .record(&ctx, balancer);
            return;
        }
        Err(_) => {
            Why::Early {
                outcome: ConnectOutcome::Timeout,
                event: "timeout",
                reason: "proxy_header_timeout",
            }
            .record(&ctx, balancer);
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
    let gw = &ctx.gateway;
    let ip = peer.ip();
    if gw.bans.address_banned(ip, std::time::Instant::now()) {
        Why::AddressBanned.record(ctx, peer);
        return None;
    }
    match gw.conn_limits.admit(ip) {
        Ok(permit) => Some(permit),
        Err(why) => {
            Why::ConnLimit(why).record(ctx, peer);
            None
        }
    }
}
