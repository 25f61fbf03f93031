//! Device enrollment over EST (RFC 7030): a TLS listener of its own (`[enrollment]`) backed by a
//! `pki` directory (`crate::pki`), answering `cacerts`, `simpleenroll` (HTTP Basic: NAME and a
//! one-time token from `mqtt-gateway pki token`) and `simplereenroll` (TLS client authentication
//! with the device's current certificate).

pub mod client;
pub mod csr;
pub mod pkcs7;
pub mod server;
pub mod token;

pub use server::{EnrollError, Est, serve};

/// Binds and starts the EST listener of `config` (none without `[enrollment]`), returning its
/// bound address.
///
/// # Errors
/// No CA in `pki_dir`, an unreadable certificate or key, or an address that cannot be bound.
pub fn start(
    config: &crate::config::Config,
    gateway: &std::sync::Arc<crate::shared::Gateway>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Option<std::net::SocketAddr>, crate::server::StartError> {
    let Some(e) = &config.enrollment else {
        return Ok(None);
    };
    let est = std::sync::Arc::new(Est::new(e)?);
    let socket =
        crate::listener::bind(e.bind).map_err(|source| crate::server::StartError::Bind {
            what: "enrollment".into(),
            addr: e.bind,
            source,
        })?;
    let addr = socket.local_addr().unwrap_or(e.bind);
    server::init_metrics();
    tracing::info!(%addr, pki_dir = %e.pki_dir.display(), "enrollment (EST) listening");
    tasks.push(tokio::spawn(serve(
        socket,
        est,
        std::sync::Arc::clone(gateway),
    )));
    Ok(Some(addr))
}
