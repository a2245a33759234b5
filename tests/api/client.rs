//! `poolscope client` against the real service: the original's line formats,
//! wave grouping, error grouping, the JSON report and bad arguments. The
//! expectation and the verdict themselves are unit-tested with made-up runs
//! (`src/client/expect.rs`, `src/client/verdict.rs`).

use std::process::{Command, Output};

use crate::helpers::{free_port, TestApp};

const BIN: &str = env!("CARGO_BIN_EXE_poolscope");

pub async fn client(args: &[&str], url: &str) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("client")
        .args(args)
        .arg("--url")
        .arg(url)
        .env_remove("TARGET_URL")
        .current_dir(std::env::temp_dir());
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

pub fn report(out: &Output) -> serde_json::Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn prints_the_original_lines_then_a_summary_of_the_waves() {
    let app = TestApp::spawn(&[("DB_POOL_SIZE", "3"), ("DB_MAX_OVERFLOW", "0")]).await;
    let url = app.url("/test/postgres/");

    let out = client(&["9", "--seconds", "0.4"], &url).await;

    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        format!("Sending 9 requests for {url}?seconds=0.4...")
    );
    for line in &lines[1..10] {
        // "\t@ %5.2fs got response [%d]"
        assert!(
            line.starts_with("\t@ ") && line.ends_with("s got response [200]"),
            "{line:?}"
        );
        let secs = &line[3..8];
        assert_eq!(secs.len(), 5, "{line:?}");
        secs.trim().parse::<f64>().unwrap();
    }
    assert!(
        lines[10].starts_with("\t= ") && lines[10].ends_with("s TOTAL"),
        "{}",
        lines[10]
    );
    assert!(
        lines[11].starts_with("SUM TOTAL = ") && lines[11].ends_with('s'),
        "{}",
        lines[11]
    );
    assert!(stdout.contains("statuses: 200 × 9"), "{stdout}");
    // The host was looked up once, and the summary says what it resolved to.
    let authority = url.split('/').nth(2).unwrap();
    assert!(
        stdout.contains(&format!("target:   {authority} → {authority}")),
        "{stdout}"
    );
    assert!(stdout.contains("    wave 3:     3 answers"), "{stdout}");
    assert!(
        stdout.contains("expected: pool 3+0, max_connections 300 (3 reserved) → 3 at once → 3 waves of 0.4 s ≈ 1.2 s"),
        "{stdout}"
    );
    assert!(
        stdout.contains("verdict:  matches (limited by the app pool)"),
        "{stdout}"
    );
}

