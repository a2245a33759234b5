//! PostgreSQL's side of the arithmetic: `max_connections`, the slots reserved
//! for superusers, and who holds the rest — read over one connection of the
//! service's own that lives outside the pool (`application_name =
//! poolscope-monitor`), so it answers even when the pool is exhausted.
//!
//! The same connection settings make the refusal probe: one direct connection
//! attempt tells "too many clients" (SQLSTATE 53300, in either of its
//! wordings) from a busy pool or a database that is down — which sqlx's pool
//! hides behind silent retries. [`Monitor::attempt`] is one such attempt;
//! [`Monitor::probe`] shares one attempt's answer among callers for
//! [`PROBE_TTL`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::Mutex;

use super::errors::DbError;
use super::login::off_the_workers;
use super::standing::Standing;
use super::{application_name, MONITOR_APP, POOL_APP};
pub use crate::contract::ReplicaBackends;
use crate::settings::DatabaseSettings;

const UNKNOWN: u32 = u32::MAX;

/// How long a probe's answer is reused.
pub const PROBE_TTL: Duration = Duration::from_millis(250);
/// Upper bound for one sample of the server's limits.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

pub use crate::contract::ServerLimits;

#[derive(Debug, Clone)]
pub enum ProbeOutcome {
    Accepted,
    Refused,
    Failed(DbError),
}

pub struct Monitor {
    /// Straight to PostgreSQL (`MONITOR_DATABASE_URL`).
    options: PgConnectOptions,
    /// Where the pool connects (through the pooler, if any): refusal attempts.
    attempt_options: PgConnectOptions,
    replica: String,
    connect_timeout: Duration,
    conn: Standing,
    last_sample: std::sync::Mutex<Option<ServerLimits>>,
    last_probe: Mutex<Option<(Instant, ProbeOutcome)>>,
    /// When the latest sample was taken (successful or not).
    sampled_at: std::sync::Mutex<Option<Instant>>,
    /// `grantable_to_pool` of the last successful sample, `u32::MAX` when
    /// unknown: read on the acquire path, so it is one atomic load.
    grantable: AtomicU32,
}

/// `max_connections`, the slots this role may not use, and the client backends.
/// Reserved slots depend on who asks: a superuser may use them all;
/// `reserved_connections` (PostgreSQL 16+) is open to members of
/// `pg_use_reserved_connections`; `superuser_reserved_connections` to
/// superusers only. (CASE, not AND: PostgreSQL < 16 has no such role, and
/// `pg_has_role` on a missing role is an error.)
const LIMITS_SQL: &str = "\
SELECT current_setting('max_connections')::int4, \
       CASE WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN 0 \
            ELSE current_setting('superuser_reserved_connections')::int4 \
              + CASE WHEN NOT EXISTS (SELECT 1 FROM pg_roles \
                                      WHERE rolname = 'pg_use_reserved_connections') THEN 0 \
                     WHEN pg_has_role(current_user, 'pg_use_reserved_connections', 'USAGE') THEN 0 \
                     ELSE COALESCE(current_setting('reserved_connections', true)::int4, 0) END \
       END::int4, \
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int4";

/// This service's connections in this database, by `application_name`.
const SERVICE_SQL: &str = "\
SELECT application_name, count(*)::int4 FROM pg_stat_activity \
WHERE backend_type = 'client backend' AND usename = current_user \
  AND datname = current_database() \
  AND (starts_with(application_name, $1) OR starts_with(application_name, $2)) \
GROUP BY 1 ORDER BY 1";

/// What the client backends are doing (see [`crate::contract::Activity`]).
const ACTIVITY_SQL: &str = "\
SELECT count(*) FILTER (WHERE state = 'active')::int4, \
       count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock')::int4 \
FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()";

impl Monitor {
    pub fn new(settings: &DatabaseSettings) -> Monitor {
        let options = settings
            .monitor_url
            .connect_options()
            .application_name(&application_name(MONITOR_APP, &settings.replica))
            .disable_statement_logging();
        let attempt_options = settings
            .url
            .connect_options()
            .application_name(&application_name(MONITOR_APP, &settings.replica))
            .disable_statement_logging();
        Monitor {
            options,
            attempt_options,
            replica: settings.replica.clone(),
            connect_timeout: settings.connect_timeout,
            conn: Standing::default(),
            last_sample: std::sync::Mutex::new(None),
            last_probe: Mutex::new(None),
            sampled_at: std::sync::Mutex::new(None),
            grantable: AtomicU32::new(UNKNOWN),
        }
    }

    /// One login, off the runtime's workers (see [`super::login`]): under
    /// load it would otherwise take seconds and could exceed
    /// `DB_CONNECT_TIMEOUT`, reporting a healthy database as unreachable.
    /// The timeout stays on this side: the login itself uses no timer.
    async fn connect(&self) -> Result<PgConnection, DbError> {
        self.connect_with(&self.options).await
    }

