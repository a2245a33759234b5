//! Faults survived and nothing leaked: abandoned requests, secrets in logs.

use std::time::{Duration, Instant};

use crate::helpers::{
    eventually, free_port, spawn_gets, try_get, wait_for_status, Cluster, ServeProcess, TestApp,
};

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
    let target = app.url("/test/postgres/?seconds=30");

    let clients: Vec<_> = (0..20)
        .map(|_| {
            let target = target.clone();
            tokio::spawn(async move { try_get(&target, Duration::from_secs(1)).await })
        })
        .collect();
    for c in clients {
        assert!(
            c.await.unwrap().is_err(),
            "a 30 s request answered within 1 s"
        );
    }
    let gave_up = Instant::now();

    // Every abandoned request is logged and counted, as 499.
    eventually(
        "20 abandoned requests counted as 499",
        Duration::from_secs(2),
        async || {
            let metrics = String::from_utf8(app.get("/metrics").await.body.to_vec()).unwrap();
            let n: f64 = metrics
                .lines()
                .find(|l| {
                    l.starts_with("http_server_request_duration_seconds_count{")
                        && l.contains("http_response_status_code=\"499\"")
                })
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0.0);
            assert!(n <= 20.0, "{n} requests counted as 499, of 20");
            (n == 20.0).then_some(()).ok_or(format!("{n} counted"))
        },
    )
    .await;

    eventually(
        "no statement left sleeping",
        Duration::from_secs(2),
        async || {
            let left = sleeping_backends(cluster, &app.db_name);
            if left == 0 {
                return Ok(());
            }
            Err(format!(
                "{left} backends sleeping: {}",
                cluster.sql(
                    "postgres",
                    &format!(
                        "SELECT pid, state, wait_event FROM pg_stat_activity WHERE datname = '{}'",
                        app.db_name
                    )
                )
            ))
        },
    )
    .await;
    let gone = gave_up.elapsed();
    eprintln!("measured: abandoned statements gone {gone:?} after the clients left");
    assert!(gone < Duration::from_secs(2), "gone only after {gone:?}");
    // The closed connections are being replaced; on a loaded machine opening
    // one takes a moment, hence 1.5 s rather than "instantly".
    let started = Instant::now();
    let answer = app.get("/test/postgres/?seconds=0").await;
    assert_eq!(answer.status, 200);
    eprintln!(
        "measured: next request after the abandonment served in {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    // 200 more abandoned requests leave the server at its resting count.
    for _ in 0..10 {
        let batch: Vec<_> = (0..20)
            .map(|_| {
                let target = target.clone();
                tokio::spawn(async move { try_get(&target, Duration::from_millis(300)).await })
            })
            .collect();
        for c in batch {
            assert!(c.await.unwrap().is_err());
        }
    }
    let mut seen = String::new();
    let settled = eventually(
        "no statement sleeping, at most the pool max of service backends",
        Duration::from_secs(3),
        async || {
            let sleeping = sleeping_backends(cluster, &app.db_name);
            let service: u32 = cluster
                .sql("postgres", &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND application_name LIKE 'poolscope:%'", app.db_name))
                .parse()
                .unwrap();
            seen = format!("{sleeping} sleeping, {service} service backends (pool max 10)");
            (sleeping == 0 && service <= 10)
                .then_some(())
                .ok_or(seen.clone())
        },
    )
    .await;
    eprintln!("measured: after 200 abandoned requests: {seen}, settled in {settled:?}");
    assert_eq!(app.get("/test/postgres/?seconds=0").await.status, 200);
}

/// Even at RUST_LOG=trace no line holds the password, and debug lines are
/// all there.
#[tokio::test]
async fn no_log_line_holds_the_password_even_at_trace() {
    let url = Cluster::shared().create_database();
    let served =
        ServeProcess::start(&url, &[("RUST_LOG", "trace"), ("LOG_FORMAT", "json")], true).await;
    for path in [
        "/test/postgres/?seconds=0",
        "/pool",
        "/test/postgres/?seconds=abc",
    ] {
        let _ = try_get(&format!("{}{path}", served.base), Duration::from_secs(5)).await;
    }
    served.sigterm();
    let out = served.wait().await;
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // "pool warmed up" is the service's own DEBUG line, logged once per start
    // before the startup report: missing it means the filter dropped a line
    // it should have kept (see telemetry/fresh.rs).
    assert!(
        logs.contains("\"level\":\"DEBUG\",\"message\":\"pool warmed up\""),
        "expected the DEBUG line \"pool warmed up\":\n{logs}"
    );
    assert!(logs.contains("pool configured"), "{logs}");
    assert!(
        !logs.contains(crate::helpers::SERVICE_PASSWORD),
        "password in logs:\n{logs}"
    );
}

/// `serve` and `migrate` against a database they cannot use say where and
/// why within DB_CONNECT_TIMEOUT, exit 1, and never print the password.
#[tokio::test]
async fn serve_and_migrate_say_why_the_database_cannot_be_used() {
    let cluster = Cluster::shared();
    let nobody_listens = format!(
        "postgres://{}:{}@127.0.0.1:{}/poolscope",
        crate::helpers::SERVICE_ROLE,
        crate::helpers::SERVICE_PASSWORD,
        free_port()
    );
    let wrong_password = format!(
        "postgres://{}:not-the-password@{}:{}/postgres",
        crate::helpers::SERVICE_ROLE,
        cluster.host,
        cluster.port
    );
    let no_such_database = format!(
        "postgres://{}:{}@{}:{}/no_such_db",
        crate::helpers::SERVICE_ROLE,
        crate::helpers::SERVICE_PASSWORD,
        cluster.host,
        cluster.port
    );
    let cases = [
        (&nobody_listens, "connection refused"),
        (
            &wrong_password,
            &*format!(
                "password authentication failed for user \"{}\"",
                crate::helpers::SERVICE_ROLE
            ),
        ),
        (&no_such_database, "database \"no_such_db\" does not exist"),
    ];
    for (url, cause) in cases {
        for command in ["migrate", "serve"] {
            let started = Instant::now();
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_poolscope"))
                .arg(command)
                .current_dir(std::env::temp_dir())
                .env_clear()
                .env("DATABASE_URL", url)
                .env("DB_CONNECT_TIMEOUT", "2")
                .env("APP_HOST", "127.0.0.1")
                .env("APP_PORT", free_port().to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            while child.try_wait().unwrap().is_none() {
                if started.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    panic!("{command} against {cause}: still running after 10 s");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let out = child.wait_with_output().unwrap();
            let took = started.elapsed();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let all = format!("{stderr}{}", String::from_utf8_lossy(&out.stdout));
            assert_eq!(out.status.code(), Some(1), "{command}: {all}");
            assert!(stderr.contains(cause), "{command}: {stderr}");
            let place = url.split('@').nth(1).unwrap().split('/').next().unwrap();
            assert!(stderr.contains(place), "{command} names {place}: {stderr}");
            for secret in [crate::helpers::SERVICE_PASSWORD, "not-the-password"] {
                assert!(!all.contains(secret), "{command} printed a password: {all}");
            }
            assert!(took < Duration::from_secs(5), "{command}: {took:?}");
            eprintln!(
                "measured: {command} → exit 1 in {took:?}: {}",
                stderr.trim()
            );
        }
    }
}

/// A database restart under load: in-flight requests get a 503 quickly,
/// requests during the outage too, and service resumes within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_database_restart_under_load() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&[]))
        .await
        .unwrap();
    let app = TestApp::spawn_on(&cluster, &[("DB_POOL_SIZE", "5"), ("DB_MAX_OVERFLOW", "5")]).await;
    let url = app.url("/test/postgres/?seconds=5");
    let in_flight: Vec<_> = (0..10)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let answer = crate::helpers::get_url(&url).await;
                (
                    answer.status,
                    crate::helpers::json(&answer)["error"].clone(),
                    started.elapsed(),
                )
            })
        })
        .collect();
    // The stop must find all ten statements running on the server.
    eventually(
        "10 statements running",
        Duration::from_secs(10),
        async || {
            let running = sleeping_backends(&cluster, &app.db_name);
            (running == 10)
                .then_some(())
                .ok_or(format!("{running} running"))
        },
    )
    .await;

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop_for_now();
        cluster
    })
    .await
    .unwrap();
    for r in in_flight {
        let (status, kind, took) = r.await.unwrap();
        assert_eq!(
            (status, kind.as_str()),
            (503, Some("db_unavailable")),
            "{took:?}"
        );
        assert!(took < Duration::from_secs(3), "{took:?}");
    }
    let started = Instant::now();
    let during = app.get("/test/postgres/?seconds=0").await;
    assert_eq!(during.status, 503);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start_again();
        cluster
    })
    .await
    .unwrap();
    let took = wait_for_status(
        &app.url("/test/postgres/?seconds=0"),
        200,
        Duration::from_secs(5),
    )
    .await;
    eprintln!("measured: serving {took:?} after the database came back");
    drop(cluster);
}

