//! Faults survived and nothing leaked: abandoned requests, secrets in logs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use poolscope::client::http::{self, Target};

use crate::helpers::{free_port, Cluster, TestApp};

/// Backends of this database still running the demo's sleep.
fn sleeping_backends(cluster: &Cluster, db: &str) -> u32 {
    cluster
        .sql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
                 AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()"
            ),
        )
        .parse()
        .unwrap()
}

/// Clients that give up must not leave statements sleeping on the server
/// holding pool slots: sqlx does not cancel a dropped statement by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_requests_free_their_backend_and_pool_slot() {
    let cluster = Cluster::shared();
    let app = TestApp::spawn(&[("DB_POOL_SIZE", "5"), ("DB_MAX_OVERFLOW", "5")]).await;
    let target = Target::parse(&app.url("/test/postgres/?seconds=30")).unwrap();

    let clients: Vec<_> = (0..20)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { http::get(&target, Duration::from_secs(1)).await })
        })
        .collect();
    for c in clients {
        assert!(
            c.await.unwrap().is_err(),
            "a 30 s request answered within 1 s"
        );
    }
    let gave_up = Instant::now();

    loop {
        let left = sleeping_backends(cluster, &app.db_name);
        if left == 0 {
            break;
        }
        assert!(
            gave_up.elapsed() < Duration::from_secs(2),
            "{left} backends still sleeping 2 s after the clients left: {}",
            cluster.sql(
                "postgres",
                &format!(
                    "SELECT pid, state, wait_event FROM pg_stat_activity WHERE datname = '{}'",
                    app.db_name
                )
            )
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    let answer = app.get("/test/postgres/?seconds=0").await;
    assert_eq!(answer.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );

    // 200 more abandoned requests leave the server at its resting count.
    for _ in 0..10 {
        let batch: Vec<_> = (0..20)
            .map(|_| {
                let target = target.clone();
                tokio::spawn(async move { http::get(&target, Duration::from_millis(300)).await })
            })
            .collect();
        for c in batch {
            assert!(c.await.unwrap().is_err());
        }
    }
    let settle = Instant::now();
    loop {
        let sleeping = sleeping_backends(cluster, &app.db_name);
        let service: u32 = cluster
            .sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND application_name = 'poolscope'", app.db_name))
            .parse()
            .unwrap();
        if sleeping == 0 && service <= 10 {
            break;
        }
        assert!(
            settle.elapsed() < Duration::from_secs(3),
            "{sleeping} sleeping, {service} service backends"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.get("/test/postgres/?seconds=0").await.status, 200);
}

/// Even at RUST_LOG=trace, with SQL logging on, no line holds the password.
#[tokio::test]
async fn no_log_line_holds_the_password_even_at_trace() {
    let cluster = Cluster::shared();
    let url = cluster.create_database();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_poolscope"))
        .arg("serve")
        .current_dir(std::env::temp_dir())
        .env_clear()
        .env("DATABASE_URL", &url)
        .env("APP_HOST", "127.0.0.1")
        .env("APP_PORT", port.to_string())
        .env("RUST_LOG", "trace")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http::get(
            &Target::parse(&format!("{base}/readyz")).unwrap(),
            Duration::from_secs(2),
        )
        .await;
        if matches!(ready, Ok(ref a) if a.status == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for path in [
        "/test/postgres/?seconds=0",
        "/pool",
        "/test/postgres/?seconds=abc",
    ] {
        let _ = http::get(
            &Target::parse(&format!("{base}{path}")).unwrap(),
            Duration::from_secs(5),
        )
        .await;
    }
    // SAFETY: kill(2) with a valid pid and signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        logs.lines().count() > 20,
        "expected plenty of trace output:\n{logs}"
    );
    assert!(logs.contains("pool configured"), "{logs}");
    assert!(
        !logs.contains(crate::helpers::SERVICE_PASSWORD),
        "password in logs:\n{logs}"
    );
}