#[tokio::test]
async fn json_report_has_the_documented_fields() {
    let app = TestApp::spawn(&[("DB_POOL_SIZE", "2"), ("DB_MAX_OVERFLOW", "1")]).await;

    let r = report(
        &client(
            &["6", "--seconds", "1", "--json"],
            &app.url("/test/postgres/"),
        )
        .await,
    );

    assert_eq!(r["requests"], 6);
    assert_eq!(r["answered"], 6);
    assert_eq!(r["statuses"]["200"], 6);
    assert_eq!(r["errors"], serde_json::json!({}));
    let sizes: Vec<u64> = r["waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [3, 3], "{r}");
    assert!(
        r["waves"][1]["median_pool_wait_ms"].as_f64().unwrap() >= 900.0,
        "{r}"
    );
    assert!(r["waves"][0]["first_s"].as_f64().unwrap() >= 1.0);
    for key in ["p50", "p95", "p99", "max"] {
        assert!(r["latency_ms"][key].as_f64().unwrap() >= 1000.0, "{r}");
    }
    let e = &r["expectation"];
    assert_eq!(
        (e["pool_size"].as_u64(), e["max_overflow"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        (e["concurrency"].as_u64(), e["waves"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(e["matches"], true, "{r}");
    assert_eq!(e["verdict"], "matches (limited by the app pool)", "{r}");
    assert_eq!(e["limited_by"], "app pool", "{r}");
    assert_eq!(e["refused"], 0, "{r}");
    assert_eq!(e["depends_on_balance"], false, "{r}");
    let predicted: Vec<(u64, u64, u64)> = e["predicted_waves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let n = |k: &str| w[k].as_u64().unwrap();
            (n("size"), n("size_min"), n("size_max"))
        })
        .collect();
    assert_eq!(predicted, [(3, 3, 3), (3, 3, 3)], "{r}");
    assert!(r["total_seconds"].as_f64().unwrap() >= 2.0);
}

#[tokio::test]
async fn groups_pool_timeouts_and_explains_them() {
    let app = TestApp::spawn(&[
        ("DB_POOL_SIZE", "1"),
        ("DB_MAX_OVERFLOW", "0"),
        ("DB_POOL_TIMEOUT", "0.5"),
    ])
    .await;

    let r = report(
        &client(
            &["4", "--seconds", "1", "--json"],
            &app.url("/test/postgres/"),
        )
        .await,
    );

    assert_eq!(r["statuses"]["200"], 1, "{r}");
    assert_eq!(r["statuses"]["503"], 3, "{r}");
    assert_eq!(r["errors"]["pool_timeout"], 3, "{r}");
    // The arithmetic predicts them: one wave of 1, the other 3 time out.
    let e = &r["expectation"];
    assert_eq!(
        (e["timeouts_min"].as_u64(), e["timeouts_max"].as_u64()),
        (Some(3), Some(3)),
        "{r}"
    );
    assert_eq!(e["matches"], true, "{r}");

    // The summary numbers the served waves as the expectation counts them;
    // the timeouts are a line of their own, not a wave.
    let out = client(&["4", "--seconds", "1"], &app.url("/test/postgres/")).await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("→ 1 at once → 1 wave of 1 at 1 s; 3 × pool_timeout at 0.5 s"),
        "{stdout}"
    );
    assert!(stdout.contains("    wave 1:     1 answer  at"), "{stdout}");
    assert!(
        stdout.contains("    pool_timeout:     3 answers at"),
        "{stdout}"
    );
    assert!(!stdout.contains("wave 2"), "{stdout}");
    assert!(stdout.contains("verdict:  matches"), "{stdout}");
}

#[tokio::test]
async fn transport_failures_get_a_line_too() {
    let url = format!("http://127.0.0.1:{}/test/postgres/", free_port());

    let out = client(&["3"], &url).await;

    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(
        stdout.matches("got response [ERR connect refused]").count(),
        3,
        "{stdout}"
    );
    assert!(stdout.contains("connect_refused × 3"), "{stdout}");
    assert!(stdout.contains("expected: unknown"), "{stdout}");
}

#[tokio::test]
async fn bad_arguments_are_usage_errors() {
    for args in [
        &["0"][..],
        &["-5"],
        &["abc"],
        &["1e12"],
        &["10", "--seconds", "NaN"],
        &["10", "--timeout", "0"],
        &["10", "--url", "ftp://x/"],
    ] {
        let out = Command::new(BIN).arg("client").args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // More requests than the hard open-files limit allows: refused up front.
    let out = Command::new("sh")
        .args([
            "-c",
            &format!("ulimit -n 512 && exec {BIN} client 5000 --url http://127.0.0.1:9/"),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("open files") && stderr.contains("ulimit"),
        "{stderr}"
    );
}

#[tokio::test]
async fn ctrl_c_prints_the_summary_of_what_finished_and_exits_130() {
    let app = TestApp::spawn(&[("DB_POOL_SIZE", "1"), ("DB_MAX_OVERFLOW", "0")]).await;
    let child = Command::new(BIN)
        .args(["client", "3", "--seconds", "0.5", "--url"])
        .arg(app.url("/test/postgres/"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The first answer comes at 0.5 s, the others would at 1.0 and 1.5 s:
    // interrupt once the service has sent the first.
    crate::helpers::eventually(
        "the first answer sent",
        std::time::Duration::from_secs(5),
        async || {
            let live: poolscope::contract::LiveView =
                crate::helpers::parsed(&app.get("/live").await);
            (live.run.answered == 1)
                .then_some(())
                .ok_or(format!("{} answered", live.run.answered))
        },
    )
    .await;
    // SAFETY: kill(2) with our child's pid and a valid signal number.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();

    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    assert!(
        stdout.contains("Summary (interrupted: 1 of 3 answered)"),
        "{stdout}"
    );
    assert!(stdout.contains("statuses: 200 × 1"), "{stdout}");
    assert!(
        stdout.contains("interrupted after 1 of 3 answers"),
        "{stdout}"
    );
}
