//! A pooled connection on loan to one request, and what happens to it when
//! the loan ends: back to the pool, closed as surplus overflow (see
//! [`super::overflow`]), or closed because the request was abandoned
//! mid-statement.

use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;

use super::overflow::Turn;
use sqlx::pool::PoolConnection;
use sqlx::Postgres;

/// A pooled connection on loan to one request.
///
/// sqlx does not cancel a statement whose future is dropped: on return to the
/// pool it pings the connection, which waits for the running `pg_sleep` to
/// finish, so an abandoned request would hold a pool slot and a server backend
/// for the full sleep. A `Lease` dropped while a statement is in flight instead
/// closes its connection; with `client_connection_check_interval` the server
/// notices within a second and ends the backend, and sqlx reopens up to
/// `DB_POOL_SIZE` (`min_connections`).
pub struct Lease {
    /// `Some` until the lease is dropped. `Drop` gives it back (or closes it)
    /// before the turn is released, so the connection is on its way back to
    /// the pool before the next request is let in to take it.
    conn: Option<PoolConnection<Postgres>>,
    /// The request's turn at the pool (see [`super::overflow::Turn`]).
    turn: Turn,
    waited: Duration,
    statement_in_flight: bool,
    /// `db.client.connection.use_time`, recorded when the loan ends.
    use_time: Histogram,
    handed_out: Instant,
}

impl Lease {
    pub(super) fn new(
        conn: PoolConnection<Postgres>,
        turn: Turn,
        waited: Duration,
        use_time: Histogram,
    ) -> Lease {
        turn.occupancy().lease_started();
        Lease {
            conn: Some(conn),
            turn,
            waited,
            statement_in_flight: false,
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
    pub async fn run<T>(&mut self, f: impl AsyncFnOnce(&mut sqlx::PgConnection) -> T) -> T {
        self.statement_in_flight = true;
        let conn = self.conn.as_mut().expect("held until drop");
        let out = f(conn).await;
        self.statement_in_flight = false;
        out
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        crate::metrics::observe(&self.use_time, self.handed_out.elapsed());
        // Decided while this lease still holds its turn (fields drop after this body).
        self.turn.occupancy().lease_ended();
        let keep = self.turn.give_back_and_keep();
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if self.statement_in_flight {
            tracing::debug!("request abandoned mid-statement; closing its connection");
            conn.close_on_drop();
        } else if !keep {
            tracing::trace!("overflow connection returned to a full pool; closing it");
            self.turn.occupancy().close_in_background(conn);
        }
    }
}
