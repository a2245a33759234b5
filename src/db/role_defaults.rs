//! The session settings a pooler does not pass on, kept as the role's
//! defaults instead.
//!
//! The pool asks for `statement_timeout` (`DB_STATEMENT_TIMEOUT`) and
//! `client_connection_check_interval` (how PostgreSQL ends the backend of an
//! abandoned request within a second) as startup options of each connection.
//! Straight to PostgreSQL they apply. PgBouncer before 1.26 accepts them
//! (`track_extra_parameters`) but never sets them on its server connections,
//! because PostgreSQL does not report them back; so through PgBouncer 1.24
//! the server's defaults would rule: no statement timeout, and an abandoned
//! `pg_sleep` sleeping to its end.
//!
//! A server connection starts with its role's defaults, and PgBouncer's
//! `DISCARD ALL` between session-mode clients returns to them. So when the
//! pool goes through a pooler, the service makes the two settings the
//! defaults of its own role in its own database (`ALTER ROLE CURRENT_USER IN
//! DATABASE … SET …`, which PostgreSQL lets any role do for itself) at every
//! start, so they follow `.env`. `docker/db-init` sets the same default
//! values when the volume is first initialised, so that server connections
//! PgBouncer opens before the service's first start have them too.
//!
//! What remains: a server connection keeps the defaults it started with, so
//! after a change the ones PgBouncer opened before keep the old values until
//! PgBouncer replaces them; the service says so when it changes a value.

use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{ConnectOptions, Connection};

use super::errors::DbError;
use super::{application_name, MIGRATE_APP};
use crate::settings::DatabaseSettings;

/// `client_connection_check_interval` in ms: the pool's startup option
/// (`db::pool`) has the same value, and `docker/db-init` writes it too.
pub const CLIENT_CHECK_INTERVAL_MS: u64 = 1000;

/// The settings, spelled as `pg_db_role_setting` keeps them when they are
/// set as plain numbers (milliseconds): `statement_timeout=65000`.
pub fn wanted(settings: &DatabaseSettings) -> [(&'static str, u64); 2] {
    [
        (
            "statement_timeout",
            settings.statement_timeout.as_millis() as u64,
        ),
        ("client_connection_check_interval", CLIENT_CHECK_INTERVAL_MS),
    ]
}

/// What [`agree`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agreement {
    pub role: String,
    pub database: String,
    /// `name=value` as they were, for each setting that was changed.
    pub changed_from: Vec<String>,
}

/// Role and database names go into SQL as identifiers.
fn quoted(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// Which of `wanted` differ from the role's defaults `current` (`name=value`
/// entries); `Some("name=old")`, or `Some("name unset")`.
fn differences(current: &[String], wanted: &[(&str, u64)]) -> Vec<(String, String)> {
    wanted
        .iter()
        .filter_map(|(name, value)| {
            let want = format!("{name}={value}");
            let had = current
                .iter()
                .find(|entry| entry.split('=').next() == Some(name));
            match had {
                Some(entry) if *entry == want => None,
                Some(entry) => Some((want, entry.clone())),
                None => Some((want, format!("{name} unset"))),
            }
        })
        .collect()
}

/// Makes the role's defaults in its database agree with `settings`, over a
/// short-lived connection straight to PostgreSQL (`MONITOR_DATABASE_URL`).
pub async fn agree(settings: &DatabaseSettings) -> Result<Agreement, DbError> {
    let options = settings
        .monitor_url
        .connect_options()
        .application_name(&application_name(MIGRATE_APP, &settings.replica))
        .disable_statement_logging();
    let mut conn = match tokio::time::timeout(settings.connect_timeout, options.connect()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => return Err(DbError::from_sqlx(&e)),
        Err(_) => {
            return Err(DbError::Unavailable(format!(
                "no connection within DB_CONNECT_TIMEOUT ({}s)",
                settings.connect_timeout.as_secs_f64()
            )))
        }
    };
    let result = tokio::time::timeout(Duration::from_secs(5), set(&mut conn, &wanted(settings)))
        .await
        .unwrap_or_else(|_| Err(DbError::Unavailable("no answer within 5s".into())));
    let _ = conn.close().await;
    result
}

async fn set(conn: &mut PgConnection, wanted: &[(&str, u64)]) -> Result<Agreement, DbError> {
    let sqlx_err = |e: sqlx::Error| DbError::from_sqlx(&e);
    let (role, database, current) = sqlx::query_as::<_, (String, String, Vec<String>)>(
        "SELECT current_user::text, current_database()::text, \
                COALESCE((SELECT s.setconfig FROM pg_db_role_setting s \
                          JOIN pg_roles r ON r.oid = s.setrole \
                          JOIN pg_database d ON d.oid = s.setdatabase \
                          WHERE r.rolname = current_user AND d.datname = current_database()), \
                         '{}')",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(sqlx_err)?;
    let changes = differences(&current, wanted);
    for (want, _) in &changes {
        let (name, value) = want.split_once('=').expect("written as name=value");
        // Names are ours and values numbers: nothing from outside goes in.
        let sql = format!(
            "ALTER ROLE CURRENT_USER IN DATABASE {} SET {name} = {value}",
            quoted(&database)
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await
            .map_err(sqlx_err)?;
    }
    Ok(Agreement {
        role,
        database,
        changed_from: changes.into_iter().map(|(_, had)| had).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_differs_is_set_again() {
        let wanted = [
            ("statement_timeout", 65_000),
            ("client_connection_check_interval", 1000),
        ];
        let had = |entries: &[&str]| entries.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        assert!(differences(
            &had(&[
                "client_connection_check_interval=1000",
                "statement_timeout=65000"
            ]),
            &wanted
        )
        .is_empty());
        assert_eq!(
            differences(&had(&["statement_timeout=30000", "work_mem=8MB"]), &wanted),
            vec![
                (
                    "statement_timeout=65000".to_owned(),
                    "statement_timeout=30000".to_owned()
                ),
                (
                    "client_connection_check_interval=1000".to_owned(),
                    "client_connection_check_interval unset".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quoted("poolscope"), "\"poolscope\"");
        assert_eq!(quoted("we\"ird"), "\"we\"\"ird\"");
    }
}
