//! Driver errors sorted into what the user can act on. The sorting is by
//! SQLSTATE where PostgreSQL gives one, so messages stay right across versions.

/// Why the database could not do what the route asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DbError {
    /// PostgreSQL said "too many clients" (SQLSTATE 53300).
    #[error(
        "PostgreSQL refused a new connection: too many clients already (max_connections reached)"
    )]
    Refused,
    /// PgBouncer refused the connection: "no more connections allowed
    /// (max_client_conn)".
    #[error("PgBouncer refused a new connection: no more connections allowed (PGBOUNCER_MAX_CLIENT_CONN reached)")]
    PoolerRefused,
    /// PgBouncer gave up waiting for a server connection ("query_wait_timeout").
    #[error("PgBouncer found no server connection within query_wait_timeout (PGBOUNCER_QUERY_WAIT_TIMEOUT)")]
    PoolerTimeout,
    /// No connection could be made or it broke (server down, restarting, network).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The statement ran past the server's `statement_timeout` (SQLSTATE 57014).
    #[error("the statement ran past DB_STATEMENT_TIMEOUT (PostgreSQL's statement_timeout)")]
    StatementTimeout,
    /// Anything else: a bug or an unexpected server state.
    #[error("unexpected database error: {0}")]
    Other(String),
}

const TOO_MANY_CONNECTIONS: &str = "53300";
const QUERY_CANCELED: &str = "57014";
const PROTOCOL_VIOLATION: &str = "08P01";

impl DbError {
    /// Sorts a sqlx error.
    pub fn from_sqlx(err: &sqlx::Error) -> DbError {
        match err {
            sqlx::Error::Database(db) => {
                let code = db.code();
                let code = code.as_deref().unwrap_or("");
                match code {
                    TOO_MANY_CONNECTIONS => DbError::Refused,
                    // PgBouncer's own errors all carry 08P01; its words tell them apart.
                    PROTOCOL_VIOLATION if db.message().contains("max_client_conn") => {
                        DbError::PoolerRefused
                    }
                    PROTOCOL_VIOLATION if db.message().contains("query_wait_timeout") => {
                        DbError::PoolerTimeout
                    }
                    // The service cancels nothing itself, so a cancelled
                    // statement is the statement_timeout, in any server language.
                    QUERY_CANCELED => DbError::StatementTimeout,
                    // 08: connection exception, 57P0x: admin shutdown / crash /
                    // cannot connect now, 3D000/28xxx: wrong database or login.
                    c if c.starts_with("08")
                        || c.starts_with("57P")
                        || c.starts_with("28")
                        || c == "3D000" =>
                    {
                        DbError::Unavailable(format!("{} (SQLSTATE {c})", db.message()))
                    }
                    c => DbError::Other(format!("{} (SQLSTATE {c})", db.message())),
                }
            }
            sqlx::Error::Io(e) => DbError::Unavailable(e.to_string()),
            sqlx::Error::Tls(e) => DbError::Unavailable(format!("TLS: {e}")),
            sqlx::Error::Protocol(e) => DbError::Unavailable(format!("protocol: {e}")),
            sqlx::Error::PoolClosed => {
                DbError::Unavailable("the pool is closed (shutting down)".into())
            }
            sqlx::Error::WorkerCrashed => DbError::Unavailable("connection worker crashed".into()),
            // Never format `Configuration` errors: they can quote the URL.
            sqlx::Error::Configuration(_) => {
                DbError::Other("invalid connection configuration".into())
            }
            other => DbError::Other(other.to_string()),
        }
    }
}

/// A SeaORM error as text that is safe to log: connection errors are sorted
/// like sqlx's, because SeaORM's own message for a bad URL quotes it whole.
pub fn describe_db_err(err: &sea_orm::DbErr) -> String {
    use sea_orm::{DbErr, RuntimeErr};
    match err {
        DbErr::Conn(RuntimeErr::SqlxError(e))
        | DbErr::Exec(RuntimeErr::SqlxError(e))
        | DbErr::Query(RuntimeErr::SqlxError(e)) => DbError::from_sqlx(e).to_string(),
        DbErr::Conn(_) => "cannot connect to the database".into(),
        other => other.to_string(),
    }
}
