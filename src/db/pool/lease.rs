//! A pooled connection on loan to one request, and what happens to it when
//! the loan ends: handed to a waiting request ([`super::handoff`]), back to
//! the pool, closed as surplus overflow (see
//! [`super::slots::keep_on_return`]), or closed because the request was
//! abandoned mid-statement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;

use super::handoff::Handoff;
use super::slots::Turn;
use sqlx::pool::PoolConnection;
use sqlx::Postgres;

/// A pooled connection on loan to one request.
///
/// sqlx does not cancel a statement whose future is dropped: on return to the
/// pool it pings the connection, which waits for the running `pg_sleep` to
/// finish, so an abandoned request would hold a pool slot and a server backend
/// for the full sleep. A `Lease` dropped while a statement is in flight instead
/// closes its connection; with `client_connection_check_interval` the server
/// notices within a second and ends the backend, and the keeper reopens up
/// to `DB_POOL_SIZE`.
///
/// A returned connection's slot is freed only once the connection is where
/// the waiter the slot wakes will look: in the [`Handoff`] (while requests
/// wait), or back in sqlx's idle queue (sqlx puts it there in a task of its
/// own, after a ping). The waiter then finds it, instead of opening a new
/// connection — which, at PostgreSQL's limit, would be refused.
pub struct Lease {
    /// `Some` until the lease is dropped.
    conn: Option<PoolConnection<Postgres>>,
    /// The request's slot (see [`super::slots::Turn`]); `Some` until dropped.
    turn: Option<Turn>,
    waited: Duration,
    statement_in_flight: bool,
    /// The last statement came back whole (or none ran): the connection is
    /// ready for the next one without a check.
    clean: bool,
    /// When the connection last came out of sqlx (see [`super::handoff`]).
    from_sqlx_at: Instant,
    handoff: Arc<Handoff>,
    /// `db.client.connection.use_time`, recorded when the loan ends.
    use_time: Histogram,
    handed_out: Instant,
}

impl Lease {
    pub(super) fn new(
        got: Got,
        waited: Duration,
        use_time: Histogram,
        handoff: Arc<Handoff>,
    ) -> Lease {
        got.turn.slots().lease_started();
        Lease {
            conn: Some(got.conn),
            turn: Some(got.turn),
            waited,
            statement_in_flight: false,
            clean: true,
            from_sqlx_at: got.from_sqlx_at,
            handoff,
            use_time,
            handed_out: Instant::now(),
        }
    }

    /// Time spent waiting for this connection.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// Runs `f` on the connection; if the caller stops polling before `f`
    /// finishes, the connection is closed instead of returned (see above).
    /// After an error the connection goes back through sqlx, which checks it.
    pub async fn run<T, E>(
        &mut self,
        f: impl AsyncFnOnce(&mut sqlx::PgConnection) -> Result<T, E>,
    ) -> Result<T, E> {
        self.statement_in_flight = true;
        let conn = self.conn.as_mut().expect("held until drop");
        let out = f(conn).await;
        self.statement_in_flight = false;
        self.clean = out.is_ok();
        out
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        crate::metrics::observe(&self.use_time, self.handed_out.elapsed());
        let (Some(turn), Some(mut conn)) = (self.turn.take(), self.conn.take()) else {
            return;
        };
        let slots = turn.slots().clone();
        slots.lease_ended();
        let keep = turn.give_back_and_keep();
        if self.statement_in_flight {
            tracing::debug!("request abandoned mid-statement; closing its connection");
            conn.close_on_drop();
            return;
        }
        if !keep {
            tracing::trace!("overflow connection returned to a full pool; closing it");
            close_in_background(conn);
            return;
        }
        if self.clean && slots.queued() > 0 {
            match self.handoff.offer(conn, self.from_sqlx_at) {
                Ok(()) => return free_slot_for_waiter(turn),
                Err(due) => conn = due,
            }
        }
        give_back(turn, conn);
    }
}

/// A connection had on a turn, and when it last came out of sqlx.
pub struct Got {
    pub turn: Turn,
    pub conn: PoolConnection<Postgres>,
    pub from_sqlx_at: Instant,
}

/// Frees the slot of a connection left in the handoff, which wakes the
/// waiter that takes it — from a task of its own. Woken from here, the
/// waiter would wait in this worker's next-task slot, which the other worker
/// cannot steal, until this request has decoded, serialised and sent its
/// answer; from a spawned task the idle worker runs it at once, and the
/// connection is busy again sooner (+4 % req/s under load, BENCHMARKS.md).
fn free_slot_for_waiter(turn: Turn) {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(async move { drop(turn) })),
        Err(_) => drop(turn),
    }
}

/// Puts a connection back in sqlx's idle queue, then frees its slot (see
/// [`Lease`] for why in that order).
pub fn give_back(turn: Turn, mut conn: PoolConnection<Postgres>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return; // shutting down: dropping returns it, and the pool closes it
    };
    let back = conn.return_to_pool();
    runtime.spawn(async move {
        back.await;
        drop(turn);
    });
}

/// Closes a connection (a Terminate message and the socket) in its own task.
/// Detached first: it leaves sqlx's count at once, so the next decision
/// already sees it gone (a close in flight would still count).
pub fn close_in_background(conn: PoolConnection<Postgres>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return; // shutting down: dropping returns it, and the pool closes it
    };
    let raw = conn.detach();
    runtime.spawn(async move {
        let _ = sqlx::Connection::close(raw).await;
    });
}
