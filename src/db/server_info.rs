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

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::Mutex;

use super::errors::DbError;
use super::login::off_the_workers;
use super::{APPLICATION_NAME, MONITOR_APPLICATION_NAME};
use crate::settings::DatabaseSettings;

/// How long a probe's answer is reused.
pub const PROBE_TTL: Duration = Duration::from_millis(250);
/// Upper bound for one sample of the server's limits.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// What PostgreSQL says about its connection slots.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_connections: u32,
    /// `superuser_reserved_connections` + `reserved_connections` (PostgreSQL 16+).
    pub reserved: u32,
    /// Client backends in the whole cluster.
    pub backends_total: u32,
    /// Client backends of this service's pool (same role, database and application_name).
    pub backends_service: u32,
}

impl ServerLimits {
    /// Slots the pool can hold at most: what a non-superuser may use, minus
    /// the backends of everyone else (including this service's monitor).
    pub fn grantable_to_pool(&self) -> u32 {
        let others = self.backends_total.saturating_sub(self.backends_service);
        self.max_connections
            .saturating_sub(self.reserved)
            .saturating_sub(others)
    }
}

#[derive(Debug, Clone)]
pub enum ProbeOutcome {
    Accepted,
    Refused,
    Failed(DbError),
}

pub struct Monitor {
    options: PgConnectOptions,
    connect_timeout: Duration,
    conn: Mutex<Option<PgConnection>>,
    last_sample: std::sync::Mutex<Option<ServerLimits>>,
    last_probe: Mutex<Option<(Instant, ProbeOutcome)>>,
}

const LIMITS_SQL: &str = "\
SELECT current_setting('max_connections')::int4, \
       current_setting('superuser_reserved_connections')::int4 \
         + COALESCE(current_setting('reserved_connections', true)::int4, 0), \
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int4, \
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' \
          AND application_name = $1 AND usename = current_user \
          AND datname = current_database())::int4";

impl Monitor {
    pub fn new(settings: &DatabaseSettings) -> Monitor {
        let options = settings
            .url
            .connect_options()
            .application_name(MONITOR_APPLICATION_NAME)
            .disable_statement_logging();
        Monitor {
            options,
            connect_timeout: settings.connect_timeout,
            conn: Mutex::new(None),
            last_sample: std::sync::Mutex::new(None),
            last_probe: Mutex::new(None),
        }
    }

    /// One login, off the runtime's workers (see [`super::login`]): under
    /// load it would otherwise take seconds and could exceed
    /// `DB_CONNECT_TIMEOUT`, reporting a healthy database as unreachable.
    /// The timeout stays on this side: the login itself uses no timer.
    async fn connect(&self) -> Result<PgConnection, DbError> {
        let options = self.options.clone();
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
        let mut slot = self.conn.lock().await;
        let conn = match slot.as_mut() {
            Some(conn) => conn,
            None => slot.insert(self.connect().await?),
        };
        let query = sqlx::query_as::<_, (i32, i32, i32, i32)>(LIMITS_SQL)
            .bind(APPLICATION_NAME)
            .fetch_one(conn);
        let result = match tokio::time::timeout(SAMPLE_TIMEOUT, query).await {
            Ok(Ok(row)) => Ok(row),
            Ok(Err(e)) => Err(DbError::from_sqlx(&e)),
            Err(_) => Err(DbError::Unavailable(
                "server limits not read within 2s".into(),
            )),
        };
        let limits = match result {
            Ok((max, reserved, total, service)) => Ok(ServerLimits {
                max_connections: max.max(0) as u32,
                reserved: reserved.max(0) as u32,
                backends_total: total.max(0) as u32,
                backends_service: service.max(0) as u32,
            }),
            Err(e) => {
                // A broken or timed-out connection is dropped; the next call reconnects.
                *slot = None;
                Err(e)
            }
        };
        *self.last_sample.lock().expect("not poisoned") = limits.as_ref().ok().copied();
        limits
    }

    /// The most recent successful sample, if the last one succeeded.
    pub fn last_sample(&self) -> Option<ServerLimits> {
        *self.last_sample.lock().expect("not poisoned")
    }

    /// One direct connection attempt, closed at once: can a new connection
    /// be made right now, and if not, why?
    pub async fn attempt(&self) -> ProbeOutcome {
        match self.connect().await {
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
        let check = async {
            let mut slot = self.conn.lock().await;
            let conn = match slot.as_mut() {
                Some(conn) => conn,
                None => slot.insert(self.connect().await.ok()?),
            };
            match conn.ping().await {
                Ok(()) => Some(()),
                Err(_) => {
                    *slot = None;
                    None
                }
            }
        };
        matches!(tokio::time::timeout(limit, check).await, Ok(Some(())))
    }

    pub async fn close(&self) {
        if let Some(conn) = self.conn.lock().await.take() {
            let _ = conn.close().await;
        }
    }
}
