//! Worker threads, one per core by default, each running a single-threaded runtime: a connection
//! accepted by a worker stays on it ([`crate::server::start_on`]), so its two directions, its
//! timers and its TLS never change threads and wake-ups stay local, as in nginx's worker processes
//! but sharing the policy, limits and metrics of one process.

use std::io;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Running worker threads. Dropping this lets them end; [`Workers::stop`] also waits for them.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` workers.
    ///
    /// # Errors
    /// A runtime or thread cannot be created (those already started are ended).
    pub fn start(count: usize) -> io::Result<Self> {
        let mut workers = Self {
            handles: Vec::with_capacity(count),
            stop: CancellationToken::new(),
            threads: Vec::with_capacity(count),
        };
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            workers.handles.push(runtime.handle().clone());
            let stop = workers.stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("gateway-worker-{i}"))
                .spawn(move || runtime.block_on(stop.cancelled()))?;
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// The workers' runtimes, for [`crate::server::start_on`].
    #[must_use]
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Ends the workers (after the shutdown has drained the connections) and waits for them.
    pub fn stop(mut self) {
        self.stop.cancel();
        for t in std::mem::take(&mut self.threads) {
            let _ = t.join();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
