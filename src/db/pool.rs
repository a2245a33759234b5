//! The connection pool, as SeaORM builds it over sqlx, plus the two things
//! sqlx does not tell us:
//!
//! * **How many requests are waiting.** sqlx exposes only size and idle, so
//!   every acquire goes through [`Pool::acquire`], which counts waiters.
//! * **Why an acquire timed out.** sqlx treats "too many clients" (SQLSTATE
//!   53300) as transient while connecting: it retries silently until the
//!   acquire timeout and then reports only `PoolTimedOut`. When that happens
//!   while the pool is still below its maximum, it was not busy — it could not
//!   grow. One rate-limited direct connection attempt ([`server_info::Monitor::probe`])
//!   tells the real cause.
//!
//! * **A cheap place to wait.** sqlx's acquire future embeds opening a
//!   connection and is about 14.5 KB; 10,000 requests waiting inside it would
//!   hold 145 MB. Requests first queue, in arrival order, for one of
//!   `pool_size + max_overflow` turns ([`Inner::turns`], a tokio semaphore:
//!   about 100 bytes per waiter), and only a request holding a turn calls sqlx.
//!
//! SQLAlchemy → sqlx: `pool_size` → `min_connections` (kept open),
//! `pool_size + max_overflow` → `max_connections` (hard ceiling),
//! `pool_timeout` → `acquire_timeout`, overflow idle time → `idle_timeout`
//! (sqlx closes idle connections above `min_connections`), `pool_recycle` →
//! `max_lifetime`. SQLAlchemy's `NullPool` has no sqlx equivalent.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::field::Empty;
use tracing::Instrument;

pub use super::lease::Lease;

use super::errors::DbError;
use super::login::off_the_workers;
use super::server_info::{Monitor, ProbeOutcome};
use super::APPLICATION_NAME;
use crate::metrics::{Histogram, PoolSnapshot};
use crate::settings::DatabaseSettings;

/// How often PostgreSQL checks, during a running statement, whether the
/// client went away. An abandoned request's connection is closed (see
/// [`Lease`]); this makes the server end the backend within a second instead
/// of sleeping on for the rest of `pg_sleep`.
const CLIENT_CHECK_INTERVAL_MS: u32 = 1000;

/// Connections idle at least this long are pinged before use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// How often a waiting request checks that the database is reachable.
const REACHABILITY_CHECK: Duration = Duration::from_secs(1);

/// The service's pool with live counters.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    settings: DatabaseSettings,
    monitor: Monitor,
    /// One turn per connection the pool may hold: a request holds a turn from
    /// calling sqlx's acquire until its lease is dropped, so at most
    /// `pool_max` requests are ever inside sqlx.
    turns: Arc<Semaphore>,
    waiting: AtomicUsize,
    in_use: Arc<AtomicUsize>,
    timeouts: AtomicU64,
    refusals: AtomicU64,
    wait_time: Histogram,
}

/// What the pool holds right now.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct LiveCounts {
    /// Connections open (idle + in use).
    pub open: u32,
    pub idle: u32,
    pub in_use: u32,
    /// Requests waiting for a connection.
    pub waiting: u32,
}

/// Why no connection was handed out.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AcquireError {
    /// The pool was full for the whole `DB_POOL_TIMEOUT`.
    #[error("no connection within {}s; the pool is busy", waited.as_secs_f64())]
    Timeout { waited: Duration, live: LiveCounts },
    /// The pool could not open connections: the database said why.
    #[error(transparent)]
    Db(DbError),
}

impl Pool {
    /// Builds the pool without connecting: the service starts even when the
    /// database is not up yet, and reports that per request instead.
    pub async fn connect_lazy(settings: &DatabaseSettings) -> Result<Pool, DbError> {
        let mut opts = ConnectOptions::new(settings.url.expose());
        opts.min_connections(settings.pool_size)
            .max_connections(settings.pool_max())
            .acquire_timeout(settings.pool_timeout)
            .idle_timeout(settings.overflow_idle_timeout)
            .max_lifetime(settings.pool_recycle)
            .statement_timeout(settings.statement_timeout)
            .set_application_name(APPLICATION_NAME)
            .connect_lazy(true)
            // sqlx pings every connection before handing it out: a round trip
            // per request. Ping only connections idle for a while — the ones a
            // database restart or a firewall may have killed.
            .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
            // sqlx statement logging would echo parameters; our spans say enough.
            .sqlx_logging(false)
            .map_sqlx_postgres_opts(|o| {
                o.options([("client_connection_check_interval", CLIENT_CHECK_INTERVAL_MS)])
            });
        // The URL was validated by `DatabaseUrl::parse`, so this cannot fail on
        // parsing; the error is not formatted (SeaORM's message quotes the URL).
        let db = Database::connect(opts)
            .await
            .map_err(|_| DbError::Other("the pool could not be built".into()))?;
        Ok(Pool {
            inner: Arc::new(Inner {
                db,
                monitor: Monitor::new(settings),
                settings: settings.clone(),
                turns: Arc::new(Semaphore::new(settings.pool_max() as usize)),
                waiting: AtomicUsize::new(0),
                in_use: Arc::new(AtomicUsize::new(0)),
                timeouts: AtomicU64::new(0),
                refusals: AtomicU64::new(0),
                wait_time: Histogram::default(),
            }),
        })
    }

