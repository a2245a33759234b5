//! The pool behaves like SQLAlchemy's QueuePool (SPEC.md, "Pool semantics"),
//! checked on a real cluster: kept connections stay, overflow goes, a
//! refusal is answered at once, and the client's verdict tells a run that
//! follows the arithmetic from one that does not.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::client::{client, report};
use crate::helpers::{header, json, spawn_gets, Cluster, TestApp};

/// Backend pids of the service's pooled connections in `db`.
fn service_pids(cluster: &Cluster, db: &str) -> BTreeSet<u32> {
    cluster
        .sql(
            "postgres",
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE datname = '{db}' \
                 AND application_name LIKE 'poolscope:%'"
            ),
        )
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// Polls until the service holds `n` backends; returns their pids.
async fn wait_for_backends(
    cluster: &Cluster,
    db: &str,
    n: usize,
    limit: Duration,
) -> BTreeSet<u32> {
    let started = Instant::now();
    loop {
        let pids = service_pids(cluster, db);
        if pids.len() == n {
            return pids;
        }
        assert!(
            started.elapsed() < limit,
            "the service holds {} backends, expected {n} within {limit:?}",
            pids.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn kept_connections_stay_and_overflow_closes_when_returned() {
    let cluster = Cluster::shared();
    let app = TestApp::spawn(&[("DB_POOL_SIZE", "3"), ("DB_MAX_OVERFLOW", "3")]).await;
    let kept = wait_for_backends(cluster, &app.db_name, 3, Duration::from_secs(5)).await;

    // One wave that needs all six connections.
    let answers = spawn_gets(&app.url("/test/postgres/?seconds=1"), 6);
    let mut served_by = BTreeSet::new();
    for a in answers {
        let a = a.await.unwrap();
        assert_eq!(a.status, 200);
        served_by.insert(header(&a, "X-Backend-Pid").unwrap().parse::<u32>().unwrap());
    }
    assert_eq!(served_by.len(), 6, "six backends served the wave");
    assert!(kept.is_subset(&served_by), "{kept:?} ⊄ {served_by:?}");

    // The overflow closes on return (DB_OVERFLOW_IDLE_TIMEOUT = 0); the
    // kept three are the very same backends, and stay through idle time.
    let after = wait_for_backends(cluster, &app.db_name, 3, Duration::from_secs(2)).await;
    assert_eq!(after, kept, "the kept connections were replaced");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        service_pids(cluster, &app.db_name),
        kept,
        "churn while idle"
    );
    let pool = json(&app.get("/pool").await);
    assert_eq!(pool["live"]["open"], 3, "{pool}");
}

#[tokio::test]
async fn overflow_idles_for_its_timeout_then_closes() {
    let cluster = Cluster::shared();
    let app = TestApp::spawn(&[
        ("DB_POOL_SIZE", "2"),
        ("DB_MAX_OVERFLOW", "2"),
        ("DB_OVERFLOW_IDLE_TIMEOUT", "1.5"),
    ])
    .await;
    wait_for_backends(cluster, &app.db_name, 2, Duration::from_secs(5)).await;
    for a in spawn_gets(&app.url("/test/postgres/?seconds=0.5"), 4) {
        assert_eq!(a.await.unwrap().status, 200);
    }
    let returned = Instant::now();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        service_pids(cluster, &app.db_name).len(),
        4,
        "closed before its idle timeout"
    );
    let kept = wait_for_backends(cluster, &app.db_name, 2, Duration::from_secs(4)).await;
    let took = returned.elapsed();
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    eprintln!(
        "measured: overflow closed {took:?} after its return (DB_OVERFLOW_IDLE_TIMEOUT 1.5 s)"
    );
    // sqlx's idle reaper would now replace the kept ones every 1.5 s; ours does not.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        service_pids(cluster, &app.db_name),
        kept,
        "the kept connections churned"
    );
}

