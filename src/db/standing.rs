//! One long-lived connection outside the pool, opened when first needed and
//! dropped when it fails, so the next use opens a fresh one. The monitor
//! (PostgreSQL's limits, `/readyz`) and PgBouncer's admin console each keep
//! one; users take turns on it.

use std::future::Future;
use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::Connection;
use tokio::sync::Mutex;

use super::errors::DbError;

#[derive(Default)]
pub struct Standing {
    conn: Mutex<Option<PgConnection>>,
}

impl Standing {
    /// Runs `work` on the connection (opened with `connect` if there is none)
    /// within `limit`; on an error or a timeout the connection is dropped.
    /// `slow` says what did not finish in time.
    pub async fn run<T, C>(
        &self,
        connect: impl FnOnce() -> C,
        limit: Duration,
        slow: &str,
        work: impl AsyncFnOnce(&mut PgConnection) -> Result<T, sqlx::Error>,
    ) -> Result<T, DbError>
    where
        C: Future<Output = Result<PgConnection, DbError>>,
    {
        let mut slot = self.conn.lock().await;
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => slot.insert(connect().await?),
        };
        let result = match tokio::time::timeout(limit, work(conn)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(DbError::from_sqlx(&e)),
            Err(_) => Err(DbError::Unavailable(format!(
                "{slow} did not finish within {}s",
                limit.as_secs_f64()
            ))),
        };
        if result.is_err() {
            *slot = None;
        }
        result
    }

    pub async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = conn.close().await;
        }
    }
}
