//! Traces and metrics: one request exports the span tree over OTLP to an
//! in-process receiver; `/metrics` is right in the middle of a wave.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use poem::listener::{Acceptor, Listener};
use poem::web::Data;
use poem::{handler, post, EndpointExt, Route, Server};
use prost::Message;

use crate::helpers::{spawn_gets, Cluster, ServeProcess, TestApp};

type Received = Arc<Mutex<Vec<Span>>>;

#[handler]
fn receive(body: Vec<u8>, spans: Data<&Received>) -> &'static str {
    let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
    let mut all = spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref()?.value.clone());
        assert_eq!(service, Some(Value::StringValue("poolscope-test".into())));
        for ss in rs.scope_spans {
            all.extend(ss.spans);
        }
    }
    ""
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_exports_the_span_tree_over_otlp() {
    let received: Received = Arc::default();
    let acceptor = poem::listener::TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let collector = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = Route::new()
        .at("/v1/traces", post(receive))
        .data(received.clone());
    tokio::spawn(Server::new_with_acceptor(acceptor).run(app));

    let url = Cluster::shared().create_database();
    let endpoint = format!("http://{collector}");
    let served = ServeProcess::start(
        &url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_SERVICE_NAME", "poolscope-test"),
        ],
        false,
    )
    .await;
    let port: u16 = served.base.rsplit(':').next().unwrap().parse().unwrap();

    // A caller's trace context: the server span must continue it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let answer = raw_get_with_traceparent(port, &format!("00-{trace_id}-{caller_span}-01")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // SIGTERM flushes the spans on the way out.
    served.sigterm();
    assert_eq!(served.wait().await.status.code(), Some(0));

    let spans = received.lock().unwrap().clone();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let server = spans
        .iter()
        .find(|s| s.name == "GET /test/postgres/")
        .unwrap_or_else(|| {
            panic!(
                "no server span in {:?}",
                spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(hex(&server.trace_id), trace_id);
    assert_eq!(hex(&server.parent_span_id), caller_span);
    assert_eq!(
        attr(server, "http.response.status_code"),
        Some(&Value::IntValue(200))
    );

    let child_of_server = |name: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.parent_span_id == server.span_id)
            .unwrap_or_else(|| panic!("no {name} span under the server span"))
    };
    let acquire = child_of_server("pool.acquire");
    assert_eq!(
        attr(acquire, "outcome"),
        Some(&Value::StringValue("acquired".into()))
    );
    let query = child_of_server("db.query");
    assert_eq!(
        attr(query, "db.system"),
        Some(&Value::StringValue("postgresql".into()))
    );
    assert!(
        matches!(attr(query, "db.statement"), Some(Value::StringValue(s)) if s.contains("pg_sleep"))
    );
    assert!(matches!(attr(query, "db.backend_pid"), Some(Value::IntValue(pid)) if *pid > 0));
    assert!(acquire.end_time_unix_nano <= query.start_time_unix_nano);
}

/// GET /test/postgres/?seconds=0 with a traceparent header, over a raw socket.
async fn raw_get_with_traceparent(port: u16, traceparent: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "GET /test/postgres/?seconds=0 HTTP/1.1\r\nHost: x\r\ntraceparent: {traceparent}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name_and_labels} not in:\n{text}"))
}

/// Every histogram in an exposition is one consistent snapshot: buckets
/// never decrease and the `+Inf` bucket equals the count.
fn assert_histograms_consistent(text: &str) {
    let mut last: Option<(String, f64)> = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let value: f64 = value.parse().unwrap();
        if let Some((name, rest)) = series.split_once("_bucket{") {
            // The other labels, without `le` (wherever the encoder put it).
            let labels: Vec<&str> = rest
                .trim_end_matches('}')
                .split(',')
                .filter(|l| !l.starts_with("le="))
                .collect();
            let key = format!("{name}{{{}}}", labels.join(","));
            if let Some((prev_key, prev)) = &last {
                if *prev_key == key {
                    assert!(value >= *prev, "bucket went down: {line}");
                }
            }
            if rest.contains("le=\"+Inf\"") {
                let count = metric(text, &format!("{name}_count{{{}}}", labels.join(",")));
                assert_eq!(value, count, "+Inf bucket differs from the count: {line}");
            }
            last = Some((key, value));
        }
    }
}