/// Five times the pool's capacity: the excess waits DB_POOL_TIMEOUT (±10%)
/// and is told so with the live counts; errors stop once the load drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_times_out_on_time_and_recovers() {
    let app = TestApp::spawn(&[
        ("DB_POOL_SIZE", "2"),
        ("DB_MAX_OVERFLOW", "0"),
        ("DB_POOL_TIMEOUT", "1"),
    ])
    .await;
    let url = app.url("/test/postgres/?seconds=2");
    let requests = spawn_gets(&url, 10);
    let mut waited = Vec::new();
    let mut ok = 0;
    for r in requests {
        let answer = r.await.unwrap();
        if answer.status == 200 {
            ok += 1;
            continue;
        }
        let body = crate::helpers::json(&answer);
        assert_eq!(body["error"], "pool_timeout", "{body}");
        assert_eq!(body["pool"]["in_use"], 2, "{body}");
        waited.push(body["waited_ms"].as_u64().unwrap());
    }
    assert_eq!((ok, waited.len()), (2, 8));
    assert!(
        waited.iter().all(|w| (900..=1100).contains(w)),
        "{waited:?}"
    );
    eprintln!("measured: pool_timeout after {waited:?} ms (DB_POOL_TIMEOUT = 1 s)");

    let started = Instant::now();
    assert_eq!(app.get("/test/postgres/?seconds=0").await.status, 200);
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// Beyond MAX_IN_FLIGHT: an immediate 503 overloaded with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_in_flight_is_an_immediate_503() {
    let app = TestApp::spawn(&[("MAX_IN_FLIGHT", "3")]).await;
    let url = app.url("/test/postgres/?seconds=1");
    let holders = spawn_gets(&url, 3);
    // The three hold their permits once they hold a connection each.
    app.wait_for_live("in_use", 3, Duration::from_secs(5)).await;

    let started = Instant::now();
    let answer = app.get("/test/postgres/?seconds=0").await;
    let took = started.elapsed();

    assert_eq!(answer.status, 503);
    assert_eq!(crate::helpers::json(&answer)["error"], "overloaded");
    assert!(crate::helpers::header(&answer, "retry-after").is_some());
    assert!(took < Duration::from_millis(200), "{took:?}");
    eprintln!("measured: overloaded answered in {took:?}");
    for h in holders {
        assert_eq!(h.await.unwrap().status, 200);
    }
    assert_eq!(app.get("/test/postgres/?seconds=0").await.status, 200);
}

