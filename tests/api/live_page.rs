//! The live page (`GET /`) in a real headless Chromium: while `client 30`
//! runs against pool 10 + 10, the page itself must show 20 connections in use
//! and 10 requests waiting during wave 1, and 30 answers in two waves at the
//! end. Driven by `tests/browser/live-page.mjs` (Node's own WebSocket, the
//! DevTools protocol); the screenshot lands in `target/browser/`.
//!
//! Without Chromium or Node the test fails: a suite that passes without
//! running its browser test would say the page works when nobody looked.
//! `POOLSCOPE_SKIP_BROWSER=1` skips it, by name, where no browser can be had.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::client::{client, report};
use crate::helpers::TestApp;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_shows_the_pool_and_the_waves_in_a_real_browser() {
    if std::env::var_os("POOLSCOPE_SKIP_BROWSER").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED the browser test: POOLSCOPE_SKIP_BROWSER=1");
        return;
    }
    if let Err(why) = browser_available() {
        panic!("the live page's browser test needs Chromium and Node: {why}; set POOLSCOPE_SKIP_BROWSER=1 to skip it");
    }
    let app = TestApp::spawn(&[("DB_POOL_SIZE", "10"), ("DB_MAX_OVERFLOW", "10")]).await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/browser");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("live-page.png");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/live-page.mjs");
    let mut node = Command::new("node")
        .arg("--experimental-websocket")
        .arg(&script)
        .arg(app.url("/"))
        .arg("30")
        .arg(&shot)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node");
    let stdout = node.stdout.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let ready = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await;
    assert_eq!(
        ready.ok().flatten().as_deref(),
        Some("ready"),
        "the page did not load"
    );

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

    let seen = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .ok()
        .flatten()
        .expect("the page's report");
    let _ = node.wait();
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
    let out = Command::new("node")
        .arg("--experimental-websocket")
        .arg(&script)
        .arg(format!("file://{}", picture.display()))
        .arg("30")
        .arg(&report_shot)
        .output()
        .expect("run node");
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let drawn: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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
