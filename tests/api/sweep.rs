//! `poolscope sweep` against the real service: a two-step sweep whose table
//! has the promised shape and whose probe and lock figures come from the
//! server, and a clear refusal where the service keeps its limit fixed.
//! And its `--report` picture opened in a real headless Chromium
//! (`tests/browser/sweep-report.mjs`, the skip rule of `live_page`): one
//! point per step on every curve, and the knee marked where the sweep put it.

use std::process::{Command, Output};
use std::time::Duration;

use crate::helpers::{json, try_get, TestApp};

const BIN: &str = env!("CARGO_BIN_EXE_poolscope");

/// A sweep small enough for a test: two steps of a second, four clients.
const TWO_HOT_STEPS: [&str; 10] = [
    "--work",
    "hot",
    "--limits",
    "1,2",
    "--step",
    "1",
    "--warmup",
    "0.3",
    "--clients",
    "4",
];

async fn sweep(args: &[&str], url: &str) -> Output {
    let mut cmd = Command::new(BIN);
    // As compose runs it: `docker compose run client sweep …`.
    cmd.args(["client", "sweep"])
        .args(args)
        .arg("--url")
        .arg(url)
        .env_remove("TARGET_URL")
        .env_remove("DB_CORES")
        .current_dir(std::env::temp_dir());
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

async fn limit_now(app: &TestApp) -> serde_json::Value {
    json(&app.get("/pool").await)["limit"].clone()
}

#[tokio::test]
async fn without_limit_control_the_sweep_says_what_to_set() {
    let app = TestApp::spawn(&[]).await;

    let out = sweep(&["--step", "1"], &app.url("/test/postgres/")).await;

    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("POOL_LIMIT_CONTROL=true"), "{stderr}");
}

/// A sweep that must succeed, and its `--json` report.
async fn sweep_json(args: &[&str], url: &str) -> serde_json::Value {
    let out = sweep(args, url).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A service the sweep may lower: two connections, one core, two hot rows.
async fn sweepable_app() -> TestApp {
    TestApp::spawn(&[
        ("POOL_LIMIT_CONTROL", "true"),
        ("DB_POOL_SIZE", "2"),
        ("DB_MAX_OVERFLOW", "0"),
        ("DB_CORES", "1"),
        ("HOT_ROWS", "2"),
    ])
    .await
}

#[tokio::test]
async fn a_two_step_sweep_prints_the_table_and_reads_the_server() {
    let app = sweepable_app().await;
    let url = app.url("/test/postgres/");
    let common = TWO_HOT_STEPS;

    let out = sweep(&common, &url).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.trim_start().starts_with("limit"))
        .unwrap_or_else(|| panic!("no table header in:\n{stdout}"));
    let columns: Vec<&str> = lines[header].split_whitespace().collect();
    assert_eq!(
        columns,
        [
            "limit", "req/s", "p50", "ms", "p95", "ms", "p99", "ms", "pool", "ms", "db", "ms",
            "active", "on", "lock", "probe", "ms", "errors"
        ]
    );
    for (row, limit) in lines[header + 1..header + 3].iter().zip(["1", "2"]) {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[0], limit, "{row}");
        assert!(cells[1].parse::<f64>().unwrap() > 0.0, "{row}");
        // Every figure is a number (none missing), and no errors.
        for cell in &cells[2..10] {
            cell.parse::<f64>()
                .unwrap_or_else(|_| panic!("{cell:?} in {row}"));
        }
        assert_eq!(cells[10], "none", "{row}");
    }
    assert!(stdout.contains("\nknee:"), "{stdout}");
    assert!(stdout.contains("cores × 2 = 1 × 2 = 2"), "{stdout}");
    assert!(stdout.contains("\nrecommendation: "), "{stdout}");
    // Released at the end.
    let limit = limit_now(&app).await;
    assert_eq!(
        (
            limit["limit"].as_u64(),
            limit["lease_expires_in_s"].is_null()
        ),
        (Some(2), true)
    );

    let r = sweep_json(&[&common[..], &["--json"]].concat(), &url).await;
    let steps = r["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{r}");
    for (step, limit) in steps.iter().zip([1, 2]) {
        assert_eq!(step["limit"], limit, "{step}");
        // The server's own word: the limit it had in force, and its figures.
        assert_eq!(step["limit_seen"], limit, "{step}");
        assert!(step["samples"].as_u64().unwrap() >= 1, "{step}");
        for figure in ["probe_ms", "lock_waiters", "active", "db_ms", "pool_ms"] {
            let v = step[figure]
                .as_f64()
                .unwrap_or_else(|| panic!("{figure} missing: {step}"));
            assert!(v >= 0.0, "{figure}: {step}");
        }
        assert!(step["probe_ms"].as_f64().unwrap() > 0.0, "{step}");
        assert!(step["rps"].as_f64().unwrap() > 0.0, "{step}");
        assert!(step["errors"].as_object().unwrap().is_empty(), "{step}");
    }
    assert_eq!(r["cores_x2"], 2);
    assert!(r["knee"].as_u64().is_some(), "{r}");
    assert!(try_get(&app.url("/healthz"), Duration::from_secs(2))
        .await
        .is_ok());
}

