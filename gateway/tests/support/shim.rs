//! A TLS shim for clients that speak plain TCP only (rumqttc is built here without TLS): a
//! loopback TCP listener that, for every connection it accepts, opens a real TLS connection with a
//! client certificate to the gateway (tokio-rustls) and copies bytes both ways. The client is real,
//! the TLS is real; only the TLS termination on the client side moves into this task.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

/// A running shim; dropping it stops the listener and every connection it carries.
pub struct Shim {
    /// Where plain-TCP clients connect.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Shim {
    /// Listens on a free loopback port; each accepted connection is carried over TLS (with
    /// `config`, server name `localhost`) to `target`.
    pub async fn start(target: SocketAddr, config: Arc<rustls::ClientConfig>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            // Connection tasks live in the set, so aborting this task ends them too.
            let mut conns = JoinSet::new();
            loop {
                let Ok((plain, _)) = listener.accept().await else {
                    return;
                };
                let config = Arc::clone(&config);
                conns.spawn(async move {
                    let _ = plain.set_nodelay(true);
                    let Ok(tcp) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tcp.set_nodelay(true);
                    let name = ServerName::try_from("localhost").unwrap();
                    let Ok(mut tls) = TlsConnector::from(config).connect(name, tcp).await else {
                        return;
                    };
                    let mut plain = plain;
                    let _ = tokio::io::copy_bidirectional(&mut plain, &mut tls).await;
                });
                // Reap finished connections.
                while conns.try_join_next().is_some() {}
            }
        });
        Self { addr, task }
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        self.task.abort();
    }
}
