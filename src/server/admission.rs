//! Who runs when: `--parallel` slots, and a queue of at most `--queue` requests waiting for one.
//! A request past both is refused at once (503) rather than left to wait without bound.
//!
//! Every admitted request carries a [`Cancel`]: set when its client goes away (the response is
//! dropped), when its deadline (`--timeout`) passes, or never. The model work polls it between
//! tokens and between sampling steps.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// The slots and the queue.
pub struct Admission {
    slots: Arc<Semaphore>,
    /// Requests admitted and not yet finished (running or waiting).
    admitted: Arc<AtomicUsize>,
    limit: usize,
    timeout: Duration,
}

/// An admitted request: it counts against the queue until dropped.
pub struct Ticket {
    admitted: Arc<AtomicUsize>,
    slots: Arc<Semaphore>,
    pub cancel: Cancel,
}

impl Admission {
    /// `parallel` ≥ 1 slots and `queue` waiting places; each request may run `timeout`.
    pub fn new(parallel: usize, queue: usize, timeout: Duration) -> Self {
        let parallel = parallel.max(1);
        Admission {
            slots: Arc::new(Semaphore::new(parallel)),
            admitted: Arc::new(AtomicUsize::new(0)),
            limit: parallel.saturating_add(queue),
            timeout,
        }
    }

    /// Admits a request, or refuses it when slots and queue are all taken.
    pub fn admit(&self) -> Result<Ticket, ApiError> {
        let taken = self
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(ApiError::queue_full(self.limit));
        }
        Ok(Ticket {
            admitted: self.admitted.clone(),
            slots: self.slots.clone(),
            cancel: Cancel::new(Instant::now() + self.timeout, self.timeout),
        })
    }

    /// Requests running or waiting now.
    pub fn admitted(&self) -> usize {
        self.admitted.load(Ordering::Acquire)
    }

    /// Stops handing out slots: requests still waiting are refused (shutdown).
    pub fn close(&self) {
        self.slots.close();
    }
}

impl Ticket {
    /// Waits for a slot; the permit goes with the model work and frees the slot when dropped.
    pub async fn slot(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        let permit = tokio::time::timeout_at(
            self.cancel.deadline.into(),
            self.slots.clone().acquire_owned(),
        )
        .await;
        match permit {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(ApiError::shutting_down()),
            Err(_elapsed) => Err(ApiError::timed_out(self.cancel.timeout.as_secs())),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether a request's work should stop: its client left, or its deadline passed.
#[derive(Clone)]
pub struct Cancel {
    gone: Arc<AtomicBool>,
    deadline: Instant,
    timeout: Duration,
}

impl Cancel {
    fn new(deadline: Instant, timeout: Duration) -> Self {
        Cancel {
            gone: Arc::new(AtomicBool::new(false)),
            deadline,
            timeout,
        }
    }

    /// The client is gone: stop at the next check.
    pub fn client_gone(&self) {
        self.gone.store(true, Ordering::Release);
    }

    pub fn is_cancelled(&self) -> bool {
        self.gone.load(Ordering::Acquire) || self.expired()
    }

    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The error a cancelled request answers with (its client, if gone, never reads it).
    pub fn error(&self) -> ApiError {
        ApiError::timed_out(self.timeout.as_secs())
    }

    /// A guard that marks the client gone when dropped before [`CancelOnDrop::disarm`]: the
    /// handler's future is dropped when the connection closes.
    pub fn on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(Some(self.clone()))
    }
}

pub struct CancelOnDrop(Option<Cancel>);

impl CancelOnDrop {
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel.client_gone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_queue_is_bounded_and_tickets_give_their_place_back() {
        let admission = Admission::new(1, 1, Duration::from_secs(60));
        let first = admission.admit().unwrap();
        let second = admission.admit().unwrap();
        let refused = admission.admit().err().unwrap();
        assert_eq!(refused.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(admission.admitted(), 2);
        let running = first.slot().await.unwrap();
        // The second waits for the one slot; a timeout shows it does not get it.
        let waited = tokio::time::timeout(Duration::from_millis(50), second.slot()).await;
        assert!(waited.is_err(), "the second request got the only slot");
        drop(running);
        drop(first);
        assert!(second.slot().await.is_ok());
        assert_eq!(admission.admitted(), 1);
        assert!(admission.admit().is_ok());
    }

    #[tokio::test]
    async fn a_deadline_cancels_waiting_and_running_work() {
        let admission = Admission::new(1, 4, Duration::from_millis(30));
        let holder = admission.admit().unwrap();
        let _slot = holder.slot().await.unwrap();
        let waiter = admission.admit().unwrap();
        let error = waiter.slot().await.err().unwrap();
        assert_eq!(error.code, Some("timeout"));
        assert!(holder.cancel.is_cancelled());
    }

    #[test]
    fn a_dropped_guard_cancels_and_a_disarmed_one_does_not() {
        let admission = Admission::new(1, 0, Duration::from_secs(60));
        let ticket = admission.admit().unwrap();
        ticket.cancel.on_drop().disarm();
        assert!(!ticket.cancel.is_cancelled());
        drop(ticket.cancel.on_drop());
        assert!(ticket.cancel.is_cancelled());
    }
}
