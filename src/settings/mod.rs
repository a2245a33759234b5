//! Settings: built-in defaults → optional `.env` → process environment, read
//! through the `config` crate and validated once into values that cannot be
//! wrong later (durations, a non-zero pool maximum, a parsed listen address).
//!
//! Names follow SQLAlchemy's pool vocabulary (`pool_size`, `max_overflow`,
//! `pool_timeout`) because that is what operators of the original demo know;
//! [`crate::db::pool`] maps them onto sqlx/SeaORM names in one place.
//!
//! Every problem is reported, one line per variable, naming the value and what
//! is allowed — except `DATABASE_URL`, whose value is never echoed because it
//! may hold a password.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::secret::DatabaseUrl;

mod validate;

pub use validate::parse_seconds;
use validate::validate;

/// Every variable the service reads, with its built-in default (`None`: unset
/// by default). `DB_STATEMENT_TIMEOUT` defaults to `SLEEP_MAX + 5`, derived below.
pub const DEFAULTS: &[(&str, Option<&str>)] = &[
    (
        "DATABASE_URL",
        Some("postgres://poolscope:poolscope@localhost:5432/poolscope"),
    ),
    // A file holding the password (e.g. a compose secret); replaces the
    // password in DATABASE_URL, so the URL in the environment holds none.
    ("DATABASE_PASSWORD_FILE", None),
    // Where the monitor connection goes when DATABASE_URL points at a pooler
    // (PgBouncer): straight to PostgreSQL. Unset: DATABASE_URL.
    ("MONITOR_DATABASE_URL", None),
    // PgBouncer's admin console (database `pgbouncer`), read for SHOW POOLS.
    ("PGBOUNCER_ADMIN_URL", None),
    // This replica's name in `application_name` and `X-Replica`. Unset: the host name.
    ("REPLICA_NAME", None),
    ("DB_POOL_SIZE", Some("10")),
    ("DB_MAX_OVERFLOW", Some("10")),
    ("DB_POOL_TIMEOUT", Some("30")),
    ("DB_OVERFLOW_IDLE_TIMEOUT", Some("0")),
    ("DB_POOL_RECYCLE", Some("1800")),
    ("DB_CONNECT_TIMEOUT", Some("5")),
    ("DB_STATEMENT_TIMEOUT", None),
    ("SLEEP_SECONDS", Some("5")),
    ("SLEEP_MAX", Some("60")),
    // `?work=cpu`: rows counted by `count(*)` over `generate_series` (CPU only).
    ("CPU_ROWS", Some("100000")),
    // `?work=hot`: how many rows the requests' updates share.
    ("HOT_ROWS", Some("5")),
    // The database's cores, for the sweep's `cores × 2` (unset: unknown).
    ("DB_CORES", None),
    // Lets `POST /pool/limit` lower the pool's limit for a while (the sweep).
    ("POOL_LIMIT_CONTROL", Some("false")),
    ("APP_HOST", Some("0.0.0.0")),
    ("APP_PORT", Some("8080")),
    ("MAX_IN_FLIGHT", Some("10000")),
    ("SHUTDOWN_GRACE", Some("20")),
    ("RUST_LOG", Some("info")),
    ("LOG_FORMAT", Some("pretty")),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", None),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", Some("grpc")),
    ("OTEL_SERVICE_NAME", Some("poolscope")),
];

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub demo: DemoSettings,
    pub server: ServerSettings,
    pub sweep: SweepSettings,
    pub telemetry: TelemetrySettings,
}

/// What `poolscope sweep` may do to the service, and what it is told.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    /// `DB_CORES`: the database server's cores, when known.
    pub db_cores: Option<u32>,
    /// `POOL_LIMIT_CONTROL`: whether `POST /pool/limit` may lower the pool's
    /// limit at run time (off by default: an open port must not be able to
    /// throttle the service).
    pub limit_control: bool,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
    /// Straight to PostgreSQL, even when `url` goes through a pooler.
    pub monitor_url: DatabaseUrl,
    /// PgBouncer's admin console, when there is a pooler.
    pub pooler_admin_url: Option<DatabaseUrl>,
    /// Which replica this is (`REPLICA_NAME`, else the host name).
    pub replica: String,
    pub pool_size: u32,
    pub max_overflow: u32,
    pub pool_timeout: Duration,
    pub overflow_idle_timeout: Duration,
    pub pool_recycle: Duration,
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
}

impl DatabaseSettings {
    /// The pool's hard ceiling: SQLAlchemy's `pool_size + max_overflow`.
    pub fn pool_max(&self) -> u32 {
        self.pool_size + self.max_overflow
    }
}

#[derive(Debug, Clone)]
pub struct DemoSettings {
    pub sleep_seconds: f64,
    pub sleep_max: f64,
    /// `?work=cpu`: `count(*)` over this many generated rows.
    pub cpu_rows: u32,
    /// `?work=hot`: one of this many rows is updated per request.
    pub hot_rows: u32,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub host: IpAddr,
    pub port: u16,
    pub max_in_flight: usize,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub log_filter: String,
    pub log_format: LogFormat,
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: OtlpProtocol,
    pub service_name: String,
}

/// `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` (port 4317) or `http/protobuf` (4318).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// One bad variable: its name, what it holds (unless secret) and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub variable: &'static str,
    pub message: String,
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.variable, self.message)
    }
}

/// All problems found in one pass, so the operator fixes them in one go.
#[derive(Debug, Clone)]
pub struct SettingsErrors(pub Vec<SettingError>);