/// A password with URL-special characters works percent-encoded, and raw
/// from a file.
#[tokio::test]
async fn special_passwords_work_encoded_and_from_a_file() {
    let cluster = Cluster::shared();
    let role = format!("special_{}", crate::helpers::unique_suffix());
    let password = "p@ss#w%rd:/x";
    cluster.sql(
        "postgres",
        &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
    );
    let db = format!("d_{role}");
    cluster.sql("postgres", &format!("CREATE DATABASE {db} OWNER {role}"));
    let encoded: String = url::form_urlencoded::byte_serialize(password.as_bytes()).collect();
    let good = format!(
        "postgres://{role}:{encoded}@{}:{}/{db}",
        cluster.host, cluster.port
    );
    let app = TestApp::spawn_with_url(&good, &[]).await;
    app.wait_ready(Duration::from_secs(30)).await;
    assert_eq!(app.get("/test/postgres/?seconds=0").await.status, 200);

    // The same password from a file (a compose secret), unencoded.
    let file = std::env::temp_dir().join(format!("{role}.pw"));
    std::fs::write(&file, format!("{password}\n")).unwrap();
    let no_password = format!("postgres://{role}@{}:{}/{db}", cluster.host, cluster.port);
    let app = TestApp::spawn_with_url(
        &no_password,
        &[("DATABASE_PASSWORD_FILE", file.to_str().unwrap())],
    )
    .await;
    app.wait_ready(Duration::from_secs(30)).await;
    assert_eq!(app.get("/test/postgres/?seconds=0").await.status, 200);
}

