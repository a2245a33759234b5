//! Validation: raw strings in, typed settings out, every problem collected
//! with the variable's name, its value and what is allowed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use super::{
    DatabaseSettings, DemoSettings, LogFormat, OtlpProtocol, ServerSettings, SettingError,
    Settings, SettingsErrors, SweepSettings, TelemetrySettings,
};
use crate::secret::DatabaseUrl;

/// Largest pool size or overflow accepted: far above any sane `max_connections`.
const MAX_POOL_PART: u64 = 10_000;
/// Shortest timeout accepted: below this, ordinary scheduling noise looks like a failure.
const MIN_TIMEOUT: f64 = 0.25;
/// Most rows `?work=cpu` may count: about 3 s of one core, well inside any
/// sensible `statement_timeout`.
const MAX_CPU_ROWS: u64 = 10_000_000;
/// Most hot rows: far beyond where row locks stop mattering.
const MAX_HOT_ROWS: u64 = 100_000;
/// Longest duration accepted for any setting (one day).
const MAX_SECONDS: f64 = 86_400.0;

/// Turns raw strings into typed settings, collecting every problem.
pub(super) fn validate(raw: &HashMap<&'static str, String>) -> Result<Settings, SettingsErrors> {
    let mut v = Validator {
        raw,
        errors: Vec::new(),
    };
    let password = v.password_file();
    let url = v.database_url("DATABASE_URL", &password);
    let monitor_url = match raw.get("MONITOR_DATABASE_URL") {
        Some(_) => v.database_url("MONITOR_DATABASE_URL", &password),
        None => url.clone(),
    };
    let pooler_admin_url = match raw.get("PGBOUNCER_ADMIN_URL") {
        Some(_) => v.database_url("PGBOUNCER_ADMIN_URL", &password).map(Some),
        None => Some(None),
    };
    let replica = v.replica_name();
    let pool_size = v.whole("DB_POOL_SIZE", 0, MAX_POOL_PART);
    let max_overflow = v.whole("DB_MAX_OVERFLOW", 0, MAX_POOL_PART);
    let pool_timeout = v.seconds("DB_POOL_TIMEOUT", MIN_TIMEOUT);
    // 0 has a meaning of its own (close at once, as SQLAlchemy does).
    let overflow_idle_timeout = match v.raw("DB_OVERFLOW_IDLE_TIMEOUT").trim() {
        "0" => Some(Duration::ZERO),
        _ => v.seconds("DB_OVERFLOW_IDLE_TIMEOUT", MIN_TIMEOUT),
    };
    let pool_recycle = v.seconds("DB_POOL_RECYCLE", MIN_TIMEOUT);
    let connect_timeout = v.seconds("DB_CONNECT_TIMEOUT", MIN_TIMEOUT);
    let sleep_max = v.seconds("SLEEP_MAX", 0.0);
    let sleep_seconds = v.seconds("SLEEP_SECONDS", 0.0);
    let cpu_rows = v.whole("CPU_ROWS", 1, MAX_CPU_ROWS);
    let hot_rows = v.whole("HOT_ROWS", 1, MAX_HOT_ROWS);
    let statement_timeout = match raw.get("DB_STATEMENT_TIMEOUT") {
        Some(_) => v.seconds("DB_STATEMENT_TIMEOUT", MIN_TIMEOUT),
        None => sleep_max.map(|max| max + Duration::from_secs(5)),
    };
    let db_cores = match raw.get("DB_CORES") {
        Some(_) => v.whole("DB_CORES", 1, 4096).map(|n| Some(n as u32)),
        None => Some(None),
    };
    let limit_control = v.boolean("POOL_LIMIT_CONTROL");
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
            monitor_url: monitor_url.expect("validated"),
            pooler_admin_url: pooler_admin_url.expect("validated"),
            replica: replica.expect("validated"),
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
            cpu_rows: cpu_rows.expect("validated") as u32,
            hot_rows: hot_rows.expect("validated") as u32,
        },
        server: ServerSettings {
            host: host.expect("validated"),
            port: port.expect("validated") as u16,
            max_in_flight: max_in_flight.expect("validated") as usize,
            shutdown_grace: shutdown_grace.expect("validated"),
        },
        sweep: SweepSettings {
            db_cores: db_cores.expect("validated"),
            limit_control: limit_control.expect("validated"),
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

/// The machine's host name (in a container, its id), or `local`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "local".to_owned())
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

    fn boolean(&mut self, name: &'static str) -> Option<bool> {
        match self.raw(name).to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" => Some(false),
            other => {
                let msg = format!("expected \"true\" or \"false\", got \"{other}\"");
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

    /// The password from `DATABASE_PASSWORD_FILE`, if set; `Err` when the
    /// file cannot be read (reported once here).
    fn password_file(&mut self) -> Result<Option<String>, ()> {
        let Some(path) = self.raw.get("DATABASE_PASSWORD_FILE").cloned() else {
            return Ok(None);
        };
        match std::fs::read_to_string(&path) {
            Ok(p) => Ok(Some(p.trim_end_matches(['\r', '\n']).to_owned())),
            Err(e) => {
                let msg =
                    format!("expected a readable file holding the password, got \"{path}\" ({e})");
                self.error("DATABASE_PASSWORD_FILE", msg);
                Err(())
            }
        }
    }

    /// A `postgres://` URL variable, with the password file's password.
    fn database_url(
        &mut self,
        name: &'static str,
        password: &Result<Option<String>, ()>,
    ) -> Option<DatabaseUrl> {
        let url = match DatabaseUrl::parse(self.raw(name)) {
            Ok(url) => url,
            Err(why) => {
                self.error(name, why);
                return None;
            }
        };
        match password {
            Ok(None) => Some(url),
            Err(()) => None,
            Ok(Some(password)) => match url.with_password(password) {
                Ok(url) => Some(url),
                Err(why) => {
                    self.error("DATABASE_PASSWORD_FILE", format!("{name}: {why}"));
                    None
                }
            },
        }
    }

    /// `REPLICA_NAME`, else the host name (a container's id, a pod's name).
    fn replica_name(&mut self) -> Option<String> {
        let given = self.raw.get("REPLICA_NAME").cloned();
        let name = given.clone().unwrap_or_else(host_name);
        let fits = (1..=40).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if fits {
            return Some(name);
        }
        if given.is_some() {
            let msg = format!(
                "expected 1 to 40 letters, digits, '-', '_' or '.', got \"{}\"",
                name.escape_default()
            );
            self.error("REPLICA_NAME", msg);
            return None;
        }
        Some("local".to_owned())
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

#[cfg(test)]
mod tests {
    use super::parse_seconds;
    use crate::settings::Settings;
    use std::time::Duration;

    #[test]
    fn seconds_are_finite_and_within_range() {
        assert_eq!(
            parse_seconds(" 2.5 ", 0.0, 10.0),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(parse_seconds("0", 0.0, 10.0), Some(Duration::ZERO));
        for bad in ["-1", "11", "NaN", "inf", "1e309", "", "5s"] {
            assert_eq!(parse_seconds(bad, 0.0, 10.0), None, "{bad:?}");
        }
    }

    /// Every wrong variable is reported at once, each naming what is allowed.
    #[test]
    fn all_problems_are_reported_together() {
        let errors = Settings::from_vars([
            ("DB_POOL_SIZE", "0"),
            ("DB_MAX_OVERFLOW", "0"),
            ("APP_PORT", "http"),
            ("LOG_FORMAT", "xml"),
        ])
        .unwrap_err();
        let text = errors.to_string();
        for name in ["DB_POOL_SIZE + DB_MAX_OVERFLOW", "APP_PORT", "LOG_FORMAT"] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
        assert!(text.contains("pretty") && text.contains("json"), "{text}");
    }

    #[test]
    fn workload_sizes_are_bounded_whole_numbers() {
        let s = Settings::from_vars([]).unwrap();
        assert_eq!((s.demo.cpu_rows, s.demo.hot_rows), (100_000, 5));
        let err = Settings::from_vars([("CPU_ROWS", "0"), ("HOT_ROWS", "many")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(r#"CPU_ROWS: expected a whole number from 1 to 10000000, got "0""#),
            "{err}"
        );
        assert!(
            err.contains(r#"HOT_ROWS: expected a whole number from 1 to 100000, got "many""#),
            "{err}"
        );
    }

    #[test]
    fn the_sweep_settings_are_off_and_unknown_by_default() {
        let s = Settings::from_vars([]).unwrap();
        assert_eq!((s.sweep.db_cores, s.sweep.limit_control), (None, false));
        let s = Settings::from_vars([("DB_CORES", "8"), ("POOL_LIMIT_CONTROL", "TRUE")]).unwrap();
        assert_eq!((s.sweep.db_cores, s.sweep.limit_control), (Some(8), true));
        let err = Settings::from_vars([("DB_CORES", "0"), ("POOL_LIMIT_CONTROL", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(r#"DB_CORES: expected a whole number from 1 to 4096, got "0""#),
            "{err}"
        );
        assert!(
            err.contains(r#"POOL_LIMIT_CONTROL: expected "true" or "false", got "maybe""#),
            "{err}"
        );
    }

    #[test]
    fn the_statement_timeout_follows_sleep_max() {
        let s = Settings::from_vars([("SLEEP_MAX", "20")]).unwrap();
        assert_eq!(s.database.statement_timeout, Duration::from_secs(25));
        let err = Settings::from_vars([("SLEEP_MAX", "20"), ("DB_STATEMENT_TIMEOUT", "10")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DB_STATEMENT_TIMEOUT") && err.contains("SLEEP_MAX"),
            "{err}"
        );
    }
}