#[tokio::test]
async fn metrics_are_right_in_the_middle_of_a_wave() {
    let app = TestApp::spawn(&[("DB_POOL_SIZE", "2"), ("DB_MAX_OVERFLOW", "1")]).await;
    let url = app.url("/test/postgres/?seconds=1");
    let sent = Instant::now();
    let requests = spawn_gets(&url, 5);
    // Every connection serving (the overflow's logins done), two queued.
    app.wait_for_live("in_use", 3, Duration::from_secs(2)).await;
    app.wait_for_live("waiting", 2, Duration::from_secs(1))
        .await;

    let during = String::from_utf8(app.get("/metrics").await.body.to_vec()).unwrap();
    let since_sent = sent.elapsed().as_secs_f64();
    assert!(during.ends_with("# EOF\n"), "not OpenMetrics:\n{during}");
    assert_histograms_consistent(&during);

    let p = "{db_client_connection_pool_name=\"poolscope\"";
    let at = |text: &str, name: &str| metric(text, &format!("{name}{p}}}"));
    let used = |text: &str| {
        metric(
            text,
            &format!("db_client_connection_count{p},db_client_connection_state=\"used\"}}"),
        )
    };
    assert_eq!(at(&during, "db_client_connection_max"), 3.0);
    assert_eq!(at(&during, "db_client_connection_idle_min"), 2.0);
    assert_eq!(used(&during), 3.0);
    assert_eq!(at(&during, "db_client_connection_pending_requests"), 2.0);
    // Two kept connections (warm-up) and one overflow, each timed.
    assert_eq!(at(&during, "poolscope_pool_connections_opened_total"), 3.0);
    assert_eq!(
        at(&during, "db_client_connection_create_time_seconds_count"),
        3.0
    );
    // The two waiting requests arrived with the others: they have waited
    // about as long as the burst has been under way, and no longer.
    let oldest = at(&during, "poolscope_pool_oldest_wait_seconds");
    assert!(
        oldest > 0.0 && oldest <= since_sent,
        "oldest wait {oldest} s, burst sent {since_sent} s ago"
    );
    for r in requests {
        assert_eq!(r.await.unwrap().status, 200);
    }

    let after = String::from_utf8(app.get("/metrics").await.body.to_vec()).unwrap();
    assert_histograms_consistent(&after);
    assert_eq!(at(&after, "db_client_connection_pending_requests"), 0.0);
    assert_eq!(at(&after, "poolscope_pool_oldest_wait_seconds"), 0.0);
    assert_eq!(used(&after), 0.0);
    assert_eq!(
        at(&after, "db_client_connection_wait_time_seconds_count"),
        5.0
    );
    // Two requests waited a whole wave (≈1 s) for their connection.
    assert_eq!(
        metric(
            &after,
            "db_client_connection_wait_time_seconds_bucket{le=\"0.5\",db_client_connection_pool_name=\"poolscope\"}"
        ),
        3.0
    );
    // Each of the 5 held a connection for about the 1 s sleep.
    assert_eq!(
        at(&after, "db_client_connection_use_time_seconds_count"),
        5.0
    );
    let held = at(&after, "db_client_connection_use_time_seconds_sum");
    assert!(
        (5.0..8.0).contains(&held),
        "connections held {held} s in all"
    );
    // The overflow connection was closed when it came back (QueuePool).
    let closed = "poolscope_pool_connections_closed_total";
    let settle = Instant::now();
    while metric(
        std::str::from_utf8(&app.get("/metrics").await.body).unwrap(),
        &format!("{closed}{p}}}"),
    ) < 1.0
    {
        assert!(
            settle.elapsed() < Duration::from_secs(2),
            "the overflow connection was not closed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ok = "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/test/postgres/\",http_response_status_code=\"200\"}";
    assert_eq!(metric(&after, ok), 5.0);
    assert_eq!(metric(&after, "postgresql_max_connections"), 300.0);
}

/// The provisioned Grafana dashboard is valid JSON, and every query in it
/// names metrics the service really exports.
#[tokio::test]
async fn every_dashboard_query_names_an_exported_metric() {
    let app = TestApp::spawn(&[]).await;
    // One request so that the per-route histogram has a series.
    assert_eq!(app.get("/test/postgres/?seconds=0").await.status, 200);
    let _ = app.get("/pool").await; // the PostgreSQL sample is there from startup
    let exposition = String::from_utf8(app.get("/metrics").await.body.to_vec()).unwrap();
    let mut exported = std::collections::BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
            exported.insert(name.to_owned());
            let suffixes: &[&str] = match kind {
                "histogram" => &["_bucket", "_sum", "_count"],
                "counter" => &["_total"],
                _ => &[],
            };
            for suffix in suffixes {
                exported.insert(format!("{name}{suffix}"));
            }
        }
    }

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/observability/grafana/dashboards/poolscope.json"
    );
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    let ours = |t: &str| {
        ["db_client_", "http_server_", "postgresql_", "poolscope_"]
            .iter()
            .any(|p| t.starts_with(p))
    };
    for expr in &exprs {
        // Metric names only: label matchers (`{…}`) name labels, not metrics.
        let mut bare = String::new();
        let mut depth = 0;
        for c in expr.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ if depth == 0 => bare.push(c),
                _ => {}
            }
        }
        let names: Vec<&str> = bare
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|t| ours(t))
            .collect();
        assert!(!names.is_empty(), "query names no poolscope metric: {expr}");
        for name in names {
            assert!(
                exported.contains(name),
                "{name} (in {expr}) is not exported; /metrics has {exported:?}"
            );
        }
    }
}

