//! Load benchmarks (see BENCHMARKS.md): a minimal MQTT load client over plain TCP or mTLS, built on
//! `mqtt-inspect`'s encoder, so the same client measures Mosquitto directly and through the gateway.

pub mod process;
pub mod proxies;

pub use process::{SyscallCount, Syscalls, Usage, cpu_split, cpu_time, rss_kib};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use mqtt_inspect::{
    Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, decode, split_frame,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A client connection: plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects, sends CONNECT (MQTT 3.1.1) and waits for a successful CONNACK.
///
/// # Errors
/// The connection or the CONNECT failed.
pub async fn connect(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    client_id: &str,
) -> anyhow::Result<Box<dyn Io>> {
    connect_from(addr, None, tls, client_id).await
}

/// [`connect`] from a chosen local address (many connections need more than one loopback
/// address's ephemeral ports).
///
/// # Errors
/// The connection or the CONNECT failed.
pub async fn connect_from(
    addr: SocketAddr,
    from: Option<std::net::IpAddr>,
    tls: Option<Arc<rustls::ClientConfig>>,
    client_id: &str,
) -> anyhow::Result<Box<dyn Io>> {
    let tcp = match from {
        None => TcpStream::connect(addr).await,
        Some(ip) => {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(SocketAddr::new(ip, 0))?;
            sock.connect(addr).await
        }
    }
    .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true)?;
    let mut io: Box<dyn Io> = match tls {
        Some(cfg) => Box::new(
            tokio_rustls::TlsConnector::from(cfg)
                .connect(ServerName::try_from("localhost")?, tcp)
                .await?,
        ),
        None => Box::new(tcp),
    };
    io.write_all(&connect_v311(client_id, None, None)).await?;
    let mut buf = Vec::new();
    let frame = read_frame(&mut io, &mut buf).await?;
    match decode(&frame, ProtocolVersion::V311) {
        Ok(Packet::Connack(a)) if a.code.is_success() => Ok(io),
        other => bail!("CONNECT refused: {other:?}"),
    }
}

async fn read_frame(io: &mut Box<dyn Io>, buf: &mut Vec<u8>) -> anyhow::Result<Vec<u8>> {
    loop {
        if let Some((frame, _)) = split_frame(buf, mqtt_inspect::MAX_PACKET_SIZE)? {
            let f = frame.to_vec();
            buf.drain(..f.len());
            return Ok(f);
        }
        let mut chunk = [0u8; 4096];
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            bail!("connection closed");
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

/// Subscribes to `filter` at QoS 0 and returns once the SUBACK arrived.
///
/// # Errors
/// The SUBSCRIBE failed.
pub async fn subscribe(io: &mut Box<dyn Io>, filter: &str) -> anyhow::Result<()> {
    let mut body = vec![0x00, 0x01];
    body.extend_from_slice(&u16::try_from(filter.len())?.to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(0);
    let mut frame = vec![0x82, u8::try_from(body.len())?];
    frame.extend_from_slice(&body);
    io.write_all(&frame).await?;
    let mut buf = Vec::new();
    let f = read_frame(io, &mut buf).await?;
    if f.first() != Some(&0x90) {
        bail!("expected SUBACK, got {f:?}");
    }
    Ok(())
}

/// `count` QoS 0 PUBLISH frames on `topic` with `payload_len` bytes each, in one buffer.
///
/// # Errors
/// Encoding failed.
pub fn publish_batch(topic: &str, payload_len: usize, count: usize) -> anyhow::Result<Vec<u8>> {
    let payload = vec![b'x'; payload_len];
    let p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic,
        packet_id: None::<PacketId>,
        properties: Properties::EMPTY,
        payload: &payload,
    };
    let mut out = Vec::new();
    for _ in 0..count {
        p.encode(ProtocolVersion::V311, &mut out)?;
    }
    Ok(out)
}

/// Counts PUBLISH frames arriving on `io` until `want` arrived or nothing came for `idle`.
/// Returns (count, time from the first to the last).
///
/// # Errors
/// The connection failed.
pub async fn count_publishes(
    io: &mut Box<dyn Io>,
    want: u64,
    idle: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut n = 0u64;
    let mut first = None;
    let mut last = Instant::now();
    while n < want {
        let r = tokio::time::timeout(idle, io.read(&mut buf)).await;
        let read = match r {
            Err(_) => break,
            Ok(Ok(0)) => break,
            Ok(Ok(read)) => read,
            Ok(Err(e)) => return Err(e.into()),
        };
        first.get_or_insert_with(Instant::now);
        last = Instant::now();
        pending.extend_from_slice(buf.get(..read).unwrap_or_default());
        let mut rest: &[u8] = &pending;
        while let Some((frame, tail)) = split_frame(rest, mqtt_inspect::MAX_PACKET_SIZE)? {
            if frame.first().is_some_and(|b| b >> 4 == 3) {
                n += 1;
            }
            rest = tail;
        }
        let consumed = pending.len() - rest.len();
        pending.drain(..consumed);
    }
    Ok((n, first.map_or(Duration::ZERO, |f| last - f)))
}

/// A client TLS configuration trusting `pki/ca.pem` and presenting `pki/<name>.pem` (as made by
/// the gateway's own `pki` tool).
///
/// # Errors
/// A file is missing or unreadable.
pub fn client_tls(pki: &Path, name: &str) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(pki.join("ca.pem"))?)?;
    let chain = vec![CertificateDer::from_pem_file(
        pki.join(format!("{name}.pem")),
    )?];
    let key = PrivateKeyDer::from_pem_file(pki.join(format!("{name}.key")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?,
    ))
}

