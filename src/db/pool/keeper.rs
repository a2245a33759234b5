//! The kept connections: QueuePool keeps `pool_size` connections open for as
//! long as they are healthy, and closes an *overflow* connection when it
//! comes back while `pool_size` connections already sit idle.
//!
//! sqlx runs with `min_connections` 0 and no `idle_timeout` (see the
//! folder's module doc), so this module does both halves itself:
//!
//! * **Keeping.** [`Pool::warm_up`] opens `DB_POOL_SIZE` connections at start
//!   through the same slots and gate as requests, so that PostgreSQL's
//!   refusal of a kept connection is heard at once and said in one warning.
//!   [`Pool::keep`] then runs a round every [`KEEP_EVERY`]: after something
//!   failed it pings the idle connections and discards the broken ones (one
//!   line says how many), and it reopens what is missing — after a recycle,
//!   a restart of PostgreSQL or PgBouncer — without waiting for traffic, so
//!   the first run after an outage is served as the settings say. It never
//!   takes a slot a waiting request could use.
//! * **Closing surplus.** With `DB_OVERFLOW_IDLE_TIMEOUT = 0` the lease
//!   closes a surplus connection when it comes back
//!   ([`super::slots::keep_on_return`]). With a timeout, surplus is kept and
//!   [`spawn_trimmer`] closes it once the pool has had more than
//!   `DB_POOL_SIZE` idle for that long ([`SurplusClock`]). The trimmer is
//!   the safety net for `0` as well: sqlx may open a connection for a
//!   request while another is on its way back, and one return can close
//!   only itself.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;

use super::lease::{close_in_background, give_back};
use super::{Pool, Waited};
use crate::db::errors::DbError;

/// How often the keeper looks at the kept connections.
pub const KEEP_EVERY: Duration = Duration::from_secs(1);

/// The longest pause between two tries at kept connections PostgreSQL refused.
const MAX_PAUSE_AFTER_REFUSAL: Duration = Duration::from_secs(30);

/// How long a ping of an idle connection may take before it counts as broken.
const PING_LIMIT: Duration = Duration::from_secs(1);

/// What the keeper said last, so that each state is logged once.
#[derive(Default)]
pub struct State {
    /// Kept connections PostgreSQL refused in the last round.
    refused: AtomicU32,
}

/// How one round of opening kept connections went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TopUp {
    pub opened: u32,
    pub refused: u32,
    pub failed: u32,
}

impl Pool {
    /// Opens the `DB_POOL_SIZE` connections SQLAlchemy's `pool_size` promises
    /// to keep, and says if PostgreSQL refused some.
    pub async fn warm_up(&self) -> TopUp {
        let top_up = self.top_up().await;
        tracing::debug!(?top_up, "pool warmed up");
        self.report_refused_kept(top_up);
        top_up
    }

    /// Keeps the kept connections, one round every [`KEEP_EVERY`], until the
    /// pool is closed.
    pub async fn keep(self) {
        // After PostgreSQL refused a kept connection, ask again less and less
        // often (each refusal is a line in PostgreSQL's log); after any other
        // failure, every round, so that an outage ends as soon as it can.
        let mut pause = KEEP_EVERY;
        let mut next_top_up = Instant::now();
        loop {
            tokio::time::sleep(KEEP_EVERY).await;
            if self.sqlx().is_closed() {
                return;
            }
            if self.inner.suspect.swap(false, Ordering::Relaxed) {
                self.discard_broken().await;
            }
            if Instant::now() < next_top_up {
                continue;
            }
            let missing = self.missing();
            let top_up = self.top_up().await;
            pause = if top_up.refused > 0 {
                (pause * 2).min(MAX_PAUSE_AFTER_REFUSAL)
            } else {
                KEEP_EVERY
            };
            next_top_up = Instant::now() + pause;
            if top_up.opened > 0 && top_up.refused == 0 {
                tracing::info!(
                    reopened = top_up.opened,
                    pool_size = self.inner.settings.pool_size,
                    "{missing} kept connections were gone (recycled, or broken when the \
                     database or PgBouncer went away); reopened {}",
                    top_up.opened
                );
            }
            self.report_refused_kept(top_up);
        }
    }

    fn missing(&self) -> u32 {
        (self.inner.settings.pool_size).saturating_sub(self.inner.slots.open())
    }

