//! The live page (`GET /`) in a real headless Chromium: while `client 30`
//! runs against pool 10 + 10, the page itself must show 20 connections in use
//! and 10 requests waiting during wave 1, and 30 answers in two waves at the
//! end. Driven by `tests/browser/live-page.mjs` (Node's own WebSocket, the
//! DevTools protocol); the screenshot lands in `target/browser/`. And its
//! "last minute" chart: what the page says it drew
//! (`tests/browser/live-history.mjs`) while a lowered limit holds requests
//! back.
//!
//! Without Chromium or Node the test fails: a suite that passes without
//! running its browser test would say the page works when nobody looked.
//! `POOLSCOPE_SKIP_BROWSER=1` skips it, by name, where no browser can be had.
//! The sweep's picture (`tests/api/sweep.rs`) follows the same rule.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::client::{client, report};
use crate::helpers::{json, spawn_gets, TestApp};

/// Chromium and Node ≥ 20, or why not.
fn browser_available() -> Result<(), String> {
    let works = |cmd: &str, arg: &str| {
        Command::new(cmd)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let browser = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
    if !works(&browser, "--version") {
        return Err(format!("no {browser} (apt-get install chromium)"));
    }
    if !works("node", "--version") {
        return Err("no node".into());
    }
    Ok(())
}

/// Whether a browser test runs: not where `POOLSCOPE_SKIP_BROWSER=1` (it
/// says so, by name); without Chromium or Node it fails.
pub fn browser_wanted(test: &str) -> bool {
    if std::env::var_os("POOLSCOPE_SKIP_BROWSER").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED the browser test {test}: POOLSCOPE_SKIP_BROWSER=1");
        return false;
    }
    if let Err(why) = browser_available() {
        panic!("the browser test {test} needs Chromium and Node: {why}; set POOLSCOPE_SKIP_BROWSER=1 to skip it");
    }
    true
}

