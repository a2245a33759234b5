//! The baseline for `scripts/bench.sh` (issue 19): the demo route with
//! nothing but hyper 1 and sqlx 0.9 — no poem, no SeaORM, no logs, traces,
//! metrics, live page or pool bookkeeping. The ratio service ÷ this binary is
//! what all of that costs per request.
//!
//! Same work per request as the service (`src/http/demo.rs`,
//! `src/db/todos.rs`):
//!
//! - a connection from a sqlx `PgPool` with `max_connections` =
//!   `DB_POOL_SIZE + DB_MAX_OVERFLOW` (`min_connections` = `DB_POOL_SIZE`,
//!   acquire timeout `DB_POOL_TIMEOUT`), pinged before use only after 1 s
//!   idle, as the service's pool does (sqlx's default pings on every acquire:
//!   a round trip per request the service does not make);
//! - the same session settings, which change PostgreSQL's own work per
//!   statement: `statement_timeout` (`DB_STATEMENT_TIMEOUT`, default
//!   `SLEEP_MAX + 5` s: a timer armed for every statement) and
//!   `client_connection_check_interval` = 1 s;
//! - the service's one statement, byte for byte (`pg_sleep($1)`, then the 50
//!   rows with the backend's pid and the statement's start time), prepared
//!   once per connection by sqlx;
//! - every column decoded, the 50 rows serialised by serde_json as
//!   `{"data":[{"id","title","done","priority"}, …]}`, `X-Backend-Pid` set;
//! - HTTP/1.1 keep-alive over hyper's `http1` with `TCP_NODELAY`, as the
//!   service's own accept loop (`src/http/server.rs`).
//!
//! Not done, on purpose: `Server-Timing`, the access log, spans, metrics,
//! the client hang-up watch, the in-flight limit, graceful shutdown (SIGTERM
//! just ends it). Only `GET /test/postgres/?seconds=S` and `GET /readyz`
//! are served; anything else is 404.
//!
//! ```sh
//! DATABASE_URL=postgres://… DB_POOL_SIZE=10 DB_MAX_OVERFLOW=10 APP_PORT=8081 \
//!   cargo run --release --example bare_sqlx
//! ```
//!
//! The database must be migrated (`poolscope migrate`): the `todos` table
//! with its 50 rows.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Row};
use tokio::net::TcpListener;

/// `src/db/workloads.rs`'s `SLEEP_SQL` (the default `work=sleep`), copied
/// (the service keeps it private; `scripts/bench.sh` checks that the two are
/// still the same).
const LIST_AFTER_SLEEP_SQL: &str = "\
WITH slept AS MATERIALIZED (SELECT pg_backend_pid() AS backend_pid, \
  (extract(epoch FROM statement_timestamp()) * 1000000)::int8 AS started_us FROM pg_sleep($1)) \
SELECT slept.backend_pid, t.id, t.title, t.done, t.priority, slept.started_us \
FROM slept CROSS JOIN todos t ORDER BY t.id";

/// The service pings a pooled connection before use only after this much idle time.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

/// The service's `client_connection_check_interval`, in milliseconds.
const CLIENT_CHECK_INTERVAL_MS: u32 = 1000;

#[derive(Serialize)]
struct Todo {
    id: i32,
    title: String,
    done: bool,
    priority: i32,
}

#[derive(Serialize)]
struct Body<'a> {
    data: &'a [Todo],
}

type Answer = Response<Full<Bytes>>;

