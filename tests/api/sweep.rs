//! `poolscope sweep` against the real service: a two-step sweep whose table
//! has the promised shape and whose probe and lock figures come from the
//! server, and a clear refusal where the service keeps its limit fixed.

use std::process::{Command, Output};
use std::time::Duration;

use crate::helpers::{json, try_get, TestApp};

const BIN: &str = env!("CARGO_BIN_EXE_poolscope");

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

#[tokio::test]
async fn a_two_step_sweep_prints_the_table_and_reads_the_server() {
    let app = TestApp::spawn(&[
        ("POOL_LIMIT_CONTROL", "true"),
        ("DB_POOL_SIZE", "2"),
        ("DB_MAX_OVERFLOW", "0"),
        ("DB_CORES", "1"),
        ("HOT_ROWS", "2"),
    ])
    .await;
    let url = app.url("/test/postgres/");
    let common = [
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

    let out = sweep(&[&common[..], &["--json"]].concat(), &url).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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
