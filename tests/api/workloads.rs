//! The demo route's workloads: `work=cpu` costs PostgreSQL CPU, `work=hot`
//! makes backends wait on each other's row locks; each still answers the 50
//! rows, and bad input is a 400 naming what is allowed.

use std::time::{Duration, Instant};

use crate::helpers::{header, json, spawn_gets, Cluster, TestApp};

/// `db;dur=` from `Server-Timing`, in ms.
fn db_ms(answer: &crate::helpers::Answer) -> f64 {
    let timing = header(answer, "server-timing").expect("Server-Timing");
    timing
        .split("db;dur=")
        .nth(1)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no db;dur in {timing}"))
}

fn assert_the_50_rows(answer: &crate::helpers::Answer) {
    assert_eq!(answer.status, 200, "{:?}", answer.body);
    let body = json(answer);
    let rows = body["data"].as_array().expect("data");
    assert_eq!(rows.len(), 50);
    assert_eq!(rows[7]["title"], "test for postgres,this is 7");
    assert!(header(answer, "x-backend-pid").is_some());
}

#[tokio::test]
async fn cpu_work_costs_the_database_time_in_proportion_to_cpu_rows() {
    let small = TestApp::spawn(&[("CPU_ROWS", "1000")]).await;
    let large = TestApp::spawn(&[("CPU_ROWS", "3000000")]).await;

    let quick = small.get("/test/postgres/?work=cpu").await;
    let slow = large.get("/test/postgres/?work=cpu").await;

    assert_the_50_rows(&quick);
    assert_the_50_rows(&slow);
    // 3 million rows take hundreds of ms of one core; 1,000 rows almost none.
    assert!(db_ms(&slow) >= 100.0, "{}", db_ms(&slow));
    assert!(
        db_ms(&slow) > 5.0 * db_ms(&quick),
        "{} vs {}",
        db_ms(&slow),
        db_ms(&quick)
    );
}

#[tokio::test]
async fn hot_work_updates_one_of_hot_rows_per_request() {
    let cluster = Cluster::shared();
    let app = TestApp::spawn(&[("HOT_ROWS", "3")]).await;

    let answers = spawn_gets(&app.url("/test/postgres/?work=hot"), 20);
    for a in answers {
        assert_the_50_rows(&a.await.unwrap());
    }

    let counted = cluster.sql(
        &app.db_name,
        "SELECT count(*) || ' ' || sum(hits) || ' ' || max(id) || ' ' || min(id) FROM hot_rows",
    );
    let [rows, hits, max, min]: [u64; 4] = counted
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect::<Vec<_>>()
        .try_into()
        .unwrap();
    assert_eq!(hits, 20, "{counted}");
    assert!(rows <= 3 && min >= 1 && max <= 3, "{counted}");
}

/// A row lock held elsewhere makes the request wait for it, as a lock
/// (`wait_event_type = 'Lock'`) — what the sweep counts as lock waiters.
#[tokio::test]
async fn hot_work_waits_on_a_row_lock_held_elsewhere() {
    let cluster = Cluster::shared();
    let app = TestApp::spawn(&[("HOT_ROWS", "1")]).await;
    assert_the_50_rows(&app.get("/test/postgres/?work=hot").await);
    let holder = cluster.spawn_sql(
        &app.db_name,
        "BEGIN; UPDATE hot_rows SET hits = hits WHERE id = 1; SELECT pg_sleep(60); COMMIT;",
    );
    // The holder has the row lock: it sleeps.
    let deadline = Instant::now() + Duration::from_secs(20);

    let waiting = spawn_gets(&app.url("/test/postgres/?work=hot"), 1);
    let lock_waiters = "SELECT count(*) FROM pg_stat_activity \
        WHERE application_name LIKE 'poolscope:%' AND wait_event_type = 'Lock'";
    while cluster.sql(&app.db_name, lock_waiters) != "1" {
        assert!(Instant::now() < deadline, "no backend waited on the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The service's /pool says so too, from its monitor connection, with
    // the probe's round trip.
    let activity = loop {
        let pool = json(&app.get("/pool").await);
        let activity = pool["postgres"]["activity"].clone();
        if activity["lock_waiters"].as_u64() >= Some(1) {
            break activity;
        }
        assert!(
            Instant::now() < deadline,
            "/pool saw no lock waiter: {pool}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(activity["active"].as_u64() >= Some(1), "{activity}");
    assert!(activity["probe_us"].as_u64() > Some(0), "{activity}");
    // Ends the holder's transaction (killing psql alone would leave its
    // backend sleeping with the lock for the rest of the minute).
    cluster.sql(
        &app.db_name,
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'psql' \
           AND pid <> pg_backend_pid()",
    );
    drop(holder);

    for a in waiting {
        assert_the_50_rows(&a.await.unwrap());
    }
    let hits = cluster.sql(&app.db_name, "SELECT hits FROM hot_rows WHERE id = 1");
    assert_eq!(hits, "2");
}

#[tokio::test]
async fn bad_work_is_a_400_naming_what_is_allowed() {
    let app = TestApp::spawn(&[]).await;

    for bad in [
        "/test/postgres/?work=disk",
        "/test/postgres/?work=",
        "/test/postgres/?work=CPU",
    ] {
        let answer = app.get(bad).await;
        assert_eq!(answer.status, 400, "{bad}");
        let body = json(&answer);
        assert_eq!(body["error"], "bad_request", "{bad}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.starts_with("work: expected one of sleep, cpu, hot, got"),
            "{message}"
        );
    }
    for (bad, says) in [
        ("/test/postgres/?work=cpu&work=hot", "work: give it once"),
        (
            "/test/postgres/?work=cpu&seconds=1",
            "applies to work=sleep only",
        ),
        (
            "/test/postgres/?work=hot&seconds=abc",
            "applies to work=sleep only",
        ),
        ("/test/postgres/?work=sleep&seconds=abc", "SLEEP_MAX"),
    ] {
        let answer = app.get(bad).await;
        assert_eq!(answer.status, 400, "{bad}");
        let body = json(&answer);
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{bad}: {body}"
        );
    }
    // work=sleep is the default: both answer after the same sleep.
    assert_the_50_rows(&app.get("/test/postgres/?work=sleep&seconds=0").await);
}
