//! One step of the sweep, summarised: what the clients saw (throughput,
//! latency, where each request's time went according to `Server-Timing`)
//! and what the server's `/pool` said while the step ran (PostgreSQL's
//! active backends, lock waiters, the probe's latency). Pure functions.

use std::collections::BTreeMap;

use serde::Serialize;

/// One answered request, as the step needs it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub latency_ms: f64,
    /// 200, or the error: `db_refused`, `pool_timeout`, `client_timeout`…
    pub outcome: Result<(), String>,
    /// `pool;dur=` of `Server-Timing`: waiting for a connection.
    pub pool_ms: Option<f64>,
    /// `pooler;dur=` + `db;dur=`: from sending the statement to its last row.
    pub db_ms: Option<f64>,
}

/// One reading of the server's `/pool` during the step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub active: u32,
    pub lock_waiters: u32,
    pub probe_ms: f64,
    pub in_use: u32,
    pub waiting: u32,
    /// The limit `/pool` reported in force.
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// The pool limit asked for.
    pub limit: u32,
    /// The limit `/pool` reported during the step (the server's word).
    pub limit_seen: Option<u32>,
    /// Seconds measured.
    pub seconds: f64,
    pub answered: usize,
    pub ok: usize,
    /// Answers that were not 200, by error kind.
    pub errors: BTreeMap<String, usize>,
    /// 200s per second.
    pub rps: f64,
    /// Of the 200s, in ms.
    pub latency_ms: Option<Latency>,
    /// Mean wait for a connection (pool) and mean time in the database, ms.
    pub pool_ms: Option<f64>,
    pub db_ms: Option<f64>,
    /// Means over the step's `/pool` readings.
    pub active: Option<f64>,
    pub lock_waiters: Option<f64>,
    pub in_use: Option<f64>,
    pub waiting: Option<f64>,
    /// Median of the readings' `SELECT 1` round trips, ms.
    pub probe_ms: Option<f64>,
    /// `/pool` readings taken.
    pub samples: usize,
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

pub fn summarise(limit: u32, seconds: f64, answers: &[Answer], samples: &[Sample]) -> Step {
    let ok: Vec<&Answer> = answers.iter().filter(|a| a.outcome.is_ok()).collect();
    let mut errors = BTreeMap::new();
    for a in answers {
        if let Err(kind) = &a.outcome {
            *errors.entry(kind.clone()).or_insert(0) += 1;
        }
    }
    let mut latencies: Vec<f64> = ok.iter().map(|a| a.latency_ms).collect();
    latencies.sort_by(f64::total_cmp);
    let latency_ms = percentile(&latencies, 50.0).map(|p50| Latency {
        p50,
        p95: percentile(&latencies, 95.0).unwrap_or(p50),
        p99: percentile(&latencies, 99.0).unwrap_or(p50),
    });
    let mut probes: Vec<f64> = samples.iter().map(|s| s.probe_ms).collect();
    probes.sort_by(f64::total_cmp);
    Step {
        limit,
        limit_seen: samples.iter().rev().find_map(|s| s.limit),
        seconds,
        answered: answers.len(),
        ok: ok.len(),
        errors,
        rps: if seconds > 0.0 {
            ok.len() as f64 / seconds
        } else {
            0.0
        },
        latency_ms,
        pool_ms: mean(ok.iter().filter_map(|a| a.pool_ms)),
        db_ms: mean(ok.iter().filter_map(|a| a.db_ms)),
        active: mean(samples.iter().map(|s| s.active.into())),
        lock_waiters: mean(samples.iter().map(|s| s.lock_waiters.into())),
        in_use: mean(samples.iter().map(|s| s.in_use.into())),
        waiting: mean(samples.iter().map(|s| s.waiting.into())),
        probe_ms: percentile(&probes, 50.0),
        samples: samples.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(latency_ms: f64, pool_ms: f64, db_ms: f64) -> Answer {
        Answer {
            latency_ms,
            outcome: Ok(()),
            pool_ms: Some(pool_ms),
            db_ms: Some(db_ms),
        }
    }

    #[test]
    fn a_step_counts_200s_per_second_and_splits_the_time() {
        let mut answers: Vec<Answer> = (1..=100).map(|i| ok(i as f64, 10.0, 30.0)).collect();
        answers.push(Answer {
            latency_ms: 5.0,
            outcome: Err("db_refused".into()),
            pool_ms: None,
            db_ms: None,
        });
        let samples = [
            Sample {
                active: 4,
                lock_waiters: 2,
                probe_ms: 0.5,
                in_use: 4,
                waiting: 36,
                limit: Some(4),
            },
            Sample {
                active: 2,
                lock_waiters: 0,
                probe_ms: 1.5,
                in_use: 4,
                waiting: 30,
                limit: Some(4),
            },
        ];
        let step = summarise(4, 10.0, &answers, &samples);
        assert_eq!((step.answered, step.ok, step.rps), (101, 100, 10.0));
        assert_eq!(step.errors["db_refused"], 1);
        let l = step.latency_ms.unwrap();
        assert_eq!((l.p50, l.p95, l.p99), (50.0, 95.0, 99.0));
        assert_eq!((step.pool_ms, step.db_ms), (Some(10.0), Some(30.0)));
        assert_eq!((step.active, step.lock_waiters), (Some(3.0), Some(1.0)));
        assert_eq!(
            (step.probe_ms, step.limit_seen, step.samples),
            (Some(0.5), Some(4), 2)
        );
    }

    #[test]
    fn an_empty_step_has_no_figures_but_no_panic() {
        let step = summarise(1, 10.0, &[], &[]);
        assert_eq!(
            (step.rps, step.latency_ms, step.probe_ms),
            (0.0, None, None)
        );
    }
}
