//! Logging: `RUST_LOG` filtering, `LOG_FORMAT=pretty|json`.
//!
//! SeaORM instruments some methods at `trace` level with the connection's
//! `Debug`, and sqlx's connect options `Debug` prints the password. So whatever
//! `RUST_LOG` says, `sea_orm` and `sqlx` are capped at `debug`: no log line can
//! hold the password, even at `RUST_LOG=trace`.

use tracing_subscriber::{fmt, prelude::*, EnvFilter};

use crate::settings::{LogFormat, TelemetrySettings};

/// Directives appended to every filter; later directives win in `EnvFilter`.
const SECRET_SAFE_CAPS: &str = "sea_orm=debug,sqlx=debug,sea_orm_migration=info";

pub fn filter(spec: &str) -> EnvFilter {
    EnvFilter::try_new(format!("{spec},{SECRET_SAFE_CAPS}"))
        .unwrap_or_else(|_| EnvFilter::new(format!("info,{SECRET_SAFE_CAPS}")))
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
