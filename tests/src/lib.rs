//! Support for the end-to-end tests: the reference broker from `upstream-broker/` and the real
//! Mosquitto command-line clients (`mosquitto_pub`, `mosquitto_sub`).
//!
//! Everything here drives real processes over loopback TCP; there is no mocked broker
//! (DESIGN.md §2). The helpers never assert on timing: every wait is a deadline after which the
//! helper gives up (and kills what it started), so a hung broker or client fails a test instead
//! of hanging it.
//!
//! - [`Mosquitto`] starts `upstream-broker/start.sh` on a free port of 127.0.0.1, waits until the
//!   port accepts TCP, and stops (SIGTERM), restarts or kills (on drop) the broker.
//! - [`mosquitto_pub`] and [`mosquitto_sub`] run the CLI clients to completion and return their
//!   output; [`LiveSubscriber`] keeps a `mosquitto_sub` running and returns once the broker has
//!   acknowledged its SUBSCRIBE, so a test can publish without racing the subscription.
//!
//! Needs `mosquitto`, `mosquitto_pub` and `mosquitto_sub` on `PATH` (`scripts/test.sh` installs
//! them on Debian), and `bash` and coreutils `stdbuf` for the start script, SIGTERM and
//! line-buffered client output.
#![warn(missing_docs)]

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long [`Mosquitto`] waits for the broker to accept TCP after starting it.
pub const BROKER_READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`Mosquitto::stop`] waits after SIGTERM before it sends SIGKILL.
pub const BROKER_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`mosquitto_pub`] may run before it is killed.
pub const PUB_TIMEOUT: Duration = Duration::from_secs(15);
/// Extra time granted to `mosquitto_sub` beyond its own `-W` timeout before it is killed.
const SUB_GRACE: Duration = Duration::from_secs(5);
/// Pause between two probes of a port or a process.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// How many times [`Mosquitto::start`] tries a fresh port when the one it picked was taken
/// between [`free_port`] and the broker's `bind`.
const START_ATTEMPTS: usize = 5;

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.to_path_buf(), Path::to_path_buf)
}

/// The reference broker's start script, `upstream-broker/start.sh`.
pub fn start_script() -> PathBuf {
    workspace_root().join("upstream-broker").join("start.sh")
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a listener the caller (or a process it
/// starts) binds next.
///
/// Ports come from below the kernel's ephemeral range (32768–60999 by default), one after the
/// other from a start that depends on the process id: a port bound to 0 comes *from* that range,
/// where every outgoing connection of the test process (clients, the gateway's upstream sockets)
/// also takes its local port, and a gateway started a moment later then found its port held by
/// some client's socket (`Address already in use`, seen in `lifecycle.rs`). Below the range no
/// outgoing socket takes it, and within one process no port is handed out twice. Another process
/// may still take it; [`Mosquitto::start`] retries with a new port when that happens.
///
/// # Panics
///
/// When no port in the range can be bound (the machine is unusable for these tests).
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let start = std::process::id().wrapping_mul(97) % SPAN;
    for _ in 0..SPAN {
        let n = u32::try_from(NEXT.fetch_add(1, Ordering::Relaxed) % 12_000).unwrap_or(0);
        let port = u16::try_from(FIRST + (start + n) % SPAN).unwrap_or(20_000);
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 in {FIRST}..{}", FIRST + SPAN)
}

/// A fresh, empty scratch directory under the system temp dir, unique within this machine's
/// live processes. The caller removes it.
pub fn scratch_dir(label: &str) -> io::Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("e2e-{label}-{}-{n}", std::process::id()));
    // A leftover of a killed earlier process with the same pid: start clean.
    if dir.exists() {
        fs::remove_dir_all(&dir)?;
    }
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Sends SIGTERM to `pid` with bash's `kill` builtin (this crate uses no libc, and `/bin/kill`
/// comes from procps, which a minimal Debian lacks).
pub fn sigterm(pid: u32) -> io::Result<()> {
    let status = Command::new("bash")
        .args(["-c", r#"kill -TERM "$1""#, "kill", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "kill -TERM {pid} failed: {status}"
        )))
    }
}

/// Waits for `child` to exit until `deadline`; `None` when it is still running then.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// A Mosquitto started through `upstream-broker/start.sh` on 127.0.0.1 and a free port.
///
/// Each broker has its own scratch directory holding its log (`mosquitto.log`, stdout and stderr
/// of the broker, kept across restarts), the per-run config `start.sh` writes (it is given the
/// directory as `TMPDIR`) and, for [`Mosquitto::start_persistent`], its data directory. Dropping
/// the value kills the broker (SIGKILL) and removes the directory; when the drop happens during a
/// panic the broker log is printed first, so a failing test shows what the broker saw.
pub struct Mosquitto {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    data_dir: Option<PathBuf>,
    /// Configuration lines appended to the reference config, kept in `dir` (EXTRA_CONF).
    extra_conf: Option<PathBuf>,
}

