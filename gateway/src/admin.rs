//! The admin HTTP listener: `GET /metrics` (Prometheus text format), `/healthz` (the process
//! serves), `/readyz` (every listener is bound and an upstream broker spoke MQTT within the last
//! few seconds). A deliberately tiny HTTP/1.1 responder: GET only, request head capped at 8 KiB
//! and 5 s, one request per connection, at most `admin.max_connections` at once. With
//! `api_tokens_file`, also `/api/v1` ([`crate::api`]: other methods, a body capped at
//! [`MAX_BODY`]); with `[admin.tls]`, all of it over TLS.
//!
//! What proves a broker alive: a packet from it to any session (its CONNACK, a PINGRESP, a
//! delivery), or else a probe: a whole MQTT connection under the client id [`PROBE_CLIENT_ID`]
//! (CONNECT, CONNACK, DISCONNECT), made only when nothing else has shown a broker alive for
//! [`PROBE_AFTER_MS`], so a broker with active clients sees no probe at all.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, timeout, timeout_at};

use crate::shared::Gateway;

const MAX_HEAD: usize = 8 * 1024;
/// Largest request body of `/api/v1`.
pub const MAX_BODY: usize = 64 * 1024;
/// The TLS handshake and the whole request (head and body) must arrive within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// And the answer must be written within this more: an API call that waits for sessions to end
/// or for a reload takes seconds.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(25);
/// `/readyz` wants a proof of a live broker at most this old.
pub const READY_UPSTREAM_AGE_MS: u64 = 5_000;
/// The prober connects when no broker has been seen alive for this long: with the 1 s tick, an
/// idle broker is probed every 2 s, and the proof `/readyz` reads is at most about 2 s old.
pub const PROBE_AFTER_MS: u64 = 1_500;
/// How often the prober looks at the last proof (a look costs nothing upstream).
const PROBE_TICK: Duration = Duration::from_secs(1);
/// The client id of the prober's MQTT connections, as the broker logs them.
pub use crate::session::upstream::PROBE_CLIENT_ID;

/// Serves the admin endpoints until shutdown.
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    metrics: Option<PrometheusHandle>,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    // Its own cap, apart from the MQTT listeners' (`admin.max_connections`, read at start: the
    // admin table needs a restart): idle admin connections cannot take the descriptors MQTT needs.
    let cap = gateway
        .current()
        .config
        .admin
        .as_ref()
        .map_or(64, |a| a.max_connections.get());
    let permits = Arc::new(Semaphore::new(usize::try_from(cap).unwrap_or(64)));
    let mut full = false;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = gateway.shutdown.cancelled() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            // Full: closed at once, unanswered (logged once per episode, not per connection).
            if !full {
                tracing::warn!(
                    max_connections = cap,
                    "admin listener full: closing new admin connections until some end"
                );
                full = true;
            }
            drop(stream);
            continue;
        };
        full = false;
        let gw = Arc::clone(&gateway);
        let metrics = metrics.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
            let _ = timeout(REQUEST_TIMEOUT + ANSWER_TIMEOUT, async {
                match tls {
                    Some(acceptor) => match timeout_at(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => handle(s, &gw, metrics.as_ref(), deadline).await,
                        Ok(Err(e)) => Err(e),
                        Err(_) => Ok(()),
                    },
                    None => handle(stream, &gw, metrics.as_ref(), deadline).await,
                }
            })
            .await;
            drop(permit);
        });
    }
}

/// Whether the prober must connect, given how long ago a broker was last seen alive.
#[must_use]
pub const fn probe_due(seen_age_ms: u64) -> bool {
    seen_age_ms >= PROBE_AFTER_MS
}

