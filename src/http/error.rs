//! The one place where failures become HTTP answers: each kind maps to a
//! status, a JSON body `{"error": KIND, "message": …, …}` and headers.
//! Expected conditions are never a 500.

use std::time::Duration;

use poem::http::{header, HeaderValue, StatusCode};
use poem::{error::ResponseError, Response};
use serde_json::{json, Value};

use crate::db::errors::DbError;
use crate::db::pool::{AcquireError, LiveCounts};

/// The kind of an error answer, left in the response's extensions for the
/// live page's record of the run.
#[derive(Debug, Clone, Copy)]
pub struct ErrorKind(pub &'static str);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no database connection within DB_POOL_TIMEOUT ({}s): the pool is busy", pool_timeout.as_secs_f64())]
    PoolTimeout {
        waited: Duration,
        pool_timeout: Duration,
        live: LiveCounts,
    },
    #[error("{0}")]
    Db(DbError),
    #[error("more than MAX_IN_FLIGHT ({limit}) requests in flight; try again shortly")]
    Overloaded { limit: usize },
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method not allowed; this route answers GET")]
    MethodNotAllowed,
    /// The client hung up; nobody reads this answer, but the log does.
    #[error("the client closed the connection before the answer")]
    ClientClosed,
}

impl ApiError {
    pub fn from_acquire(err: AcquireError, pool_timeout: Duration) -> ApiError {
        match err {
            AcquireError::Timeout { waited, live } => ApiError::PoolTimeout {
                waited,
                pool_timeout,
                live,
            },
            AcquireError::Db(e) => ApiError::Db(e),
        }
    }

    /// The machine-readable kind, also used by the client's summary.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::PoolTimeout { .. } => "pool_timeout",
            ApiError::Db(DbError::Refused) => "db_refused",
            ApiError::Db(DbError::PoolerRefused) => "pooler_refused",
            ApiError::Db(DbError::PoolerTimeout) => "pooler_timeout",
            ApiError::Db(DbError::Unavailable(_)) => "db_unavailable",
            ApiError::Db(DbError::StatementTimeout) => "statement_timeout",
            ApiError::Db(DbError::Other(_)) => "internal",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::ClientClosed => "client_closed",
        }
    }

    /// Seconds a client should wait before retrying, where that is known.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::PoolTimeout { .. } | ApiError::Overloaded { .. } => Some(1),
            ApiError::Db(
                DbError::Refused
                | DbError::Unavailable(_)
                | DbError::PoolerRefused
                | DbError::PoolerTimeout,
            ) => Some(1),
            _ => None,
        }
    }

    fn body(&self) -> Value {
        let mut body = json!({ "error": self.kind(), "message": self.to_string() });
        match self {
            ApiError::PoolTimeout { waited, live, .. } => {
                body["waited_ms"] = json!(waited.as_millis() as u64);
                body["pool"] = json!(live);
            }
            ApiError::Db(DbError::Refused) => {
                body["hint"] = json!(
                    "DB_POOL_SIZE + DB_MAX_OVERFLOW exceeds the connections PostgreSQL grants; \
                     raise max_connections (POSTGRES_MAX_CONNECTIONS) or shrink the pool"
                );
            }
            _ => {}
        }
        body
    }
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            // nginx's "client closed request"; never seen by the client.
            ApiError::ClientClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ApiError::Db(DbError::StatementTimeout) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Db(DbError::Other(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::PoolTimeout { .. } | ApiError::Db(_) | ApiError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn as_response(&self) -> Response {
        let mut resp = Response::builder()
            .status(self.status())
            .content_type("application/json")
            .body(self.body().to_string());
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp.extensions_mut().insert(ErrorKind(self.kind()));
        resp
    }
}