impl fmt::Debug for Mosquitto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mosquitto")
            .field("pid", &self.child.as_ref().map(Child::id))
            .field("port", &self.port)
            .field("dir", &self.dir)
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl Mosquitto {
    /// Starts the reference broker without persistence and waits until it accepts TCP.
    pub fn start() -> io::Result<Self> {
        Self::start_with(false, None)
    }

    /// Starts the reference broker with `extra` appended to its configuration (for example a
    /// bridge `connection` section, for a broker standing for a remote site) and waits until it
    /// accepts TCP.
    pub fn start_with_conf(extra: &str) -> io::Result<Self> {
        Self::start_with(false, Some(extra))
    }

    /// Starts the reference broker with persistence in a data directory of its own (kept across
    /// [`Mosquitto::restart`]) and waits until it accepts TCP.
    pub fn start_persistent() -> io::Result<Self> {
        Self::start_with(true, None)
    }

    fn start_with(persistent: bool, extra: Option<&str>) -> io::Result<Self> {
        let dir = scratch_dir("mosquitto")?;
        let data_dir = persistent.then(|| dir.join("data"));
        let extra_conf = match extra {
            Some(text) => {
                let path = dir.join("extra.conf");
                fs::write(&path, text)?;
                Some(path)
            }
            None => None,
        };
        let mut broker = Self {
            child: None,
            port: 0,
            dir,
            data_dir,
            extra_conf,
        };
        let mut last_err = None;
        for _ in 0..START_ATTEMPTS {
            broker.port = free_port();
            match broker.spawn_and_wait() {
                Ok(()) => return Ok(broker),
                // The port was taken between free_port() and Mosquitto's bind: try another one.
                Err(err) if broker.log().contains("Address already in use") => {
                    last_err = Some(err);
                    broker.truncate_log()?;
                }
                Err(err) => return Err(err),
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("mosquitto did not start")))
    }

    /// The broker's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's address, `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }

    /// The broker's Unix domain socket (it listens there too): `upstream.address =
    /// "unix:<this>"`.
    pub fn unix_socket(&self) -> PathBuf {
        self.dir.join("mqtt.sock")
    }

    /// The process id of the running broker, if it is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The persistence directory, for a broker made by [`Mosquitto::start_persistent`].
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// The broker's log so far (all runs of this value, restarts included).
    pub fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("mosquitto.log")
    }

    fn truncate_log(&self) -> io::Result<()> {
        File::create(self.log_path()).map(drop)
    }

    fn spawn_and_wait(&mut self) -> io::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new("bash");
        cmd.arg(start_script()).arg(self.port.to_string());
        if let Some(data) = &self.data_dir {
            cmd.arg(data);
        }
        // start.sh writes its per-run config with `mktemp -d`: keep it in our directory.
        if let Some(extra) = &self.extra_conf {
            cmd.env("EXTRA_CONF", extra);
        }
        cmd.env("TMPDIR", &self.dir)
            .env("UNIX_SOCKET", self.unix_socket())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // start.sh `exec`s mosquitto, so this child *is* the broker once the script has run.
        let child = cmd.spawn()?;
        self.child = Some(child);
        self.wait_ready()
    }

    /// Polls the port until it accepts a TCP connection; fails (and reaps the broker) when the
    /// broker exits first or [`BROKER_READY_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> io::Result<()> {
        let addr = self.addr();
        let deadline = Instant::now() + BROKER_READY_TIMEOUT;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(io::Error::other("mosquitto is not running"));
            };
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Err(io::Error::other(format!(
                    "mosquitto exited during start-up ({status}); log:\n{}",
                    self.log()
                )));
            }
            // A connection to itself does not count: dialling a local port nobody listens on yet
            // can connect the socket to itself (TCP simultaneous open) when the kernel picks
            // that port as the source, which also keeps the broker from binding it.
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
                && s.local_addr().ok() != s.peer_addr().ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "mosquitto did not accept on {addr} in time; log:\n{}",
                        self.log()
                    ),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Stops the broker with SIGTERM (Mosquitto saves its persistence file then) and waits for it
    /// to exit; SIGKILL after [`BROKER_STOP_TIMEOUT`]. Returns the broker's exit status, or `None`
    /// when it was not running.
    pub fn stop(&mut self) -> io::Result<Option<ExitStatus>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        if child.try_wait()?.is_none() {
            sigterm(child.id())?;
        }
        match wait_until(&mut child, Instant::now() + BROKER_STOP_TIMEOUT)? {
            Some(status) => Ok(Some(status)),
            None => {
                child.kill()?;
                child.wait().map(Some)
            }
        }
    }

    /// Stops the broker (SIGTERM) and starts it again on the same port with the same data
    /// directory, then waits until it accepts TCP. Persistent state survives for a broker made by
    /// [`Mosquitto::start_persistent`].
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.spawn_and_wait()
    }

    /// SIGKILL and reap, ignoring errors (the process may already be gone).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!(
                "--- mosquitto log ({}) ---\n{}--- end of log ---",
                self.addr(),
                self.log()
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The protocol version a Mosquitto CLI client speaks (`-V`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MqttVersion {
    /// MQTT 3.1 (`MQIsdp`, protocol level 3).
    V31,
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

impl MqttVersion {
    /// All versions, oldest first.
    pub const ALL: [Self; 3] = [Self::V31, Self::V311, Self::V5];

    /// The value of the CLI's `-V` option.
    pub fn cli_arg(self) -> &'static str {
        match self {
            Self::V31 => "mqttv31",
            Self::V311 => "mqttv311",
            Self::V5 => "mqttv5",
        }
    }
}

impl fmt::Display for MqttVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cli_arg())
    }
}