/// `target/browser/`: the screenshots and pictures the browser tests leave.
pub fn browser_dir() -> PathBuf {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs a browser script to its end, off the runtime's threads, and reads
/// the JSON it prints of what the page drew.
pub async fn drawn_by(mut cmd: Command) -> serde_json::Value {
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run node"))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `node --experimental-websocket tests/browser/<script>`, arguments to add.
pub fn node(script: &str) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg("--experimental-websocket").arg(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/browser")
            .join(script),
    );
    cmd
}

/// A browser script running alongside the test: its output lines as they
/// come, and what it wrote to stderr, for the failure message.
struct Script {
    child: std::process::Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Script {
    fn start(cmd: &mut Command) -> Script {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run node");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (pipe, collected) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("{line}");
                let mut all = collected.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        Script {
            child,
            lines,
            stderr,
        }
    }

    /// The script's next line within a minute; fails naming `what` was
    /// awaited and with what the script wrote to stderr.
    async fn next_line(&mut self, what: &str) -> String {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.recv()).await;
        match line {
            Ok(Some(line)) => line,
            Ok(None) => panic!(
                "{what}: the script ended ({:?}); its stderr:\n{}",
                self.child.wait(),
                self.stderr.lock().unwrap()
            ),
            Err(_) => panic!(
                "{what}: nothing within 60 s; its stderr:\n{}",
                self.stderr.lock().unwrap()
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_the_pool_and_the_waves_in_a_real_browser() {
    if !browser_wanted("the_live_page_shows_the_pool_and_the_waves_in_a_real_browser") {
        return;
    }
    let app = TestApp::spawn(&[("DB_POOL_SIZE", "10"), ("DB_MAX_OVERFLOW", "10")]).await;
    let dir = browser_dir();
    let shot = dir.join("live-page.png");
    let mut script = Script::start(node("live-page.mjs").arg(app.url("/")).arg("30").arg(&shot));
    let ready = script.next_line("the page loading").await;
    assert_eq!(ready, "ready", "the page did not load");

    let picture = dir.join("run.html");
    let r = report(
        &client(
            &[
                "30",
                "--seconds",
                "1",
                "--json",
                "--report",
                picture.to_str().unwrap(),
            ],
            &app.url("/test/postgres/"),
        )
        .await,
    );
    assert_eq!(r["statuses"]["200"], 30, "{r}");

    let seen = script.next_line("the page's report").await;
    let _ = script.child.wait();
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    eprintln!(
        "measured: the page showed {seen}; screenshot {}",
        shot.display()
    );
    assert_eq!(seen["maxInUse"], "20", "{seen}");
    assert_eq!(seen["waitingAtMax"], "10", "{seen}");
    assert_eq!(seen["answers"], "30", "{seen}");
    assert_eq!(seen["waves"], "2", "{seen}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot too small"
    );

    // The client's picture of the same run, opened from disk.
    let report_shot = dir.join("run-report.png");
    let mut cmd = self::node("live-page.mjs");
    cmd.arg(format!("file://{}", picture.display()))
        .arg("30")
        .arg(&report_shot);
    let drawn = drawn_by(cmd).await;
    eprintln!(
        "measured: the report file showed {drawn}; screenshot {}",
        report_shot.display()
    );
    assert_eq!(drawn["dots"], 30, "{drawn}");
    assert_eq!(drawn["errors"], 0, "{drawn}");
    assert_eq!(drawn["expected"], 2, "two expected waves: {drawn}");
    assert_eq!(drawn["external"], 0, "self-contained: {drawn}");
    assert!(
        drawn["verdict"].as_str().unwrap().contains("matches"),
        "{drawn}"
    );
}

/// The "last minute" chart, as the page itself says it drew it: before the
/// load the limit line stands at the pool's max (4); then the limit is
/// lowered to 2 and four 1-second requests arrive, and within a couple of
/// polls the chart has drawn 2 in use, requests waiting, PostgreSQL's
/// backends, and the dashed limit line at 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_minute_chart_draws_the_pool_the_backends_and_the_lowered_limit() {
    if !browser_wanted("the_last_minute_chart_draws_the_pool_the_backends_and_the_lowered_limit") {
        return;
    }
    let app = TestApp::spawn(&[
        ("POOL_LIMIT_CONTROL", "true"),
        ("DB_POOL_SIZE", "4"),
        ("DB_MAX_OVERFLOW", "0"),
    ])
    .await;
    let shot = browser_dir().join("live-history.png");
    let mut script = Script::start(
        node("live-history.mjs")
            .arg(app.url("/"))
            .arg("2")
            .arg(&shot),
    );
    let ready = script.next_line("the last minute drawn").await;
    assert_eq!(ready, "ready", "the page did not draw the last minute");

    let lowered = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(app.url("/pool/limit?max=2&ttl=30"))
        .send()
        .await
        .unwrap();
    assert_eq!(lowered.status().as_u16(), 200);
    let answers = spawn_gets(&app.url("/test/postgres/?seconds=1"), 4);

    let seen = script.next_line("the page's report").await;
    let mut child = script.child;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    eprintln!(
        "measured: the last minute drew {seen}; screenshot {}",
        shot.display()
    );
    assert_eq!(seen["timedOut"], false, "not drawn within 20 s: {seen}");
    let h = &seen["history"];
    let points = h["limit"]["points"].as_u64().unwrap();
    assert!(points >= 2, "{seen}");
    for line in ["inUse", "waiting", "backends", "lockWaiters", "limit"] {
        // One point per poll on every line.
        assert_eq!(h[line]["points"], points, "{line}: {seen}");
        assert_eq!(h[line]["dashed"], line == "limit", "{line}: {seen}");
    }
    assert_eq!(h["inUse"]["max"], 2, "the lowered limit full: {seen}");
    assert!(h["waiting"]["max"].as_u64().unwrap() >= 1, "{seen}");
    // At least this service's two connections.
    assert!(h["backends"]["max"].as_u64().unwrap() >= 2, "{seen}");
    // The limit line: the pool's max before, 2 now.
    assert_eq!(
        (h["limit"]["max"].as_u64(), h["limit"]["last"].as_u64()),
        (Some(4), Some(2)),
        "{seen}"
    );
    assert!(seen["canvas"]["shownWidth"].as_u64().unwrap() > 0, "{seen}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot too small"
    );

    for a in answers {
        assert_eq!(a.await.unwrap().status, 200);
    }
    assert_eq!(json(&app.get("/pool").await)["limit"]["limit"], 2);
}
