//! Everything that talks to PostgreSQL: the pool and its whole acquire path
//! ([`pool`]), the demo's table and queries ([`todos`], with the workloads
//! of [`workloads`]), the server's own limits ([`server_info`]), the mapping
//! of driver errors onto what a user should be told ([`errors`]) and opening
//! connections without stalling under load ([`login`]).

pub mod check;
pub mod errors;
pub mod login;
pub mod pool;
pub mod pooler;
pub mod role_defaults;
pub mod server_info;
pub mod standing;
pub mod todos;
pub mod workloads;

/// `application_name` prefixes; each connection carries `PREFIX:<replica>`
/// (see [`application_name`]), so that `pg_stat_activity` tells this
/// service's backends from everyone else's, and the replicas apart.
///
/// The pooled connections.
pub const POOL_APP: &str = "poolscope";
/// The one connection outside the pool that watches the server; one per
/// replica, which is how a replica sees the others.
pub const MONITOR_APP: &str = "poolscope-monitor";
/// The short-lived connections that check the database and run the migration.
pub const MIGRATE_APP: &str = "poolscope-migrate";

/// `poolscope:web-1` and the like.
pub fn application_name(prefix: &str, replica: &str) -> String {
    format!("{prefix}:{replica}")
}

/// Runs the migration once over its own short-lived connections, so that it
/// neither competes with requests for the pool nor fails on the pool's
/// (possibly very short) `DB_POOL_TIMEOUT`: SeaORM's migrator may hold more
/// than one connection at a time.
pub async fn migrate_once(settings: &crate::settings::DatabaseSettings) -> Result<(), String> {
    use migration::{Migrator, MigratorTrait};
    use std::time::Duration;

    // Straight to PostgreSQL: DDL does not belong in a transaction pooler.
    let mut opts = sea_orm::ConnectOptions::new(settings.monitor_url.expose());
    opts.min_connections(0)
        .max_connections(2)
        .acquire_timeout(settings.pool_timeout.max(Duration::from_secs(30)))
        .set_application_name(application_name(MIGRATE_APP, &settings.replica))
        .connect_lazy(true)
        .sqlx_logging(false);
    // The URL was validated when the settings were read; SeaORM's own error
    // would quote it, so it is not formatted.
    let db = sea_orm::Database::connect(opts)
        .await
        .map_err(|_| "cannot build the migration connection".to_owned())?;
    let result = Migrator::up(&db, None)
        .await
        .map_err(|e| errors::describe_db_err(&e));
    let _ = db.close().await;
    result
}
