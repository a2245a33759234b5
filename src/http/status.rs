//! The routes that describe the service rather than exercise it:
//! `/healthz` (the process runs), `/readyz` (migrated, and PostgreSQL — and
//! PgBouncer, when requests go through it — answers outside the pool: a busy
//! pool is ready; see [`super::ready`]) and
//! `/pool` (configured pool, live pool, PostgreSQL's limits and the
//! concurrency the demo should reach).

use std::sync::Arc;

use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{handler, IntoResponse, Response};
use serde_json::{json, Value};

use crate::contract::{Configured, PoolReport, Postgres};

use super::observe::Outcome;
use super::AppState;

#[handler]
pub fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

#[handler]
pub async fn readyz(state: Data<&Arc<AppState>>) -> Response {
    let verdict = state.readiness.verdict(&state).await;
    let status = if verdict.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut resp = Json(json!({ "ready": verdict.ready, "reason": verdict.reason }))
        .with_status(status)
        .into_response();
    if !verdict.ready {
        resp.extensions_mut().insert(Outcome("not_ready"));
    }
    resp
}

/// Prometheus text; PostgreSQL's numbers are the last background sample.
#[handler]
pub fn metrics(state: Data<&Arc<AppState>>) -> Response {
    Response::builder()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(state.metrics.render())
}

#[handler]
pub async fn pool(state: Data<&Arc<AppState>>) -> Json<PoolReport> {
    Json(pool_report(&state).await)
}

/// The body of `/pool`; also what the client reads to predict the run.
pub async fn pool_report(state: &AppState) -> PoolReport {
    let db = &state.settings.database;
    let server = state.pool.monitor().sample().await;
    let pooler = match state.pool.pooler() {
        Some(p) => Some(p.read().await),
        None => None,
    };
    let (pooler, pooler_error) = match pooler {
        None => (None, None),
        Some(Ok(report)) => (Some(report), None),
        Some(Err(e)) => (None, Some(e.to_string())),
    };
    let topology = crate::report::topology(db, server.as_ref().ok(), pooler.as_ref());
    let budget = topology.budget();
    let (postgres, postgres_error, replicas) = match server {
        Ok(limits) => (
            Some(Postgres {
                max_connections: limits.max_connections,
                reserved: limits.reserved,
                backends_total: limits.backends_total,
                backends_service: limits.backends_service,
                backends_service_all: limits.backends_service_all,
                grantable_to_pool: limits.grantable_to_pool(),
                grantable_to_service: limits.grantable_to_service(),
                activity: limits.activity,
            }),
            None,
            limits.replicas,
        ),
        Err(e) => (None, Some(e.to_string()), Vec::new()),
    };
    let known = postgres.is_some();
    PoolReport {
        configured: Configured {
            replica: db.replica.clone(),
            pool_size: db.pool_size,
            max_overflow: db.max_overflow,
            pool_max: db.pool_max(),
            pool_timeout_s: db.pool_timeout.as_secs_f64(),
            overflow_idle_timeout_s: db.overflow_idle_timeout.as_secs_f64(),
            pool_recycle_s: db.pool_recycle.as_secs_f64(),
            statement_timeout_s: db.statement_timeout.as_secs_f64(),
            sleep_seconds: state.settings.demo.sleep_seconds,
            sleep_max: state.settings.demo.sleep_max,
            db_cores: state.settings.sweep.db_cores,
        },
        live: state.pool.live(),
        postgres,
        postgres_error,
        replicas,
        pooler,
        pooler_error,
        budget: known.then_some(budget),
        concurrency: known.then_some(budget.concurrency),
        limit: Some(state.limit.report()),
    }
}
