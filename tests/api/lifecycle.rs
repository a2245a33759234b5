//! Migration, /pool, readiness, and graceful shutdown of the real binary.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::helpers::{
    eventually, get_url, json, spawn_gets, try_get, wait_for_live, Cluster, ServeProcess, TestApp,
};

const BIN: &str = env!("CARGO_BIN_EXE_poolscope");

fn poolscope(args: &[&str], database_url: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info");
    cmd
}

#[test]
fn migrate_is_idempotent() {
    let cluster = Cluster::shared();
    let url = cluster.create_database();
    let db = url.rsplit('/').next().unwrap();
    for _ in 0..2 {
        let out = poolscope(&["migrate"], &url).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(cluster.sql(db, "SELECT count(*) FROM todos"), "50");
    assert_eq!(
        cluster.sql(db, "SELECT title, done, priority FROM todos WHERE id = 8"),
        "test for postgres,this is 7|f|2"
    );
}

#[tokio::test]
async fn pool_reports_configuration_server_limits_and_live_state() {
    let app = TestApp::spawn(&[
        ("DB_POOL_SIZE", "3"),
        ("DB_MAX_OVERFLOW", "2"),
        ("DB_POOL_TIMEOUT", "7"),
    ])
    .await;

    let idle = json(&app.get("/pool").await);
    assert_eq!(idle["configured"]["pool_size"], 3);
    assert_eq!(idle["configured"]["max_overflow"], 2);
    assert_eq!(idle["configured"]["pool_max"], 5);
    assert_eq!(idle["configured"]["pool_timeout_s"], 7.0);
    let max_connections: u64 = Cluster::shared()
        .sql("postgres", "SHOW max_connections")
        .parse()
        .unwrap();
    assert_eq!(idle["postgres"]["max_connections"], max_connections);
    assert_eq!(idle["concurrency"], 5, "{idle}");
    assert_eq!(idle["live"]["in_use"], 0);

    let url = app.url("/test/postgres/?seconds=1");
    let requests = spawn_gets(&url, 7);
    // Every connection serving (the overflow's logins done), two queued.
    app.wait_for_live("in_use", 5, Duration::from_secs(2)).await;
    app.wait_for_live("waiting", 2, Duration::from_secs(1))
        .await;
    let during = json(&app.get("/pool").await);
    for r in requests {
        assert_eq!(r.await.unwrap().status, 200);
    }
    assert_eq!(during["live"]["in_use"], 5, "{during}");
    assert_eq!(during["live"]["waiting"], 2, "{during}");
    assert_eq!(during["live"]["open"], 5, "{during}");
    assert_eq!(during["postgres"]["backends_service"], 5, "{during}");
}

async fn get_url_status(url: String) -> u16 {
    get_url(&url).await.status
}

/// SIGTERM: the request in flight finishes, new connections are refused,
/// the process exits 0 and its backends are gone.
#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let cluster = Cluster::shared();
    let url = cluster.create_database();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let served = ServeProcess::start(&url, &[("SHUTDOWN_GRACE", "10")], false).await;

    let in_flight = tokio::spawn(get_url_status(format!(
        "{}/test/postgres/?seconds=1.5",
        served.base
    )));
    wait_for_live(&served.base, "in_use", 1, Duration::from_secs(2)).await;
    served.sigterm();

    // New connections are refused at once, while the one in flight goes on.
    let healthz = format!("{}/healthz", served.base);
    eventually(
        "new requests refused during shutdown",
        Duration::from_secs(1),
        async || match try_get(&healthz, Duration::from_secs(2)).await {
            Err(_refused) => Ok(()),
            Ok(answer) => Err(format!("{} accepted", answer.status)),
        },
    )
    .await;
    assert!(
        !in_flight.is_finished(),
        "the in-flight request ended early"
    );
    assert_eq!(in_flight.await.unwrap(), 200);
    assert_eq!(served.wait().await.status.code(), Some(0));

    let exited = Instant::now();
    loop {
        let left = cluster.sql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}'"),
        );
        if left == "0" {
            eprintln!("measured: SIGTERM drained the in-flight request (200), exit 0, backends gone {:?} after exit", exited.elapsed());
            break;
        }
        assert!(
            exited.elapsed() < Duration::from_secs(2),
            "{left} backends left after exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// SIGTERM with a request longer than SHUTDOWN_GRACE: the service waits the
/// grace, says it is dropping what is left, and exits 0 without waiting for
/// the statement; an idle keep-alive connection does not hold it up.
#[tokio::test]
async fn sigterm_gives_up_on_requests_after_the_grace() {
    let url = Cluster::shared().create_database();
    let served = ServeProcess::start(&url, &[("SHUTDOWN_GRACE", "1")], true).await;
    // An idle keep-alive connection, and a request that would take 10 s.
    let idle = reqwest::Client::new();
    assert!(idle
        .get(format!("{}/healthz", served.base))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    let long = format!("{}/test/postgres/?seconds=10", served.base);
    let in_flight = tokio::spawn(async move { try_get(&long, Duration::from_secs(15)).await });
    wait_for_live(&served.base, "in_use", 1, Duration::from_secs(2)).await;
    let signalled = Instant::now();
    served.sigterm();
    let out = served.wait().await;
    let took = signalled.elapsed();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "exited {took:?} after SIGTERM with SHUTDOWN_GRACE=1"
    );
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(
        logs.contains("requests still running after SHUTDOWN_GRACE"),
        "{logs}"
    );
    // The connection was dropped: no answer at all.
    assert!(in_flight.await.unwrap().is_err());
    eprintln!("measured: SIGTERM with a 10 s request in flight and SHUTDOWN_GRACE=1: exit 0 after {took:?}");
}