    fn sqlx(&self) -> &PgPool {
        self.inner.db.get_postgres_connection_pool()
    }

    /// Every acquire from sqlx goes through here (requests holding a turn,
    /// the warm-up, `/readyz`): when the pool has to grow, the acquire
    /// includes a login, which then runs off the runtime's workers (see
    /// [`super::login`]). Owned and `'static`, so it can be spawned.
    fn sqlx_acquire(
        &self,
    ) -> impl std::future::Future<Output = Result<PoolConnection<Postgres>, sqlx::Error>> + 'static
    {
        let pool = self.sqlx().clone();
        let must_open = pool.num_idle() == 0 && pool.size() < self.inner.settings.pool_max();
        async move {
            if !must_open {
                return pool.acquire().await;
            }
            off_the_workers(async move { pool.acquire().await })
                .await
                .unwrap_or(Err(sqlx::Error::WorkerCrashed))
        }
    }

    pub fn settings(&self) -> &DatabaseSettings {
        &self.inner.settings
    }

    /// The connection outside the pool that watches the server.
    pub fn monitor(&self) -> &Monitor {
        &self.inner.monitor
    }

    pub fn live(&self) -> LiveCounts {
        let pool = self.sqlx();
        let open = pool.size();
        let idle = pool.num_idle() as u32;
        LiveCounts {
            open,
            idle: idle.min(open),
            in_use: self.inner.in_use.load(Ordering::Relaxed) as u32,
            waiting: self.inner.waiting.load(Ordering::Relaxed) as u32,
        }
    }

    /// The pool's numbers for `/metrics`.
    pub fn snapshot(&self) -> PoolSnapshot {
        let live = self.live();
        PoolSnapshot {
            idle: live.idle,
            used: live.in_use,
            max: self.inner.settings.pool_max(),
            idle_min: self.inner.settings.pool_size,
            pending: live.waiting,
            timeouts: self.inner.timeouts.load(Ordering::Relaxed),
            refusals: self.inner.refusals.load(Ordering::Relaxed),
        }
    }

    /// Seconds waited for connections, successful or not.
    pub fn wait_time(&self) -> &Histogram {
        &self.inner.wait_time
    }

    /// Waits for a connection, counting the wait, and explains a timeout.
    /// The span `pool.acquire` lasts exactly as long as the wait.
    pub async fn acquire(&self) -> Result<Lease, AcquireError> {
        let span = tracing::info_span!(
            "pool.acquire",
            db.system = "postgresql",
            db.client.connection.pool.name = "poolscope",
            pool.max = self.inner.settings.pool_max(),
            pool.waiting = Empty,
            outcome = Empty,
            otel.status_code = Empty,
        );
        let result = self.acquire_inner().instrument(span.clone()).await;
        let outcome = match &result {
            Ok(_) => "acquired",
            Err(AcquireError::Timeout { .. }) => "timeout",
            Err(AcquireError::Db(DbError::Refused)) => "refused",
            Err(AcquireError::Db(_)) => "unavailable",
        };
        span.record("outcome", outcome);
        if result.is_err() {
            span.record("otel.status_code", "ERROR");
        }
        result
    }

    async fn acquire_inner(&self) -> Result<Lease, AcquireError> {
        let started = Instant::now();
        // With no connection open (database down at start, or every connection
        // lost in a restart), sqlx would retry "connection refused" silently
        // until DB_POOL_TIMEOUT. Ask the probe first (at most once a second)
        // and answer at once while the database is unreachable.
        if self.sqlx().size() == 0 {
            if let ProbeOutcome::Failed(e) = self.probe().await {
                self.inner.wait_time.record(started.elapsed());
                return Err(AcquireError::Db(e));
            }
        }
        let result = {
            let _waiting = Counted::enter(&self.inner.waiting);
            tracing::Span::current()
                .record("pool.waiting", self.inner.waiting.load(Ordering::Relaxed));
            self.wait_for_connection(started + self.inner.settings.pool_timeout)
                .await
        };
        let waited = started.elapsed();
        self.inner.wait_time.record(waited);
        match result {
            Ok(Ok((turn, conn))) => Ok(Lease::new(conn, turn, waited, self.inner.in_use.clone())),
            Ok(Err(sqlx::Error::PoolTimedOut)) => Err(Box::pin(self.explain_timeout(waited)).await),
            Ok(Err(e)) => Err(AcquireError::Db(DbError::from_sqlx(&e))),
            Err(unreachable) => Err(AcquireError::Db(unreachable)),
        }
    }

