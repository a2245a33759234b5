//! The pool's runtime limit against the real service: off unless enabled,
//! only lower, a lease that runs out unless renewed.

use std::time::{Duration, Instant};

use crate::helpers::{json, spawn_gets, TestApp};

async fn send(app: &TestApp, method: reqwest::Method, path: &str) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .request(method, app.url(path))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

async fn limit_now(app: &TestApp) -> serde_json::Value {
    json(&app.get("/pool").await)["limit"].clone()
}

#[tokio::test]
async fn the_limit_cannot_be_changed_unless_enabled() {
    let app = TestApp::spawn(&[]).await;

    let (status, body) = send(&app, reqwest::Method::POST, "/pool/limit?max=1").await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    assert!(body["message"]
        .as_str()
        .unwrap()
        .contains("POOL_LIMIT_CONTROL=true"));
    assert_eq!(
        send(&app, reqwest::Method::DELETE, "/pool/limit").await.0,
        403
    );
    let limit = limit_now(&app).await;
    assert_eq!(
        (limit["control"].as_bool(), limit["limit"].as_u64()),
        (Some(false), Some(20))
    );
}

#[tokio::test]
async fn a_lowered_limit_holds_requests_back_until_its_lease_runs_out() {
    let app = TestApp::spawn(&[
        ("POOL_LIMIT_CONTROL", "true"),
        ("DB_POOL_SIZE", "2"),
        ("DB_MAX_OVERFLOW", "2"),
    ])
    .await;
    for bad in ["max=0", "max=5", "max=abc", "max=2&ttl=0"] {
        let (status, body) = send(&app, reqwest::Method::POST, &format!("/pool/limit?{bad}")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("bad_request")),
            "{bad}"
        );
    }

    let (status, body) = send(&app, reqwest::Method::POST, "/pool/limit?max=1&ttl=3").await;
    assert_eq!((status, body["limit"].as_u64()), (200, Some(1)), "{body}");
    assert!(body["lease_expires_in_s"].as_f64().unwrap() > 2.0, "{body}");
    let started = Instant::now();
    let answers = spawn_gets(&app.url("/test/postgres/?seconds=0.4"), 3);
    let mut waits = Vec::new();
    for a in answers {
        let a = a.await.unwrap();
        assert_eq!(a.status, 200);
        waits.push(crate::helpers::pool_wait_ms(&a).unwrap());
    }
    // One at a time: 3 × 0.4 s, and the last one says it waited for the pool.
    assert!(
        started.elapsed() >= Duration::from_millis(1150),
        "{:?}",
        started.elapsed()
    );
    waits.sort_by(f64::total_cmp);
    assert!(waits[2] >= 700.0, "{waits:?}");

    // Not renewed: back to the configured max by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while limit_now(&app).await["limit"] != 4 {
        assert!(Instant::now() < deadline, "the lease did not run out");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(limit_now(&app).await["lease_expires_in_s"].is_null());

    // DELETE gives the max back at once.
    send(&app, reqwest::Method::POST, "/pool/limit?max=2&ttl=60").await;
    let (status, body) = send(&app, reqwest::Method::DELETE, "/pool/limit").await;
    assert_eq!((status, body["limit"].as_u64()), (200, Some(4)));
}
