//! Through a real PgBouncer (the machine's `pgbouncer`; Debian 12 has 1.18,
//! so session mode: transaction mode needs 1.21 for sqlx's prepared
//! statements). The test says it skipped when none is installed.
//!
//! PgBouncer 1.18 is told to ignore the `options` startup parameter, in which
//! sqlx sends `statement_timeout` and `client_connection_check_interval`:
//! accepted and not applied, as PgBouncer 1.24 does with them in the stack.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Row};

use crate::helpers::{
    free_port, get_url, json, spawn_gets, try_get, unique_suffix, Cluster, TestApp,
};

/// A PgBouncer in front of one database of the shared cluster.
struct PgBouncer {
    binary: PathBuf,
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
    /// `(uid, gid)` to run as: PgBouncer refuses to run as root.
    user: Option<(u32, u32)>,
}

impl PgBouncer {
    /// `None` (and a note) when no `pgbouncer` is installed.
    fn find() -> Option<PathBuf> {
        let found = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .or_else(|| {
                let out = Command::new("sh")
                    .args(["-c", "command -v pgbouncer"])
                    .output()
                    .ok()?;
                let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
            });
        if found.is_none() {
            eprintln!("skipped: no pgbouncer installed (apt-get install pgbouncer)");
        }
        found
    }

