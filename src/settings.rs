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
    ("DB_POOL_SIZE", Some("10")),
    ("DB_MAX_OVERFLOW", Some("10")),
    ("DB_POOL_TIMEOUT", Some("30")),
    ("DB_OVERFLOW_IDLE_TIMEOUT", Some("10")),
    ("DB_POOL_RECYCLE", Some("1800")),
    ("DB_CONNECT_TIMEOUT", Some("5")),
    ("DB_STATEMENT_TIMEOUT", None),
    ("SLEEP_SECONDS", Some("5")),
    ("SLEEP_MAX", Some("60")),
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

/// Largest pool size or overflow accepted: far above any sane `max_connections`.
const MAX_POOL_PART: u64 = 10_000;
/// Shortest timeout accepted: below this, ordinary scheduling noise looks like a failure.
const MIN_TIMEOUT: f64 = 0.25;
/// Longest duration accepted for any setting (one day).
const MAX_SECONDS: f64 = 86_400.0;

#[derive(Debug, Clone)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub demo: DemoSettings,
    pub server: ServerSettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: DatabaseUrl,
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

/// Turns raw strings into typed settings, collecting every problem.
fn validate(raw: &HashMap<&'static str, String>) -> Result<Settings, SettingsErrors> {
    let mut v = Validator {
        raw,
        errors: Vec::new(),
    };
    let url = v.database_url();
    let pool_size = v.whole("DB_POOL_SIZE", 0, MAX_POOL_PART);
    let max_overflow = v.whole("DB_MAX_OVERFLOW", 0, MAX_POOL_PART);
    let pool_timeout = v.seconds("DB_POOL_TIMEOUT", MIN_TIMEOUT);
    let overflow_idle_timeout = v.seconds("DB_OVERFLOW_IDLE_TIMEOUT", MIN_TIMEOUT);
    let pool_recycle = v.seconds("DB_POOL_RECYCLE", MIN_TIMEOUT);
    let connect_timeout = v.seconds("DB_CONNECT_TIMEOUT", MIN_TIMEOUT);
    let sleep_max = v.seconds("SLEEP_MAX", 0.0);
    let sleep_seconds = v.seconds("SLEEP_SECONDS", 0.0);
    let statement_timeout = match raw.get("DB_STATEMENT_TIMEOUT") {
        Some(_) => v.seconds("DB_STATEMENT_TIMEOUT", MIN_TIMEOUT),
        None => sleep_max.map(|max| max + Duration::from_secs(5)),
    };
    let host = v.parsed::<IpAddr>("APP_HOST", "an IP address such as 0.0.0.0, 127.0.0.1 or ::");
    let port = v.whole("APP_PORT", 0, u16::MAX as u64);
    let max_in_flight = v.whole("MAX_IN_FLIGHT", 1, 1_000_000);
    let shutdown_grace = v.seconds("SHUTDOWN_GRACE", 0.0);
    let log_filter = v.log_filter();
    let log_format = v.log_format();
    let otlp_endpoint = v.otlp_endpoint();
    let otlp_protocol = v.otlp_protocol();
    let service_name = v.raw("OTEL_SERVICE_NAME").to_owned();

    // Cross-variable rules, checked only when both sides parsed.
    if let (Some(size), Some(overflow)) = (pool_size, max_overflow) {
        if size + overflow == 0 {
            v.error(
                "DB_MAX_OVERFLOW",
                format!(
                    "DB_POOL_SIZE + DB_MAX_OVERFLOW must be at least 1 (the pool needs a connection), got {size} + {overflow}"
                ),
            );
        }
    }
    if let (Some(sleep), Some(max)) = (sleep_seconds, sleep_max) {
        if sleep > max {
            v.error(
                "SLEEP_SECONDS",
                format!(
                    "expected at most SLEEP_MAX ({}), got \"{}\"",
                    v.raw("SLEEP_MAX"),
                    v.raw("SLEEP_SECONDS")
                ),
            );
        }
    }
    if let (Some(max), Some(timeout)) = (sleep_max, statement_timeout) {
        if max >= timeout {
            v.error(
                "DB_STATEMENT_TIMEOUT",
                format!(
                    "must be greater than SLEEP_MAX ({}s) so the longest demo sleep can finish, got {}s",
                    max.as_secs_f64(),
                    timeout.as_secs_f64()
                ),
            );
        }
    }

    if !v.errors.is_empty() {
        return Err(SettingsErrors(v.errors));
    }
    // Every `None` above pushed an error, so these unwraps cannot fire.
    Ok(Settings {
        database: DatabaseSettings {
            url: url.expect("validated"),
            pool_size: pool_size.expect("validated") as u32,
            max_overflow: max_overflow.expect("validated") as u32,
            pool_timeout: pool_timeout.expect("validated"),
            overflow_idle_timeout: overflow_idle_timeout.expect("validated"),
            pool_recycle: pool_recycle.expect("validated"),
            connect_timeout: connect_timeout.expect("validated"),
            statement_timeout: statement_timeout.expect("validated"),
        },
        demo: DemoSettings {
            sleep_seconds: sleep_seconds.expect("validated").as_secs_f64(),
            sleep_max: sleep_max.expect("validated").as_secs_f64(),
        },
        server: ServerSettings {
            host: host.expect("validated"),
            port: port.expect("validated") as u16,
            max_in_flight: max_in_flight.expect("validated") as usize,
            shutdown_grace: shutdown_grace.expect("validated"),
        },
        telemetry: TelemetrySettings {
            log_filter: log_filter.expect("validated"),
            log_format: log_format.expect("validated"),
            otlp_endpoint: otlp_endpoint.expect("validated"),
            otlp_protocol: otlp_protocol.expect("validated"),
            service_name,
        },
    })
}

