//! The pool behaves like SQLAlchemy's QueuePool (README, "The pool arithmetic"),
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

/// While requests wait, a finished request's connection goes straight to the
/// next one, not back through the pool: `DB_POOL_RECYCLE` must still replace
/// it however long the queue lasts, and once the queue is gone it is idle in
/// the pool again.
#[tokio::test]
async fn a_connection_passed_between_waiting_requests_is_still_recycled_and_returned() {
    let cluster = Cluster::shared();
    let app = TestApp::spawn(&[
        ("DB_POOL_SIZE", "1"),
        ("DB_MAX_OVERFLOW", "0"),
        ("DB_POOL_RECYCLE", "1"),
    ])
    .await;
    wait_for_backends(cluster, &app.db_name, 1, Duration::from_secs(5)).await;

    // 24 requests of 0.15 s on one connection: for 3.6 s, some always wait.
    let answers = spawn_gets(&app.url("/test/postgres/?seconds=0.15"), 24);
    let mut served_by = BTreeSet::new();
    for a in answers {
        let a = a.await.unwrap();
        assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
        served_by.insert(header(&a, "X-Backend-Pid").unwrap().parse::<u32>().unwrap());
    }
    assert!(
        served_by.len() >= 2,
        "DB_POOL_RECYCLE = 1 replaced no connection in 3.6 s of waiting requests: \
         one backend served them all ({served_by:?})"
    );

    crate::helpers::eventually(
        "the connection idle in the pool",
        Duration::from_secs(2),
        async || {
            let live = json(&app.get("/pool").await)["live"].clone();
            match (
                &live["open"],
                &live["idle"],
                &live["in_use"],
                &live["waiting"],
            ) {
                (o, i, u, w) if o == 1 && i == 1 && u == 0 && w == 0 => Ok(()),
                _ => Err(live.to_string()),
            }
        },
    )
    .await;
    wait_for_backends(cluster, &app.db_name, 1, Duration::from_secs(2)).await;
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

/// One answer of a burst: when it came (seconds after the burst began),
/// its status and, for an error, its kind.
struct Timed {
    at_s: f64,
    status: u16,
    kind: Option<String>,
}

/// `n` requests of `seconds` at once; their answers, in arrival order.
async fn burst(app: &TestApp, n: usize, seconds: f64) -> Vec<Timed> {
    let started = Instant::now();
    let url = app.url(&format!("/test/postgres/?seconds={seconds}"));
    let timed: Vec<_> = spawn_gets(&url, n)
        .into_iter()
        .map(|a| {
            tokio::spawn(async move {
                let a = a.await.unwrap();
                let at_s = started.elapsed().as_secs_f64();
                let kind =
                    (a.status != 200).then(|| json(&a)["error"].as_str().unwrap().to_owned());
                Timed {
                    at_s,
                    status: a.status,
                    kind,
                }
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in timed {
        out.push(t.await.unwrap());
    }
    out.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    out
}

/// Served answers counted by wave: wave k answers at about k × `seconds`.
fn served_waves(answers: &[Timed], seconds: f64) -> Vec<usize> {
    let mut waves = Vec::new();
    for a in answers.iter().filter(|a| a.status == 200) {
        let k = (a.at_s / seconds).round().max(1.0) as usize;
        if waves.len() < k {
            waves.resize(k, 0);
        }
        waves[k - 1] += 1;
    }
    waves
}

fn of_kind<'a>(answers: &'a [Timed], kind: &'a str) -> impl Iterator<Item = &'a Timed> + 'a {
    answers
        .iter()
        .filter(move |a| a.kind.as_deref() == Some(kind))
}

/// A private cluster where the service's pool may use 6 slots: 10 − 3
/// reserved for superusers − 1 for the service's monitor connection.
async fn cluster_granting_six() -> crate::helpers::Cluster {
    tokio::task::spawn_blocking(|| Cluster::start(&[("max_connections", "10")]))
        .await
        .unwrap()
}

/// QueuePool at the limit (the README's `client 100` in small): pool 6 + 6,
/// 6 slots granted, 20 requests. The 12 that find the pool below its max
/// try to connect; PostgreSQL refuses 6 of them, answered at once. The 8
/// that found the pool at its max wait for returned connections and are
/// served by the 6 that did open: 6 at 1 s, 6 at 2 s, 2 at 3 s — with the
/// default `DB_POOL_TIMEOUT` of 30 s.
#[tokio::test]
async fn at_the_limit_only_refused_attempts_fail_and_the_rest_are_served_in_waves() {
    let cluster = cluster_granting_six().await;
    let app = TestApp::spawn_on(&cluster, &[("DB_POOL_SIZE", "6"), ("DB_MAX_OVERFLOW", "6")]).await;
    assert_eq!(json(&app.get("/pool").await)["concurrency"], 6);

    let answers = burst(&app, 20, 1.0).await;
    let refused: Vec<f64> = of_kind(&answers, "db_refused").map(|a| a.at_s).collect();
    assert_eq!(refused.len(), 6, "refused at {refused:?}");
    let refused_by = refused.iter().copied().fold(0.0, f64::max);
    assert!(refused_by < 1.0, "refusals came by {refused_by:.2} s");
    assert_eq!(served_waves(&answers, 1.0), [6, 6, 2]);
    let last = answers.last().unwrap().at_s;
    assert!(last < 3.5, "the last wave came at {last:.2} s");
    eprintln!(
        "measured: pool 6+6, 6 granted, 20 requests of 1 s: 6 × db_refused by {refused_by:.2} s, \
         then 6/6/2 served, the last at {last:.2} s"
    );
}

/// The same burst twice the pool's max, with a `DB_POOL_TIMEOUT` that falls
/// between the second and the third wave's hand-over: the third wave's
/// requests get `pool_timeout` at the timeout, not a refusal.
#[tokio::test]
async fn a_pool_timeout_cuts_the_third_wave() {
    let cluster = cluster_granting_six().await;
    let app = TestApp::spawn_on(
        &cluster,
        &[
            ("DB_POOL_SIZE", "6"),
            ("DB_MAX_OVERFLOW", "6"),
            ("DB_POOL_TIMEOUT", "1.5"),
        ],
    )
    .await;
    let answers = burst(&app, 24, 1.0).await;
    assert_eq!(of_kind(&answers, "db_refused").count(), 6);
    assert_eq!(served_waves(&answers, 1.0), [6, 6]);
    let timeouts: Vec<f64> = of_kind(&answers, "pool_timeout").map(|a| a.at_s).collect();
    assert_eq!(timeouts.len(), 6, "timeouts at {timeouts:?}");
    assert!(
        timeouts.iter().all(|t| (1.4..2.0).contains(t)),
        "timeouts at {timeouts:?}"
    );
}

/// A kept pool larger than the server: pool 8 + 0, 6 slots granted. The
/// service is ready at once with the 6 PostgreSQL grants, `/pool` says so,
/// and a burst of 10 is answered as QueuePool would: 6 take the kept
/// connections, the 2 that find a missing slot try it and are refused at
/// once, the other 2 wait for a returned connection.
#[tokio::test]
async fn a_kept_pool_larger_than_the_server_is_ready_at_once_and_tells_the_truth() {
    let cluster = cluster_granting_six().await;
    let started = Instant::now();
    let app = TestApp::spawn_on(&cluster, &[("DB_POOL_SIZE", "8"), ("DB_MAX_OVERFLOW", "0")]).await;
    let ready_after = started.elapsed();
    assert!(
        ready_after < Duration::from_secs(10),
        "ready after {ready_after:?}"
    );
    let pool = json(&app.get("/pool").await);
    assert_eq!(pool["live"]["open"], 6, "{pool}");
    assert_eq!(
        service_pids(&cluster, &app.db_name).len(),
        6,
        "PostgreSQL's count of the service's backends"
    );

    let answers = burst(&app, 10, 1.0).await;
    let refused: Vec<f64> = of_kind(&answers, "db_refused").map(|a| a.at_s).collect();
    assert_eq!(refused.len(), 2, "refused at {refused:?}");
    assert!(refused.iter().all(|&t| t < 1.0), "refused at {refused:?}");
    assert_eq!(served_waves(&answers, 1.0), [6, 2]);
    eprintln!(
        "measured: pool 8+0 with 6 granted: ready after {ready_after:?}; {} refused, then {:?} served",
        refused.len(),
        served_waves(&answers, 1.0)
    );
}
