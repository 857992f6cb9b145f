//! Waiting from an event loop (feature `tokio`; PROTOCOL.md §7.4).
//!
//! An async wait registers exactly as a blocking one ([`dmxp_nostd::WaitRegistration`]), then
//! submits `IORING_OP_FUTEX_WAIT` on the channel's wait word to an `io_uring` that the handle
//! owns ([`FutexRing`]), and awaits the ring's fd through tokio's [`AsyncFd`]: the kernel posts a completion
//! when a sender (or receiver) wakes the word, and the fd turns readable. Senders are unchanged:
//! they wake the word only when its waiter count is non-zero, so nobody waiting costs nothing.
//!
//! Each handle keeps at most one futex wait in flight. A wait left queued by a dropped future
//! stays parked on the ring and is reused by the handle's next wait on the same word (it was
//! queued before that wait's registration, so any wake issued after the registration completes
//! it); the registration itself is undone when the future drops. When the handle drops, its
//! ring cancels the parked wait and reaps it before the handle lets go of the mapping.
//!
//! Without `io_uring` (setup fails, the kernel lacks the opcode, `DMXP_ASYNC_POLL=1`, or
//! [`crate::Consumer::use_async_polling`]) a wait polls instead: it yields to the runtime a few
//! times, then re-checks every [`POLL_INTERVAL`], and it does not register (a poller counted
//! as a waiter would make every send pay a wake for nobody).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::AtomicU32;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::consumer::{Consumer, Message};
use crate::error::Result;
use crate::futex_ring::FutexRing;

/// Longest sleep of a polling wait (the fallback without `io_uring`) between two looks at
/// the ring.
pub const POLL_INTERVAL: Duration = Duration::from_millis(1);

/// Looks at the ring a polling wait makes by yielding to the runtime, before it starts
/// sleeping [`POLL_INTERVAL`] between looks.
const POLL_YIELDS: u32 = 8;

/// How the async waits of a handle are woken ([`crate::Consumer::async_wakeup`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AsyncWakeup {
    /// A futex wait submitted to the handle's `io_uring`, whose fd the runtime polls: woken
    /// by the sender's wake, with no polling and no thread.
    IoUring,
    /// The fallback: a look at the ring every [`POLL_INTERVAL`] at most (after a few yields),
    /// without registering as a waiter.
    Polling,
}

/// True when `DMXP_ASYNC_POLL` is set to something other than `0` or the empty string (read
/// once per process).
fn polling_forced_by_env() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED.get_or_init(|| {
        std::env::var_os("DMXP_ASYNC_POLL").is_some_and(|v| !v.is_empty() && v != "0")
    })
}

/// The async wake-up state of one producer or consumer. Not shared by clones: each handle
/// has its own ring (and its own peer record).
#[derive(Default)]
pub(crate) struct Wakeup {
    ring: Option<Ring>,
    /// Forced to poll by the handle's owner.
    force_polling: bool,
    /// `io_uring` could not be used here: poll from now on.
    unavailable: bool,
    /// Polling looks in a row without a message (the backoff).
    polls: u32,
}

impl std::fmt::Debug for Wakeup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeup")
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

impl Wakeup {
    pub(crate) fn set_force_polling(&mut self, yes: bool) {
        self.force_polling = yes;
        if yes {
            // The parked wait (if any) is cancelled and reaped now.
            self.ring = None;
        }
    }

    /// The mechanism in use: `None` before the first wait that needed one.
    pub(crate) fn mode(&self) -> Option<AsyncWakeup> {
        if self.force_polling || self.unavailable || polling_forced_by_env() {
            Some(AsyncWakeup::Polling)
        } else if self.ring.is_some() {
            Some(AsyncWakeup::IoUring)
        } else {
            None
        }
    }

    /// A wait ended with the ring ready: the next polling wait starts with yields again.
    pub(crate) fn made_progress(&mut self) {
        self.polls = 0;
    }

    /// True when this wait must poll; otherwise makes sure the handle's ring exists (inside a
    /// runtime with I/O enabled: [`AsyncFd`] needs the reactor).
    pub(crate) fn must_poll(&mut self) -> bool {
        if self.force_polling || self.unavailable || polling_forced_by_env() {
            return true;
        }
        self.forget_inherited_ring();
        if self.ring.is_none() {
            match Ring::new() {
                Ok(ring) => self.ring = Some(ring),
                Err(_) => {
                    self.unavailable = true;
                    return true;
                }
            }
        }
        false
    }

    /// A ring inherited across `fork` is the parent's (the same kernel ring, registered in
    /// the same epoll instance): it is leaked, never cancelled, reaped or deregistered, so the
    /// parent's pending wait and reactor are left alone.
    fn forget_inherited_ring(&mut self) {
        if self.ring.as_ref().is_some_and(|r| !r.fd.get_ref().is_own()) {
            std::mem::forget(self.ring.take());
        }
    }

