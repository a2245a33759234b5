//! Recovery from outages, with the real binary: PostgreSQL restarted under
//! load several times in a row must never make the service stop answering
//! or exit, and afterwards the kept connections are back without traffic,
//! so the first run after the outage is served as the settings say.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::helpers::{json, try_get, Cluster, ServeProcess};

const POOL_SIZE: u64 = 4;

/// Polls `/pool` until `want` connections are open and idle; returns how
/// long that took.
async fn wait_for_open(base: &str, want: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    let mut last = serde_json::Value::Null;
    loop {
        if let Ok(a) = try_get(&format!("{base}/pool"), Duration::from_secs(2)).await {
            let live = json(&a)["live"].clone();
            if a.status == 200 && live["open"] == want && live["idle"] == want {
                return started.elapsed();
            }
            last = live;
        }
        assert!(
            started.elapsed() < limit,
            "the pool did not reopen {want} connections within {limit:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests of 0.3 s, eight at a time, until `stop`; counts the answers by
/// status class.
fn load(
    base: String,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU32>,
    failed: Arc<AtomicU32>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..8)
        .map(|_| {
            let (base, stop, ok, failed) = (base.clone(), stop.clone(), ok.clone(), failed.clone());
            tokio::spawn(async move {
                // Bounded: at most 2,000 requests per worker.
                for _ in 0..2000 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let url = format!("{base}/test/postgres/?seconds=0.3");
                    match try_get(&url, Duration::from_secs(10)).await {
                        Ok(a) if a.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_restarts_of_postgresql_under_load_and_reopens_the_kept_connections() {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(&[]))
        .await
        .unwrap();
    let db = cluster.create_database();
    let mut served = ServeProcess::start(
        &db,
        &[
            ("DB_POOL_SIZE", "4"),
            ("DB_MAX_OVERFLOW", "4"),
            ("RUST_LOG", "info"),
        ],
        true,
    )
    .await;
    let base = served.base.clone();

    // /healthz, ten times a second, for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let unhealthy = Arc::new(AtomicU32::new(0));
    let watcher = {
        let (base, stop, unhealthy) = (base.clone(), stop.clone(), unhealthy.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let healthy = matches!(
                    try_get(&format!("{base}/healthz"), Duration::from_secs(1)).await,
                    Ok(a) if a.status == 200
                );
                if !healthy {
                    unhealthy.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let (ok, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let loaders = load(base.clone(), stop.clone(), ok.clone(), failed.clone());

    let mut cluster = Some(cluster);
    for restart in 1..=3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let c = cluster.take().unwrap();
        let c = tokio::task::spawn_blocking(move || {
            c.stop_for_now();
            std::thread::sleep(Duration::from_millis(500));
            c.start_again();
            c
        })
        .await
        .unwrap();
        cluster = Some(c);
        assert!(
            served.child.try_wait().unwrap().is_none(),
            "the service exited at restart {restart}"
        );
        assert_eq!(
            unhealthy.load(Ordering::Relaxed),
            0,
            "/healthz failed by restart {restart}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    watcher.await.unwrap();
    for l in loaders {
        l.await.unwrap();
    }
    let served_during = ok.load(Ordering::Relaxed);
    assert!(served_during > 0, "nothing was served");

    // Without traffic, the kept connections come back by themselves.
    let took = wait_for_open(&base, POOL_SIZE, Duration::from_secs(8)).await;

    // The first burst after the outage: one wave, no wait for connections.
    let started = Instant::now();
    let burst = crate::helpers::spawn_gets(&format!("{base}/test/postgres/?seconds=1"), 4);
    for a in burst {
        let a = a.await.unwrap();
        assert_eq!(a.status, 200);
        let wait = crate::helpers::pool_wait_ms(&a).unwrap();
        assert!(wait < 200.0, "waited {wait} ms for a kept connection");
    }
    let wave = started.elapsed();
    assert!(wave < Duration::from_millis(1600), "the wave took {wave:?}");

    served.sigterm();
    let out = served.wait().await;
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{log}", out.status);
    assert!(!log.contains("panicked"), "{log}");
    if std::env::var_os("TEST_LOG").is_some() {
        eprintln!("{log}");
    }
    eprintln!(
        "measured: 3 PostgreSQL restarts under load: {served_during} served, {} failed, \
         /healthz always up; {POOL_SIZE} kept connections back {took:?} after the load stopped; \
         first burst one wave in {wave:?}",
        failed.load(Ordering::Relaxed)
    );
    drop(cluster);
}
