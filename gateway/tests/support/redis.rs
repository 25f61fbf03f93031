//! A real `redis-server` (Debian package `redis-server`, installed by `scripts/test.sh`) for the
//! `[cluster]` tests: on a free loopback port, without persistence, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` on a free loopback port; `kill` and `spawn` again restart it on the same port
/// (empty), `signal("-STOP")` makes it accept and never answer.
pub struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    pub fn start() -> Self {
        let mut r = Self {
            child: None,
            port: e2e::free_port(),
        };
        r.spawn();
        r
    }

    /// TLS only (`rediss://localhost:PORT/0`), with this server certificate chain and key; clients
    /// are not asked for certificates. Ready once it accepts TCP.
    pub fn start_tls(chain: &std::path::Path, key: &std::path::Path) -> Self {
        let port = e2e::free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(chain)
            .arg("--tls-key-file")
            .arg(key)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server (TLS) did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child: Some(child),
            port,
        }
    }

    /// The `rediss://` URL of a [`Redis::start_tls`] server.
    pub fn tls_url(&self) -> String {
        format!("rediss://localhost:{}/0", self.port)
    }

    /// Runs one command with `redis-cli` (Debian's redis-tools, a dependency of redis-server);
    /// its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/test.sh installs it)");
        self.child = Some(child);
        // Ready when it answers PING.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 7];
                if s.write_all(b"PING\r\n").is_ok()
                    && s.read_exact(&mut buf).is_ok()
                    && &buf == b"+PONG\r\n"
                {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            // A stopped server must be continued to die cleanly.
            let _ = Command::new("kill")
                .args(["-CONT", &c.id().to_string()])
                .status();
        }
        self.kill();
    }
}
