//! The targets of the comparison: what each is, how to start one, and the gateway's config.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::bail;
use bench::proxies::{start_haproxy, start_nginx_workers};
use bench::{gateway_bin, wait_port};
use e2e::{Mosquitto, free_port, sigterm};

/// One thing measured.
pub(crate) struct Target {
    pub(crate) name: &'static str,
    pub(crate) addr: SocketAddr,
    pub(crate) tls: bool,
    /// The proxy process (none for Mosquitto direct).
    pub(crate) pid: Option<u32>,
    /// How to start a fresh one (idle memory).
    pub(crate) kind: Kind,
}

impl Target {
    /// Whether idle memory is measured: for mTLS targets, and not for those that differ from
    /// another only by a Unix socket upstream (an idle connection sends nothing upstream).
    pub(crate) fn measures_idle(&self) -> bool {
        self.tls
            && !matches!(
                self.kind,
                Kind::Gateway(_, Up::Unix) | Kind::Haproxy(Up::Unix) | Kind::Nginx(_, Up::Unix)
            )
    }
}

/// How a proxy reaches the broker.
#[derive(Clone, Copy)]
pub(crate) enum Up {
    /// `127.0.0.1:port`.
    Tcp,
    /// The broker's Unix socket.
    Unix,
}

/// The broker address a proxy is given for `up`.
pub(crate) fn upstream_of(broker: &Mosquitto, up: Up) -> String {
    match up {
        Up::Tcp => broker.addr().to_string(),
        Up::Unix => format!("unix:{}", broker.unix_socket().display()),
    }
}

/// What a target is, to start a fresh process of it.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Direct,
    /// The gateway; `Some(n)` runs its runtime on n threads (`TOKIO_WORKER_THREADS`), `None` on
    /// one per core (the default).
    Gateway(Option<usize>, Up),
    Haproxy(Up),
    /// nginx; `true`: `worker_processes auto` under a master (Debian's default), `false`: one
    /// process.
    Nginx(bool, Up),
}

pub(crate) fn policy_1000() -> String {
    let mut s = String::from(
        "version = 1\n[[connect]]\nwho = { any = true }\nclient_ids = [\"*\"]\n\
         [[connect]]\nwho = { anonymous = true }\nclient_ids = [\"*\"]\n\
         [[rule]]\nwho = { anonymous = true }\nallow = [\"publish\", \"subscribe\", \"receive\"]\ntopics = [\"bench/#\"]\n\
         [[rule]]\nwho = { any = true }\nallow = [\"publish\", \"subscribe\", \"receive\"]\ntopics = [\"bench/#\"]\n\
         [[rule]]\nwho = { any = true }\ndeny = [\"receive\"]\ntopics = [\"bench/secret/#\"]\n\
         [[rule]]\nwho = { principals = [\"bench-*\"] }\nallow = [\"publish\", \"subscribe\", \"receive\"]\ntopics = [\"devices/%u/#\"]\n",
    );
    for n in 0..996 {
        let _ = write!(
            s,
            "[[rule]]\nwho = {{ principals = [\"device-{n}\"] }}\nallow = [\"publish\", \"receive\"]\ntopics = [\"fleet/{n}/%u/#\", \"fleet/{n}/status\"]\n"
        );
    }
    s
}

/// Starts the gateway with its files in `work` (created) and the certificates in `pki`.
pub(crate) fn start_gateway(
    work: &Path,
    pki: &Path,
    broker: &str,
    threads: Option<usize>,
) -> anyhow::Result<(Child, SocketAddr, SocketAddr)> {
    std::fs::create_dir_all(work)?;
    std::fs::write(work.join("policy.toml"), policy_1000())?;
    let (tls_port, plain_port) = (free_port(), free_port());
    let pki = pki.display().to_string();
    let config = bench::MtlsGateway {
        broker,
        port: tls_port,
        pki: &pki,
        listeners: &format!(
            r#"crl = ["{pki}/ca.crl"]
[[listener]]
name = "plain"
bind = "127.0.0.1:{plain_port}""#
        ),
        auth: "allow_anonymous = true",
        // A benchmark is a flood by design: lift the per-client and per-address limits.
        limits: r#"max_connections_per_ip = 100000
connections_per_ip_per_second = 1000000
messages_per_client_per_second = 100000000
bytes_per_client_per_second = "1GiB"
auth_failures_before_ban = 1000000"#,
    }
    .config();
    std::fs::write(work.join("gateway.toml"), config)?;
    let mut cmd = Command::new(gateway_bin()?);
    cmd.args(["run", "--config"])
        .arg(work.join("gateway.toml"))
        .current_dir(work)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null());
    if let Some(n) = threads {
        cmd.env("TOKIO_WORKER_THREADS", n.to_string());
    }
    let child = cmd.spawn()?;
    let tls = wait_port(tls_port)?;
    Ok((child, tls, wait_port(plain_port)?))
}

/// A fresh process of a proxy, for the phases that measure its memory (idle connections, the
/// fleet): a process that has already held thousands of connections reuses the memory they freed,
/// and would report next to nothing. Stopped with SIGTERM when dropped.
pub(crate) struct Fresh {
    child: Child,
    pub(crate) target: Target,
}

impl Fresh {
    /// Starts a fresh proxy of `kind` (its files in `dir`, named `name` in reports).
    pub(crate) fn start(
        kind: Kind,
        name: &'static str,
        dir: &Path,
        broker: &Mosquitto,
    ) -> anyhow::Result<Self> {
        let pki = dir.join("pki");
        let (child, addr) = match kind {
            Kind::Gateway(threads, up) => start_gateway(
                &dir.join("gw-fresh"),
                &pki,
                &upstream_of(broker, up),
                threads,
            )
            .map(|(c, tls, _)| (c, tls))?,
            Kind::Haproxy(up) => start_haproxy(dir, &upstream_of(broker, up))?,
            Kind::Nginx(auto, up) => start_nginx_workers(dir, &upstream_of(broker, up), auto)?,
            Kind::Direct => bail!("no proxy to measure"),
        };
        let target = Target {
            name,
            addr,
            tls: true,
            pid: Some(child.id()),
            kind,
        };
        Ok(Self { child, target })
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = sigterm(self.child.id());
        let _ = self.child.wait();
    }
}