/// What a CLI client printed, and how it ended.
#[derive(Debug)]
pub struct CliOutput {
    /// The exit status (after SIGKILL when `timed_out`).
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: String,
    /// Everything written to stderr.
    pub stderr: String,
    /// True when the helper killed the process at its deadline.
    pub timed_out: bool,
}

impl CliOutput {
    /// Exit status 0 and not killed.
    pub fn success(&self) -> bool {
        self.status.success() && !self.timed_out
    }

    /// The stdout lines that are not `-d` debug output: for `mosquitto_sub`, the messages as
    /// formatted by its `-v`/`-F` options.
    pub fn messages(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|line| !is_debug_line(line))
            .collect()
    }
}

/// Lines that the CLI clients print under `-d` (libmosquitto's log callback and `mosquitto_sub`'s
/// subscribe callback).
fn is_debug_line(line: &str) -> bool {
    line.starts_with("Client ") || line.starts_with("Subscribed (mid:")
}

/// The arguments every helper passes first: host, port, protocol version.
fn base_args(addr: SocketAddr, version: MqttVersion) -> [String; 6] {
    [
        "-h".to_owned(),
        addr.ip().to_string(),
        "-p".to_owned(),
        addr.port().to_string(),
        "-V".to_owned(),
        version.cli_arg().to_owned(),
    ]
}

/// Reads a pipe to its end on a thread of its own, so a chatty child never blocks on a full pipe.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

fn join_text(handle: JoinHandle<String>) -> String {
    handle
        .join()
        .unwrap_or_else(|_| String::from("<reader thread panicked>"))
}

/// Runs `cmd` to completion with stdin closed and stdout/stderr captured; kills it at `limit`.
pub fn run_with_timeout(cmd: &mut Command, limit: Duration) -> io::Result<CliOutput> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let (status, timed_out) = match wait_until(&mut child, Instant::now() + limit)? {
        Some(status) => (status, false),
        None => {
            child.kill()?;
            (child.wait()?, true)
        }
    };
    Ok(CliOutput {
        status,
        stdout: join_text(stdout),
        stderr: join_text(stderr),
        timed_out,
    })
}

/// Runs `mosquitto_pub -h IP -p PORT -V VERSION ARGS...` to completion (killed after
/// [`PUB_TIMEOUT`]).
///
/// ```no_run
/// # use e2e::{Mosquitto, MqttVersion, mosquitto_pub};
/// let broker = Mosquitto::start()?;
/// let out = mosquitto_pub(broker.addr(), MqttVersion::V5, &["-t", "a/b", "-m", "hi", "-q", "1"])?;
/// assert!(out.success(), "{out:?}");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn mosquitto_pub(
    addr: SocketAddr,
    version: MqttVersion,
    args: &[&str],
) -> io::Result<CliOutput> {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(base_args(addr, version)).args(args);
    run_with_timeout(&mut cmd, PUB_TIMEOUT)
}

/// Runs `mosquitto_sub -h IP -p PORT -V VERSION -W WAIT_SECS ARGS...` to completion. Give `-C N`
/// in `args` to stop after N messages; without it the client runs until its `-W` timeout (exit
/// status 27, "Timed out"). Useful for retained messages, which arrive without a race; for live
/// messages use [`LiveSubscriber`].
pub fn mosquitto_sub(
    addr: SocketAddr,
    version: MqttVersion,
    wait_secs: u32,
    args: &[&str],
) -> io::Result<CliOutput> {
    let mut cmd = Command::new("mosquitto_sub");
    cmd.args(base_args(addr, version))
        .args(["-W", &wait_secs.to_string()])
        .args(args);
    run_with_timeout(&mut cmd, Duration::from_secs(wait_secs.into()) + SUB_GRACE)
}

