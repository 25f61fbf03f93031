//! `authcost`: the gateway's CPU per login, by credential (issue 22): a JWT device token (ES256,
//! EdDSA, RS256) as the CONNECT password, an argon2id password, and a full mTLS handshake (TLS 1.3,
//! client certificate, CONNECT), next to an anonymous CONNECT (the work every login shares: accept,
//! decode, the broker's connection, CONNACK, close).
//!
//! One run: Mosquitto from `upstream-broker/`, the release gateway as its own process with a plain
//! and a TLS listener, bans and rate limits out of the way. For each kind, `LOGINS` sequential
//! logins (connect, CONNECT, CONNACK, DISCONNECT), one at a time; the gateway's user + system CPU
//! (from `/proc/PID/stat`, 10 ms ticks) over them, divided by `LOGINS`.
//!
//! `bash scripts/bench.sh` builds it; run `target/release/authcost [LOGINS]` (default 400).
//! `GATEWAY_BIN=path` measures another build.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use e2e::{Mosquitto, free_port, scratch_dir, sigterm};
use jsonwebtoken::Algorithm;
use mqtt_gateway::auth::token_issuer::Issuer;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

fn connect_frame(user: Option<&str>, password: Option<&[u8]>) -> Vec<u8> {
    bench::connect_v311("", user, password)
}

/// CONNECT, CONNACK (must accept), DISCONNECT on `s`.
async fn login<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, frame: &[u8]) -> anyhow::Result<()> {
    s.write_all(frame).await?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).await?;
    if ack != [0x20, 2, 0, 0] {
        bail!("refused: {ack:?}");
    }
    s.write_all(&[0xe0, 0]).await?;
    s.shutdown().await?;
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
    Ok(())
}

enum Kind {
    Plain(Vec<u8>),
    Mtls(Arc<rustls::ClientConfig>),
}

