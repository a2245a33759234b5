//! Every expected failure is a JSON answer with the right status and kind.

use std::time::{Duration, Instant};

use poolscope::contract::{ErrorBody, ErrorKind, LiveView};

use crate::helpers::{get_url, header, json, parsed, Cluster, TestApp};

#[tokio::test]
async fn every_bad_seconds_value_is_a_400() {
    let app = TestApp::spawn(&[("SLEEP_MAX", "60")]).await;
    for bad in [
        "", "abc", "-1", "NaN", "nan", "inf", "-inf", "1e309", "61", "0x10", "5s", "1,5",
    ] {
        let answer = app.get(&format!("/test/postgres/?seconds={bad}")).await;
        assert_eq!(answer.status, 400, "seconds={bad}");
        let body = json(&answer);
        assert_eq!(body["error"], "bad_request", "seconds={bad}");
        assert!(
            body["message"].as_str().unwrap().contains("SLEEP_MAX"),
            "{body}"
        );
    }
    for bad in [
        "/test/postgres/?seconds",
        "/test/postgres/?seconds=1&seconds=2",
    ] {
        assert_eq!(app.get(bad).await.status, 400, "{bad}");
    }
    // A long query string is still a clear 400, not a crash.
    let long = format!("/test/postgres/?seconds={}", "9".repeat(16 * 1024));
    assert_eq!(app.get(&long).await.status, 400);
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let app = TestApp::spawn(&[]).await;
    let answer = app.get("/nope").await;
    assert_eq!(answer.status, 404);
    let body: ErrorBody = parsed(&answer);
    assert_eq!(body.error, ErrorKind::NotFound);
    // The hint lists the routes, and every route it names is served.
    let hint = body.message.split_once("try ").expect("a hint").1;
    let routes: Vec<&str> = hint.split(", ").collect();
    assert!(
        routes.len() >= 8 && routes.contains(&"/test/postgres/"),
        "{hint}"
    );
    for route in routes {
        let status = app.get(&format!("{route}?seconds=0")).await.status;
        assert!(status != 404 && status != 405, "GET {route}: {status}");
    }

    let answer = crate::helpers::http_client()
        .put(app.url("/pool"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 405);
    let body: ErrorBody = serde_json::from_slice(&answer.bytes().await.unwrap()).unwrap();
    assert_eq!(body.error, ErrorKind::MethodNotAllowed);
}

/// A malformed query string is a JSON 400 on every route, naming what is allowed.
#[tokio::test]
async fn a_bad_live_query_is_a_json_400() {
    let app = TestApp::spawn(&[]).await;
    for bad in ["/live?run=abc", "/live?after=-1"] {
        let answer = app.get(bad).await;
        assert_eq!(answer.status, 400, "{bad}");
        let body: ErrorBody = parsed(&answer);
        assert_eq!(body.error, ErrorKind::BadRequest, "{bad}");
        assert!(
            body.message.contains("whole numbers"),
            "{bad}: {}",
            body.message
        );
    }
    let live: LiveView = parsed(&app.get("/live?run=0&after=0").await);
    assert_eq!(live.pool.max, 20);
}

#[tokio::test]
async fn a_busy_pool_answers_pool_timeout_with_retry_after() {
    let app = TestApp::spawn(&[
        ("DB_POOL_SIZE", "1"),
        ("DB_MAX_OVERFLOW", "0"),
        ("DB_POOL_TIMEOUT", "0.5"),
    ])
    .await;
    let holder = tokio::spawn(get_url_owned(app.url("/test/postgres/?seconds=2")));
    app.wait_for_live("in_use", 1, Duration::from_secs(2)).await;

    let started = Instant::now();
    let answer = app.get("/test/postgres/?seconds=0").await;
    let elapsed = started.elapsed();

    assert_eq!(answer.status, 503);
    assert!(header(&answer, "retry-after").is_some());
    let body = json(&answer);
    assert_eq!(body["error"], "pool_timeout", "{body}");
    assert!(body["waited_ms"].as_u64().unwrap() >= 450, "{body}");
    assert_eq!(body["pool"]["in_use"], 1, "{body}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert_eq!(holder.await.unwrap(), 200);
}

async fn get_url_owned(url: String) -> u16 {
    get_url(&url).await.status
}

/// A pool larger than the server grants: the requests that cannot get a
/// connection are told the database refused, naming max_connections.
#[tokio::test]
async fn a_refusing_database_answers_db_refused() {
    // 6 slots - 3 reserved for superusers = 3 for the service: the monitor
    // connection takes one, so the pool can open only 2 of its 4.
    let cluster = Cluster::start(&[("max_connections", "6")]);
    let app = TestApp::spawn_on(&cluster, &[("DB_POOL_SIZE", "0"), ("DB_MAX_OVERFLOW", "4")]).await;
    // Read /pool first so the monitor connection is open.
    let pool = json(&app.get("/pool").await);
    assert_eq!(pool["postgres"]["max_connections"], 6, "{pool}");

    let url = app.url("/test/postgres/?seconds=2");
    let started = Instant::now();
    let requests: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let answer = get_url(&url).await;
                (started.elapsed(), answer)
            })
        })
        .collect();
    let mut kinds = Vec::new();
    for r in requests {
        let (took, answer) = r.await.unwrap();
        if answer.status != 200 {
            // At once, not after DB_POOL_TIMEOUT (30 s by default).
            assert!(took < Duration::from_secs(1), "refused after {took:?}");
        }
        kinds.push(if answer.status == 200 {
            "ok".to_owned()
        } else {
            let body = json(&answer);
            assert_eq!(answer.status, 503, "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("max_connections"),
                "{body}"
            );
            body["error"].as_str().unwrap().to_owned()
        });
    }
    // The server grants the pool 2 connections: 2 succeed, 2 are refused.
    let ok = kinds.iter().filter(|k| *k == "ok").count();
    let refused = kinds.iter().filter(|k| *k == "db_refused").count();
    assert_eq!((ok, refused), (2, 2), "{kinds:?}");
}

/// A statement held up past DB_STATEMENT_TIMEOUT (here by a lock another
/// session holds on the table) is a 504, not a hang.
#[tokio::test]
async fn statement_timeout_is_a_504() {
    let app = TestApp::spawn(&[
        ("SLEEP_SECONDS", "1"),
        ("SLEEP_MAX", "1"),
        ("DB_STATEMENT_TIMEOUT", "1.5"),
    ])
    .await;
    let locker = Cluster::shared().spawn_sql(
        &app.db_name,
        "BEGIN; LOCK TABLE todos IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;",
    );

    let started = Instant::now();
    let answer = app.get("/test/postgres/?seconds=0.1").await;
    let elapsed = started.elapsed();

    let body = json(&answer);
    assert_eq!(answer.status, 504, "{body}");
    assert_eq!(body["error"], "statement_timeout");
    assert!(elapsed < Duration::from_millis(3000), "{elapsed:?}");
    eprintln!("measured: 504 statement_timeout after {elapsed:?} (DB_STATEMENT_TIMEOUT = 1.5 s)");
    drop(locker);
}
