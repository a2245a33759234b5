//! The connection pool: SeaORM's sqlx pool, made to behave like SQLAlchemy's
//! `QueuePool` wherever a user can see the difference. This folder is the
//! whole acquire path; each file holds one concept:
//!
//! * [`slots`] — the state machine: `pool_max` slots, free, claimed, vacant
//!   or withheld; who opens a connection and who waits for a returned one.
//!   Its invariants are written there and unit-tested without PostgreSQL.
//! * [`gate`] — telling PostgreSQL's refusal ("too many clients") at once.
//! * [`lease`] — a connection on loan to one request, and how it goes back.
//! * [`handoff`] — a connection handed straight from a finished request to
//!   a waiting one, without the trip through sqlx.
//! * [`keeper`] — the `DB_POOL_SIZE` kept connections: opened at start,
//!   reopened after a recycle or an outage, surplus overflow closed.
//! * [`waiters`] — who waits, and since when (for `/pool` and `/metrics`).
//!
//! **A request's way to a connection.** It takes a slot at once if one is
//! free, or vacant (left by a failed attempt); else it waits, first come
//! first served, for a connection to be *returned* — never for the right to
//! open one — until `DB_POOL_TIMEOUT` (`pool_timeout`). Holding a slot, it
//! takes an idle connection or opens one; where PostgreSQL may be full, it
//! first asks PostgreSQL ([`gate`]) and is refused at once (`db_refused`) if
//! PostgreSQL refuses. A refused request's slot goes vacant and wakes no
//! waiter, so the requests that were waiting are served, in waves, by the
//! connections that did open (SQLAlchemy `pool/impl.py`, `_do_get`).
//!
//! **Where sqlx is worked around, and why** (sqlx-core 0.9, `pool/inner.rs`
//! and `pool/connection.rs`):
//!
//! * sqlx retries "too many clients" (SQLSTATE 53300) silently while
//!   connecting, until its acquire timeout, with no hook to see it: hence
//!   the [`gate`] and its stuck check.
//! * sqlx's idle reaper closes any connection idle longer than
//!   `idle_timeout`, the kept ones too, and its `min_connections`
//!   maintenance reopens connections through that same silent retry (a
//!   kept pool larger than the server would sit in it, counted as open).
//!   So sqlx runs with `idle_timeout` off and `min_connections` 0; the
//!   [`keeper`] keeps `DB_POOL_SIZE` and closes surplus overflow.
//! * sqlx returns a connection to its idle queue in a spawned task (after a
//!   ping). A waiter woken before that would find no idle connection and
//!   open one. The [`lease`] frees its slot only once the connection is
//!   back — or, while requests wait, leaves the connection in the
//!   [`handoff`] for the waiter its slot wakes: no ping, no task, no trip
//!   through sqlx's acquire.
//! * sqlx says only how many connections are open and idle; how many
//!   requests wait, and for how long, is counted here ([`waiters`]).
//!
//! SQLAlchemy → sqlx: `pool_size` → kept by the [`keeper`], `pool_size +
//! max_overflow` → `max_connections` (and the slots), `pool_timeout` → the
//! wait for a slot, `pool_recycle` → `max_lifetime`, `pool_pre_ping` → a
//! ping of connections idle ≥ 1 s. SQLAlchemy's `NullPool` has no sqlx
//! equivalent.

pub mod gate;
pub mod handoff;
pub mod keeper;
pub mod lease;
pub mod slots;
pub mod waiters;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sea_orm::{ConnectOptions, Database, DatabaseConnection};
use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tracing::field::Empty;
use tracing::Instrument;

use lease::Got;
pub use lease::Lease;

use super::errors::DbError;
use super::login::off_the_workers;
use super::pooler::Pooler;
use super::server_info::{Monitor, ProbeOutcome};
use super::{application_name, POOL_APP};
use crate::metrics::{observe, PoolMetrics, PoolSnapshot};
use crate::settings::DatabaseSettings;
use gate::{Gate, Gatekeeper};
use handoff::Handoff;
use slots::{Slots, Turn};

