//! What the run means: counts by status and error kind, latency percentiles,
//! the waves, and what the server's `/pool` says to expect.
//!
//! **Wave rule.** Answers are sorted by completion time; a new wave starts
//! where the gap to the previous answer exceeds a quarter of the sleep (at
//! least 50 ms), or 1 s when the sleep is unknown. With a pool of C and a
//! sleep of S, answers come in bursts of C every S seconds, so gaps inside a
//! wave are scheduling noise and gaps between waves are close to S.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::burst::{Outcome, Run};
use super::http::{self, Target};

/// What the server's `GET /pool` said before the burst.
#[derive(Debug, Clone, Serialize)]
pub struct ServerPool {
    pub pool_size: u64,
    pub max_overflow: u64,
    pub pool_max: u64,
    pub pool_timeout_s: f64,
    pub sleep_seconds: f64,
    pub sleep_max: f64,
    pub max_connections: Option<u64>,
    pub reserved: Option<u64>,
    pub concurrency: Option<u64>,
}

impl ServerPool {
    pub async fn fetch(target: &Target) -> Option<ServerPool> {
        let answer = http::get(&target.sibling("/pool"), Duration::from_secs(5))
            .await
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
        let c = &v["configured"];
        Some(ServerPool {
            pool_size: c["pool_size"].as_u64()?,
            max_overflow: c["max_overflow"].as_u64()?,
            pool_max: c["pool_max"].as_u64()?,
            pool_timeout_s: c["pool_timeout_s"].as_f64()?,
            sleep_seconds: c["sleep_seconds"].as_f64()?,
            sleep_max: c["sleep_max"].as_f64()?,
            max_connections: v["postgres"]["max_connections"].as_u64(),
            reserved: v["postgres"]["reserved"].as_u64(),
            concurrency: v["concurrency"].as_u64(),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Wave {
    pub size: usize,
    /// Answers with status 200 in this wave.
    pub ok: usize,
    pub first_s: f64,
    pub last_s: f64,
    pub median_pool_wait_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Expectation {
    pub pool_size: u64,
    pub max_overflow: u64,
    pub pool_max: u64,
    pub max_connections: Option<u64>,
    pub reserved: Option<u64>,
    /// Requests the server can run at once: min(pool max, slots PostgreSQL grants).
    pub concurrency: u64,
    pub waves: u64,
    pub seconds: f64,
    pub verdict: String,
    pub matches: bool,
}

/// The machine-readable report (`--json`); field names are stable.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub requests: usize,
    pub url: String,
    pub answered: usize,
    pub interrupted: bool,
    pub total_seconds: f64,
    pub sleep_seconds: Option<f64>,
    pub statuses: BTreeMap<String, usize>,
    pub errors: BTreeMap<String, usize>,
    pub latency_ms: Option<Latency>,
    pub wave_gap_s: f64,
    pub waves: Vec<Wave>,
    pub expectation: Option<Expectation>,
}

impl Report {
    pub fn new(
        target: &Target,
        n: usize,
        run: &Run,
        sleep: Option<f64>,
        server: Option<&ServerPool>,
    ) -> Report {
        let mut statuses = BTreeMap::new();
        let mut errors = BTreeMap::new();
        for o in &run.outcomes {
            match &o.result {
                Ok(reply) => {
                    *statuses.entry(reply.status.to_string()).or_insert(0) += 1;
                    if let Some(kind) = &reply.error_kind {
                        *errors.entry(kind.clone()).or_insert(0) += 1;
                    } else if reply.status != 200 {
                        *errors.entry(format!("http_{}", reply.status)).or_insert(0) += 1;
                    }
                }
                Err(e) => *errors.entry(e.kind().to_owned()).or_insert(0) += 1,
            }
        }
        let gap = wave_gap(sleep);
        let waves = group_waves(&run.outcomes, gap);
        let mut report = Report {
            requests: n,
            url: target.url.to_string(),
            answered: run.outcomes.len(),
            interrupted: run.interrupted,
            total_seconds: run.elapsed,
            sleep_seconds: sleep,
            statuses,
            errors,
            latency_ms: latency(&run.outcomes),
            wave_gap_s: gap,
            waves,
            expectation: None,
        };
        report.expectation = server.map(|s| expect(&report, s, sleep.unwrap_or(s.sleep_seconds)));
        report
    }
}

pub fn wave_gap(sleep: Option<f64>) -> f64 {
    match sleep {
        Some(s) => (s / 4.0).max(0.05),
        None => 1.0,
    }
}

/// Groups answered requests (any HTTP status) by completion time; transport
/// failures are not answers and stay out of the waves.
pub fn group_waves(outcomes: &[Outcome], gap: f64) -> Vec<Wave> {
    let mut answered: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_ok()).collect();
    answered.sort_by(|a, b| a.at.total_cmp(&b.at));
    let mut waves: Vec<Vec<&Outcome>> = Vec::new();
    for o in answered {
        match waves.last_mut() {
            Some(w) if o.at - w.last().expect("non-empty").at <= gap => w.push(o),
            _ => waves.push(vec![o]),
        }
    }
    waves
        .into_iter()
        .map(|w| {
            let mut waits: Vec<f64> = w
                .iter()
                .filter_map(|o| o.result.as_ref().ok()?.pool_wait_ms)
                .collect();
            Wave {
                size: w.len(),
                ok: w
                    .iter()
                    .filter(|o| matches!(&o.result, Ok(r) if r.status == 200))
                    .count(),
                first_s: w[0].at,
                last_s: w[w.len() - 1].at,
                median_pool_wait_ms: median(&mut waits),
            }
        })
        .collect()
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

fn latency(outcomes: &[Outcome]) -> Option<Latency> {
    let mut ms: Vec<f64> = outcomes.iter().map(|o| o.at * 1000.0).collect();
    if ms.is_empty() {
        return None;
    }
    ms.sort_by(f64::total_cmp);
    // Nearest-rank percentile.
    let pick = |p: f64| ms[((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1];
    Some(Latency {
        p50: pick(0.50),
        p95: pick(0.95),
        p99: pick(0.99),
        max: ms[ms.len() - 1],
    })
}

/// The arithmetic: C = min(pool max, grantable slots) at once, so
/// ⌈N/C⌉ waves of `sleep` seconds; then whether the run bore it out.
fn expect(report: &Report, s: &ServerPool, sleep: f64) -> Expectation {
    let concurrency = s.concurrency.unwrap_or(s.pool_max).max(1);
    let n = report.requests as u64;
    let waves = n.div_ceil(concurrency);
    let count = |kind: &str| report.errors.get(kind).copied().unwrap_or(0);
    let ok = report.statuses.get("200").copied().unwrap_or(0);

    let mut why = Vec::new();
    if report.interrupted {
        why.push(format!(
            "interrupted after {} of {} answers",
            report.answered, n
        ));
    }
    if count("db_refused") > 0 {
        why.push(format!(
            "{} × db_refused: PostgreSQL refused connections — the pool (max {}) asks for more than max_connections {} grants",
            count("db_refused"),
            s.pool_max,
            s.max_connections.map_or("?".into(), |m| m.to_string())
        ));
    }
    if count("pool_timeout") > 0 {
        why.push(format!(
            "{} × pool_timeout: requests waited longer than DB_POOL_TIMEOUT ({}s); waves after {}s cannot be served",
            count("pool_timeout"),
            s.pool_timeout_s,
            s.pool_timeout_s
        ));
    }
    let other_errors = report.answered as u64
        - ok as u64
        - count("db_refused") as u64
        - count("pool_timeout") as u64;
    if other_errors > 0 {
        let kinds: Vec<String> = report
            .errors
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "db_refused" | "pool_timeout"))
            .map(|(k, v)| format!("{v} × {k}"))
            .collect();
        why.push(format!("other errors: {}", kinds.join(", ")));
    }
    if why.is_empty() && sleep > 0.0 && report.waves.len() as u64 != waves {
        why.push(format!(
            "observed {} waves, expected {waves}",
            report.waves.len()
        ));
    }
    let matches = why.is_empty();
    Expectation {
        pool_size: s.pool_size,
        max_overflow: s.max_overflow,
        pool_max: s.pool_max,
        max_connections: s.max_connections,
        reserved: s.reserved,
        concurrency,
        waves,
        seconds: waves as f64 * sleep,
        verdict: if matches {
            "matches".into()
        } else {
            why.join("; ")
        },
        matches,
    }
}