    /// A turn, then sqlx's acquire, both before `deadline`; a waiter that may
    /// be stuck retrying a connection (pool below its maximum) checks every
    /// second whether the database is reachable at all, and gives up at once
    /// when it is not. Refusals ("too many clients") are left to the pool
    /// timeout, as sqlx reports them.
    async fn wait_for_connection(
        &self,
        deadline: Instant,
    ) -> Result<Result<(OwnedSemaphorePermit, PoolConnection<Postgres>), sqlx::Error>, DbError>
    {
        let turn_then_connection = async {
            let turn = (self.inner.turns.clone().acquire_owned().await)
                .map_err(|_closed| sqlx::Error::PoolClosed)?;
            // Boxed, so that only requests holding a turn carry sqlx's 14.5 KB.
            let conn = Box::pin(self.sqlx_acquire()).await?;
            Ok((turn, conn))
        };
        let acquire = async {
            tokio::time::timeout_at(deadline.into(), turn_then_connection)
                .await
                .unwrap_or(Err(sqlx::Error::PoolTimedOut))
        };
        tokio::pin!(acquire);
        loop {
            let may_be_connecting = self.sqlx().size() < self.inner.settings.pool_max();
            tokio::select! {
                result = &mut acquire => return Ok(result),
                _ = tokio::time::sleep(REACHABILITY_CHECK), if may_be_connecting => {
                    if let ProbeOutcome::Failed(e) = self.probe().await {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// The monitor's probe, boxed: its connection attempt is a large future,
    /// and inline it would sit in every waiting request's state (10,000
    /// waiting requests × a few KB) although it runs rarely.
    async fn probe(&self) -> ProbeOutcome {
        Box::pin(self.inner.monitor.probe()).await
    }

    /// A full pool that stayed full is busy; a pool that timed out below its
    /// maximum failed to open connections, and the probe says why.
    async fn explain_timeout(&self, waited: Duration) -> AcquireError {
        let live = self.live();
        let busy = AcquireError::Timeout { waited, live };
        if live.open >= self.inner.settings.pool_max() {
            self.inner.timeouts.fetch_add(1, Ordering::Relaxed);
            return busy;
        }
        match self.probe().await {
            ProbeOutcome::Accepted => {
                self.inner.timeouts.fetch_add(1, Ordering::Relaxed);
                busy
            }
            ProbeOutcome::Refused => {
                self.inner.refusals.fetch_add(1, Ordering::Relaxed);
                AcquireError::Db(DbError::Refused)
            }
            ProbeOutcome::Failed(e) => AcquireError::Db(e),
        }
    }

    /// Opens the `DB_POOL_SIZE` connections SQLAlchemy's `pool_size` promises
    /// to keep. sqlx opens `min_connections` lazily (its maintenance task first
    /// runs after `idle_timeout`), which would make the first wave late by a
    /// connection set-up each.
    pub async fn warm_up(&self) {
        let wanted = self.inner.settings.pool_size as usize;
        let held = futures_util::future::join_all((0..wanted).map(|_| self.sqlx_acquire())).await;
        let opened = held.iter().filter(|c| c.is_ok()).count();
        drop(held);
        tracing::debug!(opened, wanted, "pool warmed up");
    }

    /// Answers within `limit` when a pooled connection responds to a ping.
    ///
    /// The attempt runs in its own task: when it is slower than `limit` (a
    /// new connection's authentication on a loaded machine, say), the answer
    /// is "not ready", but the connection it was opening still joins the pool
    /// instead of being abandoned half-way — so a later check can succeed.
    pub async fn ping(&self, limit: Duration) -> bool {
        use sqlx::Connection;
        let acquire = self.sqlx_acquire();
        let attempt = tokio::spawn(async move {
            let mut conn = acquire.await.ok()?;
            conn.ping().await.ok()
        });
        matches!(tokio::time::timeout(limit, attempt).await, Ok(Ok(Some(()))))
    }

    /// Closes every connection, waiting for leased ones to come back.
    pub async fn close(&self) {
        self.inner.turns.close();
        self.sqlx().close().await;
        self.inner.monitor.close().await;
    }
}

/// Increments a counter for as long as it lives, even if the future holding it
/// is dropped half-way (a client that gives up while waiting).
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
