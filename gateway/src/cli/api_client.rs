//! The thin CLI over the admin API: `sessions`, `kick`, `bans`, `ban`, `unban`, `revoke`. The
//! admin address and token come from `--admin` / `--token` or `MQTT_GATEWAY_ADMIN` /
//! `MQTT_GATEWAY_TOKEN` (an `https://` address trusts `--cacert` / `MQTT_GATEWAY_CACERT`). Tables
//! for people, `--json` for scripts (the API's answer as it came). One request per command, over a
//! tiny HTTP/1.1 client (the admin listener answers one request per connection, `Connection:
//! close`, with a `Content-Length`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// At most this much of an answer is read.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

#[derive(Debug, Args)]
pub(super) struct Conn {
    /// The admin listener, `http://HOST:PORT` or `https://HOST:PORT` (default:
    /// $MQTT_GATEWAY_ADMIN, else http://127.0.0.1:9090).
    #[arg(long, global = true)]
    admin: Option<String>,
    /// `NAME:SECRET` (default: $MQTT_GATEWAY_TOKEN).
    #[arg(long, global = true)]
    token: Option<String>,
    /// The CA file that signed an `https://` admin listener's certificate (default:
    /// $MQTT_GATEWAY_CACERT).
    #[arg(long, global = true)]
    cacert: Option<PathBuf>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub(super) enum ApiCommand {
    /// List live sessions.
    Sessions {
        /// Only this principal.
        #[arg(long)]
        principal: Option<String>,
        /// Only this client id.
        #[arg(long = "client-id")]
        client_id: Option<String>,
        /// Only this listener.
        #[arg(long)]
        listener: Option<String>,
        /// Only peers in this address or CIDR.
        #[arg(long)]
        address: Option<String>,
        /// Page size (at most 1000).
        #[arg(long)]
        limit: Option<u32>,
        /// Skip this many.
        #[arg(long)]
        offset: Option<u32>,
    },
    /// Kick a session (MQTT 5: DISCONNECT 0x98) by its id.
    Kick {
        /// The id `sessions` shows.
        id: u64,
    },
    /// List bans (operator bans and the ones authentication failures earned).
    Bans,
    /// Ban an address or CIDR, a user, or a certificate fingerprint.
    Ban {
        /// An IP address or CIDR.
        #[arg(long, group = "what", required = true)]
        address: Option<String>,
        /// A user (the account whose password is checked).
        #[arg(long, group = "what")]
        user: Option<String>,
        /// A certificate's SHA-256 fingerprint (hex).
        #[arg(long, group = "what")]
        certificate: Option<String>,
        /// Seconds until the ban ends (default: until lifted or a restart).
        #[arg(long = "expires-in")]
        expires_in: Option<u64>,
    },
    /// Lift a ban by the id `bans` shows.
    Unban {
        /// `m<n>` or `auto-<kind>-<key>`.
        id: String,
    },
    /// Revoke a certificate of the `[admin] pki_dir` CA and cut its live sessions.
    Revoke {
        /// The name it was issued as.
        name: String,
    },
}

/// Percent-encodes a query value or path segment.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn run(conn: &Conn, cmd: &ApiCommand) -> anyhow::Result<ExitCode> {
    let (method, path, body) = request(cmd);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let (status, answer) = runtime.block_on(call(conn, method, &path, body.as_ref()))?;
    if conn.json {
        println!("{answer}");
    } else if (200..300).contains(&status) {
        print_table(cmd, &answer);
    } else {
        let msg = at(&answer, "error")
            .as_str()
            .map_or_else(|| answer.to_string(), str::to_owned);
        eprintln!("{status}: {msg}");
        if let Some(rejected) = at(&answer, "rejected").as_array() {
            for r in rejected {
                eprintln!(
                    "{}: {}",
                    at(r, "source").as_str().unwrap_or("?"),
                    at(r, "error").as_str().unwrap_or("?")
                );
            }
        }
    }
    Ok(if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn request(cmd: &ApiCommand) -> (&'static str, String, Option<Value>) {
    match cmd {
        ApiCommand::Sessions {
            principal,
            client_id,
            listener,
            address,
            limit,
            offset,
        } => {
            let mut q = Vec::new();
            for (k, v) in [
                ("principal", principal.clone()),
                ("client_id", client_id.clone()),
                ("listener", listener.clone()),
                ("address", address.clone()),
                ("limit", limit.map(|n| n.to_string())),
                ("offset", offset.map(|n| n.to_string())),
            ] {
                if let Some(v) = v {
                    q.push(format!("{k}={}", enc(&v)));
                }
            }
            let query = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            ("GET", format!("/api/v1/sessions{query}"), None)
        }
        ApiCommand::Kick { id } => ("DELETE", format!("/api/v1/sessions/{id}"), None),
        ApiCommand::Bans => ("GET", "/api/v1/bans".to_owned(), None),
        ApiCommand::Ban {
            address,
            user,
            certificate,
            expires_in,
        } => {
            let mut b = serde_json::Map::new();
            for (k, v) in [
                ("address", address),
                ("user", user),
                ("certificate", certificate),
            ] {
                if let Some(v) = v {
                    b.insert(k.to_owned(), json!(v));
                }
            }
            if let Some(s) = expires_in {
                b.insert("expires_in".to_owned(), json!(s));
            }
            ("POST", "/api/v1/bans".to_owned(), Some(Value::Object(b)))
        }
        ApiCommand::Unban { id } => ("DELETE", format!("/api/v1/bans/{}", enc(id)), None),
        ApiCommand::Revoke { name } => (
            "POST",
            format!("/api/v1/certificates/{}/revoke", enc(name)),
            None,
        ),
    }
}

/// `v[key]`, `Null` when absent (`Index` without the lint).
fn at<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_table(cmd: &ApiCommand, answer: &Value) {
    let rows = |items: &Value, cols: &[&str]| {
        let mut lines = vec![cols.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>()];
        for item in items.as_array().into_iter().flatten() {
            lines.push(cols.iter().map(|c| text(at(item, c))).collect());
        }
        let widths: Vec<usize> = (0..cols.len())
            .map(|i| {
                lines
                    .iter()
                    .map(|l| l.get(i).map_or(0, String::len))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for l in lines {
            let cells: Vec<String> = l
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            println!("{}", cells.join("  ").trim_end());
        }
    };
    match cmd {
        ApiCommand::Sessions { .. } => {
            rows(
                at(answer, "sessions"),
                &[
                    "id",
                    "client_id",
                    "principal",
                    "listener",
                    "peer",
                    "protocol",
                    "connected_since",
                    "credential_expiry",
                    "bytes_in",
                    "bytes_out",
                ],
            );
            println!(
                "{} of {} session(s)",
                at(answer, "sessions").as_array().map_or(0, Vec::len),
                text(at(answer, "total"))
            );
        }
        ApiCommand::Bans => rows(
            at(answer, "bans"),
            &["id", "kind", "value", "expires", "source", "by"],
        ),
        ApiCommand::Kick { id } => println!("session {id} kicked"),
        ApiCommand::Ban { .. } => println!(
            "banned: {} {} ({})",
            text(at(answer, "kind")),
            text(at(answer, "value")),
            text(at(answer, "id"))
        ),
        ApiCommand::Unban { id } => println!("ban {id} lifted"),
        ApiCommand::Revoke { name } => println!(
            "revoked {name} (serial {}); {} live session(s) cut",
            text(at(answer, "serial")),
            text(at(answer, "sessions_cut"))
        ),
    }
}

async fn call(
    conn: &Conn,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let base = conn
        .admin
        .clone()
        .or_else(|| std::env::var("MQTT_GATEWAY_ADMIN").ok())
        .unwrap_or_else(|| "http://127.0.0.1:9090".to_owned());
    let token = conn
        .token
        .clone()
        .or_else(|| std::env::var("MQTT_GATEWAY_TOKEN").ok())
        .context("no token: --token NAME:SECRET or MQTT_GATEWAY_TOKEN")?;
    let (tls, hostport) = if let Some(h) = base.strip_prefix("https://") {
        (true, h)
    } else if let Some(h) = base.strip_prefix("http://") {
        (false, h)
    } else {
        bail!("--admin: http://HOST:PORT or https://HOST:PORT, not {base:?}");
    };
    let hostport = hostport.trim_end_matches('/');
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let tcp = tokio::net::TcpStream::connect(hostport)
        .await
        .with_context(|| format!("cannot connect to {hostport}"))?;
    let raw = if tls {
        let cacert = conn
            .cacert
            .clone()
            .or_else(|| std::env::var_os("MQTT_GATEWAY_CACERT").map(PathBuf::from))
            .context("https: --cacert FILE or MQTT_GATEWAY_CACERT")?;
        let roots = mqtt_gateway::tls::load_roots(&cacert)?;
        let config = rustls::ClientConfig::builder_with_provider(mqtt_gateway::tls::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .context("the admin host name")?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .context("TLS to the admin listener")?;
        exchange(stream, &request).await?
    } else {
        exchange(tcp, &request).await?
    };
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("not an HTTP answer")?;
    let value = serde_json::from_str(body).unwrap_or_else(|_| json!({ "error": body.trim() }));
    Ok((status, value))
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    request: &str,
) -> anyhow::Result<Vec<u8>> {
    s.write_all(request.as_bytes()).await?;
    let mut out = Vec::new();
    (&mut s).take(MAX_ANSWER).read_to_end(&mut out).await?;
    Ok(out)
}
