//! The connection pool, as SeaORM builds it over sqlx, made to behave like
//! SQLAlchemy's `QueuePool` where a user can see the difference (SPEC.md,
//! "Pool semantics"):
//!
//! * **A cheap, fair place to wait.** Requests first queue, in arrival
//!   order, for one of `pool_size + max_overflow` turns (a tokio semaphore:
//!   about 100 bytes per waiter; sqlx's own acquire future is 14.5 KB), and
//!   only a request holding a turn calls sqlx. A request that waited
//!   `DB_POOL_TIMEOUT` gets `pool_timeout`.
//! * **Refusal is immediate**, although sqlx retries "too many clients"
//!   silently: see [`super::refusal`].
//! * **Kept connections stay; overflow goes** (see [`super::overflow`]).
//! * **How many requests are waiting**: sqlx exposes only size and idle.
//!
//! SQLAlchemy → sqlx: `pool_size` → `min_connections` (kept open),
//! `pool_size + max_overflow` → `max_connections` (hard ceiling),
//! `pool_timeout` → the turn queue's deadline, `pool_recycle` →
//! `max_lifetime`, `pool_pre_ping` → a ping of connections idle ≥ 1 s; sqlx's
//! `idle_timeout` is off. SQLAlchemy's `NullPool` has no sqlx equivalent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tracing::field::Empty;
use tracing::Instrument;

pub use super::lease::Lease;

use super::errors::DbError;
use super::login::off_the_workers;
use super::overflow::{self, Occupancy, Turn};
use super::pooler::Pooler;
use super::refusal::{Gate, Gatekeeper};
use super::server_info::{Monitor, ProbeOutcome};
use super::waiters::Waiters;
use super::{application_name, POOL_APP};
use crate::metrics::{observe, PoolMetrics, PoolSnapshot};
use crate::settings::DatabaseSettings;

/// How often PostgreSQL checks, during a running statement, whether the
/// client went away. An abandoned request's connection is closed (see
/// [`Lease`]); this makes the server end the backend within a second instead
/// of sleeping on for the rest of `pg_sleep`.
const CLIENT_CHECK_INTERVAL_MS: u32 = 1000;

/// Connections idle at least this long are pinged before use.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// The service's pool with live counters.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    settings: DatabaseSettings,
    monitor: Monitor,
    /// PgBouncer's admin console, when the pool goes through one.
    pooler: Option<Pooler>,
    occupancy: Arc<Occupancy>,
    /// Asks PostgreSQL before the pool grows where it may refuse.
    gate: Gatekeeper,
    waiting: Waiters,
    metrics: PoolMetrics,
    /// Closed connections reported so far: `opened − open` only ever grows.
    closed: AtomicU64,
}

tokio::task_local! {
    /// When the acquire that may open a connection began: sqlx opens it
    /// inside `acquire()`, and `after_connect` reads this to time the opening.
    static ACQUIRE_STARTED: Instant;
}

/// What the pool holds right now (the `/pool` contract's type).
pub use crate::contract::Live as LiveCounts;

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

/// How waiting for a connection ended, before it is explained.
enum Waited {
    Got(Turn, PoolConnection<Postgres>),
    DeadlinePassed,
    Failed(DbError),
}