struct Validator<'a> {
    raw: &'a HashMap<&'static str, String>,
    errors: Vec<SettingError>,
}

impl Validator<'_> {
    fn raw(&self, name: &str) -> &str {
        self.raw.get(name).map(String::as_str).unwrap_or("")
    }

    fn error(&mut self, variable: &'static str, message: String) {
        self.errors.push(SettingError { variable, message });
    }

    fn whole(&mut self, name: &'static str, min: u64, max: u64) -> Option<u64> {
        let raw = self.raw(name);
        match raw.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let msg = format!("expected a whole number from {min} to {max}, got \"{raw}\"");
                self.error(name, msg);
                None
            }
        }
    }

    fn seconds(&mut self, name: &'static str, min: f64) -> Option<Duration> {
        let raw = self.raw(name);
        match parse_seconds(raw, min, MAX_SECONDS) {
            Some(d) => Some(d),
            None => {
                let msg = format!("expected seconds from {min} to {MAX_SECONDS}, got \"{raw}\"");
                self.error(name, msg);
                None
            }
        }
    }

    fn parsed<T: std::str::FromStr>(&mut self, name: &'static str, allowed: &str) -> Option<T> {
        let raw = self.raw(name);
        match raw.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                let msg = format!("expected {allowed}, got \"{raw}\"");
                self.error(name, msg);
                None
            }
        }
    }

    fn database_url(&mut self) -> Option<DatabaseUrl> {
        let url = match DatabaseUrl::parse(self.raw("DATABASE_URL")) {
            Ok(url) => url,
            Err(why) => {
                self.error("DATABASE_URL", why);
                return None;
            }
        };
        let Some(path) = self.raw.get("DATABASE_PASSWORD_FILE").cloned() else {
            return Some(url);
        };
        let password = match std::fs::read_to_string(&path) {
            Ok(p) => p.trim_end_matches(['\r', '\n']).to_owned(),
            Err(e) => {
                let msg =
                    format!("expected a readable file holding the password, got \"{path}\" ({e})");
                self.error("DATABASE_PASSWORD_FILE", msg);
                return None;
            }
        };
        match url.with_password(&password) {
            Ok(url) => Some(url),
            Err(why) => {
                self.error("DATABASE_PASSWORD_FILE", why);
                None
            }
        }
    }

    fn log_filter(&mut self) -> Option<String> {
        let raw = self.raw("RUST_LOG").to_owned();
        match tracing_subscriber::EnvFilter::try_new(&raw) {
            Ok(_) => Some(raw),
            Err(e) => {
                let msg = format!("expected a tracing filter such as \"info\" or \"poolscope=debug,info\", got \"{raw}\" ({e})");
                self.error("RUST_LOG", msg);
                None
            }
        }
    }

    fn log_format(&mut self) -> Option<LogFormat> {
        match self.raw("LOG_FORMAT").to_ascii_lowercase().as_str() {
            "pretty" => Some(LogFormat::Pretty),
            "json" => Some(LogFormat::Json),
            other => {
                let msg = format!("expected \"pretty\" or \"json\", got \"{other}\"");
                self.error("LOG_FORMAT", msg);
                None
            }
        }
    }

    fn otlp_protocol(&mut self) -> Option<OtlpProtocol> {
        match self.raw("OTEL_EXPORTER_OTLP_PROTOCOL") {
            "grpc" => Some(OtlpProtocol::Grpc),
            "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
            other => {
                let msg = format!("expected \"grpc\" or \"http/protobuf\", got \"{other}\"");
                self.error("OTEL_EXPORTER_OTLP_PROTOCOL", msg);
                None
            }
        }
    }

    fn otlp_endpoint(&mut self) -> Option<Option<String>> {
        let Some(raw) = self.raw.get("OTEL_EXPORTER_OTLP_ENDPOINT").cloned() else {
            return Some(None);
        };
        match url::Url::parse(&raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(Some(raw)),
            _ => {
                let msg =
                    format!("expected an http(s) URL such as http://jaeger:4317, got \"{raw}\"");
                self.error("OTEL_EXPORTER_OTLP_ENDPOINT", msg);
                None
            }
        }
    }
}

/// Parses a non-negative, finite number of seconds within `[min, max]`.
/// `f64` parsing accepts `NaN`, `inf` and `1e309` (= inf), and
/// `Duration::from_secs_f64` panics on those, so the range check comes first.
pub fn parse_seconds(raw: &str, min: f64, max: f64) -> Option<Duration> {
    let value: f64 = raw.trim().parse().ok()?;
    (value.is_finite() && value >= min && value <= max).then(|| Duration::from_secs_f64(value))
}
