//! The startup report: the effective pool, what PostgreSQL grants, and a
//! warning with the arithmetic when the pool can outgrow it.

use crate::budget::Topology;
use crate::contract::{PoolerReport, ServerLimits};
use crate::db::pool::Pool;
use crate::settings::DatabaseSettings;

pub async fn log_startup_report(db: &DatabaseSettings, pool: &Pool, budget: &BudgetWatch) {
    tracing::info!(
        database = %db.url,
        pool_size = db.pool_size,
        max_overflow = db.max_overflow,
        pool_max = db.pool_max(),
        pool_timeout_s = db.pool_timeout.as_secs_f64(),
        overflow_idle_timeout_s = db.overflow_idle_timeout.as_secs_f64(),
        pool_recycle_s = db.pool_recycle.as_secs_f64(),
        statement_timeout_s = db.statement_timeout.as_secs_f64(),
        "pool configured (DB_POOL_SIZE kept open, at most DB_POOL_SIZE + DB_MAX_OVERFLOW)"
    );
    let server = pool.monitor().sample().await;
    let pooler = match pool.pooler() {
        Some(p) => match p.read().await {
            Ok(report) => {
                tracing::info!(
                    pool_mode = %report.pool_mode,
                    default_pool_size = report.default_pool_size,
                    max_client_conn = report.max_client_conn,
                    query_wait_timeout_s = report.query_wait_timeout_s,
                    "through PgBouncer"
                );
                Some(report)
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read PgBouncer's SHOW POOLS / SHOW CONFIG");
                None
            }
        },
        None => None,
    };
    match &server {
        Ok(limits) => {
            tracing::info!(
                max_connections = limits.max_connections,
                reserved = limits.reserved,
                backends_total = limits.backends_total,
                backends_service = limits.backends_service,
                replicas = limits.replicas.len(),
                "PostgreSQL limits"
            );
            budget.observe(&topology(db, Some(limits), pooler.as_ref()));
        }
        Err(e) => tracing::warn!(error = %e, "could not read PostgreSQL's limits"),
    }
}

/// The layers as the service sees them: replicas with a monitor connection
/// (at least this one), each pool's maximum, the pooler's server pool, and
/// what PostgreSQL grants the service.
pub fn topology(
    db: &DatabaseSettings,
    limits: Option<&ServerLimits>,
    pooler: Option<&PoolerReport>,
) -> Topology {
    Topology {
        replicas: limits.map_or(1, |l| l.replicas.len().max(1) as u32),
        pool_max: db.pool_max(),
        pooler_pool: pooler.map(|p| p.default_pool_size),
        grantable: limits.map(ServerLimits::grantable_to_service),
    }
}

/// The budget as this replica last logged it. The topology changes while the
/// service runs — replicas start and stop, PostgreSQL's limits are edited —
/// and each replica then logs the new arithmetic once: the warning with the
/// multiplication as it now stands, or that the pool fits again.
#[derive(Default)]
pub struct BudgetWatch {
    last: std::sync::Mutex<Option<Option<String>>>,
}

impl BudgetWatch {
    /// Logs the budget if it changed since the last call (or on the first).
    pub fn observe(&self, topology: &Topology) {
        let warning = topology.warning();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref() == Some(&warning) {
            return;
        }
        let first = last.is_none();
        *last = Some(warning.clone());
        match warning {
            Some(w) => tracing::warn!(replicas = topology.replicas, "{w}"),
            None if !first => tracing::info!(
                replicas = topology.replicas,
                "the pools fit what PostgreSQL grants again"
            ),
            None => {}
        }
    }
}

/// Re-reads the budget after a sample of PostgreSQL's limits (see [`BudgetWatch`]).
pub fn watch_budget(db: &DatabaseSettings, pool: &Pool, budget: &BudgetWatch) {
    let Some(limits) = pool.monitor().last_sample() else {
        return;
    };
    let pooler = pool.pooler().and_then(|p| p.last());
    budget.observe(&topology(db, Some(&limits), pooler.as_ref()));
}
