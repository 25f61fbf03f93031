//! Worker threads, one per core by default, each running a single-threaded runtime: a connection
//! accepted by a worker stays on it ([`crate::server::start_on`]), so its two directions, its
//! timers and its TLS never change threads and wake-ups stay local, as in nginx's worker processes
//! but sharing the policy, limits and metrics of one process.

use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::config::{UpstreamAddress, UpstreamConfig};

/// How many workers carry connections when the operator does not say (`TOKIO_WORKER_THREADS`):
/// one per core, less one when the broker runs on this host. Mosquitto is single-threaded and as
/// busy as the gateway in front of it; a core left to it keeps the two from taking turns on the
/// same cores. On a small host that is also cheaper per message: with two cores, one worker cost
/// 11 % less CPU per message than two in a fleet of quiet devices, and 4–23 % less at 20,000
/// msg/s (BENCHMARKS.md, issue 27).
#[must_use]
pub fn default_count(cores: usize, broker_on_this_host: bool) -> usize {
    cores
        .saturating_sub(usize::from(broker_on_this_host))
        .max(1)
}

/// Whether every broker of `[upstream]` is on this host: a Unix socket, a loopback address, or
/// `localhost`. A name that resolves elsewhere, or any remote node, counts as another host.
#[must_use]
pub fn broker_on_this_host(upstream: &UpstreamConfig) -> bool {
    let mut nodes = upstream.nodes().peekable();
    nodes.peek().is_some()
        && nodes.all(|node| match UpstreamAddress::parse(node) {
            UpstreamAddress::Unix(_) => true,
            UpstreamAddress::Tcp(address) => match address.parse::<SocketAddr>() {
                Ok(a) => a.ip().is_loopback(),
                Err(_) => address
                    .rsplit_once(':')
                    .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost")),
            },
        })
}

/// Running worker threads. Dropping this lets them end; [`Workers::stop`] also waits for them.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` workers.
    ///
    /// # Errors
    /// A runtime or thread cannot be created (those already started are ended).
    pub fn start(count: usize) -> io::Result<Self> {
        let mut workers = Self {
            handles: Vec::with_capacity(count),
            stop: CancellationToken::new(),
            threads: Vec::with_capacity(count),
        };
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.handles.push(runtime.handle().clone());
            let stop = workers.stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("gateway-worker-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// The workers' runtimes, for [`crate::server::start_on`].
    #[must_use]
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Ends the workers (after the shutdown has drained the connections) and waits for them.
    pub fn stop(mut self) {
        self.stop.cancel();
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_per_core_less_the_brokers_when_it_runs_here() {
        // (cores, broker on this host, workers)
        let rows = [
            (1, false, 1),
            (1, true, 1),
            (2, false, 2),
            (2, true, 1),
            (8, false, 8),
            (8, true, 7),
            (0, false, 1),
        ];
        for (cores, here, want) in rows {
            assert_eq!(
                default_count(cores, here),
                want,
                "{cores} cores, here: {here}"
            );
        }
    }

    #[test]
    fn the_broker_is_on_this_host_when_every_node_is_local() {
        let upstream = |address: Option<&str>, addresses: &[&str]| -> UpstreamConfig {
            let mut toml = address.map_or_else(String::new, |a| format!("address = \"{a}\"\n"));
            toml.push_str(&format!("addresses = {addresses:?}\n"));
            toml::from_str(&toml).unwrap()
        };
        let rows: [(Option<&str>, &[&str], bool); 9] = [
            (Some("127.0.0.1:1883"), &[], true),
            (Some("[::1]:1883"), &[], true),
            (Some("localhost:1883"), &[], true),
            (Some("unix:/run/mosquitto/mqtt.sock"), &[], true),
            (Some("10.0.0.2:1883"), &[], false),
            (Some("broker.example:1883"), &[], false),
            (None, &["127.0.0.1:1883", "127.0.0.2:1884"], true),
            (None, &["127.0.0.1:1883", "10.0.0.3:1883"], false),
            (None, &[], false),
        ];
        for (address, addresses, want) in rows {
            assert_eq!(
                broker_on_this_host(&upstream(address, addresses)),
                want,
                "{address:?} {addresses:?}"
            );
        }
    }
}