    async fn connect_with(&self, options: &PgConnectOptions) -> Result<PgConnection, DbError> {
        let options = options.clone();
        let login = off_the_workers(async move { options.connect().await });
        match tokio::time::timeout(self.connect_timeout, login).await {
            Ok(None) => Err(DbError::Other(
                "opening a connection failed unexpectedly".into(),
            )),
            Ok(Some(Ok(conn))) => Ok(conn),
            Ok(Some(Err(e))) => Err(DbError::from_sqlx(&e)),
            Err(_) => Err(DbError::Unavailable(format!(
                "no connection within DB_CONNECT_TIMEOUT ({}s)",
                self.connect_timeout.as_secs_f64()
            ))),
        }
    }

    /// Reads the server's limits, reconnecting the monitor connection if needed.
    pub async fn sample(&self) -> Result<ServerLimits, DbError> {
        let limits = (self.conn)
            .run(
                || self.connect(),
                SAMPLE_TIMEOUT,
                "reading the server's limits",
                async |conn| self.read_limits(conn).await,
            )
            .await;
        let grantable = limits
            .as_ref()
            .map_or(UNKNOWN, ServerLimits::grantable_to_pool);
        self.grantable.store(grantable, Ordering::Relaxed);
        *self.last_sample.lock().expect("not poisoned") = limits.as_ref().ok().cloned();
        *self.sampled_at.lock().expect("not poisoned") = Some(Instant::now());
        limits
    }

    async fn read_limits(&self, conn: &mut PgConnection) -> Result<ServerLimits, sqlx::Error> {
        // First, before this sample's own queries: what another client of
        // the database waits for a trivial answer right now.
        let probe_started = Instant::now();
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        let probe_us = probe_started.elapsed().as_micros() as u64;
        let (active, lock_waiters) = sqlx::query_as::<_, (i32, i32)>(ACTIVITY_SQL)
            .fetch_one(&mut *conn)
            .await?;
        let (max, reserved, total) = sqlx::query_as::<_, (i32, i32, i32)>(LIMITS_SQL)
            .fetch_one(&mut *conn)
            .await?;
        let pool_prefix = format!("{POOL_APP}:");
        let monitor_prefix = format!("{MONITOR_APP}:");
        let rows = sqlx::query_as::<_, (String, i32)>(SERVICE_SQL)
            .bind(&pool_prefix)
            .bind(&monitor_prefix)
            .fetch_all(&mut *conn)
            .await?;
        let count = |n: i32| n.max(0) as u32;
        let pool_of = |replica: &str| {
            let name = application_name(POOL_APP, replica);
            rows.iter()
                .find(|(app, _)| *app == name)
                .map_or(0, |(_, n)| count(*n))
        };
        let replicas = rows
            .iter()
            .filter_map(|(app, _)| app.strip_prefix(&monitor_prefix))
            .map(|name| ReplicaBackends {
                name: name.to_owned(),
                backends: pool_of(name),
            })
            .collect();
        Ok(ServerLimits {
            max_connections: count(max),
            reserved: count(reserved),
            backends_total: count(total),
            backends_service: pool_of(&self.replica),
            backends_service_all: rows
                .iter()
                .filter(|(app, _)| app.starts_with(&pool_prefix))
                .map(|(_, n)| count(*n))
                .sum(),
            replicas,
            activity: crate::contract::Activity {
                active: count(active),
                lock_waiters: count(lock_waiters),
                probe_us,
            },
        })
    }

    /// When the latest sample was taken.
    pub fn sampled_at(&self) -> Option<Instant> {
        *self.sampled_at.lock().expect("not poisoned")
    }

    /// Slots PostgreSQL would grant this replica's pool at the last sample,
    /// if the last sample succeeded.
    pub fn grantable_to_pool(&self) -> Option<u32> {
        Some(self.grantable.load(Ordering::Relaxed)).filter(|&g| g != UNKNOWN)
    }

    /// The most recent successful sample, if the last one succeeded.
    pub fn last_sample(&self) -> Option<ServerLimits> {
        self.last_sample.lock().expect("not poisoned").clone()
    }

    /// One direct connection attempt, closed at once: can a new connection
    /// be made right now, and if not, why?
    pub async fn attempt(&self) -> ProbeOutcome {
        match self.connect_with(&self.attempt_options).await {
            Ok(conn) => {
                let _ = conn.close().await;
                ProbeOutcome::Accepted
            }
            Err(DbError::Refused) => ProbeOutcome::Refused,
            Err(e) => ProbeOutcome::Failed(e),
        }
    }

    /// [`Self::attempt`], made at most once per [`PROBE_TTL`]; callers in
    /// between share its answer.
    pub async fn probe(&self) -> ProbeOutcome {
        let mut last = self.last_probe.lock().await;
        if let Some((at, outcome)) = last.as_ref() {
            if at.elapsed() < PROBE_TTL {
                return outcome.clone();
            }
        }
        let outcome = self.attempt().await;
        *last = Some((Instant::now(), outcome.clone()));
        outcome
    }

    /// Whether PostgreSQL answers a query on the monitor connection (outside
    /// the pool, so a busy pool does not make the service look unready)
    /// within `limit`.
    pub async fn answers(&self, limit: Duration) -> bool {
        let ping = (self.conn).run(
            || self.connect(),
            limit,
            "a ping",
            async |conn| conn.ping().await,
        );
        matches!(tokio::time::timeout(limit, ping).await, Ok(Ok(())))
    }

    pub async fn close(&self) {
        self.conn.close().await;
    }
}
