//! Test harness: a throwaway PostgreSQL cluster started by the tests
//! themselves (or the server in `TEST_DATABASE_URL`), a fresh database per
//! test, and the service spawned in-process on port 0.
//!
//! The cluster's `postgres` runs under a small shell watchdog that stops it
//! and deletes its data directory once the test process is gone, so nothing
//! outlives `cargo test`. As root (CI), `initdb` refuses to run, so the
//! cluster runs as the `postgres` user.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use poolscope::contract::ServerTiming;
use poolscope::settings::Settings;
use poolscope::startup::Application;

pub const SERVICE_ROLE: &str = "poolscope";
pub const SERVICE_PASSWORD: &str = "poolscope-test-pw";
const SUPERUSER_PASSWORD: &str = "superuser-test-pw";

/// A PostgreSQL server the tests may create databases on.
pub struct Cluster {
    pub host: String,
    pub port: u16,
    admin_url: String,
    /// Credentials the service uses (a non-superuser on our own clusters).
    service_user: String,
    service_password: String,
    _dir: Option<PathBuf>,
}

static SHARED: OnceLock<Cluster> = OnceLock::new();

impl Cluster {
    /// The cluster shared by the tests of this binary.
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(|| match std::env::var("TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => Cluster::external(&url),
            _ => Cluster::start(&[("max_connections", "300")]),
        })
    }

    fn external(url: &str) -> Cluster {
        let parsed = url::Url::parse(url).expect("TEST_DATABASE_URL must be a postgres:// URL");
        Cluster {
            host: parsed.host_str().unwrap_or("127.0.0.1").to_owned(),
            port: parsed.port().unwrap_or(5432),
            admin_url: url.to_owned(),
            service_user: parsed.username().to_owned(),
            service_password: parsed.password().unwrap_or("").to_owned(),
            _dir: None,
        }
    }

    /// Starts a new private cluster with the given server settings.
    pub fn start(server_settings: &[(&str, &str)]) -> Cluster {
        Self::start_on(free_port(), server_settings)
    }

    /// Starts a new private cluster on `port`.
    pub fn start_on(port: u16, server_settings: &[(&str, &str)]) -> Cluster {
        let bin = pg_bin_dir();
        let dir = std::env::temp_dir().join(format!("poolscope-pg-{}", unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let data = dir.join("data");
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
        if is_root() {
            run_ok(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir),
            );
        }
        run_ok(as_cluster_owner(&bin.join("initdb")).args([
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            &format!("--pwfile={}", pwfile.display()),
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]));
        let mut args = vec![
            format!("-p {port}"),
            "-c listen_addresses=127.0.0.1".into(),
            format!("-c unix_socket_directories={}", dir.display()),
            "-c fsync=off".into(),
            "-c synchronous_commit=off".into(),
            "-c full_page_writes=off".into(),
        ];
        args.extend(server_settings.iter().map(|(k, v)| format!("-c {k}={v}")));
        // The watchdog: restarts postgres when it stops (see `restart`), and
        // stops it for good when the test process (our pid) is gone.
        let script = format!(
            "while [ -d /proc/{parent} ]; do\n\
               {postgres} -D {data} {args} >>{log} 2>&1 & pg=$!\n\
               while [ -d /proc/{parent} ] && kill -0 $pg 2>/dev/null; do sleep 0.1; done\n\
               kill -INT $pg 2>/dev/null; wait $pg\n\
               [ -f {dir}/hold ] && while [ -f {dir}/hold ] && [ -d /proc/{parent} ]; do sleep 0.1; done\n\
             done\n\
             rm -rf {dir}\n",
            postgres = bin.join("postgres").display(),
            data = data.display(),
            args = args.join(" "),
            log = dir.join("postgres.log").display(),
            parent = std::process::id(),
            dir = dir.display(),
        );
        // Deliberately not waited for: the watchdog outlives this function and
        // ends with the test process.
        #[allow(clippy::zombie_processes)]
        as_cluster_owner(Path::new("sh"))
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn postgres");
        let admin_url =
            format!("postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{port}/postgres");
        let cluster = Cluster {
            host: "127.0.0.1".into(),
            port,
            admin_url,
            service_user: SERVICE_ROLE.into(),
            service_password: SERVICE_PASSWORD.into(),
            _dir: Some(dir.clone()),
        };
        cluster.wait_accepting(&dir);
        cluster.sql(
            "postgres",
            &format!("CREATE ROLE {SERVICE_ROLE} LOGIN PASSWORD '{SERVICE_PASSWORD}' NOSUPERUSER"),
        );
        cluster
    }

    fn wait_accepting(&self, dir: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.try_sql("postgres", "SELECT 1") {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
                panic!("test cluster did not accept connections within 60s; log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: sessions are terminated); it stays
    /// down until [`Cluster::start_again`].
    pub fn stop_for_now(&self) {
        let dir = self
            ._dir
            .as_ref()
            .expect("only our own clusters can be stopped");
        std::fs::write(dir.join("hold"), "").unwrap();
        let pid = std::fs::read_to_string(dir.join("data/postmaster.pid")).unwrap();
        let pid: i32 = pid.lines().next().unwrap().trim().parse().unwrap();
        // SAFETY: kill(2) with a pid read from postmaster.pid.
        unsafe { libc::kill(pid, libc::SIGINT) };
        while self.try_sql("postgres", "SELECT 1") {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Lets the watchdog start the server again and waits until it accepts.
    pub fn start_again(&self) {
        let dir = self
            ._dir
            .as_ref()
            .expect("only our own clusters can be started");
        std::fs::remove_file(dir.join("hold")).unwrap();
        self.wait_accepting(dir);
    }

    fn psql(&self, db: &str, sql: &str) -> std::process::Output {
        let mut url = url::Url::parse(&self.admin_url).unwrap();
        url.set_path(db);
        Command::new(psql())
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(url.as_str())
            .output()
            .expect("run psql")
    }

    /// Runs SQL as the superuser in the background; killed when dropped.
    pub fn spawn_sql(&self, db: &str, sql: &str) -> KillOnDrop {
        let mut url = url::Url::parse(&self.admin_url).unwrap();
        url.set_path(db);
        let child = Command::new(psql())
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .arg(url.as_str())
            .stdout(Stdio::null())
            .spawn()
            .expect("run psql");
        KillOnDrop(child)
    }

    fn try_sql(&self, db: &str, sql: &str) -> bool {
        self.psql(db, sql).status.success()
    }

    /// Runs SQL as the superuser and returns its output, trimmed.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self.psql(db, sql);
        assert!(
            out.status.success(),
            "psql failed: {sql}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A new empty database owned by the service's role; returns its URL.
    pub fn create_database(&self) -> String {
        self.create_database_named(&format!("t_{}", unique_suffix()))
    }

    /// A database with a given name owned by the service's role.
    pub fn create_database_named(&self, name: &str) -> String {
        self.sql(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER {}", self.service_user),
        );
        self.service_url(name)
    }

    pub fn service_url(&self, db: &str) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{db}",
            self.service_user, self.service_password, self.host, self.port
        )
    }
}

pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running service on a fresh database.
pub struct TestApp {
    pub addr: SocketAddr,
    pub db_name: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _task: tokio::task::JoinHandle<()>,
}

impl TestApp {
    /// Spawns the service on the shared cluster with these settings on top
    /// of test defaults; waits until it is ready (migrated).
    pub async fn spawn(vars: &[(&str, &str)]) -> TestApp {
        Self::spawn_on(Cluster::shared(), vars).await
    }

    pub async fn spawn_on(cluster: &Cluster, vars: &[(&str, &str)]) -> TestApp {
        init_test_tracing();
        let database_url = cluster.create_database();
        let app = Self::spawn_with_url(&database_url, vars).await;
        app.wait_ready(Duration::from_secs(30)).await;
        app
    }

    /// Spawns without waiting for readiness (the database may be down).
    pub async fn spawn_with_url(database_url: &str, vars: &[(&str, &str)]) -> TestApp {
        let mut all: Vec<(&str, &str)> = vec![
            ("DATABASE_URL", database_url),
            ("APP_HOST", "127.0.0.1"),
            ("APP_PORT", "0"),
            ("SHUTDOWN_GRACE", "5"),
        ];
        all.extend_from_slice(vars);
        let settings = Settings::from_vars(all).expect("test settings are valid");
        let app = Application::build(settings).await.expect("app builds");
        let addr = app.addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            db_name: database_url.rsplit('/').next().unwrap().to_owned(),
            stop: Some(tx),
            _task: task,
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub async fn get(&self, path_and_query: &str) -> Answer {
        get_url(&self.url(path_and_query)).await
    }

    pub async fn wait_ready(&self, limit: Duration) {
        wait_for_status(&self.url("/readyz"), 200, limit).await;
    }

    /// Polls `/pool` until its live `field` (`in_use`, `open`, …) is `value`.
    pub async fn wait_for_live(&self, field: &str, value: u64, limit: Duration) -> Duration {
        eventually(
            &format!("/pool live.{field} = {value}"),
            limit,
            async || {
                let pool = json(&self.get("/pool").await);
                let live = &pool["live"];
                (live[field] == value).then_some(()).ok_or(live.to_string())
            },
        )
        .await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// An HTTP answer, as the tests see it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

/// The tests' own HTTP client (reqwest), not the product's: a bug in
/// `poolscope client` must not hide one in the server. No connection reuse,
/// so every request has its own connection, as the demo's clients do.
pub fn http_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .no_proxy()
            .build()
            .expect("a plain HTTP client")
    })
}

/// GET that may fail (connection refused, timeout) instead of panicking.
pub async fn try_get(url: &str, timeout: Duration) -> Result<Answer, String> {
    let resp = http_client()
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: body: {e}"))?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

pub async fn get_url(url: &str) -> Answer {
    try_get(url, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn json(answer: &Answer) -> serde_json::Value {
    serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&answer.body)))
}

/// The answer's body as one of the service's wire types (`poolscope::contract`).
pub fn parsed<T: serde::de::DeserializeOwned>(answer: &Answer) -> T {
    serde_json::from_slice(&answer.body).unwrap_or_else(|e| {
        panic!(
            "not a {} ({e}): {}",
            std::any::type_name::<T>(),
            String::from_utf8_lossy(&answer.body)
        )
    })
}

pub fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Where the answer's time went, as the server reported it.
pub fn server_timing(answer: &Answer) -> Option<ServerTiming> {
    ServerTiming::parse(header(answer, ServerTiming::HEADER)?)
}

/// The pool wait the server reported in `Server-Timing`, in ms.
pub fn pool_wait_ms(answer: &Answer) -> Option<f64> {
    Some(server_timing(answer)?.pool.as_secs_f64() * 1000.0)
}

fn init_test_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(poolscope::telemetry::filter("info"))
                .with_test_writer()
                .try_init();
        }
    });
}

