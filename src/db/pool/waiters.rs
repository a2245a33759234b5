//! Who is waiting for a connection, and since when.
//!
//! sqlx says how many connections are open and idle, nothing about the
//! requests queued for one. The count drives `pending_requests` and the live
//! page; the oldest arrival gives PgBouncer's `maxwait` for the app pool: the
//! age of the request that has waited longest, which grows towards
//! `DB_POOL_TIMEOUT` while a wave is stuck.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

// tokio's clock: the same as std's, except that tests can pause and advance it.
use tokio::time::Instant;

#[derive(Default)]
pub struct Waiters {
    next: AtomicU64,
    /// The map's length, readable without the lock (the keep decision reads
    /// it on every returned connection).
    count: AtomicUsize,
    /// Arrival times by ticket; tickets grow, so the first entry is the oldest.
    since: Mutex<BTreeMap<u64, Instant>>,
}

impl Waiters {
    /// Counts a request as waiting for as long as the ticket lives, even if
    /// the future holding it is dropped half-way (a client that gives up).
    pub fn enter(&self) -> Waiting<'_> {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(ticket, Instant::now());
        self.count.fetch_add(1, Ordering::Relaxed);
        Waiting {
            waiters: self,
            ticket,
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The oldest waiting request's wait so far; zero when none waits.
    pub fn oldest_wait(&self) -> Duration {
        self.lock()
            .first_key_value()
            .map_or(Duration::ZERO, |(_, since)| since.elapsed())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Instant>> {
        // A panic while holding the lock leaves the map whole: keep using it.
        self.since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Waiting<'a> {
    waiters: &'a Waiters,
    ticket: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.waiters.lock().remove(&self.ticket);
        self.waiters.count.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_oldest_is_whoever_came_first_and_is_still_there() {
        let w = Waiters::default();
        assert_eq!(w.oldest_wait(), Duration::ZERO);
        let first = w.enter();
        tokio::time::advance(Duration::from_millis(30)).await;
        let second = w.enter();
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(w.count(), 2);
        assert_eq!(w.oldest_wait(), Duration::from_millis(35));
        drop(first);
        assert_eq!(w.count(), 1);
        assert_eq!(w.oldest_wait(), Duration::from_millis(5));
        drop(second);
        assert_eq!((w.count(), w.oldest_wait()), (0, Duration::ZERO));
    }
}
