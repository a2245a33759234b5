//! `/readyz` straight to PostgreSQL: ready while the pool is busy (the
//! monitor connection outside the pool answers), not ready while PostgreSQL
//! is down, saying so, and ready again once it is back. (Through PgBouncer:
//! `pgbouncer.rs`.)

use std::time::{Duration, Instant};

use crate::helpers::{get_url, json, spawn_gets, try_get, Cluster, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn straight_to_postgres_a_busy_pool_is_ready_and_a_stopped_server_is_not() {
    let cluster = Cluster::start(&[("max_connections", "30")]);
    let app = TestApp::spawn_on(&cluster, &[("DB_POOL_SIZE", "1"), ("DB_MAX_OVERFLOW", "0")]).await;

    let busy = spawn_gets(&app.url("/test/postgres/?seconds=2"), 3);
    let deadline = Instant::now() + Duration::from_secs(2);
    while json(&app.get("/pool").await)["live"]["waiting"] != 2 {
        assert!(Instant::now() < deadline, "the requests never queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        let answer = app.get("/readyz").await;
        assert_eq!(answer.status, 200, "busy pool: {}", json(&answer));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for r in busy {
        assert_eq!(r.await.unwrap().status, 200);
    }

    cluster.stop_for_now();
    let started = Instant::now();
    let answer = loop {
        let answer = get_url(&app.url("/readyz")).await;
        if answer.status == 503 {
            break answer;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "still ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let reason = json(&answer)["reason"].as_str().unwrap().to_owned();
    assert!(reason.contains("PostgreSQL"), "{reason}");
    assert!(!reason.contains("PgBouncer"), "{reason}");

    cluster.start_again();
    let back = Instant::now();
    while !matches!(try_get(&app.url("/readyz"), Duration::from_secs(5)).await, Ok(ref a) if a.status == 200)
    {
        assert!(back.elapsed() < Duration::from_secs(5), "not ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "measured: /readyz 503 while PostgreSQL was stopped ({reason}), 200 {:?} after it accepted again",
        back.elapsed()
    );
}