impl Pool {
    /// Builds the pool without connecting: the service starts even when the
    /// database is not up yet, and reports that per request instead.
    pub async fn connect_lazy(settings: &DatabaseSettings) -> Result<Pool, DbError> {
        let metrics = PoolMetrics::default();
        let hook_metrics = metrics.clone();
        let mut opts = ConnectOptions::new(settings.url.expose());
        opts.min_connections(settings.pool_size)
            .max_connections(settings.pool_max())
            .acquire_timeout(settings.pool_timeout)
            .max_lifetime(settings.pool_recycle)
            .statement_timeout(settings.statement_timeout)
            .set_application_name(application_name(POOL_APP, &settings.replica))
            .connect_lazy(true)
            // sqlx pings every connection before handing it out: a round trip
            // per request. Ping only connections idle for a while — the ones a
            // database restart or a firewall may have killed.
            .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
            // sqlx statement logging would echo parameters; our spans say enough.
            .sqlx_logging(false)
            // sqlx's idle reaper would close the kept connections too; the
            // overflow rule lives in `overflow` instead.
            .map_sqlx_postgres_pool_opts(move |o| {
                let metrics = hook_metrics.clone();
                o.idle_timeout(None).after_connect(move |_conn, _meta| {
                    metrics.opened.inc();
                    // Only acquires made here carry a start time; sqlx's own
                    // background top-ups (after a recycle) are counted, not timed.
                    if let Ok(took) = ACQUIRE_STARTED.try_with(|started| started.elapsed()) {
                        observe(&metrics.create_time, took);
                    }
                    Box::pin(async { Ok(()) })
                })
            })
            .map_sqlx_postgres_opts(|o| {
                o.options([("client_connection_check_interval", CLIENT_CHECK_INTERVAL_MS)])
            });
        // The URL was validated by `DatabaseUrl::parse`, so this cannot fail on
        // parsing; the error is not formatted (SeaORM's message quotes the URL).
        let db = Database::connect(opts)
            .await
            .map_err(|_| DbError::Other("the pool could not be built".into()))?;
        let occupancy = Arc::new(Occupancy::new(
            db.get_postgres_connection_pool().clone(),
            settings.pool_size,
            settings.pool_max(),
            settings.overflow_idle_timeout.is_zero(),
        ));
        overflow::spawn_trimmer(Arc::downgrade(&occupancy), settings.overflow_idle_timeout);
        Ok(Pool {
            inner: Arc::new(Inner {
                db,
                monitor: Monitor::new(settings),
                pooler: Pooler::new(settings),
                settings: settings.clone(),
                occupancy,
                gate: Gatekeeper::new(settings.pool_max(), settings.pooler_admin_url.is_some()),
                waiting: Waiters::default(),
                metrics,
                closed: AtomicU64::new(0),
            }),
        })
    }

    fn sqlx(&self) -> &PgPool {
        self.inner.db.get_postgres_connection_pool()
    }

    /// No idle connection left for this request and room to grow: an acquire
    /// now opens one. (Trusting sqlx's idle count alone let requests of a
    /// burst skip the gate and meet PostgreSQL's refusal inside sqlx, found
    /// only by the stuck check: e2e, about one run in three.)
    fn must_open(&self) -> bool {
        self.inner.occupancy.no_idle_for_next()
            && self.sqlx().size() < self.inner.settings.pool_max()
    }