    /// One polling look: yields first, then sleeps up to [`POLL_INTERVAL`] (never past
    /// `until`).
    pub(crate) async fn pause(&mut self, until: Option<Instant>) {
        self.polls = self.polls.saturating_add(1);
        if self.polls <= POLL_YIELDS {
            tokio::task::yield_now().await;
            return;
        }
        let mut wake = Instant::now() + POLL_INTERVAL;
        if let Some(until) = until {
            wake = wake.min(until);
        }
        tokio::time::sleep_until(wake.into()).await;
    }

    /// Sleeps until a futex wait on `word`, queued while it held `observed`, completes, or
    /// until `until`. [`Self::must_poll`] must have returned false. Returns early on any
    /// completion (the caller re-checks the ring); a failure of the ring switches this handle
    /// to polling.
    pub(crate) async fn sleep_on(
        &mut self,
        word: &AtomicU32,
        observed: u32,
        until: Option<Instant>,
    ) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        let waited = match until {
            None => ring.wait(word, observed).await,
            Some(until) => tokio::time::timeout_at(until.into(), ring.wait(word, observed))
                .await
                .unwrap_or(Ok(())),
        };
        if waited.is_err() {
            // The ring or the reactor failed (the runtime it was bound to is gone, the kernel
            // refused the opcode...): drop it and poll from now on.
            self.ring = None;
            self.unavailable = true;
        }
    }
}

impl Drop for Wakeup {
    fn drop(&mut self) {
        self.forget_inherited_ring();
    }
}

/// A handle's [`FutexRing`], registered with the runtime's reactor.
struct Ring {
    fd: AsyncFd<FutexRing>,
}

impl Ring {
    fn new() -> io::Result<Self> {
        let ring = FutexRing::new()?;
        // Outside a runtime, `new` would panic: poll instead (the caller's timer then panics
        // with tokio's own message, as any tokio timer would).
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other("no tokio runtime"));
        }
        // SAFETY: `FutexRing` owns its fd, keeps it open until it drops and returns that same
        // fd from every `as_raw_fd`; the `AsyncFd` owns the ring, so it never outlives it.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Submits the futex wait unless one is in flight already, then awaits a completion of
    /// it. `Ok` on a completion of any kind; `Err` when the ring or the reactor fails.
    async fn wait(&mut self, word: &AtomicU32, observed: u32) -> io::Result<()> {
        if self.fd.get_mut().submit_wait(word, observed)? {
            return Ok(());
        }
        loop {
            let mut guard = self.fd.readable_mut().await?;
            // Clear first, then look: a completion posted after the look makes the fd
            // readable again, so none is missed.
            guard.clear_ready();
            if guard.get_inner_mut().reap()? {
                return Ok(());
            }
        }
    }
}

type Receiving = Pin<Box<dyn Future<Output = (Box<Consumer>, Result<Message>)> + Send>>;

enum StreamState {
    /// Between items: the next poll looks at the ring first.
    Idle(Box<Consumer>),
    /// Waiting for a message; the future owns the consumer until it has one.
    Waiting(Receiving),
    /// A receive panicked: the stream is over.
    Gone,
}

/// The messages of a consumer as a [`Stream`] ([`Consumer::into_stream`]). It never ends;
/// items are [`Consumer::receive_with_meta_async`]'s results. Dropping it while it waits
/// consumes nothing and leaves no waiter registered. A message already in the ring is returned
/// by the poll that finds it, without allocating.
pub struct MessageStream {
    state: StreamState,
}

impl std::fmt::Debug for MessageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            StreamState::Idle(_) => "idle",
            StreamState::Waiting(_) => "waiting",
            StreamState::Gone => "gone",
        };
        f.debug_struct("MessageStream")
            .field("state", &state)
            .finish()
    }
}

impl MessageStream {
    pub(crate) fn new(consumer: Consumer) -> Self {
        Self {
            state: StreamState::Idle(Box::new(consumer)),
        }
    }
}

impl Stream for MessageStream {
    type Item = Result<Message>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match std::mem::replace(&mut this.state, StreamState::Gone) {
                StreamState::Idle(consumer) => match consumer.receive_with_meta() {
                    Ok(None) => {
                        this.state = StreamState::Waiting(Box::pin(async move {
                            let mut consumer = consumer;
                            let received = consumer.receive_with_meta_async().await;
                            (consumer, received)
                        }));
                    }
                    ready => {
                        this.state = StreamState::Idle(consumer);
                        return Poll::Ready(ready.transpose());
                    }
                },
                StreamState::Waiting(mut receiving) => {
                    return match receiving.as_mut().poll(cx) {
                        Poll::Ready((consumer, received)) => {
                            this.state = StreamState::Idle(consumer);
                            Poll::Ready(Some(received))
                        }
                        Poll::Pending => {
                            this.state = StreamState::Waiting(receiving);
                            Poll::Pending
                        }
                    };
                }
                StreamState::Gone => return Poll::Ready(None),
            }
        }
    }
}
