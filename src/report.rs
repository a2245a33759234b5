//! The startup report: the effective pool, what PostgreSQL grants, and a
//! warning with the arithmetic when the pool can outgrow it.

use crate::db::server_info::ServerLimits;
use crate::http::AppState;

pub async fn log_startup_report(state: &AppState) {
    let db = &state.settings.database;
    tracing::info!(
        database = %db.url,
        pool_size = db.pool_size,
        max_overflow = db.max_overflow,
        pool_max = db.pool_max(),
        pool_timeout_s = db.pool_timeout.as_secs_f64(),
        overflow_idle_timeout_s = db.overflow_idle_timeout.as_secs_f64(),
        pool_recycle_s = db.pool_recycle.as_secs_f64(),
        statement_timeout_s = db.statement_timeout.as_secs_f64(),
        "pool configured (min_connections = DB_POOL_SIZE, max_connections = DB_POOL_SIZE + DB_MAX_OVERFLOW)"
    );
    match state.pool.monitor().sample().await {
        Ok(limits) => {
            tracing::info!(
                max_connections = limits.max_connections,
                reserved = limits.reserved,
                backends_total = limits.backends_total,
                backends_service = limits.backends_service,
                "PostgreSQL limits"
            );
            if let Some(warning) = capacity_warning(db.pool_max(), &limits) {
                tracing::warn!("{warning}");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not read PostgreSQL's limits"),
    }
}

/// `Some(explanation)` when the pool may ask for more connections than the
/// server will grant.
pub fn capacity_warning(pool_max: u32, limits: &ServerLimits) -> Option<String> {
    let grantable = limits.grantable_to_pool();
    (pool_max > grantable).then(|| {
        let others = limits.backends_total.saturating_sub(limits.backends_service);
        format!(
            "the pool can outgrow PostgreSQL: pool max {pool_max} > max_connections {} - reserved {} - other backends {} = {grantable}; \
             beyond {grantable} connections requests will get 503 db_refused. \
             Raise POSTGRES_MAX_CONNECTIONS or lower DB_POOL_SIZE + DB_MAX_OVERFLOW.",
            limits.max_connections, limits.reserved, others
        )
    })
}
