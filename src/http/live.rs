//! `GET /` — the live page — and `GET /live`, the JSON it polls four times a
//! second: this replica's pool, PostgreSQL's slots, the budget and the
//! current run's answers (only the ones the page has not seen yet). Nothing
//! here queries the database per poll: PostgreSQL's side is the monitor's
//! last sample, refreshed in the background at most once a second while
//! someone watches. The page is embedded in the binary: no CDN, no fonts,
//! the stack runs offline.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use poem::web::{Data, Json, Query};
use poem::{handler, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
use crate::contract::{LivePool, LivePostgres, LiveView};

const PAGE: &str = include_str!("live.html");

/// PostgreSQL's side is refreshed at most this often while the page polls.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

#[handler]
pub fn page() -> Response {
    Response::builder()
        .content_type("text/html; charset=utf-8")
        .header("Cache-Control", "no-store")
        .body(PAGE)
}

#[derive(Debug, Deserialize)]
pub struct Since {
    #[serde(default)]
    run: u64,
    #[serde(default)]
    after: usize,
}

#[handler]
pub fn live(
    state: Data<&Arc<AppState>>,
    since: poem::Result<Query<Since>>,
) -> Result<Json<LiveView>, ApiError> {
    let since = since.map_err(|e| {
        ApiError::BadRequest(format!(
            "{e}; /live takes run and after, whole numbers from 0 (e.g. /live?run=3&after=120)"
        ))
    })?;
    refresh_server_sample(&state);
    let db = &state.settings.database;
    let live = state.pool.live();
    let opened = state.pool.opened_total();
    let server = state.pool.monitor().last_sample();
    let pooler = state.pool.pooler().and_then(|p| p.last());
    let budget = server
        .as_ref()
        .map(|s| crate::report::topology(db, Some(s), pooler.as_ref()).budget());
    Ok(Json(LiveView {
        replica: db.replica.clone(),
        sleep_seconds: state.settings.demo.sleep_seconds,
        pool_timeout_s: db.pool_timeout.as_secs_f64(),
        pool: LivePool {
            size: db.pool_size,
            max: db.pool_max(),
            open: live.open,
            idle: live.idle,
            in_use: live.in_use,
            waiting: live.waiting,
            oldest_wait_s: state.pool.oldest_wait().as_secs_f64(),
            opened,
            closed: state.pool.closed_total(),
            limit: state.limit.pool.limit(),
        },
        postgres: server.map(|s| LivePostgres {
            max_connections: s.max_connections,
            reserved: s.reserved,
            backends_total: s.backends_total,
            backends_service_all: s.backends_service_all,
            grantable_to_service: s.grantable_to_service(),
            active: s.activity.active,
            lock_waiters: s.activity.lock_waiters,
        }),
        budget,
        run: state.runlog.view(since.run, since.after),
    }))
}

/// One background sample at a time, at most once per [`SAMPLE_EVERY`].
fn refresh_server_sample(state: &Arc<AppState>) {
    let due = state
        .pool
        .monitor()
        .sampled_at()
        .is_none_or(|at| at.elapsed() >= SAMPLE_EVERY);
    if due && !state.live_sampling.swap(true, Ordering::AcqRel) {
        let state = state.clone();
        tokio::spawn(async move {
            let _ = state.pool.monitor().sample().await;
            state.live_sampling.store(false, Ordering::Release);
        });
    }
}