fn main() -> anyhow::Result<()> {
    let logins: u32 = bench::arg(1, 400, "LOGINS")?;
    let dir = scratch_dir("authcost")?;
    bench::write_alice_and_policy(&dir, "\"publish\"", "\"x\"")?;
    // The floor is an anonymous client: let it connect too.
    std::fs::write(
        dir.join("policy.toml"),
        "version = 1\n[[connect]]\nwho = { any = true }\nclient_ids = [\"*\"]\n\
         [[connect]]\nwho = { anonymous = true }\nclient_ids = [\"*\"]\n\
         [[rule]]\nwho = { any = true }\nallow = [\"publish\"]\ntopics = [\"x\"]\n",
    )?;
    let pki = dir.join("pki");
    bench::bench_pki(&pki, "bench CA", &["device"])?;
    let issuers = [
        (
            "ES256",
            Issuer::new("es", Algorithm::ES256).map_err(anyhow::Error::msg)?,
        ),
        (
            "EdDSA",
            Issuer::new("ed", Algorithm::EdDSA).map_err(anyhow::Error::msg)?,
        ),
        (
            "RS256 (2048)",
            Issuer::new("rs", Algorithm::RS256).map_err(anyhow::Error::msg)?,
        ),
    ];
    let refs: Vec<&Issuer> = issuers.iter().map(|(_, i)| i).collect();
    std::fs::write(dir.join("jwks.json"), Issuer::jwks(&refs))?;
    let broker = Mosquitto::start()?;
    let (plain_port, tls_port) = (free_port(), free_port());
    std::fs::write(
        dir.join("gateway.toml"),
        format!(
            "[upstream]\naddress = \"{broker}\"\n\
             [[listener]]\nname = \"plain\"\nbind = \"127.0.0.1:{plain_port}\"\n\
             [[listener]]\nname = \"mqtts\"\nbind = \"127.0.0.1:{tls_port}\"\n\
             [listener.tls]\ncert = \"pki/gateway.pem\"\nkey = \"pki/gateway.key\"\nclient_ca = \"pki/ca.pem\"\nclient_auth = \"optional\"\n\
             [auth]\nallow_anonymous = true\nprincipal_from = \"cert_cn\"\npassword_file = \"passwords\"\n\
             [auth.token]\njwks_file = \"jwks.json\"\nmax_lifetime = \"1h\"\n\
             [policy]\nfile = \"policy.toml\"\n\
             [limits]\nauth_failures_before_ban = 1000000\nconnections_per_ip_per_second = 100000\nmax_connections_per_ip = 10000\n\
             [log]\naudit_file = \"audit.jsonl\"\n",
            broker = broker.addr()
        ),
    )?;
    let bin = bench::gateway_bin()?;
    let mut gw = bench::spawn_gateway(&dir.join("gateway.toml"))?;
    let pid = gw.id();
    // Both listeners are bound together; probing the TLS one would log a failed handshake.
    let plain = bench::wait_port(plain_port)?;
    let tls: SocketAddr = format!("127.0.0.1:{tls_port}").parse()?;
    let result = measure(logins, pid, plain, tls, &issuers, &pki, &bin);
    sigterm(pid)?;
    let _ = gw.wait();
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(
    logins: u32,
    pid: u32,
    plain: SocketAddr,
    tls: SocketAddr,
    issuers: &[(&str, Issuer)],
    pki: &std::path::Path,
    bin: &std::path::Path,
) -> anyhow::Result<()> {
    let rt = bench::runtime()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = serde_json::json!({"sub": "device", "iat": now, "exp": now + 3000});
    let mut kinds: Vec<(String, Kind)> = vec![(
        "anonymous CONNECT (the shared floor)".to_owned(),
        Kind::Plain(connect_frame(None, None)),
    )];
    for (name, issuer) in issuers {
        let token = issuer.mint(&claims).map_err(anyhow::Error::msg)?;
        kinds.push((
            format!("token {name} as password"),
            Kind::Plain(connect_frame(Some("device"), Some(token.as_bytes()))),
        ));
    }
    kinds.push((
        "argon2id password (m=19456 KiB, t=2)".to_owned(),
        Kind::Plain(connect_frame(Some("alice"), Some(b"secret"))),
    ));
    kinds.push((
        "mTLS: TLS 1.3 full handshake, P-256 client certificate".to_owned(),
        Kind::Mtls(bench::client_tls(pki, "device")?),
    ));
    println!(
        "gateway {}; {logins} sequential logins per kind",
        bin.display()
    );
    println!(
        "| login | gateway CPU per login (ms) | above the anonymous floor (ms) | logins/s (one client) |"
    );
    println!("| --- | --- | --- | --- |");
    let mut floor = None;
    for (name, kind) in &kinds {
        // One unmeasured login warms caches (and the argon2 buffer pool).
        rt.block_on(one(kind, plain, tls))?;
        let cpu0 = bench::cpu_time(pid)?;
        let t0 = Instant::now();
        for _ in 0..logins {
            rt.block_on(one(kind, plain, tls))?;
        }
        let wall = t0.elapsed();
        let cpu = bench::cpu_time(pid)? - cpu0;
        let per = cpu.as_secs_f64() * 1000.0 / f64::from(logins);
        let base = *floor.get_or_insert(per);
        println!(
            "| {name} | {per:.3} | {:.3} | {:.0} |",
            per - base,
            f64::from(logins) / wall.as_secs_f64().max(1e-9)
        );
    }
    Ok(())
}

async fn one(kind: &Kind, plain: SocketAddr, tls: SocketAddr) -> anyhow::Result<()> {
    match kind {
        Kind::Plain(frame) => login(TcpStream::connect(plain).await?, frame).await,
        Kind::Mtls(config) => {
            let tcp = TcpStream::connect(tls).await?;
            let s = tokio_rustls::TlsConnector::from(Arc::clone(config))
                .connect(ServerName::try_from("localhost")?, tcp)
                .await?;
            login(s, &connect_frame(None, None)).await
        }
    }
}
