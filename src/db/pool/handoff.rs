//! Connections handed straight from a finished request to a waiting one.
//!
//! A connection that goes back to sqlx is pinged first (sqlx's return path
//! sends a Sync and waits for PostgreSQL's answer, in a task of its own),
//! then put in sqlx's idle queue, and only then can the slot wake a waiter,
//! which takes it out again. Under load — requests waiting, as in every wave
//! — that is a round trip to PostgreSQL, a task and a trip through sqlx's
//! acquire per request, for a connection whose statement has just come back
//! whole. So a lease that ends cleanly while requests wait leaves its
//! connection here instead, and frees its slot: the waiter that slot wakes
//! takes it at once ([`Handoff::take`], before anything else it would do
//! to get a connection).
//!
//! A connection still goes through sqlx at least every [`THROUGH_SQLX_EVERY`]
//! (so its ping on return and `DB_POOL_RECYCLE` apply, a second late at
//! most), and one left here — its waiter gave up in between — goes back
//! through sqlx on the trimmer's next round ([`Handoff::take_stale`]).
//!
//! For the slots' counting, a connection here is not idle: the waiter its
//! slot woke holds a claim to it. Counted idle, it would make a returned
//! overflow connection look surplus (QueuePool closes one when
//! `DB_POOL_SIZE` sit idle and nobody waits) while it is on its way to a
//! request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::Postgres;

/// The longest a connection is handed from request to request without going
/// back through sqlx (its ping on return, its max lifetime).
pub const THROUGH_SQLX_EVERY: Duration = Duration::from_secs(1);

/// A connection left for the next claim.
pub struct Handed {
    pub conn: PoolConnection<Postgres>,
    /// When it last came out of sqlx.
    pub from_sqlx_at: Instant,
    /// When it was left here.
    left_at: Instant,
}

#[derive(Default)]
pub struct Handoff {
    state: Mutex<State>,
    /// How many are left here, readable without the lock: a claim looks
    /// here first, and most find nothing.
    count: AtomicUsize,
}

#[derive(Default)]
struct State {
    /// In the order they were left: the last one is taken first (the
    /// warmest), the first one is the oldest.
    handed: Vec<Handed>,
    /// The pool is closing: nothing is left here after that.
    closed: bool,
}

impl Handoff {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the list whole: keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leaves `conn` for the next claim, unless it is due to go back through
    /// sqlx or the pool is closing: then it is given back to the caller.
    pub fn offer(
        &self,
        conn: PoolConnection<Postgres>,
        from_sqlx_at: Instant,
    ) -> Result<(), PoolConnection<Postgres>> {
        let now = Instant::now();
        if now.duration_since(from_sqlx_at) >= THROUGH_SQLX_EVERY {
            return Err(conn);
        }
        let mut state = self.lock();
        if state.closed {
            return Err(conn);
        }
        state.handed.push(Handed {
            conn,
            from_sqlx_at,
            left_at: now,
        });
        self.count.store(state.handed.len(), Ordering::Relaxed);
        Ok(())
    }

    /// A connection left here, if any.
    pub fn take(&self) -> Option<Handed> {
        if self.count.load(Ordering::Relaxed) == 0 {
            return None; // the common case without load: no lock
        }
        let mut state = self.lock();
        let taken = state.handed.pop();
        self.count.store(state.handed.len(), Ordering::Relaxed);
        taken
    }

    /// Whether a connection has been left here for `age` or longer (nobody
    /// came for it).
    pub fn has_stale(&self, age: Duration) -> bool {
        self.lock()
            .handed
            .first()
            .is_some_and(|h| h.left_at.elapsed() >= age)
    }

    /// The connection left here longest, if that was `age` or longer ago:
    /// it goes back through sqlx.
    pub fn take_stale(&self, age: Duration) -> Option<PoolConnection<Postgres>> {
        let mut state = self.lock();
        if state.handed.first()?.left_at.elapsed() < age {
            return None;
        }
        let oldest = state.handed.remove(0);
        self.count.store(state.handed.len(), Ordering::Relaxed);
        Some(oldest.conn)
    }

    /// The pool is closing: takes out every connection left here, and
    /// refuses new ones.
    pub fn close(&self) -> Vec<PoolConnection<Postgres>> {
        let mut state = self.lock();
        state.closed = true;
        self.count.store(0, Ordering::Relaxed);
        state.handed.drain(..).map(|h| h.conn).collect()
    }
}
