//! Logs and traces.
//!
//! * Logs: `RUST_LOG` filtering, `LOG_FORMAT=pretty|json`, one access line
//!   per request (see [`crate::http::observe`]).
//! * Traces: when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, the service's spans
//!   (`HTTP request` → `pool.acquire`, `db.query`) go out over OTLP
//!   ([`traces`]); W3C `traceparent` on incoming requests is honoured.
//!
//! SeaORM instruments some methods at `trace` level with the connection's
//! `Debug`, and sqlx's connect options `Debug` prints the password. So when
//! `RUST_LOG` asks for `trace` anywhere, `sea_orm` and `sqlx` are capped at
//! `debug`: no log line can hold the password, even at `RUST_LOG=trace`.

mod fields;
mod fresh;
pub mod traces;

use fields::PlainNumbers;
use fresh::Fresh;

use opentelemetry_sdk::trace::SdkTracerProvider;
use std::io::IsTerminal;
use tracing::Level;

use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
use tracing_subscriber::{fmt, prelude::*, EnvFilter, Layer};

use crate::settings::{LogFormat, TelemetrySettings};

/// Directives appended to a filter that enables `trace`; later, more
/// specific directives win in `EnvFilter`.
const SECRET_SAFE_CAPS: &str = "sea_orm=debug,sqlx=debug";

/// PostgreSQL's NOTICEs (sqlx logs them at info) say things like
/// `relation "seaql_migrations" already exists, skipping` at every start:
/// noise unless asked for by name.
const QUIET_NOTICES: &str = "sqlx::postgres::notice=warn";

/// sqlx warns once per broken connection it finds when one is given back
/// ("error occurred while testing the connection on-release"): after
/// PostgreSQL or PgBouncer went away, a line per pooled connection. The
/// pool's keeper says it once, with the count (`db::pool::keeper`).
const QUIET_RELEASES: &str = "sqlx_core::pool::connection=error";

pub fn filter(spec: &str) -> EnvFilter {
    let Ok(wanted) = EnvFilter::try_new(spec) else {
        return EnvFilter::new(format!("info,{QUIET_NOTICES},{QUIET_RELEASES}"));
    };
    let mut spec = spec.to_owned();
    if wanted.max_level_hint() == Some(tracing::level_filters::LevelFilter::TRACE) {
        spec = format!("{spec},{SECRET_SAFE_CAPS}");
    }
    if !spec.contains("sqlx::postgres::notice") {
        spec = format!("{spec},{QUIET_NOTICES}");
    }
    if !spec.contains("sqlx_core::pool") {
        spec = format!("{spec},{QUIET_RELEASES}");
    }
    EnvFilter::try_new(&spec).unwrap_or(wanted)
}

/// Shuts the tracer provider down when dropped, flushing pending spans, and
/// flushes the log writer.
#[must_use = "dropping the guard stops trace export and log output"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    _log_writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "flushing traces at shutdown failed");
            }
        }
    }
}

/// Installs the global subscriber (a second call, as in tests, changes nothing).
/// Must run inside the tokio runtime: the OTLP exporters use it.
pub fn init(settings: &TelemetrySettings) -> TelemetryGuard {
    // Log lines are written by their own thread: a slow stdout (a full pipe,
    // a busy disk) must not stall the runtime's workers and every request on
    // them. Lines are dropped, not waited for, if that thread falls far behind.
    let (writer, log_writer) = tracing_appender::non_blocking(std::io::stdout());
    // Colour codes only for a terminal, not for `docker logs` or a file.
    let ansi = std::io::stdout().is_terminal();
    let fmt_layer = match settings.log_format {
        LogFormat::Json => fmt::layer()
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => fmt::layer()
            .with_writer(writer)
            .with_ansi(ansi)
            .compact()
            .fmt_fields(PlainNumbers::default())
            .boxed(),
    }
    // Log lines carry their own fields (the access line has route, status,
    // pool wait and database time), so the log layer takes events only: spans
    // then cost nothing unless traces are exported.
    // One combined filter, not two stacked ones: each per-layer filter that
    // enables a span (EnvFilter does, at info) makes the registry build it.
    .with_filter(Fresh(
        filter_fn(|meta| meta.is_event()).and(filter(&settings.log_filter)),
    ));

    let provider = settings.otlp_endpoint.as_deref().and_then(|endpoint| {
        match traces::provider(endpoint, settings.otlp_protocol, &settings.service_name) {
            Ok(p) => Some(p),
            Err(e) => {
                eprintln!("poolscope: traces disabled: {e}");
                None
            }
        }
    });
    // Only the service's own spans are exported, whatever RUST_LOG says: the
    // exporter's own HTTP/gRPC spans must never feed back into it.
    let otel_layer = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider;
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("poolscope"))
            .with_filter(Fresh(Targets::new().with_target("poolscope", Level::INFO)))
    });
    // Not `.with(otel_layer)` with an `Option`: a `None` layer declares
    // interest in every span, so each request's spans would be built and
    // entered (~10 % of the service's CPU under load) for nobody.
    let registry = tracing_subscriber::registry().with(fmt_layer);
    let _ = match otel_layer {
        Some(otel_layer) => registry.with(otel_layer).try_init(),
        None => registry.try_init(),
    };
    if let Some(endpoint) = &settings.otlp_endpoint {
        if provider.is_some() {
            tracing::info!(endpoint, protocol = ?settings.otlp_protocol, "exporting traces over OTLP");
        }
    }
    TelemetryGuard {
        provider,
        _log_writer: Some(log_writer),
    }
}