/// The access log an operator reads: every answer but a 200 names its kind,
/// durations are rounded, and probes and scrapes are at debug (at the
/// default `RUST_LOG=info` they are not there at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_name_the_error_kind_and_probes_are_debug() {
    let url = Cluster::shared().create_database();
    let served = ServeProcess::start(
        &url,
        &[
            ("RUST_LOG", "info,poolscope::access=debug"),
            ("LOG_FORMAT", "json"),
            ("DB_POOL_SIZE", "1"),
            ("DB_MAX_OVERFLOW", "0"),
            ("DB_POOL_TIMEOUT", "0.5"),
        ],
        true,
    )
    .await;
    let get = |path: &str| {
        let url = format!("{}{path}", served.base);
        async move { crate::helpers::get_url(&url).await.status }
    };
    for path in ["/healthz", "/readyz", "/metrics", "/live"] {
        assert_eq!(get(path).await, 200, "{path}");
    }
    assert_eq!(get("/test/postgres/?seconds=abc").await, 400);
    assert_eq!(get("/nope").await, 404);
    // One connection, two requests: the second waits 0.5 s and times out.
    let both = spawn_gets(&format!("{}/test/postgres/?seconds=1", served.base), 2);
    let mut statuses = Vec::new();
    for r in both {
        statuses.push(r.await.unwrap().status);
    }
    statuses.sort();
    assert_eq!(statuses, [200, 503]);
    served.sigterm();
    let out = served.wait().await;
    let stdout = String::from_utf8_lossy(&out.stdout);

    let access: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["target"] == "poolscope::access")
        .collect();
    let line = |route: &str, status: u16| {
        access
            .iter()
            .find(|l| l["route"] == route && l["status"] == status)
            .unwrap_or_else(|| panic!("no access line for {route} {status} in:\n{stdout}"))
    };
    for route in ["/healthz", "/readyz", "/metrics", "/live"] {
        let l = line(route, 200);
        assert_eq!(l["level"], "DEBUG", "{l}");
        assert!(l.get("error").is_none(), "{l}");
    }
    let ok = line("/test/postgres/", 200);
    assert_eq!(ok["level"], "INFO", "{ok}");
    assert!(ok.get("error").is_none(), "{ok}");
    for (route, status, kind) in [
        ("/test/postgres/", 400, "bad_request"),
        ("other", 404, "not_found"),
        ("/test/postgres/", 503, "pool_timeout"),
    ] {
        let l = line(route, status);
        assert_eq!(
            (&l["level"], &l["error"]),
            (&"INFO".into(), &kind.into()),
            "{l}"
        );
    }
    // Rounded: whole milliseconds from 100 ms on, hundredths below 10 ms.
    let waited = line("/test/postgres/", 503)["elapsed_ms"].as_f64().unwrap();
    assert!(
        waited >= 500.0 && waited.fract() == 0.0,
        "elapsed_ms {waited}"
    );
    for l in &access {
        let ms = l["elapsed_ms"].to_string();
        let decimals = ms.split_once('.').map_or(0, |(_, f)| f.len());
        assert!(decimals <= 2, "not rounded: {l}");
    }
}

/// An error answer keeps its kind on the way out: the live page colours
/// each answer by it.
#[tokio::test]
async fn the_live_page_sees_the_kind_of_an_error_answer() {
    let app = TestApp::spawn(&[]).await;
    assert_eq!(app.get("/test/postgres/?seconds=abc").await.status, 400);
    let live: poolscope::contract::LiveView = crate::helpers::parsed(&app.get("/live").await);
    let statuses: Vec<_> = live.run.answers.iter().map(|a| (a.1, a.2)).collect();
    assert_eq!(
        statuses,
        [(400, Some(poolscope::contract::ErrorKind::BadRequest))],
        "{live:?}"
    );
}