    /// Opens the missing kept connections at once, each on a slot of its own
    /// and through the gate. Takes only slots free at once, and none while
    /// requests wait: they are served by returned connections first.
    async fn top_up(&self) -> TopUp {
        let missing = self.missing();
        if missing == 0 || self.inner.slots.queued() > 0 {
            return TopUp::default();
        }
        let deadline = Instant::now() + self.inner.settings.connect_timeout;
        let slots = &self.inner.slots;
        // sqlx hands out idle connections before it opens one, so the keeper
        // holds the idle ones too while it opens the missing: a slot for each.
        let wanted = missing + slots.idle();
        let turns: Vec<_> = (0..wanted)
            .map_while(|_| slots.try_turn().map(|t| t.for_keeper()))
            .collect();
        let opened_before = self.opened_total();
        let mut top_up = TopUp::default();
        let opens = turns
            .into_iter()
            .map(|turn| self.connect_on(turn, deadline));
        for waited in futures_util::future::join_all(opens).await {
            match waited {
                Waited::Got(got) => give_back(got.turn, got.conn),
                Waited::Failed(DbError::Refused) => top_up.refused += 1,
                _ => top_up.failed += 1,
            }
        }
        top_up.opened = (self.opened_total() - opened_before) as u32;
        top_up
    }

    /// Says once, in a warning with the arithmetic, that PostgreSQL refused
    /// some of the kept connections — and once when it no longer does.
    fn report_refused_kept(&self, top_up: TopUp) {
        if top_up.failed > 0 {
            return; // the database is away: the pool's other logs say so
        }
        let before = self
            .inner
            .keeper
            .refused
            .swap(top_up.refused, Ordering::Relaxed);
        if top_up.refused == before {
            return;
        }
        let pool_size = self.inner.settings.pool_size;
        if top_up.refused == 0 {
            tracing::info!(pool_size, "all kept connections open");
            return;
        }
        let open = self.inner.slots.open();
        let limits = self.inner.monitor.last_sample();
        tracing::warn!(
            refused = top_up.refused,
            open,
            pool_size,
            max_connections = limits.as_ref().map(|l| l.max_connections),
            grantable = limits.as_ref().map(|l| l.grantable_to_pool()),
            "PostgreSQL refused {} of the DB_POOL_SIZE = {pool_size} kept connections \
             (too many clients: max_connections reached); the pool keeps {open} and \
             asks again from time to time",
            top_up.refused,
        );
    }

    /// Pings every idle connection and closes the broken ones: after the
    /// database or PgBouncer went away, they would otherwise fail one request
    /// each, or be found one by one.
    async fn discard_broken(&self) {
        let mut broken = 0u32;
        let idle = self.inner.slots.idle();
        for _ in 0..idle {
            let Some(mut turn) = self.inner.slots.try_turn() else {
                break;
            };
            let Some(mut conn) = self.sqlx().try_acquire() else {
                break;
            };
            turn.hold();
            let alive = matches!(
                tokio::time::timeout(PING_LIMIT, conn.ping()).await,
                Ok(Ok(()))
            );
            if alive {
                give_back(turn, conn);
            } else {
                broken += 1;
                // Not closed politely: the other end is gone.
                drop(conn.detach());
            }
        }
        if broken > 0 {
            tracing::warn!(
                broken,
                "discarded {broken} broken pool connections (the database or PgBouncer \
                 went away); reopening the kept ones"
            );
        }
    }
}

impl Pool {
    /// Gives connections left in the handoff for a round (their waiter gave
    /// up, or nobody came) back to sqlx, each on a slot of its own as any
    /// returning connection.
    fn return_stale_handoffs(&self) {
        let (slots, handoff) = (&self.inner.slots, &self.inner.handoff);
        while handoff.has_stale(TRIM_EVERY) {
            let Some(mut turn) = slots.try_turn() else {
                return; // the next claim takes it
            };
            turn.hold();
            match handoff.take_stale(TRIM_EVERY) {
                Some(conn) => give_back(turn, conn),
                None => return, // taken meanwhile; the held turn frees its slot
            }
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

/// Closes idle surplus connections after `DB_OVERFLOW_IDLE_TIMEOUT` (see
/// [`SurplusClock`]); ends when the pool is closed or dropped.
pub fn spawn_trimmer(pool: &Pool) {
    let weak = std::sync::Arc::downgrade(&pool.inner);
    let timeout = pool.inner.settings.overflow_idle_timeout.max(TRIM_EVERY);
    tokio::spawn(async move {
        let mut clock = SurplusClock::default();
        loop {
            tokio::time::sleep(TRIM_EVERY).await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let pool = Pool { inner };
            if pool.sqlx().is_closed() {
                return;
            }
            let slots = &pool.inner.slots;
            // Requests waiting will take every connection that comes back.
            let unclaimed = if slots.queued() > 0 {
                0
            } else {
                slots.unclaimed()
            };
            pool.return_stale_handoffs();
            let close = clock.tick(unclaimed, slots.pool_size(), timeout, Instant::now());
            for _ in 0..close {
                // sqlx hands out the longest-idle connection first.
                match pool.sqlx().try_acquire() {
                    Some(conn) => close_in_background(conn),
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