    /// Every acquire from sqlx goes through here (requests holding a turn,
    /// the warm-up): when it may include a login, it runs off the runtime's
    /// workers (see [`super::login`]).
    /// Owned and `'static`, so it can be spawned.
    fn sqlx_acquire(
        &self,
    ) -> impl std::future::Future<Output = Result<PoolConnection<Postgres>, sqlx::Error>> + 'static
    {
        let pool = self.sqlx().clone();
        // Counted from now, not from the first poll: a future dropped unpolled
        // must not leave the count raised.
        let inside = self.inner.occupancy.enter_acquire();
        let may_log_in = inside.may_log_in();
        let started = Instant::now();
        async move {
            let _inside = inside;
            let acquire = ACQUIRE_STARTED.scope(started, async move { pool.acquire().await });
            if !may_log_in {
                return acquire.await;
            }
            off_the_workers(acquire)
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

    /// PgBouncer's admin console, when the pool goes through one.
    pub fn pooler(&self) -> Option<&Pooler> {
        self.inner.pooler.as_ref()
    }

    pub fn live(&self) -> LiveCounts {
        let open = self.sqlx().size();
        LiveCounts {
            open,
            idle: self.inner.occupancy.idle(),
            in_use: self.inner.occupancy.in_use.load(Ordering::Relaxed) as u32,
            waiting: self.inner.waiting.count() as u32,
        }
    }

    /// Connections opened since start (the live page shows churn).
    pub fn opened_total(&self) -> u64 {
        self.inner.metrics.opened.get()
    }

    /// Connections closed since start: opened − open, held so that it never
    /// goes back (a connection being opened is counted in sqlx's size before
    /// it is counted as opened).
    pub fn closed_total(&self) -> u64 {
        let now = self
            .opened_total()
            .saturating_sub(u64::from(self.sqlx().size()));
        self.inner.closed.fetch_max(now, Ordering::Relaxed).max(now)
    }

    /// How long the request waiting longest has waited (zero when none waits).
    pub fn oldest_wait(&self) -> Duration {
        self.inner.waiting.oldest_wait()
    }

    /// The pool's numbers for `/metrics`.
    pub fn snapshot(&self) -> PoolSnapshot {
        let live = self.live();
        PoolSnapshot {
            idle: live.idle,
            used: live.in_use,
            max: self.inner.settings.pool_max(),
            size: self.inner.settings.pool_size,
            pending: live.waiting,
            oldest_wait: self.oldest_wait(),
            closed: self.closed_total(),
        }
    }

    /// What the pool recorded as it worked (waits, openings, timeouts…).
    pub fn metrics(&self) -> &PoolMetrics {
        &self.inner.metrics
    }

    /// Waits for a connection, counting the wait, and explains a failure.
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
        // until DB_POOL_TIMEOUT. Ask the probe first and answer at once while
        // the database is unreachable.
        let waited = if self.sqlx().size() == 0 {
            match self.probe().await {
                ProbeOutcome::Failed(e) => Waited::Failed(e),
                _ => self.wait_counted(started).await,
            }
        } else {
            self.wait_counted(started).await
        };
        let wait = started.elapsed();
        observe(&self.inner.metrics.wait_time, wait);
        match waited {
            Waited::Got(turn, conn) => Ok(Lease::new(
                conn,
                turn,
                wait,
                self.inner.metrics.use_time.clone(),
            )),
            Waited::DeadlinePassed => Err(Box::pin(self.explain_timeout(wait)).await),
            Waited::Failed(DbError::Refused) => {
                self.inner.metrics.refusals.inc();
                Err(AcquireError::Db(DbError::Refused))
            }
            Waited::Failed(e) => Err(AcquireError::Db(e)),
        }
    }

    async fn wait_counted(&self, started: Instant) -> Waited {
        let _waiting = self.inner.waiting.enter();
        tracing::Span::current().record("pool.waiting", self.inner.waiting.count());
        self.wait_for_connection(started + self.inner.settings.pool_timeout)
            .await
    }

    /// A turn, then a connection, both before `deadline`.
    async fn wait_for_connection(&self, deadline: Instant) -> Waited {
        let turn = self.inner.occupancy.take_turn();
        let turn = match tokio::time::timeout_at(deadline.into(), turn).await {
            Err(_elapsed) => return Waited::DeadlinePassed,
            Ok(None) => {
                return Waited::Failed(DbError::Unavailable(
                    "the pool is closed (shutting down)".into(),
                ))
            }
            Ok(Some(turn)) => turn,
        };
        let inner = &self.inner;
        let growing = match (inner.gate)
            .before_growth(&inner.monitor, || self.must_open(), deadline)
            .await
        {
            Gate::Open(guard) => guard,
            Gate::Refused(e) => return Waited::Failed(e),
            Gate::DeadlinePassed => return Waited::DeadlinePassed,
        };
        // Boxed, so that only requests holding a turn carry sqlx's 14.5 KB.
        let acquire = Box::pin(tokio::time::timeout_at(
            deadline.into(),
            self.sqlx_acquire(),
        ));
        let waited = tokio::select! {
            result = acquire => match result {
                Ok(Ok(conn)) => Waited::Got(turn, conn),
                Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_) => Waited::DeadlinePassed,
                Ok(Err(e)) => Waited::Failed(DbError::from_sqlx(&e)),
            },
            e = inner.gate.stuck(&inner.monitor) => Waited::Failed(e),
        };
        drop(growing);
        waited
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
            self.inner.metrics.timeouts.inc();
            return busy;
        }
        match self.probe().await {
            ProbeOutcome::Accepted => {
                self.inner.metrics.timeouts.inc();
                busy
            }
            ProbeOutcome::Refused => {
                self.inner.metrics.refusals.inc();
                AcquireError::Db(DbError::Refused)
            }
            ProbeOutcome::Failed(e) => AcquireError::Db(e),
        }
    }

    /// Opens the `DB_POOL_SIZE` connections SQLAlchemy's `pool_size` promises
    /// to keep. sqlx opens `min_connections` lazily (its maintenance task first
    /// runs after `max_lifetime`), which would make the first wave late by a
    /// connection set-up each.
    pub async fn warm_up(&self) {
        let wanted = self.inner.settings.pool_size as usize;
        let held = futures_util::future::join_all((0..wanted).map(|_| self.sqlx_acquire())).await;
        let opened = held.iter().filter(|c| c.is_ok()).count();
        drop(held);
        tracing::debug!(opened, wanted, "pool warmed up");
    }

    /// Closes every connection, waiting for leased ones to come back.
    pub async fn close(&self) {
        self.inner.occupancy.turns.close();
        self.sqlx().close().await;
        self.inner.monitor.close().await;
        if let Some(pooler) = &self.inner.pooler {
            pooler.close().await;
        }
    }
}
