//! The one place where failures become HTTP answers: each kind maps to a
//! status, a JSON body `{"error": KIND, "message": …, …}` and headers.
//! Expected conditions are never a 500.

use std::time::Duration;

use crate::contract::ErrorBody;
pub use crate::contract::ErrorKind;
use crate::db::errors::DbError;
use crate::db::pool::{AcquireError, LiveCounts};
use poem::http::{header, HeaderValue, StatusCode};
use poem::{error::ResponseError, Response};

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
    /// A control the settings keep off.
    #[error("{0}")]
    Forbidden(String),
    /// The client hung up; nobody reads this answer, but the log does.
    #[error("the client closed the connection before the answer")]
    ClientClosed,
    /// Anything else the web framework reports: still a JSON answer.
    #[error("{0}")]
    Internal(String),
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
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::BadRequest(_) => ErrorKind::BadRequest,
            ApiError::PoolTimeout { .. } => ErrorKind::PoolTimeout,
            ApiError::Db(DbError::Refused) => ErrorKind::DbRefused,
            ApiError::Db(DbError::PoolerRefused) => ErrorKind::PoolerRefused,
            ApiError::Db(DbError::PoolerTimeout) => ErrorKind::PoolerTimeout,
            ApiError::Db(DbError::Unavailable(_)) => ErrorKind::DbUnavailable,
            ApiError::Db(DbError::StatementTimeout) => ErrorKind::StatementTimeout,
            ApiError::Db(DbError::Other(_)) => ErrorKind::Internal,
            ApiError::Overloaded { .. } => ErrorKind::Overloaded,
            ApiError::NotFound(_) => ErrorKind::NotFound,
            ApiError::MethodNotAllowed => ErrorKind::MethodNotAllowed,
            ApiError::Forbidden(_) => ErrorKind::Forbidden,
            ApiError::ClientClosed => ErrorKind::ClientClosed,
            ApiError::Internal(_) => ErrorKind::Internal,
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

    fn body(&self) -> ErrorBody {
        let mut body = ErrorBody {
            error: self.kind(),
            message: self.to_string(),
            waited_ms: None,
            pool: None,
            hint: None,
        };
        match self {
            ApiError::PoolTimeout { waited, live, .. } => {
                body.waited_ms = Some(waited.as_millis() as u64);
                body.pool = Some(*live);
            }
            ApiError::Db(DbError::Refused) => {
                body.hint = Some(
                    "DB_POOL_SIZE + DB_MAX_OVERFLOW exceeds the connections PostgreSQL grants; \
                     raise max_connections (POSTGRES_MAX_CONNECTIONS) or shrink the pool"
                        .into(),
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
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            // nginx's "client closed request"; never seen by the client.
            ApiError::ClientClosed => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            ApiError::Db(DbError::StatementTimeout) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Db(DbError::Other(_)) | ApiError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            ApiError::PoolTimeout { .. } | ApiError::Db(_) | ApiError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn as_response(&self) -> Response {
        let mut resp = Response::builder()
            .status(self.status())
            .content_type("application/json")
            .body(serde_json::to_string(&self.body()).unwrap_or_default());
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp.extensions_mut().insert(self.kind());
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(e: ApiError) -> (u16, Option<String>, ErrorBody) {
        let resp = e.as_response();
        let retry = resp
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let status = resp.status().as_u16();
        let body = serde_json::from_str(
            &futures_util::FutureExt::now_or_never(resp.into_body().into_string())
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        (status, retry, body)
    }

    #[test]
    fn each_failure_has_its_status_kind_and_retry_advice() {
        let live = LiveCounts {
            open: 20,
            idle: 0,
            in_use: 20,
            waiting: 80,
        };
        let cases = [
            (
                ApiError::BadRequest("x".into()),
                400,
                None,
                ErrorKind::BadRequest,
            ),
            (
                ApiError::PoolTimeout {
                    waited: Duration::from_secs(30),
                    pool_timeout: Duration::from_secs(30),
                    live,
                },
                503,
                Some("1"),
                ErrorKind::PoolTimeout,
            ),
            (
                ApiError::Db(DbError::Refused),
                503,
                Some("1"),
                ErrorKind::DbRefused,
            ),
            (
                ApiError::Db(DbError::PoolerRefused),
                503,
                Some("1"),
                ErrorKind::PoolerRefused,
            ),
            (
                ApiError::Db(DbError::PoolerTimeout),
                503,
                Some("1"),
                ErrorKind::PoolerTimeout,
            ),
            (
                ApiError::Db(DbError::Unavailable("down".into())),
                503,
                Some("1"),
                ErrorKind::DbUnavailable,
            ),
            (
                ApiError::Db(DbError::StatementTimeout),
                504,
                None,
                ErrorKind::StatementTimeout,
            ),
            (
                ApiError::Db(DbError::Other("?".into())),
                500,
                None,
                ErrorKind::Internal,
            ),
            (
                ApiError::Overloaded { limit: 5 },
                503,
                Some("1"),
                ErrorKind::Overloaded,
            ),
            (
                ApiError::NotFound("/x".into()),
                404,
                None,
                ErrorKind::NotFound,
            ),
            (
                ApiError::MethodNotAllowed,
                405,
                None,
                ErrorKind::MethodNotAllowed,
            ),
            (
                ApiError::Forbidden("off".into()),
                403,
                None,
                ErrorKind::Forbidden,
            ),
        ];
        for (error, status, retry, kind) in cases {
            let what = format!("{error:?}");
            let (s, r, body) = answer(error);
            assert_eq!(
                (s, r.as_deref(), body.error),
                (status, retry, kind),
                "{what}"
            );
            assert!(!body.message.is_empty());
        }
    }

    #[test]
    fn a_timeout_shows_the_pool_and_a_refusal_says_what_to_change() {
        let live = LiveCounts {
            open: 20,
            idle: 0,
            in_use: 20,
            waiting: 80,
        };
        let (_, _, body) = answer(ApiError::PoolTimeout {
            waited: Duration::from_millis(30_010),
            pool_timeout: Duration::from_secs(30),
            live,
        });
        assert_eq!((body.waited_ms, body.pool), (Some(30_010), Some(live)));
        assert!(
            body.message.contains("DB_POOL_TIMEOUT (30s)"),
            "{}",
            body.message
        );
        let (_, _, body) = answer(ApiError::Db(DbError::Refused));
        assert!(body.hint.unwrap().contains("max_connections"));
    }
}
