//! The HTTP API (the README's "Routes" lists it): routes, shared state, the
//! access log, and JSON answers for unknown routes and wrong methods.

pub mod demo;
pub mod disconnect;
pub mod error;
pub mod live;
pub mod observe;
pub mod pool_limit;
pub mod ready;
pub mod server;
pub mod status;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use poem::error::{MethodNotAllowedError, NotFoundError};
use poem::{get, Endpoint, Response, Route};
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
    pub request_durations: crate::metrics::RequestDurations,
    /// `/metrics`: the registry, built once, over the pool's and the requests' series.
    pub metrics: crate::metrics::Metrics,
    /// The current run's answers, for the live page.
    pub runlog: crate::runlog::RunLog,
    /// A background sample for the live page is under way.
    pub live_sampling: std::sync::atomic::AtomicBool,
    /// The pool's runtime limit (`POST /pool/limit`, for the sweep).
    pub limit: pool_limit::LimitControl,
    /// `X-Replica` on every answer (`REPLICA_NAME`, checked to be header-safe).
    pub replica_header: Option<poem::http::HeaderValue>,
    /// `/readyz`'s shared answer.
    pub readiness: ready::Readiness,
    /// The line that ends each run in the log.
    pub run_summary: observe::RunSummary,
    migrated: AtomicBool,
}

impl AppState {
    pub fn new(settings: Settings, pool: Pool) -> AppState {
        let permits = settings.server.max_in_flight;
        let replica_header = poem::http::HeaderValue::from_str(&settings.database.replica).ok();
        let request_durations = crate::metrics::RequestDurations::default();
        let scraped = pool.clone();
        let metrics = crate::metrics::Metrics::new(pool.metrics(), &request_durations, move || {
            crate::metrics::Scrape {
                pool: scraped.snapshot(),
                server: scraped.monitor().last_sample(),
                pooler: scraped.pooler().and_then(|p| p.last()),
            }
        });
        let limit = pool_limit::LimitControl::new(settings.sweep.limit_control, &pool);
        let readiness = ready::Readiness::new(&settings.database);
        AppState {
            limit,
            settings,
            pool,
            in_flight: Arc::new(Semaphore::new(permits)),
            request_durations,
            metrics,
            replica_header,
            readiness,
            run_summary: Default::default(),
            runlog: Default::default(),
            live_sampling: Default::default(),
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

/// Declares every route once: its path (also its metric label and span
/// name), any alias answering the same, and its endpoint. From that one list
/// come the router, [`route_of`] (the label of a request's path: a route
/// missing there would be counted as `other`) and [`PATHS`] (the 404 hint).
macro_rules! routes {
    ($( $path:literal $(| $alias:literal)* => $endpoint:expr ),+ $(,)?) => {
        fn router() -> Route {
            Route::new() $( .at($path, $endpoint) $( .at($alias, $endpoint) )* )+
        }

        /// The route a path belongs to, as metrics and spans name it; any
        /// other path is `other`, so a scan of random paths cannot blow up
        /// the metric's cardinality.
        pub fn route_of(path: &str) -> &'static str {
            match path {
                $( $path $(| $alias)* => $path, )+
                _ => "other",
            }
        }

        /// Every route's path, for the 404 answer's hint.
        pub const PATHS: &[&str] = &[$($path),+];
    };
}

routes! {
    "/" => get(live::page),
    "/test/postgres/" | "/test/postgres" => get(demo::test_postgres),
    "/pool" => get(status::pool),
    "/pool/limit" => get(pool_limit::get_limit)
        .post(pool_limit::post_limit)
        .delete(pool_limit::delete_limit),
    "/live" => get(live::live),
    "/healthz" => get(status::healthz),
    "/readyz" => get(status::readyz),
    "/metrics" => get(status::metrics),
}

pub fn routes(state: Arc<AppState>) -> impl Endpoint<Output = Response> {
    observe::Observed {
        routes: router(),
        state,
    }
}

/// Our own errors render themselves; poem's routing errors become JSON too.
///
/// Rendered with `as_response` directly: `poem::Error::into_response`
/// replaces the response's extensions with the error's own (empty) ones,
/// which would drop the [`error::ErrorKind`] that the access log and the
/// live page read.
fn error_response(err: poem::Error) -> Response {
    if let Some(api) = err.downcast_ref::<ApiError>() {
        return poem::error::ResponseError::as_response(api);
    }
    let api = if err.is::<NotFoundError>() {
        ApiError::NotFound(format!("this path; try {}", PATHS.join(", ")))
    } else if err.is::<MethodNotAllowedError>() {
        ApiError::MethodNotAllowed
    } else if err.status().is_client_error() {
        // An extractor's refusal (a malformed query string, a body too large).
        ApiError::BadRequest(err.to_string())
    } else {
        ApiError::Internal(err.to_string())
    };
    poem::error::ResponseError::as_response(&api)
}
