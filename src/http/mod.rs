//! The HTTP API (see SPEC.md "HTTP API"): routes, shared state, the access
//! log, and JSON answers for unknown routes and wrong methods.

pub mod demo;
pub mod disconnect;
pub mod error;
pub mod status;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use poem::error::{MethodNotAllowedError, NotFoundError};
use poem::{get, Endpoint, EndpointExt, Request, Response, Route};
use tokio::sync::Semaphore;

use crate::db::pool::Pool;
use crate::settings::Settings;
use error::ApiError;

/// What every handler can see.
pub struct AppState {
    pub settings: Settings,
    pub pool: Pool,
    /// `MAX_IN_FLIGHT` permits; a demo request that finds none is answered 503 at once.
    pub in_flight: Arc<Semaphore>,
    /// Which connections' clients have hung up (see [`disconnect`]).
    pub disconnects: disconnect::Disconnects,
    migrated: AtomicBool,
}

impl AppState {
    pub fn new(settings: Settings, pool: Pool) -> AppState {
        let permits = settings.server.max_in_flight;
        AppState {
            settings,
            pool,
            in_flight: Arc::new(Semaphore::new(permits)),
            disconnects: disconnect::Disconnects::default(),
            migrated: AtomicBool::new(false),
        }
    }

    pub fn is_migrated(&self) -> bool {
        self.migrated.load(Ordering::Acquire)
    }

    pub fn set_migrated(&self) {
        self.migrated.store(true, Ordering::Release);
    }
}

pub fn routes(state: Arc<AppState>) -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/test/postgres/", get(demo::test_postgres))
        .at("/test/postgres", get(demo::test_postgres))
        .at("/healthz", get(status::healthz))
        .at("/readyz", get(status::readyz))
        .at("/pool", get(status::pool))
        .data(state)
        .catch_all_error(|err: poem::Error| async move { error_response(err) })
        .around(access_log)
}

/// Our own errors render themselves; poem's routing errors become JSON too.
fn error_response(err: poem::Error) -> Response {
    if err.is::<ApiError>() {
        return err.into_response();
    }
    let api = if err.is::<NotFoundError>() {
        ApiError::NotFound("this path; try /test/postgres/, /pool, /healthz, /readyz".into())
    } else if err.is::<MethodNotAllowedError>() {
        ApiError::MethodNotAllowed
    } else {
        let status = err.status();
        return poem::Error::from_string(err.to_string(), status).into_response();
    };
    poem::Error::from(api).into_response()
}

/// One line per request: route, status, pool wait and database time.
async fn access_log<E: Endpoint<Output = Response>>(
    ep: Arc<E>,
    req: Request,
) -> poem::Result<Response> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let resp = ep.call(req).await?;
    let timing = resp.extensions().get::<demo::Timing>().copied();
    let status = resp.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match timing {
        Some(t) => tracing::info!(
            target: "poolscope::access",
            %method, path, status, elapsed_ms,
            pool_wait_ms = t.pool_wait.as_secs_f64() * 1000.0,
            db_ms = t.db_time.map(|d| d.as_secs_f64() * 1000.0),
            "request"
        ),
        None => {
            tracing::info!(target: "poolscope::access", %method, path, status, elapsed_ms, "request")
        }
    }
    Ok(resp)
}
