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

use serde::{Deserialize, Serialize};

use super::burst::{Failure, Outcome, Run};
use super::expect::{predict, Layer, Plan, Prediction};
use super::http::{self, Target};
use super::verdict::{compare, Observed, Served, VerdictLine};
use crate::contract::{ErrorKind, PoolReport};

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
    /// Replicas seen by the one that answered `/pool`.
    pub replicas: u64,
    pub budget: Option<crate::budget::Budget>,
    /// PgBouncer's server pool and `query_wait_timeout`, when there is one.
    pub pooler_pool: Option<u64>,
    pub pooler_timeout_s: Option<f64>,
}

impl ServerPool {
    pub async fn fetch(target: &Target) -> Option<ServerPool> {
        let answer = http::get(&target.sibling("/pool"), Duration::from_secs(5))
            .await
            .ok()?;
        let r: PoolReport = serde_json::from_slice(&answer.body).ok()?;
        let c = &r.configured;
        Some(ServerPool {
            pool_size: c.pool_size.into(),
            max_overflow: c.max_overflow.into(),
            pool_max: c.pool_max.into(),
            pool_timeout_s: c.pool_timeout_s,
            sleep_seconds: c.sleep_seconds,
            sleep_max: c.sleep_max,
            max_connections: r.postgres.as_ref().map(|p| p.max_connections.into()),
            reserved: r.postgres.as_ref().map(|p| p.reserved.into()),
            replicas: r.replicas.len().max(1) as u64,
            budget: r.budget,
            pooler_pool: r.pooler.as_ref().map(|p| p.default_pool_size.into()),
            pooler_timeout_s: r.pooler.as_ref().map(|p| p.query_wait_timeout_s),
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wave {
    pub size: usize,
    /// Answers with status 200 in this wave.
    pub ok: usize,
    pub first_s: f64,
    pub last_s: f64,
    pub median_pool_wait_ms: Option<f64>,
}

/// What the server's `/pool` predicts for this run, and the verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Expectation {
    pub pool_size: u64,
    pub max_overflow: u64,
    pub pool_max: u64,
    pub max_connections: Option<u64>,
    pub reserved: Option<u64>,
    pub pool_timeout_s: f64,
    /// Replicas behind the load balancer, as `/pool` saw them.
    pub replicas: u64,
    /// PgBouncer's server pool, when there is one.
    pub pooler_pool: Option<u64>,
    /// Requests served at once over the whole topology.
    pub concurrency: u64,
    /// Number of predicted waves of served answers.
    pub waves: u64,
    /// When the last answer is due.
    pub seconds: f64,
    #[serde(flatten)]
    pub prediction: Prediction,
    /// `verdict`: `matches`, or `differs: ` and the first difference;
    /// `matches`: whether it matches.
    #[serde(flatten)]
    pub verdict: VerdictLine,
}

/// The answers of one kind that were not served, for the summary's list.
#[derive(Debug, Clone)]
pub struct Failed {
    pub failure: Failure,
    pub count: usize,
    pub first_s: f64,
    pub last_s: f64,
}

/// The machine-readable report (`--json`); field names are stable. It
/// deserialises too, so that a reader of `--json` (the compose test) holds
/// the same type the client wrote; the skipped fields come back empty.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub requests: usize,
    pub url: String,
    /// The address the host resolved to, once for the whole run.
    pub address: Option<String>,
    pub answered: usize,
    pub interrupted: bool,
    pub total_seconds: f64,
    pub sleep_seconds: Option<f64>,
    pub statuses: BTreeMap<u16, usize>,
    pub errors: BTreeMap<Failure, usize>,
    /// Answers by the replica that gave them (`X-Replica`).
    pub replicas: BTreeMap<String, usize>,
    pub latency_ms: Option<Latency>,
    pub wave_gap_s: f64,
    /// Every answer (any status) grouped by completion time.
    pub waves: Vec<Wave>,
    /// The summary's list: the served answers' waves (what the verdict
    /// compares with the predicted ones) …
    #[serde(skip)]
    pub served_waves: Vec<Wave>,
    /// … and the other answers and failures, by kind.
    #[serde(skip)]
    pub failed: Vec<Failed>,
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
        let mut replicas = BTreeMap::new();
        for o in &run.outcomes {
            if let Ok(reply) = &o.result {
                if let Some(r) = &reply.replica {
                    *replicas.entry(r.clone()).or_insert(0) += 1;
                }
                *statuses.entry(reply.status).or_insert(0) += 1;
            }
            if let Some(failure) = o.failure() {
                *errors.entry(failure).or_insert(0) += 1;
            }
        }
        let gap = wave_gap(sleep);
        let waves = group_waves(&run.outcomes, gap);
        let served_waves = group(run.outcomes.iter().filter(|o| o.is_served()), gap);
        let mut report = Report {
            requests: n,
            url: target.url.to_string(),
            address: target.address(),
            answered: run.outcomes.len(),
            interrupted: run.interrupted,
            total_seconds: run.elapsed,
            sleep_seconds: sleep,
            statuses,
            errors,
            replicas,
            latency_ms: latency(&run.outcomes),
            wave_gap_s: gap,
            waves,
            served_waves,
            failed: failed(&run.outcomes),
            expectation: None,
        };
        report.expectation =
            server.map(|s| expect(&report, &run.outcomes, s, sleep.unwrap_or(s.sleep_seconds)));
        report
    }
}

pub fn wave_gap(sleep: Option<f64>) -> f64 {
    match sleep {
        Some(s) => (s / 4.0).max(0.05),
        None => 1.0,
    }
}

/// Splits items sorted by time where the gap to the previous one exceeds `gap`.
fn split_at_gaps(mut items: Vec<&Outcome>, gap: f64) -> Vec<Vec<&Outcome>> {
    items.sort_by(|a, b| a.at.total_cmp(&b.at));
    let mut groups: Vec<Vec<&Outcome>> = Vec::new();
    for o in items {
        match groups.last_mut() {
            Some(g) if o.at - g.last().expect("non-empty").at <= gap => g.push(o),
            _ => groups.push(vec![o]),
        }
    }
    groups
}

/// Groups answered requests (any HTTP status) by completion time; transport
/// failures are not answers and stay out of the waves.
pub fn group_waves(outcomes: &[Outcome], gap: f64) -> Vec<Wave> {
    group(outcomes.iter().filter(|o| o.result.is_ok()), gap)
}

/// Groups by completion time; each wave's pool wait is the median the
/// server reported for it.
fn group<'a>(outcomes: impl Iterator<Item = &'a Outcome>, gap: f64) -> Vec<Wave> {
    split_at_gaps(outcomes.collect(), gap)
        .into_iter()
        .map(|w| {
            let mut waits: Vec<f64> = w
                .iter()
                .filter_map(|o| o.result.as_ref().ok()?.timing)
                .map(|t| t.pool.as_secs_f64() * 1000.0)
                .collect();
            Wave {
                size: w.len(),
                ok: w.iter().filter(|o| o.is_served()).count(),
                first_s: w[0].at,
                last_s: w[w.len() - 1].at,
                median_pool_wait_ms: median(&mut waits),
            }
        })
        .collect()
}

