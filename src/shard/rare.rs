//! Rare events on hot loops: a future that resolves once in a process's life (shutdown, a
//! host's retirement) but sits in the `poll_fn` of a connection, which is polled several
//! times per request.
//!
//! Polling the event's own future every time costs what its channel costs (an
//! `async_channel` receive: a `try_recv`, then a listener check, about 160 instructions a
//! poll; `bench/instructions.sh` counted 0.4–0.5k per request per process). [`Rare`] polls it
//! only after it has woken its own waker, and otherwise costs a flag read and a waker
//! comparison. The event's waker may fire on any thread (shutdown is triggered from the
//! signal thread): the flag is atomic and the connection's waker sits behind a mutex that is
//! only contended at that moment.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

/// `F`, polled only when it has asked to be (see the module docs).
pub struct Rare<F> {
    event: Pin<Box<F>>,
    gate: Arc<Gate>,
    /// `gate` as a waker, made once.
    waker: Waker,
}

/// Whether the event woke, and whom to tell.
#[derive(Default)]
struct Gate {
    woken: AtomicBool,
    poller: Mutex<Option<Waker>>,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let poller = self.poller.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(waker) = poller.as_ref() {
            waker.wake_by_ref();
        }
    }
}

impl<F: Future> Rare<F> {
    pub fn new(event: F) -> Self {
        let gate = Arc::new(Gate {
            // The first poll registers the event's waker.
            woken: AtomicBool::new(true),
            poller: Mutex::new(None),
        });
        Self {
            event: Box::pin(event),
            waker: Waker::from(gate.clone()),
            gate,
        }
    }
}

impl<F: Future> Future for Rare<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // The poller first, the flag second: a wake between the two finds the new waker.
        {
            let mut poller = self
                .gate
                .poller
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !poller.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *poller = Some(cx.waker().clone());
            }
        }
        if !self.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let this = &mut *self;
        this.event
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::pin::pin;
    use std::rc::Rc;

    /// Counts its polls; ready once `ready` is set, waking through the waker it kept.
    struct Event {
        polls: Rc<Cell<u32>>,
        ready: Rc<Cell<bool>>,
        waker: Rc<std::cell::RefCell<Option<Waker>>>,
    }

    impl Future for Event {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.set(self.polls.get() + 1);
            if self.ready.get() {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Counts the wakes of the task polling `Rare`.
    struct Count(std::sync::atomic::AtomicU32);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn polls_the_event_only_after_it_woke() {
        let (polls, ready, kept) = Default::default();
        let event = Event {
            polls: Rc::clone(&polls),
            ready: Rc::clone(&ready),
            waker: Rc::clone(&kept),
        };
        let mut rare = pin!(Rare::new(event));
        let task = Arc::new(Count(Default::default()));
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);

        assert!(rare.as_mut().poll(&mut cx).is_pending());
        assert_eq!(polls.get(), 1, "the first poll registers the event");
        for _ in 0..5 {
            assert!(rare.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(polls.get(), 1, "not polled again before it wakes");

        ready.set(true);
        kept.borrow_mut().take().expect("event kept a waker").wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "the task was woken");
        assert!(rare.as_mut().poll(&mut cx).is_ready());
        assert_eq!(polls.get(), 2);
    }

    #[test]
    fn a_wake_reaches_the_latest_poller() {
        let (polls, ready, kept) = Default::default();
        let event = Event {
            polls,
            ready: Rc::clone(&ready),
            waker: Rc::clone(&kept),
        };
        let mut rare = pin!(Rare::new(event));
        let (first, second) = (
            Arc::new(Count(Default::default())),
            Arc::new(Count(Default::default())),
        );
        let waker = Waker::from(first.clone());
        assert!(rare
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        let waker = Waker::from(second.clone());
        assert!(rare
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());

        kept.borrow_mut().take().expect("event kept a waker").wake();
        assert_eq!(first.0.load(Ordering::SeqCst), 0);
        assert_eq!(second.0.load(Ordering::SeqCst), 1);
    }

    #[monoio::test(timer_enabled = true)]
    async fn shutdown_from_another_thread_ends_the_wait() {
        let (shutdown, signal) = super::super::shutdown::Shutdown::new();
        let wait = Rare::new(async move { signal.wait().await });
        let trigger = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            shutdown.trigger();
            shutdown
        });
        monoio::time::timeout(std::time::Duration::from_secs(10), wait)
            .await
            .expect("the shutdown reached the waiter");
        drop(trigger.join());
    }
}
