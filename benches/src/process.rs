//! What a proxy process (with its children: nginx's workers) has used, read from `/proc` and,
//! for syscalls, from `perf stat`: CPU (user and kernel), wake-ups, syscalls, resident memory.

use std::time::Duration;

use anyhow::Context;

/// CPU time (user + system) of process `pid` and its child processes (nginx's workers), from
/// `/proc/PID/stat`.
///
/// # Errors
/// The file cannot be read or parsed.
pub fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    cpu_split(pid).map(|(user, kernel)| user + kernel)
}

/// CPU time of process `pid` and its child processes, split into user and kernel (system) time,
/// from `/proc/PID/stat`: how much of a proxy's cost is its own code and how much the kernel's
/// TCP work (which every proxy pays for the same messages).
///
/// # Errors
/// The file cannot be read or parsed.
pub fn cpu_split(pid: u32) -> anyhow::Result<(Duration, Duration)> {
    let (mut user, mut kernel) = (Duration::ZERO, Duration::ZERO);
    for p in process_tree(pid) {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat"))?;
        let after = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("stat format")?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: u64 = fields.get(11).context("utime")?.parse()?;
        let stime: u64 = fields.get(12).context("stime")?.parse()?;
        // Clock ticks are 100 per second on Linux (USER_HZ).
        user += Duration::from_millis(utime * 10);
        kernel += Duration::from_millis(stime * 10);
    }
    Ok((user, kernel))
}

/// What a proxy process (with its children) has used so far: CPU split into its own code (user)
/// and the kernel's (system), and its wake-ups: the voluntary context switches of every thread,
/// each one a sleep in `epoll_wait` (or a lock) that something ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User CPU time.
    pub user: Duration,
    /// System CPU time.
    pub kernel: Duration,
    /// Voluntary context switches of all threads.
    pub wakeups: u64,
}

impl Usage {
    /// The usage of `pid` and its children now.
    ///
    /// # Errors
    /// A `/proc` file cannot be read or parsed.
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let (user, kernel) = cpu_split(pid)?;
        let mut wakeups = 0;
        for p in process_tree(pid) {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
                    continue;
                };
                wakeups += status
                    .lines()
                    .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
        Ok(Self {
            user,
            kernel,
            wakeups,
        })
    }

    /// What was used between `before` and `self`.
    #[must_use]
    pub fn since(self, before: Self) -> Self {
        Self {
            user: self.user.saturating_sub(before.user),
            kernel: self.kernel.saturating_sub(before.kernel),
            wakeups: self.wakeups.saturating_sub(before.wakeups),
        }
    }
}

/// Syscalls of a proxy over a window, counted by `perf stat` on the kernel's tracepoints
/// (`raw_syscalls:sys_enter`, and the `epoll_wait`/`epoll_pwait` entries apart): present when
/// `perf` is installed and may trace (root), absent otherwise.
pub struct Syscalls(std::process::Child);

/// What [`Syscalls`] counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyscallCount {
    /// Every syscall entry.
    pub all: u64,
    /// `epoll_wait` and `epoll_pwait` entries: how often the proxy asked for more work.
    pub epoll: u64,
}

impl Syscalls {
    /// Starts counting the syscalls of `pid` and its children for `window`.
    #[must_use]
    pub fn start(pid: u32, window: Duration) -> Option<Self> {
        let pids: Vec<String> = process_tree(pid).iter().map(u32::to_string).collect();
        std::process::Command::new("perf")
            .args(["stat", "-x", ",", "-e"])
            .arg("raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_pwait")
            .arg("-p")
            .arg(pids.join(","))
            .arg("--")
            .arg("sleep")
            .arg(format!("{:.3}", window.as_secs_f64()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()
            .map(Self)
    }

    /// Waits for the window's end and reads the counts (`None`: perf could not count).
    #[must_use]
    pub fn finish(self) -> Option<SyscallCount> {
        let out = self.0.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&out.stderr);
        let mut count = SyscallCount::default();
        let mut seen = false;
        for line in text.lines() {
            let mut fields = line.split(',');
            let (Some(value), Some(event)) = (fields.next(), fields.nth(1)) else {
                continue;
            };
            let Ok(n) = value.parse::<u64>() else {
                continue;
            };
            seen = true;
            match event {
                "raw_syscalls:sys_enter" => count.all += n,
                e if e.starts_with("syscalls:sys_enter_epoll") => count.epoll += n,
                _ => {}
            }
        }
        seen.then_some(count)
    }
}

/// Resident memory (KiB) of process `pid` and its child processes.
///
/// # Errors
/// The file cannot be read or parsed.
pub fn rss_kib(pid: u32) -> anyhow::Result<f64> {
    let mut total = 0.0;
    for p in process_tree(pid) {
        let status = std::fs::read_to_string(format!("/proc/{p}/status"))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("VmRSS")?;
        let kib: f64 = line
            .split_whitespace()
            .nth(1)
            .context("VmRSS value")?
            .parse()?;
        total += kib;
    }
    Ok(total)
}

/// `pid` and its descendants (from `/proc/PID/task/*/children`).
fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while let Some(&p) = all.get(i) {
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                    all.extend(c.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
                }
            }
        }
        i += 1;
    }
    all
}