/// The answers not served, by kind, in order of their first.
fn failed(outcomes: &[Outcome]) -> Vec<Failed> {
    let mut by_kind: BTreeMap<Failure, Failed> = BTreeMap::new();
    for o in outcomes {
        let Some(failure) = o.failure() else {
            continue;
        };
        let f = by_kind.entry(failure).or_insert(Failed {
            failure,
            count: 0,
            first_s: o.at,
            last_s: o.at,
        });
        f.count += 1;
        f.first_s = f.first_s.min(o.at);
        f.last_s = f.last_s.max(o.at);
    }
    let mut failed: Vec<Failed> = by_kind.into_values().collect();
    failed.sort_by(|a, b| a.first_s.total_cmp(&b.first_s));
    failed
}

/// The run as the verdict sees it: served waves (200s only) with the
/// server's timings, refusals and timeouts with their times, anything else
/// by kind.
fn observe(report: &Report, outcomes: &[Outcome], gap: f64) -> Observed {
    let served = split_at_gaps(outcomes.iter().filter(|o| o.is_served()).collect(), gap);
    let times = |wanted: fn(ErrorKind) -> bool| -> Vec<f64> {
        outcomes
            .iter()
            .filter(|o| matches!(o.failure(), Some(Failure::Kind(k)) if wanted(k)))
            .map(|o| o.at)
            .collect()
    };
    let predicted =
        |f: &Failure| matches!(f, Failure::Kind(k) if *k == ErrorKind::DbRefused || k.is_timeout());
    Observed {
        served_waves: served
            .iter()
            .map(|w| {
                w.iter()
                    .map(|o| Served {
                        at: o.at,
                        timing: o.result.as_ref().ok().and_then(|r| r.timing),
                    })
                    .collect()
            })
            .collect(),
        refused_at: times(|k| k == ErrorKind::DbRefused),
        timeouts_at: times(ErrorKind::is_timeout),
        other: report
            .errors
            .iter()
            .filter(|(f, _)| !predicted(f))
            .map(|(f, n)| (*f, *n as u64))
            .collect(),
        interrupted: report
            .interrupted
            .then_some((report.answered as u64, report.requests as u64)),
    }
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

/// The arithmetic from `/pool` (see [`super::expect`]), then the verdict.
fn expect(report: &Report, outcomes: &[Outcome], s: &ServerPool, sleep: f64) -> Expectation {
    // Unknown topology (PostgreSQL could not be asked): this replica's pool.
    let topology = s.budget.unwrap_or(crate::budget::Budget {
        concurrency: s.pool_max as u32,
        app_capacity: s.pool_max as u32,
        limited_by: Layer::AppPool,
        refuses_excess: false,
    });
    let plan = Plan {
        requests: report.requests as u64,
        sleep_s: sleep,
        replicas: s.replicas,
        pool_max: s.pool_max,
        concurrency: u64::from(topology.concurrency).max(1),
        refuses_excess: topology.refuses_excess,
        limited_by: topology.limited_by,
        pool_timeout_s: s.pool_timeout_s,
        // A query_wait_timeout of 0 means "wait for ever".
        pooler_timeout_s: s.pooler_timeout_s.filter(|t| *t > 0.0),
    };
    let prediction = predict(&plan);
    let observed = observe(report, outcomes, report.wave_gap_s);
    let verdict = compare(&prediction, &plan, &observed);
    let last_wave = prediction.expected_waves().last().map_or(0.0, |w| w.at_s);
    let seconds = if prediction.timeouts_max > 0 {
        last_wave.max(s.pool_timeout_s)
    } else {
        last_wave
    };
    Expectation {
        pool_size: s.pool_size,
        max_overflow: s.max_overflow,
        pool_max: s.pool_max,
        max_connections: s.max_connections,
        reserved: s.reserved,
        pool_timeout_s: s.pool_timeout_s,
        replicas: s.replicas,
        pooler_pool: s.pooler_pool,
        concurrency: prediction.concurrency,
        waves: prediction.expected_waves().count() as u64,
        seconds,
        prediction,
        verdict: VerdictLine::from(&verdict),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::burst::Reply;
    use crate::client::http::TransportError;
    use crate::contract::ServerTiming;

    fn answer(at: f64, status: u16, pool_wait_ms: Option<f64>) -> Outcome {
        Outcome {
            at,
            result: Ok(Reply {
                status,
                error_kind: None,
                timing: pool_wait_ms.map(|ms| ServerTiming {
                    pool: Duration::from_secs_f64(ms / 1000.0),
                    pooler: None,
                    db: Duration::from_secs(5),
                }),
                replica: None,
            }),
        }
    }

    #[test]
    fn answers_group_into_waves_at_gaps_and_failures_stay_out() {
        let outcomes = [
            answer(10.02, 200, Some(5000.0)),
            answer(5.01, 200, Some(1.0)),
            answer(5.03, 503, None),
            Outcome {
                at: 7.0,
                result: Err(TransportError::ConnectionReset),
            },
            answer(5.02, 200, Some(3.0)),
            answer(10.01, 200, Some(4990.0)),
        ];
        let waves = group_waves(&outcomes, wave_gap(Some(5.0)));
        assert_eq!(waves.len(), 2, "{waves:?}");
        assert_eq!((waves[0].size, waves[0].ok), (3, 2));
        assert_eq!((waves[0].first_s, waves[0].last_s), (5.01, 5.03));
        assert_eq!(waves[0].median_pool_wait_ms, Some(3.0));
        assert_eq!((waves[1].size, waves[1].ok), (2, 2));
        assert_eq!(waves[1].median_pool_wait_ms, Some(5000.0));
    }

    #[test]
    fn the_gap_is_a_quarter_of_the_sleep_with_a_floor() {
        assert_eq!(wave_gap(Some(5.0)), 1.25);
        assert_eq!(wave_gap(Some(0.0)), 0.05);
        assert_eq!(wave_gap(None), 1.0);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let outcomes: Vec<Outcome> = (1..=100)
            .map(|i| answer(f64::from(i) / 1000.0, 200, None))
            .collect();
        let l = latency(&outcomes).unwrap();
        assert_eq!((l.p50, l.p95, l.p99, l.max), (50.0, 95.0, 99.0, 100.0));
        let one = latency(&outcomes[..1]).unwrap();
        assert_eq!((one.p50, one.p99, one.max), (1.0, 1.0, 1.0));
        assert!(latency(&[]).is_none());
    }
}
