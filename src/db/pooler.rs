//! PgBouncer's side of the budget, read from its admin console (the virtual
//! database `pgbouncer`, as a `stats_users` login): `SHOW CONFIG` for the
//! pool it keeps per database and user, `SHOW POOLS` for who is waiting.
//!
//! The admin console speaks only the simple query protocol, so this uses
//! `raw_sql` and reads every value as text.
//!
//! Also what the rest of the service needs to know about going through a
//! pooler: whether it does ([`through_pooler`]) and whether PgBouncer can be
//! reached without waiting for a server connection ([`Pooler::answers`],
//! [`reachable_by_login`]). The session settings PgBouncer does not pass on
//! are in [`super::role_defaults`].

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{ConnectOptions, Row};

use super::errors::DbError;
use super::standing::Standing;
pub use crate::contract::PoolerReport;
use crate::settings::DatabaseSettings;

const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// A readiness check that failed faster than this is tried once more.
const QUICK_FAILURE: Duration = Duration::from_millis(250);

pub struct Pooler {
    options: PgConnectOptions,
    database: String,
    connect_timeout: Duration,
    conn: Standing,
    /// Readiness's own connection, so that a probe never queues behind a
    /// `SHOW POOLS` read (nor the reverse).
    probe: Standing,
    last: std::sync::Mutex<Option<PoolerReport>>,
}

impl Pooler {
    /// `None` when no `PGBOUNCER_ADMIN_URL` is set.
    pub fn new(settings: &DatabaseSettings) -> Option<Pooler> {
        let admin = settings.pooler_admin_url.as_ref()?;
        let pooled = settings.url.connect_options();
        Some(Pooler {
            options: admin
                .connect_options()
                .database("pgbouncer")
                .disable_statement_logging(),
            database: pooled
                .get_database()
                .unwrap_or(pooled.get_username())
                .to_owned(),
            connect_timeout: settings.connect_timeout,
            conn: Standing::default(),
            probe: Standing::default(),
            last: std::sync::Mutex::new(None),
        })
    }

    /// Whether PgBouncer answers `SHOW VERSION` on its admin console within
    /// `limit` (connect and query each). PgBouncer answers that itself: it
    /// needs no server connection, so a PgBouncer whose server connections
    /// are all busy (the demo's normal state) still answers at once, while
    /// one that is down or restarting does not.
    pub async fn answers(&self, limit: Duration) -> Result<(), DbError> {
        let started = std::time::Instant::now();
        match self.show_version(limit).await {
            // A connection left from before a PgBouncer restart fails at once
            // (and is dropped): ask again on a new one rather than report a
            // PgBouncer that is back as unreachable. A slow failure is final.
            Err(_) if started.elapsed() < QUICK_FAILURE => self.show_version(limit).await,
            answer => answer,
        }
    }

    async fn show_version(&self, limit: Duration) -> Result<(), DbError> {
        let connect = || async {
            match tokio::time::timeout(limit, self.options.connect()).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(DbError::from_sqlx(&e)),
                Err(_) => Err(DbError::Unavailable(format!(
                    "no connection to its admin console within {}s",
                    limit.as_secs_f64()
                ))),
            }
        };
        (self.probe)
            .run(connect, limit, "SHOW VERSION", async |conn| {
                sqlx::raw_sql("SHOW VERSION").execute(&mut *conn).await?;
                Ok(())
            })
            .await
    }

    /// Reads both views, reconnecting if needed.
    pub async fn read(&self) -> Result<PoolerReport, DbError> {
        let connect =
            async || match tokio::time::timeout(self.connect_timeout, self.options.connect()).await
            {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(DbError::from_sqlx(&e)),
                Err(_) => Err(DbError::Unavailable(
                    "PgBouncer's admin console did not answer".into(),
                )),
            };
        let result = (self.conn)
            .run(
                connect,
                READ_TIMEOUT,
                "PgBouncer's SHOW POOLS",
                async |conn| {
                    let config = sqlx::raw_sql("SHOW CONFIG").fetch_all(&mut *conn).await?;
                    let pools = sqlx::raw_sql("SHOW POOLS").fetch_all(&mut *conn).await?;
                    Ok(report(&config, &pools, &self.database))
                },
            )
            .await;
        *self.last.lock().expect("not poisoned") = result.as_ref().ok().cloned();
        result
    }

    /// The most recent successful read, if the last one succeeded.
    pub fn last(&self) -> Option<PoolerReport> {
        self.last.lock().expect("not poisoned").clone()
    }

    pub async fn close(&self) {
        self.conn.close().await;
        self.probe.close().await;
    }
}

/// Whether the pool goes through a pooler: PgBouncer's admin console is
/// configured, or the pool connects somewhere else than the monitor (which
/// always goes straight to PostgreSQL).
pub fn through_pooler(settings: &DatabaseSettings) -> bool {
    let pooled = settings.url.connect_options();
    let direct = settings.monitor_url.connect_options();
    settings.pooler_admin_url.is_some()
        || (pooled.get_host(), pooled.get_port()) != (direct.get_host(), direct.get_port())
}

/// Without an admin console: whether the pool's address takes a login
/// within `limit`. PgBouncer authenticates clients itself and, once it has
/// talked to PostgreSQL, logs them in without a server connection; no
/// query is sent, so busy server connections do not delay the answer.
pub async fn reachable_by_login(
    options: &PgConnectOptions,
    limit: Duration,
) -> Result<(), DbError> {
    let options = options.clone();
    let login = super::login::off_the_workers(async move { options.connect().await });
    match tokio::time::timeout(limit, login).await {
        Ok(Some(Ok(conn))) => {
            let _ = sqlx::Connection::close(conn).await;
            Ok(())
        }
        Ok(Some(Err(e))) => Err(DbError::from_sqlx(&e)),
        Ok(None) => Err(DbError::Unavailable("the login attempt failed".into())),
        Err(_) => Err(DbError::Unavailable(format!(
            "no login within {}s",
            limit.as_secs_f64()
        ))),
    }
}

/// A column of a simple-protocol row (always text, whatever the declared
/// type, hence unchecked), or "" when absent or NULL.
fn text(row: &PgRow, column: &str) -> String {
    row.try_get_unchecked::<Option<String>, _>(column)
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn number(s: String) -> f64 {
    s.trim().parse().unwrap_or(0.0)
}

fn report(config: &[PgRow], pools: &[PgRow], database: &str) -> PoolerReport {
    let setting = |key: &str| {
        config
            .iter()
            .find(|r| text(r, "key") == key)
            .map_or(String::new(), |r| text(r, "value"))
    };
    let ours: Vec<&PgRow> = pools
        .iter()
        .filter(|r| text(r, "database") == database)
        .collect();
    let sum = |column: &str| ours.iter().map(|r| number(text(r, column))).sum::<f64>() as u32;
    let maxwait = ours
        .iter()
        .map(|r| number(text(r, "maxwait")) + number(text(r, "maxwait_us")) / 1e6)
        .fold(0.0, f64::max);
    PoolerReport {
        pool_mode: setting("pool_mode"),
        default_pool_size: number(setting("default_pool_size")) as u32,
        reserve_pool_size: number(setting("reserve_pool_size")) as u32,
        max_client_conn: number(setting("max_client_conn")) as u32,
        query_wait_timeout_s: number(setting("query_wait_timeout")),
        cl_active: sum("cl_active"),
        cl_waiting: sum("cl_waiting"),
        sv_active: sum("sv_active"),
        sv_idle: sum("sv_idle"),
        sv_used: sum("sv_used"),
        maxwait_s: maxwait,
    }
}
