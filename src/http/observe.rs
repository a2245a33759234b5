//! One place that watches every request: the server span (continuing the
//! caller's W3C `traceparent`), the access log line with pool wait and
//! database time, and the request-duration histogram.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::FutureExt;
use opentelemetry::propagation::Extractor;
use poem::http::{HeaderMap, Method};
use poem::{Endpoint, Request, Response};
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::demo::Timing;
use super::error::ErrorKind;
use super::{route_of, AppState};

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Wraps the routes: puts the shared state where handlers' `Data` extractor
/// finds it, turns errors into JSON answers, and gives every request the
/// server span, the access log line and its sample in the duration histogram.
///
/// Written as one endpoint returning a `Map` future, rather than poem's
/// `.data()`, `.catch_all_error()` and `.around()` layers: each of those is
/// an `async fn` that keeps the request (472 bytes) next to the inner future,
/// and a future awaited from an `async` block is stored twice. With 10,000
/// requests waiting on the pool that came to 6.7 KB each, now 2.7 KB.
pub struct Observed<E> {
    pub routes: E,
    pub state: Arc<AppState>,
}

impl<E: Endpoint<Output = Response>> Endpoint for Observed<E> {
    type Output = Response;

    fn call(&self, mut req: Request) -> impl Future<Output = poem::Result<Response>> + Send {
        let started = Instant::now();
        let method = req.method().clone();
        let route = route_of(req.uri().path());
        let span = tracing::info_span!(
            "HTTP request",
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = route,
            url.path = %req.uri().path(),
            http.response.status_code = Empty,
            otel.status_code = Empty,
        );
        // Without a trace exporter the span is disabled: no parent to read.
        if !span.is_disabled() {
            let parent = opentelemetry::global::get_text_map_propagator(|p| {
                p.extract(&Headers(req.headers()))
            });
            span.set_parent(parent);
        }
        let state = self.state.clone();
        req.extensions_mut().insert(state.clone());
        // The live page's record of the run: demo requests only.
        let in_flight = (route == "/test/postgres/").then(|| state.runlog.arrived());
        let access = Access {
            span: span.clone(),
            state: state.clone(),
            method,
            route,
            started,
            done: false,
        };
        self.routes.call(req).instrument(span).map(move |answer| {
            let mut resp = answer.unwrap_or_else(super::error_response);
            // Which replica answered, behind a load balancer.
            if let Some(replica) = state.replica_header.clone() {
                resp.headers_mut().insert("X-Replica", replica);
            }
            access.answered(&resp);
            if let Some(in_flight) = in_flight {
                let kind = resp.extensions().get::<ErrorKind>().copied();
                let seconds = resp.extensions().get::<Timing>().map(|t| t.seconds);
                if let Some(run) = in_flight.answered(resp.status().as_u16(), kind, seconds) {
                    state.run_summary.after_quiet(&state.runlog, run);
                }
            }
            Ok(resp)
        })
    }
}

/// One request's access-log line and duration sample: written with the
/// answer, or — when the client hangs up first and hyper drops the request
/// unanswered — as 499 ("client closed request", as nginx logs it) when this
/// is dropped, so abandoned requests are counted too.
struct Access {
    span: tracing::Span,
    state: Arc<AppState>,
    method: Method,
    route: &'static str,
    started: Instant,
    done: bool,
}

/// nginx's status for a request whose client went away before the answer.
const CLIENT_CLOSED: u16 = 499;

/// Where access lines go: `RUST_LOG=poolscope::access=warn` silences them.
const ACCESS: &str = "poolscope::access";

/// A word for the access line of an answer that is not a 200 and carries no
/// [`ErrorKind`]: the routes' own refusals, such as `/readyz`'s `not_ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome(pub &'static str);

/// Routes that probes and scrapers call every few seconds (HAProxy, Docker's
/// healthcheck, Prometheus, the live page's four polls a second): their lines
/// are logged at debug, so that at `info` the log tells what users asked
/// for. Readiness changes are logged on their own ([`super::ready`]).
pub fn is_probe(route: &str) -> bool {
    matches!(route, "/healthz" | "/readyz" | "/metrics" | "/live")
}

