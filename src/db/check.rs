//! Before serving or migrating: can PostgreSQL be reached, does it take the
//! login, and is it new enough? Answered within `DB_CONNECT_TIMEOUT` with
//! where and what (host:port, database, user, PostgreSQL's own words), so a
//! typo in `.env` is one clear line instead of a pool timeout 30 s later.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use super::login::off_the_workers;
use super::{application_name, MIGRATE_APP};
use crate::settings::DatabaseSettings;

/// `client_connection_check_interval` (how abandoned requests end their
/// backends) exists from PostgreSQL 14 on.
pub const MIN_SERVER_VERSION: u32 = 140_000;

/// While the server is starting (connection refused, "the database system
/// is starting up"), try again this often until `DB_CONNECT_TIMEOUT`.
const RETRY_EVERY: Duration = Duration::from_millis(200);

/// Connects once, checks the version, disconnects. `Ok` carries
/// `server_version_num`; `Err` one line that never holds the password.
pub async fn database_is_usable(settings: &DatabaseSettings) -> Result<u32, String> {
    let options = settings
        .url
        .connect_options()
        .application_name(&application_name(MIGRATE_APP, &settings.replica))
        .disable_statement_logging();
    let place = describe(&options);
    let deadline = Instant::now() + settings.connect_timeout;
    let conn = loop {
        let attempt = off_the_workers({
            let options = options.clone();
            async move { PgConnection::connect_with(&options).await }
        });
        let result = tokio::time::timeout_at(deadline.into(), attempt).await;
        match result {
            Ok(Some(Ok(conn))) => break conn,
            Ok(Some(Err(e))) if is_starting(&e) && Instant::now() + RETRY_EVERY < deadline => {
                tokio::time::sleep(RETRY_EVERY).await;
            }
            Ok(Some(Err(e))) => return Err(format!("{place}: {}", cause(&e))),
            Ok(None) => return Err(format!("{place}: the connection attempt failed")),
            Err(_) => {
                return Err(format!(
                    "{place}: no answer within DB_CONNECT_TIMEOUT ({}s)",
                    settings.connect_timeout.as_secs_f64()
                ))
            }
        }
    };
    let version = conn.server_version_num().unwrap_or(0);
    let _ = conn.close().await;
    if version < MIN_SERVER_VERSION {
        return Err(format!(
            "{place}: PostgreSQL {} is too old; poolscope needs 14 or newer \
             (client_connection_check_interval ends abandoned requests' backends)",
            version_text(version)
        ));
    }
    Ok(version)
}

/// `PostgreSQL at db:5432 (database "poolscope", user "poolscope")`.
fn describe(options: &PgConnectOptions) -> String {
    format!(
        "PostgreSQL at {}:{} (database \"{}\", user \"{}\")",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or(options.get_username()),
        options.get_username()
    )
}

/// Not up yet: nothing listens, or the server is still starting.
fn is_starting(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(io) => io.kind() == std::io::ErrorKind::ConnectionRefused,
        sqlx::Error::Database(db) => db.code().as_deref() == Some("57P03"),
        _ => false,
    }
}

/// PostgreSQL's own words where it gave some; plain words for the network.
fn cause(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is PostgreSQL running and listening there?)".into()
        }
        sqlx::Error::Io(io) => io.to_string(),
        sqlx::Error::Database(db) => format!(
            "{} (SQLSTATE {})",
            db.message(),
            db.code().as_deref().unwrap_or("?")
        ),
        // Never format `Configuration` errors: they can quote the URL.
        sqlx::Error::Configuration(_) => "invalid connection settings".into(),
        other => other.to_string(),
    }
}

/// 130004 → "13.4", 90624 → "9.6.24".
fn version_text(num: u32) -> String {
    if num >= 100_000 {
        format!("{}.{}", num / 10_000, num % 10_000)
    } else {
        format!("{}.{}.{}", num / 10_000, num / 100 % 100, num % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_as_people_write_them() {
        assert_eq!(version_text(130_004), "13.4");
        assert_eq!(version_text(170_002), "17.2");
        assert_eq!(version_text(90_624), "9.6.24");
    }
}