/// How often PostgreSQL checks, during a running statement, whether the
/// client went away. An abandoned request's connection is closed (see
/// [`Lease`]); this makes the server end the backend within a second instead
/// of sleeping on for the rest of `pg_sleep`.
pub const CLIENT_CHECK_INTERVAL_MS: u32 = 1000;

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
    slots: Arc<Slots>,
    /// Connections left by finished requests for waiting ones.
    handoff: Arc<Handoff>,
    /// Asks PostgreSQL before the pool grows where it may refuse.
    gate: Gatekeeper,
    metrics: PoolMetrics,
    /// Closed connections reported so far: `opened − open` only ever grows.
    closed: AtomicU64,
    /// Something failed that may have broken idle connections (the database
    /// or the pooler went away): the keeper checks them on its next round.
    suspect: AtomicBool,
    keeper: keeper::State,
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
    Got(Got),
    /// Waited the whole `DB_POOL_TIMEOUT` for a connection to come back.
    QueueTimedOut,
    /// Held a slot, but no connection came of it in time.
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
        // min_connections 0 and no idle_timeout: the keeper decides which
        // connections stay (see the module doc).
        opts.min_connections(0)
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
            .map_sqlx_postgres_pool_opts(move |o| {
                let metrics = hook_metrics.clone();
                o.idle_timeout(None).after_connect(move |_conn, _meta| {
                    metrics.opened.inc();
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
        let handoff = Arc::new(Handoff::default());
        let slots = Arc::new(Slots::new(
            Box::new(db.get_postgres_connection_pool().clone()),
            settings.pool_size,
            settings.pool_max(),
            settings.overflow_idle_timeout.is_zero(),
        ));
        let pool = Pool {
            inner: Arc::new(Inner {
                db,
                monitor: Monitor::new(settings),
                pooler: Pooler::new(settings),
                settings: settings.clone(),
                slots,
                handoff,
                gate: Gatekeeper::new(settings.pool_max(), settings.pooler_admin_url.is_some()),
                metrics,
                closed: AtomicU64::new(0),
                suspect: AtomicBool::new(false),
                keeper: keeper::State::default(),
            }),
        };
        keeper::spawn_trimmer(&pool);
        Ok(pool)
    }

    fn sqlx(&self) -> &PgPool {
        self.inner.db.get_postgres_connection_pool()
    }

    /// One acquire from sqlx, for a claim holding a slot. An acquire that
    /// may include a login runs off the runtime's workers (see
    /// [`super::login`]); one that cannot — an idle connection is there,
    /// or the pool is at its max — costs nothing extra.
    fn sqlx_acquire(
        &self,
        may_log_in: bool,
    ) -> impl std::future::Future<Output = Result<PoolConnection<Postgres>, sqlx::Error>> + 'static
    {
        let pool = self.sqlx().clone();
        let started = Instant::now();
        async move {
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
        let slots = &self.inner.slots;
        LiveCounts {
            open: slots.open(),
            idle: slots.idle(),
            in_use: slots.in_use(),
            waiting: self.inner.slots.queued(),
        }
    }

    /// The runtime limit on connections in use (the pool's max when none is
    /// set): see [`Slots::set_limit`].
    pub fn limit(&self) -> u32 {
        self.inner.slots.limit()
    }

    /// Lowers the number of connections requests may use at once, or with
    /// `None` goes back to `DB_POOL_SIZE + DB_MAX_OVERFLOW`. Clamped to
    /// 1..=pool max.
    pub fn set_limit(&self, limit: Option<u32>) {
        self.inner.slots.set_limit(limit);
        tracing::info!(limit = self.limit(), "pool limit set");
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
        self.inner.slots.waiters().oldest_wait()
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
        if !span.is_disabled() {
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
        }
        result
    }

    async fn acquire_inner(&self) -> Result<Lease, AcquireError> {
        let started = Instant::now();
        let waited = self.wait_for_connection(started).await;
        let wait = started.elapsed();
        observe(&self.inner.metrics.wait_time, wait);
        match waited {
            Waited::Got(got) => Ok(Lease::new(
                got,
                wait,
                self.inner.metrics.use_time.clone(),
                self.inner.handoff.clone(),
            )),
            Waited::QueueTimedOut => {
                self.inner.metrics.timeouts.inc();
                Err(AcquireError::Timeout {
                    waited: wait,
                    live: self.live(),
                })
            }
            Waited::DeadlinePassed => Err(Box::pin(self.explain_timeout(wait)).await),
            Waited::Failed(DbError::Refused) => {
                self.inner.metrics.refusals.inc();
                Err(AcquireError::Db(DbError::Refused))
            }
            Waited::Failed(e) => {
                self.suspect();
                Err(AcquireError::Db(e))
            }
        }
    }

    /// A slot, then a connection, both within `DB_POOL_TIMEOUT`.
    async fn wait_for_connection(&self, started: Instant) -> Waited {
        let deadline = started + self.inner.settings.pool_timeout;
        // With no connection open (database down at start, or every
        // connection lost in a restart), sqlx would retry "connection
        // refused" silently until DB_POOL_TIMEOUT. Ask the probe first and
        // answer at once while the database is unreachable.
        if self.sqlx().size() == 0 {
            if let ProbeOutcome::Failed(e) = self.probe().await {
                return Waited::Failed(e);
            }
        }
        let turn = match self.inner.slots.try_turn() {
            Some(turn) => turn,
            None => match self.wait_for_turn(deadline).await {
                Ok(turn) => turn,
                Err(waited) => return waited,
            },
        };
        self.connect_on(turn, deadline).await
    }

    /// Waits for a connection to come back (the slots count the wait).
    async fn wait_for_turn(&self, deadline: Instant) -> Result<Turn, Waited> {
        tracing::Span::current().record("pool.waiting", self.inner.slots.queued() + 1);
        match tokio::time::timeout_at(deadline.into(), self.inner.slots.turn()).await {
            Err(_elapsed) => Err(Waited::QueueTimedOut),
            Ok(None) => Err(Waited::Failed(DbError::Unavailable(
                "the pool is closed (shutting down)".into(),
            ))),
            Ok(Some(turn)) => Ok(turn),
        }
    }

    /// Holding a slot: a connection a finished request left, an idle one,
    /// or a new one (asking PostgreSQL first where it may refuse).
    async fn connect_on(&self, mut turn: Turn, deadline: Instant) -> Waited {
        if let Some(handed) = self.inner.handoff.take() {
            turn.hold();
            return Waited::Got(Got {
                turn,
                conn: handed.conn,
                from_sqlx_at: handed.from_sqlx_at,
            });
        }
        let inner = &self.inner;
        let slots = &inner.slots;
        let growing = match (inner.gate)
            .before_growth(&inner.monitor, || slots.must_open(), deadline)
            .await
        {
            Gate::Open(guard) => guard,
            Gate::Refused(e) => {
                turn.failed();
                return Waited::Failed(e);
            }
            Gate::DeadlinePassed => return Waited::DeadlinePassed,
        };
        let may_log_in = slots.must_open();
        // Boxed: sqlx's acquire future is 14.5 KB, and inline it would sit in
        // the state of every request, waiting ones too.
        let acquire = Box::pin(tokio::time::timeout_at(
            deadline.into(),
            self.sqlx_acquire(may_log_in),
        ));
        // Only an acquire that may open a connection can be caught in sqlx's
        // silent retry; the others are not raced against the stuck check,
        // which would cost every request a timer.
        let waited = if may_log_in || inner.gate.may_be_refused(&inner.monitor) {
            tokio::select! {
                result = acquire => Self::acquired(turn, result),
                e = inner.gate.stuck(&inner.monitor, growing.is_some()) => {
                    turn.failed();
                    Waited::Failed(e)
                }
            }
        } else {
            Self::acquired(turn, acquire.await)
        };
        drop(growing);
        waited
    }

    fn acquired(
        mut turn: Turn,
        result: Result<Result<PoolConnection<Postgres>, sqlx::Error>, tokio::time::error::Elapsed>,
    ) -> Waited {
        match result {
            Ok(Ok(conn)) => {
                turn.hold();
                Waited::Got(Got {
                    turn,
                    conn,
                    from_sqlx_at: Instant::now(),
                })
            }
            Ok(Err(sqlx::Error::PoolTimedOut)) | Err(_) => {
                turn.failed();
                Waited::DeadlinePassed
            }
            Ok(Err(e)) => {
                turn.failed();
                Waited::Failed(DbError::from_sqlx(&e))
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

    /// Something failed that may have broken the idle connections: the
    /// keeper checks them on its next round.
    pub fn suspect(&self) {
        self.inner.suspect.store(true, Ordering::Relaxed);
    }

    /// Closes every connection, waiting for leased ones to come back.
    pub async fn close(&self) {
        self.inner.slots.close();
        // Dropped, they go back to sqlx, which closes them as it closes.
        drop(self.inner.handoff.close());
        self.sqlx().close().await;
        self.inner.monitor.close().await;
        if let Some(pooler) = &self.inner.pooler {
            pooler.close().await;
        }
    }
}
