//! Building and running the service: bind the listener (port 0 in tests),
//! build the pool lazily, migrate in the background until the database
//! answers, report the pool arithmetic, serve, and drain on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::Server;

use crate::db::pool::Pool;
use crate::http::disconnect::WatchingAcceptor;
use crate::http::{self, AppState};
use crate::settings::Settings;

/// How often the service samples PostgreSQL's connection counts for /metrics.
const SERVER_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);

pub struct Application {
    acceptor: TcpAcceptor,
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
}

impl Application {
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let pool = Pool::connect_lazy(&settings.database)
            .await
            .map_err(StartupError::Pool)?;
        let wanted = SocketAddr::new(settings.server.host, settings.server.port);
        let acceptor = TcpListener::bind(wanted.to_string())
            .into_acceptor()
            .await
            .map_err(|source| StartupError::Bind {
                addr: wanted,
                source,
            })?;
        let addr = acceptor
            .local_addr()
            .first()
            .and_then(|a| a.as_socket_addr().copied())
            .unwrap_or(wanted);
        Ok(Application {
            acceptor,
            addr,
            state: Arc::new(AppState::new(settings, pool)),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish
    /// for up to `SHUTDOWN_GRACE` and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        let grace = state.settings.server.shutdown_grace;
        tracing::info!(addr = %self.addr, "listening");
        let prepare = tokio::spawn(prepare_database(state.clone()));
        let acceptor = WatchingAcceptor::new(self.acceptor, state.disconnects.clone());
        let result = Server::new_with_acceptor(acceptor)
            .run_with_graceful_shutdown(http::routes(state.clone()), shutdown, Some(grace))
            .await;
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
        result
    }
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
    state.pool.warm_up().await;
    state.set_migrated();
    tracing::info!("schema migrated");
    crate::report::log_startup_report(&state).await;
    // Keep PostgreSQL's side of /metrics fresh (the monitor's last sample).
    loop {
        tokio::time::sleep(SERVER_SAMPLE_INTERVAL).await;
        let _ = state.pool.monitor().sample().await;
    }
}
