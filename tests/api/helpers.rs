//! Test harness: a fresh database per test on the tests' own PostgreSQL
//! ([`crate::cluster`]), the service spawned in-process on port 0, and the
//! tests' own HTTP client.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use poolscope::contract::ServerTiming;
use poolscope::settings::Settings;
use poolscope::startup::Application;

pub use crate::cluster::{Cluster, SERVICE_PASSWORD, SERVICE_ROLE};

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
        wait_for_live(&format!("http://{}", self.addr), field, value, limit).await
    }
}

/// Polls the service at `base` until `/pool`'s live `field` is `value`.
pub async fn wait_for_live(base: &str, field: &str, value: u64, limit: Duration) -> Duration {
    eventually(
        &format!("{base}/pool live.{field} = {value}"),
        limit,
        async || {
            let pool = json(&get_url(&format!("{base}/pool")).await);
            let live = &pool["live"];
            (live[field] == value).then_some(()).ok_or(live.to_string())
        },
    )
    .await
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