pub fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs as the cluster's owner: ourselves, or `postgres` when root.
fn as_cluster_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// psql beside the server binaries, else on PATH (Debian puts a wrapper there).
fn psql() -> PathBuf {
    let beside = pg_bin_dir().join("psql");
    if beside.exists() {
        beside
    } else {
        PathBuf::from("psql")
    }
}

/// `initdb` on PATH, else the newest `/usr/lib/postgresql/*/bin`.
pub fn pg_bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Ok(out) = Command::new("sh").args(["-c", "command -v initdb"]).output() {
            let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if out.status.success() && !path.is_empty() {
                return PathBuf::from(path).parent().unwrap().to_path_buf();
            }
        }
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries: put initdb on PATH or install them under /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .collect();
        dirs.sort_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        dirs.pop().expect("no initdb found under /usr/lib/postgresql/*/bin")
    })
    .clone()
}

/// The real binary running `serve` on a free port, for what only a process
/// shows: signals, exit codes and its log output.
pub struct ServeProcess {
    pub child: std::process::Child,
    pub base: String,
}

impl ServeProcess {
    /// Starts `poolscope serve` with a clean environment (no `.env` either)
    /// and waits until `/readyz` answers 200.
    pub async fn start(database_url: &str, vars: &[(&str, &str)], capture: bool) -> ServeProcess {
        let port = free_port();
        let output = || {
            if capture {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        let child = Command::new(env!("CARGO_BIN_EXE_poolscope"))
            .arg("serve")
            .current_dir(std::env::temp_dir())
            .env_clear()
            .env("DATABASE_URL", database_url)
            .env("APP_HOST", "127.0.0.1")
            .env("APP_PORT", port.to_string())
            .envs(vars.iter().copied())
            .stdout(output())
            .stderr(output())
            .spawn()
            .expect("spawn poolscope serve");
        let served = ServeProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        wait_for_status(
            &format!("{}/readyz", served.base),
            200,
            Duration::from_secs(30),
        )
        .await;
        served
    }

    pub fn sigterm(&self) {
        // SAFETY: kill(2) with our child's pid and a valid signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits for the process to exit; returns its status and output.
    pub async fn wait(self) -> std::process::Output {
        tokio::task::spawn_blocking(move || self.child.wait_with_output())
            .await
            .unwrap()
            .unwrap()
    }
}

/// Polls `check` every 50 ms until it returns `Ok`, and returns how long that
/// took: tests wait for the state they expect, not for a guessed time. Until
/// then `check` returns `Err` with what it sees, which the panic after
/// `limit` shows beside `what`.
pub async fn eventually(
    what: &str,
    limit: Duration,
    mut check: impl AsyncFnMut() -> Result<(), String>,
) -> Duration {
    let started = Instant::now();
    loop {
        let seen = match check().await {
            Ok(()) => return started.elapsed(),
            Err(seen) => seen,
        };
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}; last seen: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `url` until it answers `status`; returns how long that took.
pub async fn wait_for_status(url: &str, status: u16, limit: Duration) -> Duration {
    eventually(
        &format!("{url} answers {status}"),
        limit,
        async || match try_get(url, Duration::from_secs(2)).await {
            Ok(a) if a.status == status => Ok(()),
            Ok(a) => Err(format!("status {}", a.status)),
            Err(e) => Err(e),
        },
    )
    .await
}

/// `n` concurrent GETs of `url`, each on its own connection, started now.
pub fn spawn_gets(url: &str, n: usize) -> Vec<tokio::task::JoinHandle<Answer>> {
    (0..n)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move { get_url(&url).await })
        })
        .collect()
}