/// Milliseconds rounded to what a reader compares: hundredths below 10 ms
/// (`0.35`), tenths below 100 ms (`12.3`), whole ones above (`5002`).
pub fn rounded_ms(d: std::time::Duration) -> f64 {
    let ms = d.as_secs_f64() * 1000.0;
    let scale = if ms < 10.0 {
        100.0
    } else if ms < 100.0 {
        10.0
    } else {
        1.0
    };
    (ms * scale).round() / scale
}

/// What went wrong, for the access line: the error kind of an error answer,
/// the route's own word for its refusal, or `http_<status>` (never expected:
/// every error answer is built with its kind). `None` for a success.
fn error_of(status: u16, resp: Option<&Response>) -> Option<std::borrow::Cow<'static, str>> {
    let extensions = resp.map(|r| r.extensions());
    if let Some(kind) = extensions.and_then(|e| e.get::<ErrorKind>()) {
        return Some(kind.to_string().into());
    }
    if let Some(Outcome(word)) = extensions.and_then(|e| e.get::<Outcome>()) {
        return Some((*word).into());
    }
    match status {
        200..=399 => None,
        CLIENT_CLOSED => Some(ErrorKind::ClientClosed.to_string().into()),
        _ => Some(format!("http_{status}").into()),
    }
}

/// One access line at a level fixed per call site (tracing needs it
/// constant): debug for probes, info for the rest.
macro_rules! access_line {
    ($probe:expr, $($fields:tt)+) => {
        if $probe {
            tracing::debug!(target: ACCESS, $($fields)+)
        } else {
            tracing::info!(target: ACCESS, $($fields)+)
        }
    };
}

impl Access {
    fn answered(mut self, resp: &Response) {
        self.done = true;
        let status = resp.status().as_u16();
        if resp.status().is_server_error() {
            self.span.record("otel.status_code", "ERROR");
        }
        self.log(status, Some(resp));
    }

    fn log(&self, status: u16, resp: Option<&Response>) {
        let elapsed = self.started.elapsed();
        self.span
            .record("http.response.status_code", i64::from(status));
        self.state
            .request_durations
            .record(self.method.as_str(), self.route, status, elapsed);
        let elapsed_ms = rounded_ms(elapsed);
        let (method, route) = (&self.method, self.route);
        let error = error_of(status, resp);
        let error = error.as_deref();
        let probe = is_probe(route);
        let _in_span = self.span.enter();
        match resp.and_then(|r| r.extensions().get::<Timing>()) {
            Some(t) => access_line!(
                probe,
                %method, route, status, error, elapsed_ms,
                pool_wait_ms = rounded_ms(t.pool_wait),
                db_ms = t.db_time.map(rounded_ms),
                "request"
            ),
            None if status == CLIENT_CLOSED => access_line!(
                probe,
                %method, route, status, error, elapsed_ms,
                "request abandoned: the client closed the connection before the answer"
            ),
            None => access_line!(probe, %method, route, status, error, elapsed_ms, "request"),
        }
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        if !self.done {
            self.log(CLIENT_CLOSED, None);
        }
    }
}

/// One line when a run's last demo request has been answered, so that the
/// log of `docker compose run client 100` ends with how it went: `all 100
/// demo requests answered in 25.1 s: 200 × 100`. (A request arriving within
/// a second joins the run, and its end is told again.)
#[derive(Default)]
pub struct RunSummary {
    /// `(run, answered)` last told, so that answers finishing together tell it once.
    told: Mutex<(u64, u64)>,
}

impl RunSummary {
    /// After an answer that left run `run` with no demo request in flight
    /// (only then can the run be over: under load nothing is done here).
    fn after_quiet(&self, runlog: &crate::runlog::RunLog, run: u64) {
        // The counts first (no copy of the answers).
        let now = runlog.view(run, usize::MAX);
        // Another request may have arrived meanwhile: the run goes on.
        if now.in_flight > 0 || now.answered == 0 {
            return;
        }
        {
            let mut told = self.told.lock().expect("not poisoned");
            if *told == (now.id, now.answered) {
                return;
            }
            *told = (now.id, now.answered);
        }
        let run = runlog.view(now.id, 0);
        let (arrived, answered) = (run.arrived, run.answered);
        let who = if answered < arrived {
            format!(
                "{answered} of {arrived} demo requests answered ({} clients hung up first)",
                arrived - answered
            )
        } else {
            format!("all {arrived} demo requests answered")
        };
        tracing::info!(
            run = run.id,
            arrived,
            answered,
            "{who} in {:.1} s: {}",
            run.elapsed_ms as f64 / 1000.0,
            outcome_counts(&run.answers)
        );
    }
}

