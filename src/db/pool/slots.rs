//! Which connections the pool keeps: SQLAlchemy's `QueuePool` rule on sqlx.
//!
//! QueuePool keeps `pool_size` connections for as long as they are healthy
//! and closes an *overflow* connection when it comes back while `pool_size`
//! connections already sit idle. sqlx has no such rule. Its only closer of
//! idle connections is the reaper, which closes *any* connection idle longer
//! than `idle_timeout` — the kept ones too — and then reopens up to
//! `min_connections`: every kept backend was replaced every `idle_timeout`,
//! a SCRAM login each, and the backend pids a user watches churned.
//!
//! So the pool runs sqlx without `idle_timeout` (only `max_lifetime`, which is
//! `DB_POOL_RECYCLE`) and applies QueuePool's rule itself, from the one thing
//! it knows exactly: how many requests hold a turn at the pool (see
//! [`super::pool`]). Every turn holder either holds a connection or is about
//! to take or open one, so when a request gives its connection back,
//! `open − other turn holders` connections will be idle afterwards.
//!
//! * `DB_OVERFLOW_IDLE_TIMEOUT = 0` (SQLAlchemy): [`keep_on_return`] decides
//!   when the lease ends; a surplus connection is closed at once.
//! * `DB_OVERFLOW_IDLE_TIMEOUT > 0`: surplus connections are kept, and a
//!   background task closes them once the pool has had more than
//!   `DB_POOL_SIZE` idle for that long ([`SurplusClock`]).
//!
//! The same task is the safety net for `0`: under a fast stream of requests
//! sqlx sometimes opens a connection for a request while another is on its
//! way back (it only looks at its idle queue), and one return can close only
//! itself. Surplus that outlives [`TRIM_EVERY`] is closed then, longest idle first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Whether a connection being returned stays in the pool: yes while at most
/// `pool_size` connections would then be idle.
///
/// `open` counts every connection sqlx holds (this one, those in use, those
/// being opened); `claimed_by_others` counts the other requests holding a turn.
pub fn keep_on_return(open: u32, claimed_by_others: u32, pool_size: u32) -> bool {
    open.saturating_sub(claimed_by_others) <= pool_size
}

/// The pool's occupancy, shared by the pool and every lease.
pub struct Occupancy {
    pub(super) sqlx: PgPool,
    /// One turn per connection the pool may hold (see [`super::pool`]).
    pub(super) turns: Arc<Semaphore>,
    pub(super) in_use: AtomicUsize,
    /// Requests holding a turn ([`Turn`]) and not yet giving their connection back.
    claims: AtomicUsize,
    /// Requests inside sqlx's acquire right now ([`Inside`]).
    acquiring: AtomicUsize,
    pub(super) pool_size: u32,
    /// `DB_OVERFLOW_IDLE_TIMEOUT = 0`: close surplus connections when returned.
    pub(super) close_surplus_on_return: bool,
}

impl Occupancy {
    pub(super) fn new(
        sqlx: PgPool,
        pool_size: u32,
        pool_max: u32,
        close_surplus_on_return: bool,
    ) -> Occupancy {
        Occupancy {
            sqlx,
            turns: Arc::new(Semaphore::new(pool_max as usize)),
            in_use: AtomicUsize::new(0),
            acquiring: AtomicUsize::new(0),
            claims: AtomicUsize::new(0),
            pool_size,
            close_surplus_on_return,
        }
    }

    /// Counts a request inside sqlx's acquire until the guard is dropped;
    /// the guard knows whether that acquire may log in (then it runs off the
    /// workers, see [`super::login`]).
    pub(super) fn enter_acquire(self: &Arc<Self>) -> Inside {
        let may_log_in = self.no_idle_for_next();
        self.acquiring.fetch_add(1, Ordering::Relaxed);
        Inside {
            occupancy: self.clone(),
            may_log_in,
        }
    }

    /// Whether the next request to enter sqlx's acquire finds no idle
    /// connection of its own: the idle ones count as taken by the requests
    /// already inside (sqlx's idle count lags behind a burst of requests on
    /// their way to those connections). Then that acquire may open one, at
    /// once or after waiting (the slot it gets may be one a close just freed).
    pub(super) fn no_idle_for_next(&self) -> bool {
        self.idle() as usize <= self.acquiring.load(Ordering::Relaxed)
    }

    /// sqlx's idle count, which briefly wraps below zero while a connection
    /// is handed over (its counter is decremented before it is incremented).
    pub(super) fn idle(&self) -> u32 {
        let open = self.sqlx.size();
        u32::try_from(self.sqlx.num_idle()).map_or(0, |idle| idle.min(open))
    }