/// The README's database limit on a small scale: 10 slots − 3 reserved − 1
/// monitor = 6 for a pool of 3 + 5. The two requests beyond are refused at
/// once, with the default DB_POOL_TIMEOUT of 30 s, and the verdict agrees.
#[tokio::test]
async fn a_refused_connection_is_answered_at_once_and_the_verdict_matches() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&[("max_connections", "10")]))
        .await
        .unwrap();
    let app = TestApp::spawn_on(&cluster, &[("DB_POOL_SIZE", "3"), ("DB_MAX_OVERFLOW", "5")]).await;
    let pool = json(&app.get("/pool").await);
    assert_eq!(pool["concurrency"], 6, "{pool}");

    let r = report(
        &client(
            &["8", "--seconds", "2", "--json"],
            &app.url("/test/postgres/"),
        )
        .await,
    );
    assert_eq!(r["statuses"]["200"], 6, "{r}");
    assert_eq!(r["errors"]["db_refused"], 2, "{r}");
    let waves = r["waves"].as_array().unwrap();
    let refused_wave = &waves[0];
    assert_eq!(
        (refused_wave["size"].as_u64(), refused_wave["ok"].as_u64()),
        (Some(2), Some(0)),
        "{r}"
    );
    let refused_by = refused_wave["last_s"].as_f64().unwrap();
    assert!(refused_by < 1.0, "refusals came by {refused_by} s: {r}");
    assert_eq!(r["expectation"]["refused"], 2, "{r}");
    assert_eq!(r["expectation"]["limited_by"], "PostgreSQL", "{r}");
    assert_eq!(
        r["expectation"]["verdict"], "matches (limited by PostgreSQL)",
        "{r}"
    );
    eprintln!(
        "measured: 2 × db_refused by {refused_by:.2} s, 6 × 200 at {:.2} s",
        waves[1]["last_s"]
    );

    let metrics = String::from_utf8(app.get("/metrics").await.body.to_vec()).unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("poolscope_pool_refusals_total{") && l.ends_with(" 2")),
        "{metrics}"
    );
}

/// The verdict is not a rubber stamp: a server slower than its `/pool`
/// promises (a lock held elsewhere delays every statement) differs.
#[tokio::test]
async fn a_server_slower_than_promised_gets_differs() {
    let cluster = Cluster::shared();
    let app = TestApp::spawn(&[("DB_POOL_SIZE", "2"), ("DB_MAX_OVERFLOW", "0")]).await;
    // Held for 2.5 s from now: the route reads `todos` after its sleep.
    let _lock = cluster.spawn_sql(
        &app.db_name,
        "BEGIN; LOCK TABLE todos IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(2.5); COMMIT;",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let r = report(
        &client(
            &["4", "--seconds", "0.5", "--json"],
            &app.url("/test/postgres/"),
        )
        .await,
    );
    assert_eq!(r["statuses"]["200"], 4, "{r}");
    let verdict = r["expectation"]["verdict"].as_str().unwrap();
    assert!(verdict.starts_with("differs: "), "{verdict}");
    assert_eq!(r["expectation"]["matches"], false, "{r}");
    eprintln!("measured: verdict under a held lock: {verdict}");
}

/// The reserved slots are reserved from the service's role: a superuser may
/// use them, so the arithmetic must not count them against it.
#[tokio::test]
async fn reserved_slots_count_only_against_roles_that_may_not_use_them() {
    let cluster = Cluster::shared();
    let ordinary = TestApp::spawn(&[]).await;
    let pool = json(&ordinary.get("/pool").await);
    assert_eq!(pool["postgres"]["reserved"], 3, "{pool}");

    let role = format!("su_{}", crate::helpers::unique_suffix());
    cluster.sql(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN SUPERUSER PASSWORD 'su-pw'"),
    );
    let url = format!(
        "postgres://{role}:su-pw@{}:{}/{}",
        cluster.host, cluster.port, ordinary.db_name
    );
    let superuser = TestApp::spawn_with_url(&url, &[]).await;
    superuser.wait_ready(Duration::from_secs(30)).await;
    let pool = json(&superuser.get("/pool").await);
    assert_eq!(pool["postgres"]["reserved"], 0, "{pool}");
    let (max, total) = (
        pool["postgres"]["max_connections"].as_u64().unwrap(),
        pool["postgres"]["backends_total"].as_u64().unwrap(),
    );
    let service = pool["postgres"]["backends_service_all"].as_u64().unwrap();
    assert_eq!(
        pool["postgres"]["grantable_to_service"].as_u64().unwrap(),
        max - (total - service),
        "{pool}"
    );
}
