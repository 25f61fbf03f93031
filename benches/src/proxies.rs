//! The TLS terminators an operator would otherwise deploy, started for a benchmark: HAProxy and
//! nginx's stream module, both terminating mTLS with the CRL of the CA in `DIR/pki` (made by the
//! gateway's `pki` tool) and relaying to the broker, over TCP (`127.0.0.1:port`) or its Unix
//! socket (`unix:/path`).
//!
//! HAProxy's `maxconn` is 9,950 and nginx's `worker_connections` 40,000: this machine caps a
//! process at 20,000 open files and a proxied connection needs two.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context;
use e2e::free_port;

use crate::wait_port;

/// HAProxy (Debian package) terminating mTLS with the same certificates and CRL, to the broker at
/// `broker` (`host:port` or `unix:/path`).
pub fn start_haproxy(dir: &Path, broker: &str) -> anyhow::Result<(Child, SocketAddr)> {
    let pki = dir.join("pki");
    let pem = format!(
        "{}{}",
        std::fs::read_to_string(pki.join("gateway.pem"))?,
        std::fs::read_to_string(pki.join("gateway.key"))?
    );
    std::fs::write(dir.join("haproxy.pem"), pem)?;
    let port = free_port();
    // HAProxy spells a Unix socket server `unix@/path`.
    let server = broker
        .strip_prefix("unix:")
        .map_or_else(|| broker.to_owned(), |path| format!("unix@{path}"));
    let tag = if broker.starts_with("unix:") {
        "-unix"
    } else {
        ""
    };
    let cfg = format!(
        "global\n  maxconn 9950\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n\
         frontend mqtts\n  bind 127.0.0.1:{port} ssl crt {pem} ca-file {ca} verify required crl-file {crl}\n  default_backend broker\n\
         backend broker\n  server b {server}\n",
        pem = dir.join("haproxy.pem").display(),
        ca = pki.join("ca.pem").display(),
        crl = pki.join("ca.crl").display(),
    );
    let conf = dir.join(format!("haproxy{tag}.cfg"));
    std::fs::write(&conf, cfg)?;
    let child = Command::new("haproxy")
        .args(["-db", "-f"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("haproxy (apt-get install haproxy)")?;
    wait_port(port).map(|a| (child, a))
}

/// nginx's stream module terminating mTLS the same way, one process (master_process off, one
/// worker).
pub fn start_nginx(dir: &Path, broker: &str) -> anyhow::Result<(Child, SocketAddr)> {
    start_nginx_workers(dir, broker, false)
}

/// nginx's stream module terminating mTLS: one process (`auto` false) or as Debian ships it,
/// `worker_processes auto` (one worker per core) under a master process; the returned child is
/// the master, and the workers are its children. `broker` is `host:port` or `unix:/path`
/// (nginx's own spelling of a Unix socket upstream).
pub fn start_nginx_workers(
    dir: &Path,
    broker: &str,
    auto: bool,
) -> anyhow::Result<(Child, SocketAddr)> {
    let pki = dir.join("pki");
    let port = free_port();
    let (master, workers, tag) = if auto {
        ("on", "auto", "auto")
    } else {
        ("off", "1", "one")
    };
    let tag = if broker.starts_with("unix:") {
        format!("{tag}-unix")
    } else {
        tag.to_owned()
    };
    let cfg = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\ndaemon off;\nmaster_process {master};\nworker_processes {workers};\n\
         pid {dir}/nginx-{tag}.pid;\nworker_rlimit_nofile 20000;\nerror_log {dir}/nginx-{tag}.err;\nevents {{ worker_connections 40000; }}\n\
         stream {{ server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};\n\
         ssl_client_certificate {ca}; ssl_verify_client on; ssl_crl {crl}; proxy_pass {broker}; }} }}\n",
        dir = dir.display(),
        cert = pki.join("gateway.pem").display(),
        key = pki.join("gateway.key").display(),
        ca = pki.join("ca.pem").display(),
        crl = pki.join("ca.crl").display(),
    );
    let conf = dir.join(format!("nginx-{tag}.conf"));
    std::fs::write(&conf, cfg)?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("nginx (apt-get install nginx-light libnginx-mod-stream)")?;
    wait_port(port).map(|a| (child, a))
}