impl fmt::Display for SettingsErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SettingsErrors {}

impl Settings {
    /// Defaults, then `./.env` when present, then the process environment.
    pub fn load() -> Result<Settings, SettingsErrors> {
        let dotenv = read_dotenv(Path::new(".env"))?;
        let process: HashMap<String, String> = std::env::vars().collect();
        Self::from_layers(&dotenv, &process)
    }

    /// Builds settings from explicit variables only (defaults underneath);
    /// tests use this to avoid depending on the process environment.
    pub fn from_vars<'a>(
        vars: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Settings, SettingsErrors> {
        let map = vars
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self::from_layers(&HashMap::new(), &map)
    }

    fn from_layers(
        dotenv: &HashMap<String, String>,
        process: &HashMap<String, String>,
    ) -> Result<Settings, SettingsErrors> {
        let raw = merge_layers(dotenv, process).map_err(|e| {
            SettingsErrors(vec![SettingError {
                variable: "settings",
                message: e.to_string(),
            }])
        })?;
        validate(&raw)
    }
}

/// Reads a `.env` file into a map; a missing file is not an error.
fn read_dotenv(path: &Path) -> Result<HashMap<String, String>, SettingsErrors> {
    if !path.exists() {
        return Ok(HashMap::new());
    }
    let iter = dotenvy::from_path_iter(path).map_err(|e| dotenv_error(path, e))?;
    iter.map(|item| item.map_err(|e| dotenv_error(path, e)))
        .collect()
}

fn dotenv_error(path: &Path, e: dotenvy::Error) -> SettingsErrors {
    // dotenvy's parse errors quote the offending line, which may be a password.
    let what = match e {
        dotenvy::Error::LineParse(_, index) => format!("cannot parse line at offset {index}"),
        dotenvy::Error::Io(io) => io.to_string(),
        _ => "cannot be read".to_owned(),
    };
    SettingsErrors(vec![SettingError {
        variable: "settings",
        message: format!("{}: {what}", path.display()),
    }])
}

/// The `config` crate does the layering: defaults, then `.env`, then the
/// environment. Only known names are taken, and an empty value counts as unset
/// (compose passes `${VAR:-}` through as an empty string).
fn merge_layers(
    dotenv: &HashMap<String, String>,
    process: &HashMap<String, String>,
) -> Result<HashMap<&'static str, String>, config::ConfigError> {
    let known = |layer: &HashMap<String, String>| -> config::Map<String, String> {
        DEFAULTS
            .iter()
            .filter_map(|(name, _)| {
                let value = layer.get(*name)?;
                (!value.trim().is_empty()).then(|| (name.to_lowercase(), value.clone()))
            })
            .collect()
    };
    let mut builder = config::Config::builder();
    for (name, default) in DEFAULTS {
        if let Some(default) = default {
            builder = builder.set_default(name.to_lowercase(), *default)?;
        }
    }
    let cfg = builder
        .add_source(config::Environment::default().source(Some(known(dotenv))))
        .add_source(config::Environment::default().source(Some(known(process))))
        .build()?;
    Ok(DEFAULTS
        .iter()
        .filter_map(|(name, _)| {
            cfg.get_string(&name.to_lowercase())
                .ok()
                .map(|v| (*name, v.trim().to_owned()))
        })
        .collect())
}

#[cfg(test)]
mod same_defaults_everywhere {
    //! Every default lives in [`super::DEFAULTS`] once; `.env.example`,
    //! `docker-compose.yml` (and its overlays) and the README's settings table
    //! must say the same, or a user reading one of them is told something
    //! the service does not do.

    use super::DEFAULTS;

    fn read(file: &str) -> String {
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
    }

    #[test]
    fn env_example_compose_and_readme_agree_with_the_code() {
        let env = read(".env.example");
        let compose = [
            "docker-compose.yml",
            "compose.replicas.yml",
            "compose.pgbouncer.yml",
        ]
        .map(read)
        .join("\n");
        let readme = read("README.md");
        let mut wrong = Vec::new();
        let mut checked = 0;
        for (name, default) in DEFAULTS {
            let Some(default) = default else { continue };
            // `.env.example`: `NAME=value` or `#NAME=value` (prose mentions
            // after `# ` are examples, not settings).
            for line in env.lines() {
                let line = line.strip_prefix('#').unwrap_or(line);
                if let Some(value) = line.strip_prefix(&format!("{name}=")) {
                    checked += 1;
                    if value != *default {
                        wrong.push(format!(
                            ".env.example: {name}={value}, the code says {default}"
                        ));
                    }
                }
            }
            // Compose: every `${NAME:-value}`.
            for (i, _) in compose.match_indices(&format!("${{{name}:-")) {
                let rest = &compose[i + name.len() + 4..];
                let value = &rest[..rest.find('}').unwrap_or(0)];
                checked += 1;
                if value != *default {
                    wrong.push(format!(
                        "compose: ${{{name}:-{value}}}, the code says {default}"
                    ));
                }
            }
            // README: the settings table row `| `NAME` | value |`.
            let row = format!("| `{name}` | ");
            if let Some(i) = readme.find(&row) {
                let rest = &readme[i + row.len()..];
                let cell = rest[..rest.find(" |").unwrap_or(0)].trim_matches('`');
                checked += 1;
                if cell != *default {
                    wrong.push(format!(
                        "README: `{name}` = {cell}, the code says {default}"
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "defaults disagree:\n{}", wrong.join("\n"));
        assert!(
            checked >= 40,
            "only {checked} places checked: did a file move?"
        );
    }
}
