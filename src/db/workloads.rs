//! What the demo route makes PostgreSQL do before it reads the 50 rows.
//!
//! `pg_sleep` costs the server nothing: it teaches only that a pool too small
//! makes requests queue. The other two teach the database's half, that a
//! pool too big makes the server itself slower (README, "Too big is wrong
//! too"):
//!
//! * [`Work::Sleep`] — wall time, no CPU (the original demo);
//! * [`Work::Cpu`] — a fixed amount of CPU (`count(*)` over `CPU_ROWS`
//!   generated rows, ≈ 30 ms at the default on one core), so backends beyond
//!   the database's cores only take turns on them;
//! * [`Work::Hot`] — a short transaction that updates one of `HOT_ROWS` rows
//!   picked at random, so backends beyond a handful wait on each other's row
//!   locks.
//!
//! Each is one statement — one round trip, one implicit transaction — that
//! also reports the backend's pid and when the server started it (for
//! `X-Backend-Pid` and the pooler's share of `Server-Timing`).

/// One workload and its size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Work {
    Sleep { seconds: f64 },
    Cpu { rows: u32 },
    Hot { rows: u32 },
}

/// The names `?work=` accepts, in the order the error message lists them.
pub const WORK_NAMES: [&str; 3] = ["sleep", "cpu", "hot"];

/// `MATERIALIZED` makes the sleep run exactly once, before any row is read,
/// whatever join order the planner picks.
const SLEEP_SQL: &str = "\
WITH slept AS MATERIALIZED (SELECT pg_backend_pid() AS backend_pid, \
  (extract(epoch FROM statement_timestamp()) * 1000000)::int8 AS started_us FROM pg_sleep($1)) \
SELECT slept.backend_pid, t.id, t.title, t.done, t.priority, slept.started_us \
FROM slept CROSS JOIN todos t ORDER BY t.id";

/// The count runs once (a materialized CTE with one scalar subquery) and
/// costs CPU only: `generate_series` of a few hundred thousand rows stays in
/// `work_mem`, no disk, no lock.
const CPU_SQL: &str = "\
WITH burnt AS MATERIALIZED (SELECT pg_backend_pid() AS backend_pid, \
  (extract(epoch FROM statement_timestamp()) * 1000000)::int8 AS started_us, \
  (SELECT count(*) FROM generate_series(1, $1::int8)) AS counted) \
SELECT burnt.backend_pid, t.id, t.title, t.done, t.priority, burnt.started_us \
FROM burnt CROSS JOIN todos t ORDER BY t.id";

/// The row lock taken by the upsert is held until the statement's implicit
/// transaction commits, after the 50 rows are read: a request that picks a
/// row another holds waits for it (`wait_event_type = 'Lock'`). An upsert,
/// not an `UPDATE`, so that any `HOT_ROWS` finds its rows.
const HOT_SQL: &str = "\
WITH hit AS (INSERT INTO hot_rows AS h (id, hits) \
  VALUES (1 + floor(random() * $1::int4)::int4, 1) \
  ON CONFLICT (id) DO UPDATE SET hits = h.hits + 1 \
  RETURNING pg_backend_pid() AS backend_pid, \
  (extract(epoch FROM statement_timestamp()) * 1000000)::int8 AS started_us) \
SELECT hit.backend_pid, t.id, t.title, t.done, t.priority, hit.started_us \
FROM hit CROSS JOIN todos t ORDER BY t.id";

impl Work {
    /// The name `?work=` takes.
    pub fn name(self) -> &'static str {
        match self {
            Work::Sleep { .. } => "sleep",
            Work::Cpu { .. } => "cpu",
            Work::Hot { .. } => "hot",
        }
    }

    pub fn sql(self) -> &'static str {
        match self {
            Work::Sleep { .. } => SLEEP_SQL,
            Work::Cpu { .. } => CPU_SQL,
            Work::Hot { .. } => HOT_SQL,
        }
    }

    /// The `pg_sleep` asked for; 0 for the workloads that do not sleep.
    pub fn sleep_seconds(self) -> f64 {
        match self {
            Work::Sleep { seconds } => seconds,
            _ => 0.0,
        }
    }

    /// The statement with its one parameter bound.
    pub(super) fn query(
        self,
    ) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let query = sqlx::query(self.sql());
        match self {
            Work::Sleep { seconds } => query.bind(seconds),
            Work::Cpu { rows } => query.bind(i64::from(rows)),
            Work::Hot { rows } => query.bind(rows as i32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_reports_the_pid_first_and_when_it_started() {
        for work in [
            Work::Sleep { seconds: 1.0 },
            Work::Cpu { rows: 10 },
            Work::Hot { rows: 5 },
        ] {
            let sql = work.sql();
            assert!(
                sql.contains("SELECT ") && sql.contains(".backend_pid, t.id"),
                "{sql}"
            );
            assert!(sql.contains("started_us") && sql.ends_with("ORDER BY t.id"));
            assert!(WORK_NAMES.contains(&work.name()));
        }
        assert_eq!(Work::Cpu { rows: 1 }.sleep_seconds(), 0.0);
    }
}