#[tokio::test]
async fn the_sweep_report_draws_every_step_and_marks_the_knee_in_a_real_browser() {
    use crate::live_page::{browser_dir, browser_wanted, node};
    if !browser_wanted("the_sweep_report_draws_every_step_and_marks_the_knee_in_a_real_browser") {
        return;
    }
    let app = sweepable_app().await;
    let dir = browser_dir();
    let picture = dir.join("sweep.html");
    let _ = std::fs::remove_file(&picture);
    let r = sweep_json(
        &[
            &TWO_HOT_STEPS[..],
            &["--json", "--report", picture.to_str().unwrap()],
        ]
        .concat(),
        &app.url("/test/postgres/"),
    )
    .await;
    // The sweep's own word, to hold the picture against.
    let limits: Vec<u64> = r["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["limit"].as_u64().unwrap())
        .collect();
    assert_eq!(limits, [1, 2], "{r}");
    let knee = r["knee"].as_u64().unwrap_or_else(|| panic!("no knee: {r}"));

    let shot = dir.join("sweep-report.png");
    let mut cmd = node("sweep-report.mjs");
    cmd.arg(format!("file://{}", picture.display())).arg(&shot);
    let drawn = crate::live_page::drawn_by(cmd).await;
    eprintln!(
        "measured: the sweep report drew {drawn}; screenshot {}",
        shot.display()
    );
    assert_eq!(drawn["external"], 0, "self-contained: {drawn}");
    assert_eq!(drawn["scripts"], 0, "no script: {drawn}");
    assert!(
        drawn["recommendation"]
            .as_str()
            .unwrap()
            .contains(r["recommendation"].as_str().unwrap()),
        "{drawn}"
    );
    let charts = drawn["charts"].as_array().unwrap();
    assert_eq!(charts.len(), 4, "{drawn}");
    let at = limits.iter().position(|l| *l == knee).unwrap();
    for chart in charts {
        let title = &chart["title"];
        assert_eq!(chart["limits"], serde_json::json!(limits), "{title}");
        assert!(chart["width"].as_f64().unwrap() > 100.0, "{chart}");
        let lines = chart["lines"].as_array().unwrap();
        assert!(!lines.is_empty(), "{chart}");
        for line in lines {
            // One point per step on every curve, with its dot, left to right.
            assert_eq!(line["points"], 2, "{title}: {line}");
            assert_eq!(line["dots"], 2, "{title}: {line}");
            assert_eq!(line["shown"], true, "{title}: {line}");
            let xs = line["xs"].as_array().unwrap();
            assert!(
                xs[0].as_f64().unwrap() < xs[1].as_f64().unwrap(),
                "{title}: {line}"
            );
        }
        // The knee: one dashed marker at the knee's step, labelled.
        let knees: Vec<&serde_json::Value> = chart["marks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["mark"] == "knee")
            .collect();
        assert_eq!(knees.len(), 1, "{chart}");
        let mark = knees[0];
        assert_eq!(mark["limit"], knee, "{title}: {mark}");
        assert_eq!(mark["label"], format!("knee {knee}"), "{title}: {mark}");
        assert_eq!(mark["shown"], true, "{title}: {mark}");
        assert!(mark["dashed"].is_string(), "{title}: {mark}");
        let step_x = lines[0]["xs"][at].as_f64().unwrap();
        assert!(
            (mark["x"].as_f64().unwrap() - step_x).abs() < 0.5,
            "the knee off its step in {title}: {mark} vs x {step_x}"
        );
        // And cores × 2 beside it (DB_CORES=1).
        assert!(
            chart["marks"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mark"] == "cores-x2" && m["limit"] == 2),
            "{chart}"
        );
    }
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot too small"
    );
}