    /// Closes a surplus connection (a Terminate message and the socket) in
    /// its own task.
    pub(super) fn close_in_background(&self, conn: PoolConnection<Postgres>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // shutting down: dropping returns it, and the pool closes it
        };
        // Detached first: it leaves sqlx's count at once, so the next
        // decision already sees it gone (a close in flight would still count).
        let raw = conn.detach();
        runtime.spawn(async move {
            let _ = sqlx::Connection::close(raw).await;
        });
    }

    /// Waits for a turn (FIFO); `None` once the pool is closed.
    pub(super) async fn take_turn(self: &Arc<Self>) -> Option<Turn> {
        let permit = self.turns.clone().acquire_owned().await.ok()?;
        self.claims.fetch_add(1, Ordering::Relaxed);
        Some(Turn {
            _permit: permit,
            occupancy: self.clone(),
            claiming: true,
        })
    }

    /// Connections no request holds or is about to take.
    pub(super) fn unclaimed(&self) -> u32 {
        let claims = self.claims.load(Ordering::Relaxed) as u32;
        self.sqlx.size().saturating_sub(claims)
    }

    /// Whether a connection given back by a request whose claim just ended,
    /// leaving `other_claims`, stays in the pool.
    fn keep_returning_connection(&self, other_claims: u32) -> bool {
        !self.close_surplus_on_return
            || keep_on_return(self.sqlx.size(), other_claims, self.pool_size)
    }

    pub(super) fn lease_started(&self) {
        self.in_use.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn lease_ended(&self) {
        self.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request inside sqlx's acquire (see [`Occupancy::enter_acquire`]).
pub struct Inside {
    occupancy: Arc<Occupancy>,
    may_log_in: bool,
}

impl Inside {
    /// Whether this acquire may log in (then it runs off the workers).
    pub(super) fn may_log_in(&self) -> bool {
        self.may_log_in
    }
}

impl Drop for Inside {
    fn drop(&mut self) {
        self.occupancy.acquiring.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request's turn at the pool: one of `pool_max`, handed out in arrival
/// order, held until its connection is given back. While it lasts it counts
/// as a claim on a connection (held, or about to be taken or opened).
pub struct Turn {
    _permit: OwnedSemaphorePermit,
    occupancy: Arc<Occupancy>,
    claiming: bool,
}

impl Turn {
    /// The turn's connection comes back: keep it in the pool? Ends the
    /// claim atomically, so that two connections given back at the same
    /// moment see different counts and cannot both stay as surplus.
    pub(super) fn give_back_and_keep(&mut self) -> bool {
        self.claiming = false;
        let others = self.occupancy.claims.fetch_sub(1, Ordering::Relaxed) - 1;
        self.occupancy.keep_returning_connection(others as u32)
    }

    pub(super) fn occupancy(&self) -> &Occupancy {
        &self.occupancy
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if self.claiming {
            self.occupancy.claims.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// For `DB_OVERFLOW_IDLE_TIMEOUT > 0`: how long the pool has had more than
/// `pool_size` idle connections, and how many to close once that lasted
/// `timeout`. The clock is the pool's, not each connection's: sqlx does not
/// say how long a particular idle connection has been idle.
#[derive(Debug, Default)]
pub struct SurplusClock {
    since: Option<Instant>,
}

impl SurplusClock {
    /// Connections to close now, given `idle` connections unclaimed.
    pub fn tick(&mut self, idle: u32, pool_size: u32, timeout: Duration, now: Instant) -> u32 {
        let surplus = idle.saturating_sub(pool_size);
        if surplus == 0 {
            self.since = None;
            return 0;
        }
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) >= timeout {
            self.since = None;
            surplus
        } else {
            0
        }
    }
}

/// How often the surplus clock is read.
pub const TRIM_EVERY: Duration = Duration::from_millis(250);

/// Closes idle surplus connections after `timeout` (see [`SurplusClock`]);
/// ends when the pool is closed or dropped.
pub fn spawn_trimmer(occupancy: std::sync::Weak<Occupancy>, timeout: Duration) {
    let timeout = timeout.max(TRIM_EVERY);
    tokio::spawn(async move {
        let mut clock = SurplusClock::default();
        loop {
            tokio::time::sleep(TRIM_EVERY).await;
            let Some(occ) = occupancy.upgrade() else {
                return;
            };
            if occ.sqlx.is_closed() {
                return;
            }
            let close = clock.tick(occ.unclaimed(), occ.pool_size, timeout, Instant::now());
            for _ in 0..close {
                // sqlx hands out the longest-idle connection first.
                match occ.sqlx.try_acquire() {
                    Some(conn) => occ.close_in_background(conn),
                    None => break,
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returned_connections_fill_the_pool_then_close() {
        // Pool 10 + 10, 20 open, nobody waiting: the leases end one by one.
        // The first ten back are kept, the rest closed (each close also
        // lowers `open`).
        let mut open = 20;
        let mut kept = 0;
        for holders in (1..=20).rev() {
            if keep_on_return(open, holders - 1, 10) {
                kept += 1;
            } else {
                open -= 1;
            }
        }
        assert_eq!((kept, open), (10, 10));
    }

    #[test]
    fn a_connection_returned_to_a_waiting_request_is_kept() {
        // 20 open, 20 turn holders: one returns, its turn passes to a waiter
        // that will take this very connection.
        assert!(keep_on_return(20, 19, 10));
        // Pool 0 + 5: nothing is ever kept idle, unless a waiter takes it.
        assert!(!keep_on_return(1, 0, 0));
        assert!(!keep_on_return(2, 1, 0));
        assert!(keep_on_return(2, 2, 0));
    }

    #[test]
    fn surplus_is_closed_only_after_it_lasted_the_timeout() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(2);
        let mut clock = SurplusClock::default();
        assert_eq!(clock.tick(15, 10, timeout, t0), 0);
        assert_eq!(clock.tick(15, 10, timeout, t0 + Duration::from_secs(1)), 0);
        assert_eq!(clock.tick(14, 10, timeout, t0 + Duration::from_secs(2)), 4);
        // Gone back to the pool size: the clock restarts.
        assert_eq!(clock.tick(10, 10, timeout, t0 + Duration::from_secs(3)), 0);
        assert_eq!(clock.tick(12, 10, timeout, t0 + Duration::from_secs(4)), 0);
        assert_eq!(clock.tick(12, 10, timeout, t0 + Duration::from_secs(6)), 2);
    }
}