/// `200 × 36, 503 × 24 (db_refused × 24)`: statuses, then error kinds (in
/// the contract's order).
fn outcome_counts(answers: &[crate::runlog::Answer]) -> String {
    let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
    let mut kinds = std::collections::BTreeMap::<ErrorKind, u32>::new();
    for crate::runlog::Answer(_, status, kind) in answers {
        *statuses.entry(*status).or_default() += 1;
        if let Some(kind) = kind {
            *kinds.entry(*kind).or_default() += 1;
        }
    }
    let list = |items: Vec<String>| items.join(", ");
    let mut text = list(statuses.iter().map(|(s, n)| format!("{s} × {n}")).collect());
    if !kinds.is_empty() {
        let kinds = list(kinds.iter().map(|(k, n)| format!("{k} × {n}")).collect());
        text.push_str(&format!(" ({kinds})"));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn durations_are_rounded_to_what_a_reader_compares() {
        let ms = |us: u64| rounded_ms(Duration::from_micros(us));
        assert_eq!(ms(347), 0.35);
        assert_eq!(ms(4), 0.0);
        assert_eq!(ms(9_994), 9.99);
        assert_eq!(ms(12_345), 12.3);
        assert_eq!(ms(99_940), 99.9);
        assert_eq!(ms(5_002_499), 5002.0);
        assert_eq!(ms(30_000_600), 30001.0);
    }

    #[test]
    fn a_run_is_told_as_statuses_then_error_kinds() {
        use crate::runlog::Answer;
        let mut answers = vec![Answer(5_000, 200, None); 36];
        answers.extend([Answer(40, 503, Some(ErrorKind::DbRefused)); 24]);
        answers.push(Answer(30_000, 503, Some(ErrorKind::PoolTimeout)));
        assert_eq!(
            outcome_counts(&answers),
            "200 × 36, 503 × 25 (pool_timeout × 1, db_refused × 24)"
        );
        assert_eq!(outcome_counts(&answers[..2]), "200 × 2");
    }

    #[test]
    fn probes_and_scrapes_are_the_quiet_routes() {
        for route in ["/healthz", "/readyz", "/metrics", "/live"] {
            assert!(is_probe(route_of(route)), "{route}");
        }
        for route in ["/test/postgres/", "/test/postgres", "/pool", "/", "/nope"] {
            assert!(!is_probe(route_of(route)), "{route}");
        }
    }

    #[test]
    fn every_answer_but_a_success_names_what_went_wrong() {
        let with = |status: u16, ext: Option<ErrorKind>, outcome: Option<Outcome>| {
            let mut resp = Response::builder()
                .status(poem::http::StatusCode::from_u16(status).unwrap())
                .finish();
            if let Some(kind) = ext {
                resp.extensions_mut().insert(kind);
            }
            if let Some(o) = outcome {
                resp.extensions_mut().insert(o);
            }
            error_of(status, Some(&resp)).map(|e| e.into_owned())
        };
        assert_eq!(with(200, None, None), None);
        assert_eq!(
            with(503, Some(ErrorKind::DbRefused), None).as_deref(),
            Some("db_refused")
        );
        assert_eq!(
            with(503, Some(ErrorKind::PoolTimeout), None).as_deref(),
            Some("pool_timeout")
        );
        assert_eq!(
            with(503, None, Some(Outcome("not_ready"))).as_deref(),
            Some("not_ready")
        );
        assert_eq!(with(502, None, None).as_deref(), Some("http_502"));
        // Dropped unanswered: no response at all.
        assert_eq!(
            error_of(CLIENT_CLOSED, None).as_deref(),
            Some("client_closed")
        );
    }
}
