//! Listeners: bind each `[[listener]]` with a large backlog (reconnect storms after a broker
//! restart are normal in IoT fleets), accept, and spawn one tracked task per connection. The TLS
//! handshake happens inside that task, never in the accept loop, so one slow client cannot stall
//! the others.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tracing::Instrument;

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
                let span = tracing::info_span!("conn", listener = %ctx.name, %peer);
                gw.tracker
                    .spawn(session::run(tcp, peer, Arc::clone(&ctx)).instrument(span));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(listener = %ctx.name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
