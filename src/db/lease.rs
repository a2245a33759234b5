//! A pooled connection on loan to one request, and what happens when the
//! request is abandoned mid-statement.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::Postgres;
use tokio::sync::OwnedSemaphorePermit;

/// A pooled connection on loan to one request.
///
/// sqlx does not cancel a statement whose future is dropped: on return to the
/// pool it pings the connection, which waits for the running `pg_sleep` to
/// finish, so an abandoned request would hold a pool slot and a server backend
/// for the full sleep. A `Lease` dropped while a statement is in flight instead
/// closes its connection; with `client_connection_check_interval` the server
/// notices within a second and ends the backend, and the pool opens a fresh
/// connection in its place.
pub struct Lease {
    // Declared before `_turn`: fields drop in order, so the connection is on
    // its way back to the pool before the next request is let in to take it.
    conn: PoolConnection<Postgres>,
    /// The request's turn at the pool (see [`super::pool`]).
    _turn: OwnedSemaphorePermit,
    waited: Duration,
    statement_in_flight: bool,
    /// The pool's count of connections in use, decremented on drop.
    in_use: Arc<AtomicUsize>,
}

impl Lease {
    pub(super) fn new(
        conn: PoolConnection<Postgres>,
        turn: OwnedSemaphorePermit,
        waited: Duration,
        in_use: Arc<AtomicUsize>,
    ) -> Lease {
        in_use.fetch_add(1, Ordering::Relaxed);
        Lease {
            conn,
            _turn: turn,
            waited,
            statement_in_flight: false,
            in_use,
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
        let out = f(&mut self.conn).await;
        self.statement_in_flight = false;
        out
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.in_use.fetch_sub(1, Ordering::Relaxed);
        if self.statement_in_flight {
            tracing::debug!("request abandoned mid-statement; closing its connection");
            self.conn.close_on_drop();
        }
    }
}