struct Settings {
    addr: SocketAddr,
    url: String,
    pool_size: u32,
    pool_max: u32,
    pool_timeout: Duration,
    statement_timeout: Duration,
    sleep_seconds: f64,
    sleep_max: f64,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}: cannot parse {v:?}")),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let host: String = env_or("APP_HOST", "127.0.0.1".to_string())?;
        let port: u16 = env_or("APP_PORT", 8080)?;
        let pool_size: u32 = env_or("DB_POOL_SIZE", 10)?;
        let overflow: u32 = env_or("DB_MAX_OVERFLOW", 10)?;
        let sleep_max: f64 = env_or("SLEEP_MAX", 60.0)?;
        Ok(Settings {
            addr: format!("{host}:{port}")
                .parse()
                .map_err(|e| format!("APP_HOST/APP_PORT: {e}"))?,
            url: std::env::var("DATABASE_URL")
                .map_err(|_| "DATABASE_URL is not set".to_string())?,
            pool_size,
            pool_max: pool_size + overflow,
            pool_timeout: Duration::from_secs_f64(env_or("DB_POOL_TIMEOUT", 30.0)?),
            statement_timeout: Duration::from_secs_f64(env_or(
                "DB_STATEMENT_TIMEOUT",
                sleep_max + 5.0,
            )?),
            sleep_seconds: env_or("SLEEP_SECONDS", 5.0)?,
            sleep_max,
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::from_env()?;
    let connect = PgConnectOptions::from_str(&settings.url)?.options([
        (
            "statement_timeout",
            settings.statement_timeout.as_millis().to_string(),
        ),
        (
            "client_connection_check_interval",
            CLIENT_CHECK_INTERVAL_MS.to_string(),
        ),
    ]);
    let pool = PgPoolOptions::new()
        .min_connections(settings.pool_size)
        .max_connections(settings.pool_max)
        .acquire_timeout(settings.pool_timeout)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(connect)
        .await?;
    // Open the kept connections now, as the service does before it is ready
    // (sqlx would otherwise open them one request at a time).
    let warm: Vec<_> =
        futures_util::future::try_join_all((0..settings.pool_size).map(|_| pool.acquire())).await?;
    drop(warm);

    let listener = TcpListener::bind(settings.addr).await?;
    eprintln!(
        "bare_sqlx listening on {} (pool {}..{})",
        settings.addr, settings.pool_size, settings.pool_max
    );
    let app = std::sync::Arc::new(App {
        pool,
        sleep_seconds: settings.sleep_seconds,
        sleep_max: settings.sleep_max,
    });
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // e.g. too many open files: do not spin on it.
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(app.answer(req).await) }
            });
            // Connection errors (a client hanging up) are not ours to report.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

struct App {
    pool: PgPool,
    sleep_seconds: f64,
    sleep_max: f64,
}

impl App {
    async fn answer(&self, req: Request<Incoming>) -> Answer {
        if req.method() != Method::GET {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "GET only",
            );
        }
        match req.uri().path() {
            "/test/postgres/" | "/test/postgres" => match self.seconds(req.uri().query()) {
                Ok(seconds) => self.sleep_and_list(seconds).await,
                Err(message) => error(StatusCode::BAD_REQUEST, "bad_request", &message),
            },
            // Ready once listening: the pool was filled before that.
            "/readyz" => Response::new(Full::new(Bytes::from_static(b"ready\n"))),
            _ => error(StatusCode::NOT_FOUND, "not_found", "try /test/postgres/"),
        }
    }

    /// `seconds` from the query string, as the service reads it: absent →
    /// `SLEEP_SECONDS`; present once, a number from 0 to `SLEEP_MAX`.
    fn seconds(&self, query: Option<&str>) -> Result<f64, String> {
        let mut found = None;
        for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if key == "seconds" {
                if found.is_some() {
                    return Err("seconds: give it once".into());
                }
                found = Some(value);
            }
        }
        let Some(raw) = found else {
            return Ok(self.sleep_seconds);
        };
        match raw.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && (0.0..=self.sleep_max).contains(&s) => Ok(s),
            _ => Err(format!(
                "seconds: expected a number from 0 to {}",
                self.sleep_max
            )),
        }
    }

    async fn sleep_and_list(&self, seconds: f64) -> Answer {
        let rows = match sqlx::query(LIST_AFTER_SLEEP_SQL)
            .bind(seconds)
            .fetch_all(&self.pool)
            .await
        {
            Ok(rows) => rows,
            Err(sqlx::Error::PoolTimedOut) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "pool_timeout",
                    "no connection in time",
                )
            }
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "db_error", &e.to_string()),
        };
        // Every column, as the service decodes them.
        let mut backend_pid = None;
        let mut todos = Vec::with_capacity(rows.len());
        for row in &rows {
            match decode(row) {
                Ok((pid, todo)) => {
                    backend_pid = Some(pid);
                    todos.push(todo);
                }
                Err(e) => {
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "db_error",
                        &e.to_string(),
                    )
                }
            }
        }
        // 50 rows are about 3 KB: one allocation, as the service does.
        let mut body = Vec::with_capacity(64 * todos.len() + 16);
        if let Err(e) = serde_json::to_writer(&mut body, &Body { data: &todos }) {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &e.to_string(),
            );
        }
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(pid) = backend_pid {
            headers.insert("X-Backend-Pid", HeaderValue::from(pid));
        }
        resp
    }
}

/// One row: the backend's pid and the todo (the start time is decoded and
/// dropped — the service turns it into `Server-Timing`).
fn decode(row: &PgRow) -> Result<(i32, Todo), sqlx::Error> {
    let pid: i32 = row.try_get(0)?;
    let _started_us: i64 = row.try_get(5)?;
    let todo = Todo {
        id: row.try_get(1)?,
        title: row.try_get(2)?,
        done: row.try_get(3)?,
        priority: row.try_get(4)?,
    };
    Ok((pid, todo))
}

fn error(status: StatusCode, kind: &str, message: &str) -> Answer {
    let body = serde_json::json!({ "error": kind, "message": message }).to_string();
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
