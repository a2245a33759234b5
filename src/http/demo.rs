//! `GET /test/postgres/?seconds=S&work=sleep|cpu|hot` — the demo: wait for a
//! pooled connection, `pg_sleep(S)` in PostgreSQL (or burn `CPU_ROWS` of CPU,
//! or update one of `HOT_ROWS` hot rows: see [`crate::db::workloads`]), read
//! the 50 rows, answer `{"data":[…]}`.
//! `Server-Timing` says where the time went: `pool` (waiting for a
//! connection of the app's pool), `pooler` (from sending the statement to
//! PostgreSQL starting it: the wait inside PgBouncer, if any) and `db` (the
//! statement itself).

use std::sync::Arc;
use std::time::Duration;

use poem::http::HeaderValue;
use poem::web::Data;
use poem::{handler, Request, Response};
use serde::Serialize;

use super::disconnect::ClientGone;
use super::error::ApiError;
use super::AppState;
use crate::contract::ServerTiming;
use crate::db::errors::DbError;
use crate::db::todos::{self, Model};
use crate::db::workloads::{Work, WORK_NAMES};
use crate::settings::{parse_seconds, DemoSettings};

/// Per-request timings, left in the response's extensions for the access log.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub pool_wait: Duration,
    pub db_time: Option<Duration>,
    /// The `pg_sleep` asked for (the live page's wave spacing).
    pub seconds: f64,
}

#[derive(Serialize)]
struct Body<'a> {
    data: &'a [Model],
}

#[handler]
pub async fn test_postgres(req: &Request, state: Data<&Arc<AppState>>) -> poem::Result<Response> {
    let _slot = state
        .in_flight
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Overloaded {
            limit: state.settings.server.max_in_flight,
        })?;
    let work = requested_work(req.uri().query(), &state.settings.demo)?;
    // A client that hangs up must not keep its statement sleeping on the
    // server: losing this race drops the work and with it the lease.
    let gone = ClientGone::of(req);
    tokio::select! {
        answer = work_and_list(&state, work) => Ok(answer?),
        _ = gone.cancelled() => Err(ApiError::ClientClosed.into()),
    }
}

async fn work_and_list(state: &AppState, work: Work) -> Result<Response, ApiError> {
    let pool_timeout = state.settings.database.pool_timeout;
    let lease = state
        .pool
        .acquire()
        .await
        .map_err(|e| ApiError::from_acquire(e, pool_timeout))?;
    // Checked after the acquire, so that a database that cannot be reached
    // (or refuses the login) is reported as such rather than as "not migrated".
    if !state.is_migrated() {
        return Err(ApiError::Db(DbError::Unavailable(
            "the schema is not migrated yet (waiting for the database)".into(),
        )));
    }
    let pool_wait = lease.waited();
    // Boxed: the query's large state is allocated only once a connection is
    // held, not carried by every request still waiting for one. The lease
    // goes with it: the connection is given back as soon as the rows are in.
    let slept = Box::pin(todos::list_after(lease, work))
        .await
        .map_err(ApiError::Db)?;

    // 50 rows are about 3.7 KB: one allocation instead of a dozen regrowths.
    let mut body = Vec::with_capacity(80 * slept.rows.len() + 16);
    serde_json::to_writer(&mut body, &Body { data: &slept.rows })
        .map_err(|e| ApiError::Db(DbError::Other(format!("serialising rows: {e}"))))?;
    let mut resp = Response::builder()
        .content_type("application/json")
        .header(
            ServerTiming::HEADER,
            ServerTiming {
                pool: pool_wait,
                pooler: Some(slept.before_start),
                db: slept.db_time.saturating_sub(slept.before_start),
            }
            .to_string(),
        )
        .body(body);
    if let Some(pid) = slept.backend_pid {
        resp.headers_mut()
            .insert("X-Backend-Pid", HeaderValue::from(pid));
    }
    resp.extensions_mut().insert(Timing {
        seconds: work.sleep_seconds(),
        pool_wait,
        db_time: Some(slept.db_time),
    });
    Ok(resp)
}

/// `work` and `seconds` from the query string. `work` absent → `sleep`;
/// present, one of [`WORK_NAMES`], given once. `seconds` belongs to `sleep`
/// only (see [`requested_seconds`]); the sizes of `cpu` and `hot` are the
/// settings `CPU_ROWS` and `HOT_ROWS`.
pub fn requested_work(query: Option<&str>, demo: &DemoSettings) -> Result<Work, ApiError> {
    let work = match only_once(query, "work", "?work=cpu")? {
        None => "sleep".to_owned(),
        Some(raw) => raw,
    };
    match work.as_str() {
        "sleep" => Ok(Work::Sleep {
            seconds: requested_seconds(query, demo)?,
        }),
        "cpu" | "hot" if only_once(query, "seconds", "?seconds=5")?.is_some() => {
            Err(ApiError::BadRequest(format!(
                "seconds: applies to work=sleep only; work={work} has a fixed size \
                 (CPU_ROWS, HOT_ROWS)"
            )))
        }
        "cpu" => Ok(Work::Cpu {
            rows: demo.cpu_rows,
        }),
        "hot" => Ok(Work::Hot {
            rows: demo.hot_rows,
        }),
        other => {
            let shown: String = other.chars().take(40).collect();
            Err(ApiError::BadRequest(format!(
                "work: expected one of {}, got \"{}\"",
                WORK_NAMES.join(", "),
                shown.escape_default()
            )))
        }
    }
}

/// The value of `key`, which may be given at most once.
fn only_once(query: Option<&str>, key: &str, example: &str) -> Result<Option<String>, ApiError> {
    let mut found: Option<String> = None;
    for (k, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k == key {
            if found.is_some() {
                let hint = if example.is_empty() {
                    String::new()
                } else {
                    format!(", e.g. {example}")
                };
                return Err(ApiError::BadRequest(format!("{key}: give it once{hint}")));
            }
            found = Some(value.into_owned());
        }
    }
    Ok(found)
}

/// `seconds` from the query string: absent → `SLEEP_SECONDS`; present, it must
/// be a finite number from 0 to `SLEEP_MAX`, given once.
pub fn requested_seconds(query: Option<&str>, demo: &DemoSettings) -> Result<f64, ApiError> {
    let Some(raw) = only_once(query, "seconds", "?seconds=5")? else {
        return Ok(demo.sleep_seconds);
    };
    match parse_seconds(&raw, 0.0, demo.sleep_max) {
        Some(d) => Ok(d.as_secs_f64()),
        None => {
            let shown: String = raw.chars().take(40).collect();
            Err(ApiError::BadRequest(format!(
                "seconds: expected a number from 0 to {} (SLEEP_MAX), got \"{}\"",
                demo.sleep_max,
                shown.escape_default()
            )))
        }
    }
}
