//! [`WhenWoken`]: a future polled only when it asked to be.
//!
//! A session's task selects over its two pumps and its watch (revocation, expiry, kicks, reloads,
//! shutdown). `select!` polls every branch each time the task wakes, that is for every message,
//! and polling a waiting `Notified` takes the lock of its `Notify`. The shutdown token's and the
//! reload channel's are shared by every session of every worker, so each message took two locks
//! that all the workers share, only to find nothing had changed. Wrapped in [`WhenWoken`], the
//! watch is polled on its first poll and after its own waker fired, and is skipped otherwise.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// Polls `F` only on the first poll and after `F`'s own waker fired since its last poll.
#[derive(Debug)]
pub(super) struct WhenWoken<F> {
    inner: F,
    flag: Arc<Flag>,
    /// `flag` as a waker, made once.
    waker: Waker,
}

/// Set by `F`'s waker; the task to wake with it.
#[derive(Debug, Default)]
struct Flag {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Set before the task is woken: the poll that follows sees it.
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future + Unpin> WhenWoken<F> {
    /// Wraps `inner` (an `Unpin` future; a pinned reference to one will do).
    pub(super) fn new(inner: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(Arc::clone(&flag));
        Self { inner, flag, waker }
    }
}

impl<F: Future + Unpin> Future for WhenWoken<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before the flag is read: a wake-up between the two wakes this task again.
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let mut inner_cx = Context::from_waker(&this.waker);
        Pin::new(&mut this.inner).poll(&mut inner_cx)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::task::Waker;

    use super::*;

    /// Counts its polls; keeps the last waker it was given; ready when told.
    struct Probe<'a> {
        polls: &'a Cell<u32>,
        waker: &'a std::cell::RefCell<Option<Waker>>,
        ready: &'a Cell<bool>,
    }

    impl Future for Probe<'_> {
        type Output = u8;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<u8> {
            self.polls.set(self.polls.get() + 1);
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            if self.ready.get() {
                Poll::Ready(7)
            } else {
                Poll::Pending
            }
        }
    }

    /// A task waker that counts its wake-ups.
    #[derive(Default)]
    struct Task(std::sync::atomic::AtomicU32);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_inner_future_is_polled_first_and_then_only_after_its_own_wake_up() {
        let (polls, waker, ready) = (
            Cell::new(0),
            std::cell::RefCell::new(None),
            Cell::new(false),
        );
        let task = Arc::new(Task::default());
        let task_waker = Waker::from(Arc::clone(&task));
        let mut cx = Context::from_waker(&task_waker);
        let mut gated = WhenWoken::new(Probe {
            polls: &polls,
            waker: &waker,
            ready: &ready,
        });
        let mut gated = Pin::new(&mut gated);

        // (what happens, polls of the inner future so far, wake-ups of the task so far)
        assert_eq!(gated.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(
            (polls.get(), task.0.load(Ordering::SeqCst)),
            (1, 0),
            "first poll"
        );
        for _ in 0..5 {
            // The task woke for something else (a pump's socket): the inner future is skipped.
            assert_eq!(gated.as_mut().poll(&mut cx), Poll::Pending);
        }
        assert_eq!(polls.get(), 1, "not polled without its own wake-up");

        // Its own waker fires: the task is woken, and the next poll reaches it.
        let inner_waker = waker.borrow_mut().take().unwrap();
        inner_waker.wake_by_ref();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task is woken");
        assert_eq!(gated.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(polls.get(), 2);
        assert_eq!(gated.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(polls.get(), 2, "one wake-up, one poll");

        // Woken and ready: its output comes through.
        ready.set(true);
        inner_waker.wake();
        assert_eq!(gated.as_mut().poll(&mut cx), Poll::Ready(7));
        assert_eq!(polls.get(), 3);
    }
}