/// Keeps `/readyz` informed when no session does: each `PROBE_TICK`, if no broker has been seen
/// alive for [`PROBE_AFTER_MS`], probes the brokers in turn until one answers a CONNECT with a
/// CONNACK (with several brokers: ready while any of them answers).
pub async fn probe_upstream(gateway: Arc<Gateway>) {
    let mut tick = tokio::time::interval(PROBE_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = gateway.shutdown.cancelled() => return,
        }
        if !probe_due(gateway.upstream_age_ms()) {
            continue;
        }
        let snap = gateway.current();
        let up = &snap.config.upstream;
        for node in up.nodes() {
            match crate::session::upstream::probe(node, up.connect_timeout, up.proxy_protocol).await
            {
                Ok(code) => {
                    tracing::debug!(broker = node, code, "readiness probe answered");
                    gateway.upstream_ok();
                    break;
                }
                Err(cause) => {
                    tracing::debug!(broker = node, %cause, "readiness probe failed");
                }
            }
        }
    }
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    gw: &Gateway,
    metrics: Option<&PrometheusHandle>,
    deadline: Instant,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"too large\n",
            )
            .await;
        }
        let Ok(n) = timeout_at(deadline, stream.read(&mut chunk)).await else {
            return Ok(());
        };
        let n = n?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    if path.starts_with(b"/api/") {
        return api(&mut stream, gw, &head, (method, path), deadline).await;
    }
    if method != b"GET" {
        return respond(
            &mut stream,
            "405 Method Not Allowed",
            "text/plain",
            b"GET only\n",
        )
        .await;
    }
    match path {
        b"/metrics" => match metrics {
            Some(h) => {
                let body = h.render();
                respond(
                    &mut stream,
                    "200 OK",
                    "text/plain; version=0.0.4",
                    body.as_bytes(),
                )
                .await
            }
            None => {
                respond(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    b"no metrics recorder\n",
                )
                .await
            }
        },
        b"/healthz" => respond(&mut stream, "200 OK", "text/plain", b"ok\n").await,
        b"/readyz" => {
            if gw.upstream_age_ms() <= READY_UPSTREAM_AGE_MS {
                respond(&mut stream, "200 OK", "text/plain", b"ready\n").await
            } else {
                respond(
                    &mut stream,
                    "503 Service Unavailable",
                    "text/plain",
                    b"upstream broker not reachable\n",
                )
                .await
            }
        }
        _ => respond(&mut stream, "404 Not Found", "text/plain", b"not found\n").await,
    }
}

/// A `/api/` request: its headers and body read, answered by [`crate::api::handle`].
async fn api<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    gw: &Gateway,
    head: &[u8],
    (method, target): (&[u8], &[u8]),
    deadline: Instant,
) -> std::io::Result<()> {
    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(());
    };
    let (head_only, after) = head.split_at(end);
    let mut body = after.get(4..).unwrap_or_default().to_vec();
    let Ok(head_text) = std::str::from_utf8(head_only) else {
        return respond(stream, "400 Bad Request", "text/plain", b"bad head\n").await;
    };
    let header = |name: &str| {
        head_text.split("\r\n").skip(1).find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        })
    };
    let length = match header("content-length").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) if n <= MAX_BODY => n,
        Some(Ok(_)) => {
            return respond(
                stream,
                "413 Content Too Large",
                "text/plain",
                b"body too large\n",
            )
            .await;
        }
        Some(Err(_)) => {
            return respond(
                stream,
                "400 Bad Request",
                "text/plain",
                b"bad Content-Length\n",
            )
            .await;
        }
    };
    if header("transfer-encoding").is_some() {
        return respond(
            stream,
            "411 Length Required",
            "text/plain",
            b"Content-Length only\n",
        )
        .await;
    }
    let mut chunk = [0u8; 4096];
    while body.len() < length {
        let Ok(n) = timeout_at(deadline, stream.read(&mut chunk)).await else {
            return Ok(());
        };
        let n = n?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    body.truncate(length);
    let (Ok(method), Ok(target)) = (std::str::from_utf8(method), std::str::from_utf8(target))
    else {
        return respond(
            stream,
            "400 Bad Request",
            "text/plain",
            b"bad request line\n",
        )
        .await;
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let request = crate::api::Request {
        method,
        path,
        query,
        authorization: header("authorization"),
        body: &body,
    };
    match crate::api::handle(gw, &request).await {
        None => respond(stream, "404 Not Found", "text/plain", b"not found\n").await,
        Some(r) => {
            let status = format!("{} {}", r.status, reason_phrase(r.status));
            let mut text = r.body.to_string();
            text.push('\n');
            respond(stream, &status, "application/json", text.as_bytes()).await
        }
    }
}

const fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prober_connects_only_when_no_proof_is_recent() {
        for (age, due) in [
            (0, false),
            (PROBE_AFTER_MS - 1, false),
            (PROBE_AFTER_MS, true),
            (READY_UPSTREAM_AGE_MS, true),
            (u64::MAX, true),
        ] {
            assert_eq!(probe_due(age), due, "{age}");
        }
    }
}