/// Wrong methods are a JSON 405.
#[tokio::test]
async fn wrong_method_is_a_json_405() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn(&[]).await;
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"POST /test/postgres/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    assert!(out.contains("\"error\":\"method_not_allowed\""), "{out}");
}

/// The pool grows while the service is busy: every new connection's login
/// (SCRAM, ~820 yields inside sqlx) must not wait behind the busy workers.
/// A login run on them takes 2–3 s here, although the database accepts the
/// connection in ~50 ms, and every request waiting for it waits with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_grows_under_load_without_stalling_requests() {
    let app = TestApp::spawn(&[("DB_POOL_SIZE", "2"), ("DB_MAX_OVERFLOW", "8")]).await;
    app.wait_ready(Duration::from_secs(10)).await;
    let url = app.url("/test/postgres/?seconds=0");
    let busy_for = Duration::from_secs(3);
    let peak = {
        let pool_url = app.url("/pool");
        tokio::spawn(async move {
            let started = Instant::now();
            let mut peak = 0;
            while started.elapsed() < busy_for {
                let pool = crate::helpers::json(&crate::helpers::get_url(&pool_url).await);
                peak = peak.max(pool["live"]["open"].as_u64().unwrap());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    let workers: Vec<_> = (0..40)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut waits = Vec::new();
                while started.elapsed() < busy_for {
                    let sent = started.elapsed().as_secs_f64();
                    let answer = crate::helpers::get_url(&url).await;
                    assert_eq!(
                        answer.status,
                        200,
                        "{}",
                        String::from_utf8_lossy(&answer.body)
                    );
                    let wait = crate::helpers::pool_wait_ms(&answer).expect("Server-Timing");
                    waits.push((wait, sent));
                }
                waits
            })
        })
        .collect();
    let mut waits = Vec::new();
    for w in workers {
        waits.extend(w.await.unwrap());
    }
    assert_eq!(peak.await.unwrap(), 10, "the pool did not grow to its max");
    waits.sort_by(|a, b| b.0.total_cmp(&a.0));
    let longest = waits[0].0;
    let worst: Vec<String> = waits
        .iter()
        .take(5)
        .map(|(wait, sent)| format!("{wait:.0} ms (sent at {sent:.2} s)"))
        .collect();
    eprintln!(
        "measured: {} requests while the pool grew 2 → 10; longest pool waits {}",
        waits.len(),
        worst.join(", ")
    );
    // A login run inside the busy runtime holds up every request waiting for
    // that connection: dozens of waits over a second, which must not happen.
    // A rare single request that waits 0.7–2.6 s inside sqlx's acquire
    // although an idle connection was counted for it is a known defect, not
    // yet understood: tolerated up to 1 % of the requests, not beyond.
    let stalled = waits.iter().filter(|(wait, _)| *wait > 1000.0).count();
    assert!(
        stalled * 100 < waits.len(),
        "{stalled} of {} requests waited over a second for a connection; longest: {}",
        waits.len(),
        worst.join(", ")
    );
    assert!(
        longest < 5000.0,
        "a request waited {longest:.0} ms for a connection"
    );
    // Once the load is gone the overflow is closed again (QueuePool); a
    // close takes a round trip, so allow a moment.
    app.wait_for_live("open", 2, Duration::from_secs(1)).await;
}
