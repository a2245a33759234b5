//! The demo's table and its queries.
//!
//! The route must sleep in PostgreSQL (or do one of the other workloads, see
//! [`super::workloads`]) and read the 50 rows on every request, as the
//! original did with two statements. Here both happen in one statement — one
//! round trip, prepared once per connection — and the same statement reports
//! the backend's pid for the `X-Backend-Pid` header.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sea_orm::entity::prelude::*;
use serde::Serialize;
use sqlx::Row;
use tracing::field::Empty;
use tracing::Instrument;

use super::errors::DbError;
use super::pool::Lease;
use super::workloads::Work;

/// One row of `todos`, serialised as the original demo did.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize)]
#[sea_orm(table_name = "todos")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i32,
    pub title: String,
    pub done: bool,
    pub priority: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The rows and what they cost.
pub struct SleptRows {
    pub rows: Vec<Model>,
    pub backend_pid: Option<i32>,
    /// Time from sending the statement to the last row.
    pub db_time: Duration,
    /// Of `db_time`, the part before PostgreSQL started the statement: the
    /// wait for a server connection inside a pooler (PgBouncer), plus one
    /// network hop without one.
    pub before_start: Duration,
}

/// `SELECT pg_sleep(seconds)`, then every todo in id order.
pub async fn list_after_sleep(lease: Lease, seconds: f64) -> Result<SleptRows, DbError> {
    list_after(lease, Work::Sleep { seconds }).await
}

/// `count(*)` over `rows` generated rows (CPU, no wall time), then every todo.
pub async fn list_after_cpu(lease: Lease, rows: u32) -> Result<SleptRows, DbError> {
    list_after(lease, Work::Cpu { rows }).await
}

/// One of `rows` hot rows updated in the same short transaction that reads
/// every todo, so concurrent requests wait on each other's row locks.
pub async fn list_after_hot(lease: Lease, rows: u32) -> Result<SleptRows, DbError> {
    list_after(lease, Work::Hot { rows }).await
}

/// The workload's statement (see [`super::workloads`]), then every todo in id order.
///
/// Takes the lease and gives the connection back as soon as the statement's
/// rows are in, before they are decoded: the connection is held for the
/// statement alone, so fewer are in use at once (fewer overflow connections
/// opened, each a login, and closed again under steady load), and its return
/// ping reaches the backend before the backend has gone to sleep.
pub async fn list_after(mut lease: Lease, work: Work) -> Result<SleptRows, DbError> {
    let span = tracing::info_span!(
        "db.query",
        otel.kind = "client",
        db.system = "postgresql",
        db.operation = "SELECT",
        db.statement = work.sql(),
        db.work = work.name(),
        db.sleep_seconds = work.sleep_seconds(),
        db.backend_pid = Empty,
        db.pooler_wait_ms = Empty,
        otel.status_code = Empty,
    );
    let started = Instant::now();
    let sent_at = SystemTime::now();
    let result = lease
        .run(async |conn| work.query().fetch_all(conn).await)
        .instrument(span.clone())
        .await;
    let db_time = started.elapsed();
    drop(lease);
    let pg_rows = result.map_err(|e| {
        span.record("otel.status_code", "ERROR");
        DbError::from_sqlx(&e)
    })?;

    let backend_pid: Option<i32> = pg_rows.first().and_then(|r| r.try_get(0).ok());
    if let Some(pid) = backend_pid {
        span.record("db.backend_pid", i64::from(pid));
    }
    let started_us: Option<i64> = pg_rows.first().and_then(|r| r.try_get(STARTED_US).ok());
    let before_start = before_start(sent_at, started_us, db_time);
    span.record("db.pooler_wait_ms", before_start.as_secs_f64() * 1000.0);
    // Sized at once: collecting `Result`s would grow the vector five times.
    let mut rows = Vec::with_capacity(pg_rows.len());
    for row in &pg_rows {
        rows.push(model_of(row).map_err(|e| DbError::Other(format!("unexpected row shape: {e}")))?);
    }
    Ok(SleptRows {
        rows,
        backend_pid,
        db_time,
        before_start,
    })
}

/// From sending to the server's `statement_timestamp()`, within `[0, db_time]`
/// (the two clocks are the same host's in compose; elsewhere they may differ a little).
/// Where the workloads' statements put each column (see `super::workloads`):
/// `backend_pid, id, title, done, priority, started_us`.
const STARTED_US: usize = 5;

/// One row as the entity, read by position: by name, each of the 50 rows
/// would look its four columns up by string on every request.
fn model_of(row: &sqlx::postgres::PgRow) -> Result<Model, sqlx::Error> {
    Ok(Model {
        id: row.try_get(1)?,
        title: row.try_get(2)?,
        done: row.try_get(3)?,
        priority: row.try_get(4)?,
    })
}

fn before_start(sent_at: SystemTime, started_us: Option<i64>, db_time: Duration) -> Duration {
    let Some(started_us) = started_us else {
        return Duration::ZERO;
    };
    let sent_us = sent_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    Duration::from_micros(started_us.saturating_sub(sent_us).max(0) as u64).min(db_time)
}
