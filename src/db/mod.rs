//! Everything that talks to PostgreSQL: the pool ([`pool`]), the demo's table
//! and query ([`todos`]), the server's own limits ([`server_info`]) and the
//! mapping of driver errors onto what a user should be told ([`errors`]).

pub mod errors;
pub mod lease;
pub mod pool;
pub mod server_info;
pub mod todos;

/// `application_name` of the pooled connections: how this service's backends
/// are told apart from everyone else's in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "poolscope";
/// `application_name` of the service's one connection outside the pool, used
/// to watch the server and to tell a refusal from a busy pool.
pub const MONITOR_APPLICATION_NAME: &str = "poolscope-monitor";

/// Runs the migration once over a short-lived pool (`poolscope migrate`).
pub async fn migrate_once(settings: &crate::settings::DatabaseSettings) -> Result<(), String> {
    use migration::{Migrator, MigratorTrait};
    let pool = pool::Pool::connect_lazy(settings)
        .await
        .map_err(|e| e.to_string())?;
    let result = Migrator::up(pool.sea(), None)
        .await
        .map_err(|e| errors::describe_db_err(&e));
    pool.close().await;
    result
}
