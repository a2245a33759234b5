//! The database URL carries a password, so it lives in a wrapper whose
//! `Debug` and `Display` print it redacted. The full value leaves this type
//! only as sqlx connect options, never as text.
//!
//! Beware the neighbours: SeaORM's "connection string cannot be parsed" error
//! prints the whole URL, and sqlx's `PgConnectOptions` `Debug` prints the
//! password. We therefore parse and validate here, and only ever hand sqlx a
//! URL that is known to parse.

use std::fmt;

use sqlx::postgres::PgConnectOptions;

#[derive(Clone)]
pub struct DatabaseUrl {
    full: String,
    redacted: String,
}

impl DatabaseUrl {
    /// Validates a `postgres://` URL. The error never contains the value.
    pub fn parse(raw: &str) -> Result<DatabaseUrl, String> {
        const SHAPE: &str = "expected postgres://user:password@host:port/database";
        let parsed = url::Url::parse(raw).map_err(|e| {
            format!("{SHAPE} ({e}; the value is not shown because it may hold a password)")
        })?;
        if !matches!(parsed.scheme(), "postgres" | "postgresql") {
            return Err(format!("{SHAPE}, got scheme \"{}\"", parsed.scheme()));
        }
        if !parsed.has_host() || parsed.host_str() == Some("") {
            return Err(format!("{SHAPE}, got no host"));
        }
        if raw.parse::<PgConnectOptions>().is_err() {
            return Err(format!(
                "{SHAPE} (sqlx cannot parse it; special characters in the password must be percent-encoded, e.g. @ as %40)"
            ));
        }
        let mut redacted = parsed.clone();
        if parsed.password().is_some() {
            // `url` would percent-encode brackets, so mark with a plain word first.
            let _ = redacted.set_password(Some("REDACTED"));
        }
        // SeaORM only accepts the `postgres://` spelling.
        let full = match parsed.scheme() {
            "postgresql" => format!("postgres{}", &raw["postgresql".len()..]),
            _ => raw.to_owned(),
        };
        Ok(DatabaseUrl {
            full,
            redacted: redacted
                .to_string()
                .replacen(":REDACTED@", ":[REDACTED]@", 1),
        })
    }

    /// The same URL with another password (read from a file, say), which
    /// is percent-encoded here so any character works.
    pub fn with_password(&self, password: &str) -> Result<DatabaseUrl, String> {
        let mut url = url::Url::parse(&self.full).map_err(|e| e.to_string())?;
        url.set_password(Some(password))
            .map_err(|()| "the URL cannot carry a password".to_owned())?;
        if url.username().is_empty() {
            return Err("DATABASE_URL names no user for the password".into());
        }
        DatabaseUrl::parse(url.as_str())
    }

    /// sqlx options for this URL (already known to parse).
    pub fn connect_options(&self) -> PgConnectOptions {
        self.full
            .parse()
            .expect("DatabaseUrl::parse checked that sqlx accepts this URL")
    }

    /// The URL itself, for SeaORM's `ConnectOptions::new` only.
    pub fn expose(&self) -> &str {
        &self.full
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted)
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}
