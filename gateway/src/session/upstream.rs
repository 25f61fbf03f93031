//! The upstream connection: dial the broker under `upstream.connect_timeout` and send it the
//! client's CONNECT, unchanged (`credentials = "passthrough"`) or with the username replaced by the
//! principal and the password removed (`credentials = "principal"`: the broker never sees secrets).
//!
//! With several brokers (`upstream.addresses`, the nodes of a cluster) each client tries them in
//! its own rendezvous order: every node is scored by a hash of (node, client id) and the highest
//! score goes first. The same client id therefore reaches the same node while it is up (its
//! session state is there), different ids spread evenly, and when a node is down its clients
//! spread over the others instead of all landing on one neighbour. Two gateway instances with the
//! same list agree, so it does not matter which one a load balancer picked.

use std::io;
use std::time::Duration;

use mqtt_inspect::Connect;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::Credentials;

/// Why the broker could not be reached; the `upstream_errors_total` reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamError {
    /// Connection refused (or the address did not resolve).
    Refused,
    /// No answer within `upstream.connect_timeout`.
    Timeout,
}

impl UpstreamError {
    /// The metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Timeout => "timeout",
        }
    }
}

/// FNV-1a over `parts` with a separator, then a 64-bit finaliser (splitmix64) so that near
/// keys spread: stable across builds and instances, unlike `std`'s hasher.
fn score(node: &str, key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node.as_bytes().iter().chain(&[0xff]).chain(key) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The order in which a client with `key` (its client id) tries `nodes`.
#[must_use]
pub fn rendezvous_order<'a>(nodes: impl Iterator<Item = &'a str>, key: &[u8]) -> Vec<&'a str> {
    let mut ranked: Vec<(u64, &str)> = nodes.map(|n| (score(n, key), n)).collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.into_iter().map(|(_, n)| n).collect()
}

/// Dials the first reachable broker in the client's rendezvous order (see the module notes);
/// each failed attempt is counted in `upstream_errors_total{reason}`. Returns the stream and the
/// node's address.
///
/// # Errors
/// The last node's [`UpstreamError`] when none could be reached.
pub async fn dial_any<'a>(
    nodes: impl Iterator<Item = &'a str>,
    key: &[u8],
    limit: Duration,
) -> Result<(TcpStream, &'a str), UpstreamError> {
    let mut last = UpstreamError::Refused;
    for node in rendezvous_order(nodes, key) {
        match dial(node, limit).await {
            Ok(s) => return Ok((s, node)),
            Err(e) => {
                metrics::counter!(crate::metrics::UPSTREAM_ERRORS_TOTAL, "reason" => e.as_str())
                    .increment(1);
                tracing::warn!(
                    broker = node,
                    error = e.as_str(),
                    "upstream broker unreachable"
                );
                last = e;
            }
        }
    }
    Err(last)
}

/// Dials the broker.
///
/// # Errors
/// [`UpstreamError`].
pub async fn dial(address: &str, limit: Duration) -> Result<TcpStream, UpstreamError> {
    match timeout(limit, TcpStream::connect(address)).await {
        Err(_) => Err(UpstreamError::Timeout),
        Ok(Err(e)) if e.kind() == io::ErrorKind::TimedOut => Err(UpstreamError::Timeout),
        Ok(Err(_)) => Err(UpstreamError::Refused),
        Ok(Ok(s)) => {
            // MQTT is latency-sensitive and the gateway batches its own writes.
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

/// The CONNECT to send upstream: `None` means forward the original bytes.
///
/// # Errors
/// The re-encoding failed (a field too long), which cannot happen for a CONNECT that decoded.
pub fn upstream_connect(
    connect: &Connect<'_>,
    credentials: Credentials,
    principal: Option<&str>,
) -> Result<Option<Vec<u8>>, mqtt_inspect::EncodeError> {
    match credentials {
        Credentials::Passthrough => Ok(None),
        Credentials::Principal => {
            let mut rewritten = *connect;
            rewritten.username = principal;
            rewritten.password = None;
            let mut out = Vec::new();
            rewritten.encode(&mut out)?;
            Ok(Some(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_id_same_node_and_ids_spread_and_failover_spreads() {
        let nodes = ["10.0.0.1:1883", "10.0.0.2:1883", "10.0.0.3:1883"];
        let first = |id: &str| rendezvous_order(nodes.iter().copied(), id.as_bytes())[0];
        assert_eq!(first("sensor-17"), first("sensor-17"));
        let mut per_node = [0usize; 3];
        let mut second_choice_of_node0 = [0usize; 3];
        for i in 0..3000 {
            let id = format!("sensor-{i}");
            let order = rendezvous_order(nodes.iter().copied(), id.as_bytes());
            assert_eq!(order.len(), 3);
            let at = |n: &str| nodes.iter().position(|x| *x == n).unwrap();
            per_node[at(order[0])] += 1;
            if at(order[0]) == 0 {
                second_choice_of_node0[at(order[1])] += 1;
            }
        }
        // Even spread (each node about 1,000 of 3,000).
        assert!(
            per_node.iter().all(|n| (800..1200).contains(n)),
            "{per_node:?}"
        );
        // When node 0 is down its clients spread over both others.
        assert_eq!(second_choice_of_node0[0], 0);
        assert!(
            second_choice_of_node0[1] > 300 && second_choice_of_node0[2] > 300,
            "{second_choice_of_node0:?}"
        );
        // Removing a node moves only the clients that were on it.
        let two = &nodes[..2];
        for i in 0..500 {
            let id = format!("sensor-{i}");
            let before = rendezvous_order(nodes.iter().copied(), id.as_bytes())[0];
            let after = rendezvous_order(two.iter().copied(), id.as_bytes())[0];
            if before != nodes[2] {
                assert_eq!(before, after);
            }
        }
    }
}
