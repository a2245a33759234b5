//! Building and running the service: check the database, bind the listener
//! (port 0 in tests), build the pool lazily, migrate in the background until the database
//! answers, report the pool arithmetic, serve, and drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket};

use crate::db::pool::Pool;
use crate::http::{self, AppState};
use crate::settings::Settings;

/// How often the service samples PostgreSQL's connection counts (for /metrics,
/// the budget warning, and noticing that the database or PgBouncer went away).
const SERVER_SAMPLE_INTERVAL: Duration = Duration::from_secs(2);

/// Connections the kernel queues before they are accepted (it caps this at
/// `net.core.somaxconn`): `poolscope client 10000` connects all at once, and
/// with tokio's default of 1,024 the rest would wait for SYN retries.
const LISTEN_BACKLOG: u32 = 4096;

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    state: Arc<AppState>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Pool(crate::db::errors::DbError),
    #[error("{0}")]
    Database(String),
}

impl Application {
    /// Checks that PostgreSQL is reachable, takes the login and is new
    /// enough (within `DB_CONNECT_TIMEOUT`), builds the pool and binds.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        // Before the check below opens the first connection through the
        // pooler: PgBouncer's server connections take the role's defaults
        // when they open.
        if crate::db::pooler::through_pooler(&settings.database) {
            keep_session_settings_for_the_pooler(&settings.database).await;
        }
        crate::db::check::database_is_usable(&settings.database)
            .await
            .map_err(StartupError::Database)?;
        let pool = Pool::connect_lazy(&settings.database)
            .await
            .map_err(StartupError::Pool)?;
        let wanted = SocketAddr::new(settings.server.host, settings.server.port);
        let listener = listen(wanted).map_err(|source| StartupError::Bind {
            addr: wanted,
            source,
        })?;
        let addr = listener.local_addr().unwrap_or(wanted);
        Ok(Application {
            listener,
            addr,
            state: Arc::new(AppState::new(settings, pool)),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish
    /// for up to `SHUTDOWN_GRACE` and closes the pool.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let state = self.state.clone();
        let grace = state.settings.server.shutdown_grace;
        tracing::info!(addr = %self.addr, "listening");
        let prepare = tokio::spawn(prepare_database(state.clone()));
        http::server::serve(self.listener, http::routes(state.clone()), shutdown, grace).await;
        prepare.abort();
        // Connections still leased after the grace period are closed when
        // their requests are dropped; don't wait on them forever.
        if tokio::time::timeout(Duration::from_secs(5), state.pool.close())
            .await
            .is_err()
        {
            tracing::warn!("pool did not close within 5s");
        }
        tracing::info!("stopped");
    }
}

/// A listener on `addr` with the service's backlog (also used by the client
/// benchmark's stand-in server, `examples/sleep_server.rs`).
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    // A restarted service can bind at once, even with old connections in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Migrates (retrying while the database is unreachable), reports the pool
/// against what PostgreSQL grants, then samples the server every few seconds.
async fn prepare_database(state: Arc<AppState>) {
    // The monitor connects first, so that it holds its slot even when the
    // pool will take every slot the server grants.
    let _ = state.pool.monitor().sample().await;
    let mut delay = Duration::from_millis(250);
    for attempt in 1u64.. {
        match crate::db::migrate_once(&state.settings.database).await {
            Ok(()) => break,
            Err(error) => {
                // Warn on the first failure and then about once a minute, not every retry.
                if attempt == 1 || attempt % 60 == 0 {
                    tracing::warn!(%error, attempt, "migration failed (database not reachable?); retrying every second");
                } else {
                    tracing::debug!(%error, attempt, "migration failed; retrying");
                }
                tokio::time::sleep(delay).await;
                // Capped at 1 s: the service should serve soon after the database is up.
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        }
    }
    tracing::info!("schema migrated");
    state.pool.warm_up().await;
    tokio::spawn(state.pool.clone().keep());
    // Reported before the service calls itself ready, so that the pool
    // arithmetic is in the log when the first client starts.
    let budget = crate::report::BudgetWatch::default();
    crate::report::log_startup_report(&state.settings.database, &state.pool, &budget).await;
    state.set_migrated();
    // Keep PostgreSQL's side of /metrics fresh (the monitor's last sample).
    loop {
        tokio::time::sleep(SERVER_SAMPLE_INTERVAL).await;
        let sampled = state.pool.monitor().sample().await;
        let pooled = match state.pool.pooler() {
            Some(pooler) => pooler.read().await.map(|_| ()),
            None => Ok(()),
        };
        if sampled.is_err() || pooled.is_err() {
            // The database or PgBouncer went away: idle connections may be broken.
            state.pool.suspect();
        } else {
            crate::report::watch_budget(&state.settings.database, &state.pool, &budget);
        }
    }
}

/// Through a pooler the pool's `statement_timeout` and
/// `client_connection_check_interval` become the role's defaults (see
/// [`crate::db::role_defaults`]); said once, with what changed.
async fn keep_session_settings_for_the_pooler(db: &crate::settings::DatabaseSettings) {
    let [(_, statement_ms), (_, check_ms)] = crate::db::role_defaults::wanted(db);
    match crate::db::role_defaults::agree(db).await {
        Ok(done) if done.changed_from.is_empty() => tracing::info!(
            role = %done.role, database = %done.database, statement_timeout_ms = statement_ms,
            client_connection_check_interval_ms = check_ms,
            "through a pooler: the role's defaults already hold the session settings"
        ),
        Ok(done) => tracing::warn!(
            role = %done.role, database = %done.database, statement_timeout_ms = statement_ms,
            client_connection_check_interval_ms = check_ms, was = %done.changed_from.join(", "),
            "through a pooler: set the role's defaults to the session settings; PgBouncer's \
             server connections opened before keep the old values until replaced \
             (restart PgBouncer: docker compose restart pgbouncer)"
        ),
        Err(error) => tracing::warn!(
            %error,
            "through a pooler: cannot make statement_timeout and client_connection_check_interval \
             the role's defaults; PgBouncer does not pass them on, so the server's own apply"
        ),
    }
}