/// A `mosquitto_sub` that runs in the background until [`LiveSubscriber::finish`].
///
/// [`LiveSubscriber::spawn`] returns once the broker has acknowledged the SUBSCRIBE (the client
/// runs with `-d`, and its "received SUBACK" line is awaited), so messages published afterwards
/// are delivered to it. [`CliOutput::messages`] leaves the `-d` lines out.
#[derive(Debug)]
pub struct LiveSubscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stdout_reader: Option<JoinHandle<()>>,
    stderr_reader: Option<JoinHandle<String>>,
    deadline: Instant,
}

impl LiveSubscriber {
    /// Starts `stdbuf -oL mosquitto_sub -d -h IP -p PORT -V VERSION -W WAIT_SECS ARGS...` and waits (at
    /// most `WAIT_SECS`) for its SUBACK. Fails, with the client's output, when the client exits or
    /// the deadline passes first.
    pub fn spawn(
        addr: SocketAddr,
        version: MqttVersion,
        wait_secs: u32,
        args: &[&str],
    ) -> io::Result<Self> {
        // `mosquitto_sub` block-buffers stdout on a pipe, and its `-d` lines are not flushed:
        // coreutils `stdbuf -oL` makes them arrive line by line.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-d"])
            .args(base_args(addr, version))
            .args(["-W", &wait_secs.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let (tx, lines) = mpsc::channel();
        let stdout_reader = child
            .stdout
            .take()
            .map(|out| thread::spawn(move || forward_lines(out, &tx)));
        let stderr_reader = Some(drain(child.stderr.take()));
        let deadline = Instant::now() + Duration::from_secs(wait_secs.into()) + SUB_GRACE;
        let mut sub = Self {
            child,
            lines,
            seen: Vec::new(),
            stdout_reader,
            stderr_reader,
            deadline,
        };
        let suback_deadline = Instant::now() + Duration::from_secs(wait_secs.into());
        loop {
            let left = suback_deadline.saturating_duration_since(Instant::now());
            match sub.lines.recv_timeout(left) {
                Ok(line) => {
                    let acked = line.starts_with("Client ") && line.contains("received SUBACK");
                    sub.seen.push(line);
                    if acked {
                        return Ok(sub);
                    }
                }
                Err(_) => {
                    let out = sub.finish()?;
                    return Err(io::Error::other(format!(
                        "mosquitto_sub got no SUBACK: {out:?}"
                    )));
                }
            }
        }
    }

    /// Waits for the client to exit (after its `-C` count or `-W` timeout; killed a few seconds
    /// after that) and returns everything it printed, the lines seen before the SUBACK included.
    pub fn finish(mut self) -> io::Result<CliOutput> {
        let (status, timed_out) = match wait_until(&mut self.child, self.deadline)? {
            Some(status) => (status, false),
            None => {
                self.child.kill()?;
                (self.child.wait()?, true)
            }
        };
        if let Some(reader) = self.stdout_reader.take() {
            let _ = reader.join();
        }
        self.seen.extend(self.lines.try_iter());
        let mut stdout = self.seen.join("\n");
        if !stdout.is_empty() {
            stdout.push('\n');
        }
        let stderr = self.stderr_reader.take().map(join_text).unwrap_or_default();
        Ok(CliOutput {
            status,
            stdout,
            stderr,
            timed_out,
        })
    }
}

impl Drop for LiveSubscriber {
    fn drop(&mut self) {
        // Only does something when `finish` was not called (e.g. a test panicked).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn forward_lines(out: ChildStdout, tx: &mpsc::Sender<String>) {
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        if tx.send(line).is_err() {
            break;
        }
    }
}

/// A CONNECT frame for `version` (clean start, no will, no properties) with `client_id`, the
/// credentials given and `keep_alive` seconds: what the raw-socket tests and the benchmarks send.
///
/// # Errors
/// A field too long for the encoder.
pub fn connect_frame(
    version: mqtt_inspect::ProtocolVersion,
    keep_alive: u16,
    client_id: &str,
    user: Option<&str>,
    password: Option<&[u8]>,
) -> Result<Vec<u8>, mqtt_inspect::EncodeError> {
    let c = mqtt_inspect::Connect {
        version,
        clean_start: true,
        keep_alive,
        properties: mqtt_inspect::Properties::EMPTY,
        client_id,
        will: None,
        username: user,
        password,
        bridge: false,
    };
    let mut out = Vec::new();
    c.encode(&mut out)?;
    Ok(out)
}
