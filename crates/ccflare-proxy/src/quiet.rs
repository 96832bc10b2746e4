//! Wake-ups a task makes to itself. A client's connection task polls hyper's server, the
//! request's handler, and the upstream connection, and their parts wake each other as they
//! hand things over (a body's "want more", a chunk in a body's channel, an answer in a
//! oneshot). Each of those wake-ups lands on the task while it is running, and tokio then
//! treats the task as having yielded: after the poll it goes to the back of the run queue
//! and another worker thread is woken (a futex call) to steal it. Measured before this module,
//! 1.4 such wake-ups per JSON request, each a futex wake of the other worker and a second poll.
//!
//! A [`Quiet`] waker stands between those futures and the task: a wake-up made on the thread
//! that is polling them, during the poll, only sets a flag; any other (the socket turned
//! readable, a timer, another task) goes to the task's waker. Two users:
//!
//! - [`quietly`] wraps a connection's task: when the flag was set during a poll, it polls the
//!   task's future again at once, on the same thread, instead of going through the run queue
//!   (a few rounds at most, then it yields to the runtime as tokio would).
//! - The upstream connection (`upstream.rs`) polls its futures with one of its own and, since
//!   it looks at each of them again after driving the connection, ignores the flag.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// Polls in a row a task's future may get for its own wake-ups before it yields to the
/// runtime.
const ROUNDS: usize = 8;

/// A waker that tells the wake-ups of its own poll from the others (module docs).
pub(crate) struct Quiet {
    task: Mutex<Option<Waker>>,
    /// The mark of the thread polling with this waker now; 0 when none is.
    polling: AtomicUsize,
    /// A wake-up was made by the poll itself.
    woken: AtomicBool,
}

thread_local! {
    /// Its address tells one thread from another.
    static MARK: u8 = const { 0 };
}

fn thread_mark() -> usize {
    MARK.with(|mark| std::ptr::from_ref(mark) as usize)
}

impl Quiet {
    pub(crate) fn new() -> Arc<Quiet> {
        Arc::new(Quiet {
            task: Mutex::new(None),
            polling: AtomicUsize::new(0),
            woken: AtomicBool::new(false),
        })
    }

    fn task(&self) -> std::sync::MutexGuard<'_, Option<Waker>> {
        self.task.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Futures are polled for the task of `cx` on this thread until the guard is dropped;
    /// returns the guard and the waker to poll them with.
    pub(crate) fn enter(self: &Arc<Self>, cx: &Context<'_>) -> (Inside<'_>, Waker) {
        {
            let mut task = self.task();
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        self.woken.store(false, Ordering::Relaxed);
        self.polling.store(thread_mark(), Ordering::Release);
        (Inside(self), Waker::from(self.clone()))
    }

    /// Nobody waits any more (an idle upstream connection): wake-ups go nowhere.
    pub(crate) fn forget(&self) {
        *self.task() = None;
    }
}

impl Wake for Quiet {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.polling.load(Ordering::Acquire) == thread_mark() {
            self.woken.store(true, Ordering::Relaxed);
            return;
        }
        if let Some(task) = self.task().as_ref() {
            task.wake_by_ref();
        }
    }
}

/// Futures are being polled with a [`Quiet`] waker (see [`Quiet::enter`]).
pub(crate) struct Inside<'a>(&'a Quiet);

impl Inside<'_> {
    /// Whether the poll so far woke itself; clears the flag.
    fn woke_itself(&self) -> bool {
        self.0.woken.swap(false, Ordering::Relaxed)
    }
}

impl Drop for Inside<'_> {
    fn drop(&mut self) {
        self.0.polling.store(0, Ordering::Release);
    }
}

/// Runs `future` (a connection's task), polling it again at once when a poll woke it itself.
pub(crate) async fn quietly<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let quiet = Quiet::new();
    std::future::poll_fn(|cx| {
        let (inside, waker) = quiet.enter(cx);
        let mut quiet_cx = Context::from_waker(&waker);
        for _ in 0..ROUNDS {
            if let Poll::Ready(output) = future.as_mut().poll(&mut quiet_cx) {
                return Poll::Ready(output);
            }
            if !inside.woke_itself() {
                return Poll::Pending;
            }
        }
        // Still waking itself: let the runtime run others first, as a yield does.
        drop(inside);
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// A task's waker that counts its wake-ups.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        (count, waker)
    }

    #[test]
    fn only_the_wake_ups_of_its_own_poll_stay_with_the_waker() {
        let (count, task) = counting();
        let cx = Context::from_waker(&task);
        let quiet = Quiet::new();
        let woken = || count.0.load(Ordering::SeqCst);

        let (inside, waker) = quiet.enter(&cx);
        // Made by the poll itself, on its thread (a hand-over inside hyper): kept.
        waker.wake_by_ref();
        assert_eq!(woken(), 0);
        assert!(inside.woke_itself());
        assert!(!inside.woke_itself(), "the flag clears");
        // Made on another thread meanwhile (the socket turned readable): passed on.
        let elsewhere = waker.clone();
        std::thread::spawn(move || elsewhere.wake()).join().unwrap();
        assert_eq!(woken(), 1);
        assert!(!inside.woke_itself());
        drop(inside);
        // After the poll, even on this thread (the runtime's I/O driver): passed on.
        waker.wake_by_ref();
        assert_eq!(woken(), 2);

        // An idle connection wakes nobody.
        quiet.forget();
        waker.wake_by_ref();
        assert_eq!(woken(), 2);
    }

    #[test]
    fn a_task_that_wakes_itself_is_polled_again_at_once_then_yields() {
        let (count, task) = counting();
        let mut cx = Context::from_waker(&task);
        // Wakes itself twice, then is ready: one poll of the wrapper does it all, and the
        // task's waker is never called.
        let mut polls = 0;
        let mut twice = pin!(quietly(poll_fn(|cx| {
            polls += 1;
            if polls == 3 {
                return Poll::Ready(polls);
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        })));
        assert_eq!(twice.as_mut().poll(&mut cx), Poll::Ready(3));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);

        // Wakes itself forever: the wrapper gives up after its rounds and wakes the task, so
        // others run in between.
        let mut polls = 0;
        let mut forever = pin!(quietly(poll_fn(|cx| {
            polls += 1;
            cx.waker().wake_by_ref();
            Poll::<()>::Pending
        })));
        assert!(forever.as_mut().poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);

        // Pending without waking itself: waits for a wake-up from elsewhere.
        let mut waits = pin!(quietly(std::future::pending::<()>()));
        assert!(waits.as_mut().poll(&mut cx).is_pending());
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
