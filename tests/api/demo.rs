//! The demo route: exact body, headers, and the waves the pool makes.

use std::time::{Duration, Instant};

use crate::helpers::{header, json, pool_wait_ms, TestApp};
use serde_json::json;

#[tokio::test]
async fn answers_the_50_seed_rows_with_timing_headers() {
    let app = TestApp::spawn(&[]).await;

    let answer = app.get("/test/postgres/?seconds=0").await;

    assert_eq!(answer.status, 200);
    let expected: Vec<_> = (0..50)
        .map(|i| {
            json!({
                "id": i + 1,
                "title": format!("test for postgres,this is {i}"),
                "done": i % 2 == 0,
                "priority": i % 5,
            })
        })
        .collect();
    assert_eq!(json(&answer), json!({ "data": expected }));
    let timing = header(&answer, "server-timing").expect("Server-Timing header");
    assert!(
        timing.contains("pool;dur=") && timing.contains("db;dur="),
        "{timing}"
    );
    let pid: i32 = header(&answer, "x-backend-pid").unwrap().parse().unwrap();
    assert!(pid > 0);
}

#[tokio::test]
async fn sleeps_in_postgres_for_the_requested_seconds() {
    let app = TestApp::spawn(&[]).await;

    let started = Instant::now();
    let answer = app.get("/test/postgres/?seconds=0.6").await;
    let elapsed = started.elapsed();

    assert_eq!(answer.status, 200);
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let timing = header(&answer, "server-timing").unwrap();
    let db_ms: f64 = timing
        .split("db;dur=")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(db_ms >= 600.0, "{timing}");
}

/// Pool 2+1 = 3 at once; 9 requests of 0.5 s must come back in three waves of 3.
#[tokio::test]
async fn pool_size_plus_overflow_sets_the_waves() {
    let app = TestApp::spawn(&[("DB_POOL_SIZE", "2"), ("DB_MAX_OVERFLOW", "1")]).await;
    let url = app.url("/test/postgres/?seconds=0.5");

    let started = Instant::now();
    let requests = (0..9).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let answer = crate::helpers::get_url(&url).await;
            (started.elapsed().as_secs_f64(), answer)
        })
    });
    let mut done = Vec::new();
    for r in requests.collect::<Vec<_>>() {
        done.push(r.await.unwrap());
    }
    done.sort_by(|a, b| a.0.total_cmp(&b.0));

    assert!(done.iter().all(|(_, a)| a.status == 200));
    let times: Vec<f64> = done.iter().map(|(t, _)| *t).collect();
    for (wave, chunk) in times.chunks(3).enumerate() {
        let ideal = 0.5 * (wave + 1) as f64;
        for t in chunk {
            // Never earlier than the sleeps allow; late by at most 0.4 s on a busy machine.
            assert!(
                *t >= ideal - 0.01 && *t < ideal + 0.4,
                "wave {wave}: {times:?}"
            );
        }
    }
    // The later waves waited for a connection, and said so.
    let waits: Vec<f64> = done.iter().map(|(_, a)| pool_wait_ms(a).unwrap()).collect();
    assert!(waits[6..].iter().all(|w| *w >= 900.0), "{waits:?}");
}