    /// Starts PgBouncer in session mode with `pool_size` server connections
    /// for `db` on the shared cluster, the service's role as its one login
    /// (and `stats_users`, for the admin console).
    fn start(binary: PathBuf, db: &str, pool_size: u32) -> PgBouncer {
        let cluster = Cluster::shared();
        let service = url::Url::parse(&cluster.service_url(db)).unwrap();
        let dir = std::env::temp_dir().join(format!("poolscope-pgbouncer-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        std::fs::write(
            dir.join("userlist.txt"),
            format!(
                "\"{}\" \"{}\"\n",
                service.username(),
                service.password().unwrap()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n\
                 {db} = host={host} port={pg_port} dbname={db}\n\
                 [pgbouncer]\n\
                 listen_addr = 127.0.0.1\n\
                 listen_port = {port}\n\
                 unix_socket_dir =\n\
                 auth_type = scram-sha-256\n\
                 auth_file = {dir}/userlist.txt\n\
                 stats_users = {user}\n\
                 pool_mode = session\n\
                 default_pool_size = {pool_size}\n\
                 max_client_conn = 200\n\
                 ignore_startup_parameters = extra_float_digits, options\n\
                 logfile = {dir}/pgbouncer.log\n",
                host = cluster.host,
                pg_port = cluster.port,
                dir = dir.display(),
                user = service.username(),
            ),
        )
        .unwrap();
        let user = is_root().then(postgres_user);
        if let Some((uid, gid)) = user {
            for file in ["", "userlist.txt", "pgbouncer.ini"] {
                std::os::unix::fs::chown(dir.join(file), Some(uid), Some(gid)).unwrap();
            }
        }
        let mut bouncer = PgBouncer {
            binary,
            dir,
            port,
            child: None,
            user,
        };
        bouncer.run();
        bouncer
    }

    fn run(&mut self) {
        let mut cmd = Command::new(&self.binary);
        cmd.arg(self.dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((uid, gid)) = self.user {
            cmd.uid(uid).gid(gid);
        }
        self.child = Some(cmd.spawn().expect("spawn pgbouncer"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(
                Instant::now() < deadline,
                "pgbouncer did not listen within 10s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Gone at once, as a crashed or restarting PgBouncer is.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `postgres://user:password@127.0.0.1:port/db` through PgBouncer.
    fn url(&self, db: &str) -> String {
        let mut url = url::Url::parse(&Cluster::shared().service_url(db)).unwrap();
        url.set_port(Some(self.port)).unwrap();
        url.to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The `postgres` user, which the test cluster also runs as under root.
fn postgres_user() -> (u32, u32) {
    // SAFETY: getpwnam with a NUL-terminated name; the fields are read at once.
    unsafe {
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(!pw.is_null(), "running as root needs a postgres user");
        ((*pw).pw_uid, (*pw).pw_gid)
    }
}

/// The service through `bouncer`: pool straight to PgBouncer, monitor and
/// migration straight to PostgreSQL, PgBouncer's admin console for /pool
/// and readiness.
async fn app_through(bouncer: &PgBouncer, db: &str, vars: &[(&str, &str)]) -> TestApp {
    let pooled = bouncer.url(db);
    let direct = Cluster::shared().service_url(db);
    let admin = bouncer.url("pgbouncer");
    let mut all = vec![
        ("MONITOR_DATABASE_URL", direct.as_str()),
        ("PGBOUNCER_ADMIN_URL", admin.as_str()),
    ];
    all.extend_from_slice(vars);
    let app = TestApp::spawn_with_url(&pooled, &all).await;
    app.wait_ready(Duration::from_secs(30)).await;
    app
}

/// A connection through PgBouncer as the service's role, as a client that
/// sends no startup options of its own (what PgBouncer's server sessions get).
async fn connect_through(bouncer: &PgBouncer, db: &str) -> sqlx::PgConnection {
    bouncer
        .url(db)
        .parse::<PgConnectOptions>()
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// Polls `/readyz` until it answers `status`; its body and the time it took.
async fn readyz_until(
    app: &TestApp,
    status: u16,
    limit: Duration,
) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    loop {
        if let Ok(answer) = try_get(&app.url("/readyz"), Duration::from_secs(5)).await {
            if answer.status == status {
                return (json(&answer), started.elapsed());
            }
        }
        assert!(
            started.elapsed() < limit,
            "/readyz did not answer {status} within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_pgbouncer_and_a_busy_pgbouncer_is_ready() {
    // Session mode pins a server connection to each client: the app's two
    // kept connections take two of the three, a test client the third.
    let Some((db, mut bouncer)) = database_behind_pgbouncer(3) else {
        return;
    };
    let app = app_through(
        &bouncer,
        &db,
        &[("DB_POOL_SIZE", "2"), ("DB_MAX_OVERFLOW", "0")],
    )
    .await;
    let (body, _) = readyz_until(&app, 200, Duration::from_secs(5)).await;
    assert!(
        body["reason"].as_str().unwrap().contains("PgBouncer"),
        "{body}"
    );

    // Every server connection busy and a client queued inside PgBouncer:
    // a query through PgBouncer would wait; readiness must not.
    let sleepers = spawn_gets(&app.url("/test/postgres/?seconds=3"), 2);
    let mut third = connect_through(&bouncer, &db).await;
    let busy = tokio::spawn(async move {
        sqlx::query("SELECT pg_sleep(3)")
            .execute(&mut third)
            .await
            .unwrap();
    });
    let queued = tokio::spawn({
        let url = bouncer.url(&db);
        async move {
            let mut conn = url.parse::<PgConnectOptions>().unwrap().connect().await?;
            sqlx::query("SELECT 1").execute(&mut conn).await.map(|_| ())
        }
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let pool = json(&get_url(&app.url("/pool")).await);
        let pooler = &pool["pooler"];
        if pooler["sv_active"] == 3 && pooler["cl_waiting"].as_u64() >= Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PgBouncer never got busy: {pooler}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..4 {
        let answer = get_url(&app.url("/readyz")).await;
        assert_eq!(answer.status, 200, "busy PgBouncer: {}", json(&answer));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!queued.is_finished(), "the queued client was not queued");
    for r in sleepers {
        assert_eq!(r.await.unwrap().status, 200);
    }
    busy.await.unwrap();
    queued.await.unwrap().unwrap();

    // PgBouncer gone: not ready, saying so; back: ready within a second or two.
    bouncer.kill();
    let (body, took) = readyz_until(&app, 503, Duration::from_secs(5)).await;
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains("PgBouncer") && reason.contains(&bouncer.port.to_string()),
        "{reason}"
    );
    eprintln!("measured: /readyz 503 {took:?} after PgBouncer was killed: {reason}");
    bouncer.run();
    let (_, took) = readyz_until(&app, 200, Duration::from_secs(5)).await;
    eprintln!("measured: /readyz 200 {took:?} after PgBouncer listened again");
    assert!(took < Duration::from_secs(2), "ready again after {took:?}");
}

/// A fresh database and a PgBouncer with `pool_size` server connections
/// for it; `None` when no PgBouncer is installed.
fn database_behind_pgbouncer(pool_size: u32) -> Option<(String, PgBouncer)> {
    let binary = PgBouncer::find()?;
    let url = Cluster::shared().create_database();
    let db = url.rsplit('/').next().unwrap().to_owned();
    let bouncer = PgBouncer::start(binary, &db, pool_size);
    Some((db, bouncer))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_the_statement_timeout_holds() {
    let Some((db, bouncer)) = database_behind_pgbouncer(4) else {
        return;
    };
    let _app = app_through(
        &bouncer,
        &db,
        &[
            ("DB_POOL_SIZE", "1"),
            ("SLEEP_SECONDS", "0.5"),
            ("SLEEP_MAX", "1"),
            ("DB_STATEMENT_TIMEOUT", "1.5"),
        ],
    )
    .await;

    // Asked for as a startup option, as sqlx asks: PgBouncer drops it, and
    // the server session has the service's settings all the same.
    let mut conn = bouncer
        .url(&db)
        .parse::<PgConnectOptions>()
        .unwrap()
        .options([("statement_timeout", "1234")])
        .connect()
        .await
        .unwrap();
    for (name, want) in [
        ("statement_timeout", "1500ms"),
        ("client_connection_check_interval", "1s"),
    ] {
        let have: String = sqlx::query(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(have, want, "{name} through PgBouncer");
    }
    let started = Instant::now();
    let err = sqlx::query("SELECT pg_sleep(5)")
        .execute(&mut conn)
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("57014"),
        "{err}"
    );
    assert!(
        (Duration::from_millis(1400)..Duration::from_secs(3)).contains(&took),
        "cancelled after {took:?}"
    );
    eprintln!("measured: through PgBouncer pg_sleep(5) was cancelled after {took:?} (DB_STATEMENT_TIMEOUT 1.5)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_pgbouncer_an_abandoned_request_ends_its_backend() {
    let Some((db, bouncer)) = database_behind_pgbouncer(4) else {
        return;
    };
    let app = app_through(&bouncer, &db, &[("DB_POOL_SIZE", "1"), ("SLEEP_MAX", "30")]).await;
    let sleeping = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' \
         AND state = 'active' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()"
    );
    let cluster = Cluster::shared();
    // The client gives up once the statement runs; the backend must end
    // within a few seconds, not at the end of its 30 s pg_sleep.
    let url = app.url("/test/postgres/?seconds=30");
    let client = tokio::spawn(async move { try_get(&url, Duration::from_secs(30)).await });
    let deadline = Instant::now() + Duration::from_secs(5);
    while cluster.sql("postgres", &sleeping) != "1" {
        assert!(
            Instant::now() < deadline,
            "the request's pg_sleep never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.abort();
    let left = Instant::now();
    while cluster.sql("postgres", &sleeping) != "0" {
        assert!(
            left.elapsed() < Duration::from_secs(5),
            "the abandoned pg_sleep still runs {:?} after the client left; PgBouncer log:\n{}",
            left.elapsed(),
            bouncer.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "measured: through PgBouncer the abandoned request's backend ended {:?} after the client left",
        left.elapsed()
    );
    assert_eq!(app.get("/test/postgres/?seconds=0").await.status, 200);
}
