//! Logging: `RUST_LOG` filtering, `LOG_FORMAT=pretty|json`.
//!
//! SeaORM instruments some methods at `trace` level with the connection's
//! `Debug`, and sqlx's connect options `Debug` prints the password. So when
//! `RUST_LOG` asks for `trace` anywhere, `sea_orm` and `sqlx` are capped at
//! `debug`: no log line can hold the password, even at `RUST_LOG=trace`.

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::settings::{LogFormat, TelemetrySettings};

/// Directives appended to a filter that enables `trace`; later, more
/// specific directives win in `EnvFilter`.
const SECRET_SAFE_CAPS: &str = "sea_orm=debug,sqlx=debug";

pub fn filter(spec: &str) -> EnvFilter {
    let Ok(wanted) = EnvFilter::try_new(spec) else {
        return EnvFilter::new("info");
    };
    if wanted.max_level_hint() == Some(tracing::level_filters::LevelFilter::TRACE) {
        EnvFilter::new(format!("{spec},{SECRET_SAFE_CAPS}"))
    } else {
        wanted
    }
}

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(settings: &TelemetrySettings) {
    let registry = tracing_subscriber::registry().with(filter(&settings.log_filter));
    let result = match settings.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().compact()).try_init(),
    };
    let _ = result;
}