/// The release gateway binary (built by `scripts/bench.sh`).
///
/// # Errors
/// It has not been built.
pub fn gateway_bin() -> anyhow::Result<PathBuf> {
    // `GATEWAY_BIN=path` measures another build (an A/B comparison of two commits).
    let bin = std::env::var_os("GATEWAY_BIN").map_or_else(
        || e2e::workspace_root().join("target/release/mqtt-gateway"),
        PathBuf::from,
    );
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release -p mqtt-gateway` (scripts/bench.sh does)",
            bin.display()
        );
    }
    Ok(bin)
}

/// Waits until something listens on 127.0.0.1:`port` (up to 30 s).
///
/// # Errors
/// Nothing came up.
pub fn wait_port(port: u16) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    for _ in 0..600 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(addr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listening on {addr}")
}

/// The `n`th command-line argument parsed as `T`, or `default` when absent; `name` for the error.
///
/// # Errors
/// The argument is there but does not parse.
pub fn arg<T: std::str::FromStr>(n: usize, default: T, name: &str) -> anyhow::Result<T> {
    match std::env::args().nth(n) {
        None => Ok(default),
        Some(s) => s
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}: cannot parse {s:?}")),
    }
}

/// Writes `passwords` (user `alice`, password `secret`, argon2id as the gateway hashes it) and a
/// `policy.toml` letting anyone connect with any client id and use `topics` for `actions`, into
/// `dir`: the gateway set-up of the password benches.
///
/// # Errors
/// Hashing or writing failed.
pub fn write_alice_and_policy(dir: &Path, actions: &str, topics: &str) -> anyhow::Result<()> {
    let hash = mqtt_gateway::auth::hash_argon2id(b"secret")?;
    std::fs::write(dir.join("passwords"), format!("alice:{hash}\n"))?;
    std::fs::write(
        dir.join("policy.toml"),
        format!(
            "version = 1\n[[connect]]\nwho = {{ any = true }}\nclient_ids = [\"*\"]\n[[rule]]\nwho = {{ any = true }}\nallow = [{actions}]\ntopics = [{topics}]\n"
        ),
    )?;
    Ok(())
}

/// A CA in `pki` (the gateway's own `pki` tool), with the gateway's server certificate for
/// `localhost` and `127.0.0.1`, and a client certificate for each of `devices`: the TLS set-up
/// of the benches.
///
/// # Errors
/// A certificate could not be made or written.
pub fn bench_pki(
    pki: &Path,
    ca_name: &str,
    devices: &[&str],
) -> anyhow::Result<mqtt_gateway::pki::Ca> {
    let ca = mqtt_gateway::pki::Ca::init(pki, ca_name, 30)?;
    ca.issue(
        "gateway",
        None,
        30,
        true,
        &["localhost".into(), "127.0.0.1".into()],
    )?;
    for name in devices {
        ca.issue(name, None, 30, false, &[])?;
    }
    Ok(ca)
}

/// The release gateway ([`gateway_bin`]) started as its own process on `config`, quiet (errors
/// only on stderr).
///
/// # Errors
/// It is not built, or could not be started.
pub fn spawn_gateway(config: &Path) -> anyhow::Result<std::process::Child> {
    let bin = gateway_bin()?;
    std::process::Command::new(&bin)
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| bin.display().to_string())
}

/// The load clients' runtime: two worker threads (the machine's cores are shared with the broker
/// and the proxy under test).
///
/// # Errors
/// The runtime could not be built.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// Complete mTLS connections (TCP + TLS + CONNECT/CONNACK) per second for 5 s, one client task per
/// configuration in `configs`, each from its own loopback address (127.0.0.2.N: the per-address
/// connection rate is not what is measured).
///
/// # Errors
/// A client task panicked.
pub async fn handshake_rate(
    addr: SocketAddr,
    configs: Vec<Arc<rustls::ClientConfig>>,
) -> anyhow::Result<f64> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let done = Arc::new(AtomicU64::new(0));
    // 5 s: a 3 s window moved with whatever else the two cores were doing.
    let stop = Instant::now() + Duration::from_secs(5);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, tls) in configs.into_iter().enumerate() {
        let done = Arc::clone(&done);
        let from = std::net::IpAddr::V4(std::net::Ipv4Addr::new(
            127,
            0,
            2,
            u8::try_from(c + 1).unwrap_or(1),
        ));
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < stop {
                if connect_from(
                    addr,
                    Some(from),
                    Some(Arc::clone(&tls)),
                    &format!("hs-{c}-{i}"),
                )
                .await
                .is_ok()
                {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    #[allow(clippy::cast_precision_loss, clippy::as_conversions)]
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// The config of a gateway in front of `broker` for the benchmarks: the mTLS listener "mqtts" on
/// `port`, clients named and authenticated by their certificate's CN, the policy in `policy.toml`,
/// the audit log in `audit.jsonl`.
pub struct MtlsGateway<'a> {
    /// The upstream broker's address.
    pub broker: &'a str,
    /// The port of the mTLS listener.
    pub port: u16,
    /// The folder of `gateway.pem`, `gateway.key` and `ca.pem`.
    pub pki: &'a str,
    /// More lines of `[listener.tls]` (CRL, OCSP), and more listeners.
    pub listeners: &'a str,
    /// More lines of `[auth]`.
    pub auth: &'a str,
    /// The lines of `[limits]`.
    pub limits: &'a str,
}

impl MtlsGateway<'_> {
    /// The config file's text.
    #[must_use]
    pub fn config(&self) -> String {
        let Self {
            broker,
            port,
            pki,
            listeners,
            auth,
            limits,
        } = self;
        format!(
            r#"[upstream]
address = "{broker}"
[[listener]]
name = "mqtts"
bind = "127.0.0.1:{port}"
[listener.tls]
cert = "{pki}/gateway.pem"
key = "{pki}/gateway.key"
client_ca = "{pki}/ca.pem"
{listeners}
[auth]
principal_from = "cert_cn"
cert_is_credential = true
{auth}
[policy]
file = "policy.toml"
[limits]
{limits}
[log]
audit_file = "audit.jsonl"
"#
        )
    }
}

/// An MQTT 3.1.1 CONNECT (clean session, keep-alive 60) with `client_id` and the credentials given.
#[must_use]
pub fn connect_v311(client_id: &str, user: Option<&str>, password: Option<&[u8]>) -> Vec<u8> {
    // Within every limit of the encoder: a fixed header and short fields.
    e2e::connect_frame(ProtocolVersion::V311, 60, client_id, user, password).unwrap_or_default()
}
