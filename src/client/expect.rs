//! What a run should look like, and whether it did: the pool arithmetic as
//! a prediction of every answer, and the verdict that compares a run with it.
//! Pure functions, so both are unit-tested without a server.
//!
//! **The prediction** (SQLAlchemy's QueuePool in front of PostgreSQL). With
//! a pool of at most P connections, C = min(P, slots the server grants)
//! requests run at once:
//!
//! * C < P: the pool tries to grow past what PostgreSQL grants. C requests
//!   are served in one wave after the sleep; every other request needs a new
//!   connection, is refused, and gets `db_refused` at once.
//! * C = P: requests wait their turn. Wave k is handed its connections after
//!   (k − 1) × sleep and answered at k × sleep. A request that would wait
//!   longer than `DB_POOL_TIMEOUT` gets `pool_timeout` at that timeout
//!   instead. A wave handed its connections within the tolerance of the
//!   timeout may go either way, and the prediction says so.
//!
//! **The verdict** checks, in this order, and names the first difference:
//! unexpected kinds of answers, the refusals (count, and all within
//! [`REFUSAL_WITHIN_S`]), the timeouts (count, and near `DB_POOL_TIMEOUT`),
//! then the served waves (count, each size, each time within
//! max(0.5 s, 10 %) of k × sleep).

use serde::Serialize;

pub use crate::budget::Layer;

/// Refusals must all arrive within this many seconds of the burst.
pub const REFUSAL_WITHIN_S: f64 = 1.0;

/// Inputs of the arithmetic for one run, from the server's `/pool`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub requests: u64,
    pub sleep_s: f64,
    /// Requests served at once: min(replicas × pool max, pooler pool, slots
    /// PostgreSQL grants) — see `crate::budget`.
    pub concurrency: u64,
    /// PostgreSQL is the limit: the excess is refused at once, not queued.
    pub refuses_excess: bool,
    pub limited_by: Layer,
    pub pool_timeout_s: f64,
    /// PgBouncer's `query_wait_timeout`, when requests also queue there.
    pub pooler_timeout_s: Option<f64>,
}

impl Plan {
    /// A request waiting longer than the first bound may time out; one
    /// waiting longer than the second surely does. Without a pooler both
    /// are `DB_POOL_TIMEOUT`; with one, the wait is split between the app
    /// pool and PgBouncer in proportions the arithmetic does not know.
    pub fn timeout_window(&self) -> (f64, f64) {
        match self.pooler_timeout_s {
            None => (self.pool_timeout_s, self.pool_timeout_s),
            Some(p) => (self.pool_timeout_s.min(p), self.pool_timeout_s + p),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PredictedWave {
    pub size: u64,
    pub at_s: f64,
    /// Handed its connections at about `DB_POOL_TIMEOUT`: served or timed out.
    pub may_time_out: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Prediction {
    #[serde(skip)]
    pub concurrency: u64,
    #[serde(rename = "predicted_waves")]
    pub waves: Vec<PredictedWave>,
    /// `db_refused`, all at once.
    pub refused: u64,
    /// `pool_timeout` at `DB_POOL_TIMEOUT`: at least / at most.
    pub timeouts_min: u64,
    pub timeouts_max: u64,
    /// The layer that limits the run: `app pool`, `pooler` or `PostgreSQL`.
    pub limited_by: Layer,
}

/// max(0.5 s, 10 %) of `t`.
pub fn tolerance(t: f64) -> f64 {
    (0.1 * t).max(0.5)
}

/// How close to `DB_POOL_TIMEOUT` a wave may be handed its connections and
/// still go either way: requests arrive over a short spread, and each
/// request's timeout counts from its own arrival.
fn handoff_margin(pool_timeout_s: f64) -> f64 {
    (0.05 * pool_timeout_s).max(0.1)
}

pub fn predict(b: &Plan) -> Prediction {
    let c = b.concurrency.max(1);
    let n = b.requests;
    if b.refuses_excess {
        let served = n.min(c);
        return Prediction {
            concurrency: c,
            waves: wave_if(served, b.sleep_s, false),
            refused: n - served,
            timeouts_min: 0,
            timeouts_max: 0,
            limited_by: b.limited_by,
        };
    }
    let (first_timeout, last_timeout) = b.timeout_window();
    let mut waves = Vec::new();
    let mut left = n;
    let mut k = 0u64;
    while left > 0 {
        let handed_at = k as f64 * b.sleep_s;
        if b.sleep_s > 0.0 && handed_at > last_timeout + handoff_margin(last_timeout) {
            break;
        }
        let size = left.min(c);
        let may_time_out =
            b.sleep_s > 0.0 && handed_at >= first_timeout - handoff_margin(first_timeout);
        waves.push(PredictedWave {
            size,
            at_s: (k + 1) as f64 * b.sleep_s,
            may_time_out,
        });
        left -= size;
        k += 1;
    }
    let uncertain: u64 = waves
        .iter()
        .filter(|w| w.may_time_out)
        .map(|w| w.size)
        .sum();
    Prediction {
        concurrency: c,
        waves,
        refused: 0,
        timeouts_min: left,
        timeouts_max: left + uncertain,
        limited_by: b.limited_by,
    }
}

fn wave_if(size: u64, at_s: f64, may_time_out: bool) -> Vec<PredictedWave> {
    if size == 0 {
        return Vec::new();
    }
    vec![PredictedWave {
        size,
        at_s,
        may_time_out,
    }]
}

/// What happened, reduced to what the verdict compares.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Completion times of the 200 answers, grouped into waves by the wave rule.
    pub served_waves: Vec<(u64, f64, f64)>,
    /// Completion times of `db_refused` answers.
    pub refused_at: Vec<f64>,
    /// Completion times of `pool_timeout` (and `pooler_timeout`) answers.
    pub timeouts_at: Vec<f64>,
    /// Any other outcome: (kind, count).
    pub other: Vec<(String, u64)>,
    /// Interrupted after this many answers of how many.
    pub interrupted: Option<(u64, u64)>,
}

/// `Ok(())` when the run agrees with the prediction in every part, else the
/// first difference in words a user can act on.
pub fn compare(p: &Prediction, b: &Plan, o: &Observed) -> Result<(), String> {
    if let Some((answered, requests)) = o.interrupted {
        return Err(format!(
            "interrupted after {answered} of {requests} answers; only a finished run can be compared"
        ));
    }
    if let Some((kind, count)) = o.other.first() {
        return Err(format!(
            "{count} × {kind} answered, which the pool arithmetic does not predict \
             (see the server's log and the error messages)"
        ));
    }
    let refused = o.refused_at.len() as u64;
    if refused != p.refused {
        return Err(if p.refused == 0 {
            format!(
                "{refused} × db_refused, expected none: PostgreSQL refused connections the \
                 server's /pool said it would grant (another client took slots?)"
            )
        } else {
            format!(
                "{refused} × db_refused, expected {} (requests beyond the {} connections \
                 PostgreSQL grants)",
                p.refused, p.concurrency
            )
        });
    }
    if let Some(late) = o.refused_at.iter().copied().find(|t| *t > REFUSAL_WITHIN_S) {
        return Err(format!(
            "a db_refused answer came after {late:.2}s; refusals should be immediate \
             (within {REFUSAL_WITHIN_S} s)"
        ));
    }
    let timeouts = o.timeouts_at.len() as u64;
    if timeouts < p.timeouts_min || timeouts > p.timeouts_max {
        let expected = if p.timeouts_min == p.timeouts_max {
            p.timeouts_min.to_string()
        } else {
            format!("{} to {}", p.timeouts_min, p.timeouts_max)
        };
        return Err(format!(
            "{timeouts} timed out, expected {expected} (requests still waiting after \
             DB_POOL_TIMEOUT = {} s{})",
            trim(b.pool_timeout_s),
            b.pooler_timeout_s.map_or(String::new(), |p| format!(
                " or PgBouncer's query_wait_timeout = {} s",
                trim(p)
            ))
        ));
    }
    let (first, last) = b.timeout_window();
    if let Some(t) = o
        .timeouts_at
        .iter()
        .copied()
        .find(|t| *t < first - tolerance(first) || *t > last + tolerance(last))
    {
        return Err(format!(
            "a request timed out at {t:.2}s, expected at DB_POOL_TIMEOUT = {} s ± {}",
            trim(b.pool_timeout_s),
            trim(tolerance(first))
        ));
    }
    if b.sleep_s > 0.0 {
        compare_waves(p, o)?;
    } else {
        let served: u64 = o.served_waves.iter().map(|w| w.0).sum();
        let expected: u64 = p.waves.iter().map(|w| w.size).sum();
        if served != expected {
            return Err(format!("{served} answers served, expected {expected}"));
        }
    }
    Ok(())
}

/// The served waves against the predicted ones; the last predicted wave may
/// be partly or wholly lost to the pool timeout when it says so.
fn compare_waves(p: &Prediction, o: &Observed) -> Result<(), String> {
    let sure = p.waves.iter().filter(|w| !w.may_time_out).count();
    let seen = o.served_waves.len();
    if seen < sure || seen > p.waves.len() {
        return Err(format!(
            "{seen} waves of answers, expected {} — {}",
            if sure == p.waves.len() {
                sure.to_string()
            } else {
                format!("{sure} to {}", p.waves.len())
            },
            if seen > p.waves.len() {
                "more waves than the pool's size explains: the server served fewer requests at \
                 once than /pool says (a slower database, other clients, or a smaller pool)"
            } else {
                "fewer waves than the pool's size explains: more requests ran at once than /pool says"
            }
        ));
    }
    for (i, (want, &(size, first, last))) in p.waves.iter().zip(&o.served_waves).enumerate() {
        let k = i + 1;
        let size_ok = if want.may_time_out {
            size <= want.size
        } else {
            size == want.size
        };
        if !size_ok {
            return Err(format!(
                "wave {k} had {size} answers, expected {}",
                want.size
            ));
        }
        let tol = tolerance(want.at_s);
        for t in [first, last] {
            if (t - want.at_s).abs() > tol {
                return Err(format!(
                    "wave {k} answered at {first:.2}–{last:.2}s, expected at {} s ± {} \
                     ({k} × the sleep): {}",
                    trim(want.at_s),
                    trim(tol),
                    if t > want.at_s {
                        "the server is slower than the arithmetic (a loaded machine or database?)"
                    } else {
                        "faster than the sleep allows: is the route sleeping?"
                    }
                ));
            }
        }
    }
    Ok(())
}

/// 5.0 → "5", 0.5 → "0.5".
pub fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(n: u64, pool_max: u64, concurrency: u64) -> Plan {
        let refused = concurrency < pool_max;
        Plan {
            requests: n,
            sleep_s: 5.0,
            concurrency,
            refuses_excess: refused,
            limited_by: if refused {
                Layer::Postgres
            } else {
                Layer::AppPool
            },
            pool_timeout_s: 30.0,
            pooler_timeout_s: None,
        }
    }

    fn waves(p: &Prediction) -> Vec<(u64, f64, bool)> {
        p.waves
            .iter()
            .map(|w| (w.size, w.at_s, w.may_time_out))
            .collect()
    }

    /// Observed waves exactly as predicted, answered a little late.
    fn as_predicted(p: &Prediction) -> Observed {
        Observed {
            served_waves: p
                .waves
                .iter()
                .map(|w| (w.size, w.at_s + 0.02, w.at_s + 0.08))
                .collect(),
            refused_at: vec![0.05; p.refused as usize],
            timeouts_at: vec![30.01; p.timeouts_min as usize],
            ..Observed::default()
        }
    }

    #[test]
    fn thirty_requests_on_ten_plus_ten_come_in_two_waves() {
        let p = predict(&budget(30, 20, 20));
        assert_eq!(waves(&p), vec![(20, 5.0, false), (10, 10.0, false)]);
        assert_eq!((p.refused, p.timeouts_min, p.timeouts_max), (0, 0, 0));
        assert_eq!(p.limited_by, Layer::AppPool);
    }

    #[test]
    fn a_pool_larger_than_the_server_grants_is_refused_at_once() {
        // Pool 30 + 30, max_connections 40: 40 − 3 reserved − 1 monitor = 36.
        let p = predict(&budget(60, 60, 36));
        assert_eq!(waves(&p), vec![(36, 5.0, false)]);
        assert_eq!(p.refused, 24);
        assert_eq!(p.limited_by, Layer::Postgres);
        let p = predict(&budget(100, 60, 36));
        assert_eq!((waves(&p)[0].0, p.refused), (36, 64));
    }

    #[test]
    fn waves_handed_out_after_the_pool_timeout_time_out() {
        // 1000 on 10 + 10, 5 s sleep, 30 s timeout: waves 1–6 are handed
        // their connections at 0–25 s; wave 7 at 30 s = the timeout, either way.
        let p = predict(&budget(1000, 20, 20));
        assert_eq!(p.waves.len(), 7);
        assert!(p.waves[..6].iter().all(|w| !w.may_time_out));
        assert!(p.waves[6].may_time_out);
        assert_eq!((p.timeouts_min, p.timeouts_max), (860, 880));
        // 100 on 10 + 10: 5 waves of 20, the last handed out at 20 s.
        let p = predict(&budget(100, 20, 20));
        assert_eq!(p.waves.len(), 5);
        assert_eq!(p.timeouts_max, 0);
    }

    #[test]
    fn a_run_that_follows_the_arithmetic_matches() {
        for b in [
            budget(30, 20, 20),
            budget(60, 60, 36),
            budget(100, 20, 20),
            budget(1000, 20, 20),
        ] {
            let p = predict(&b);
            assert_eq!(compare(&p, &b, &as_predicted(&p)), Ok(()), "{b:?}");
        }
        // The uncertain wave served instead of timed out matches too.
        let b = budget(1000, 20, 20);
        let p = predict(&b);
        let mut o = as_predicted(&p);
        o.timeouts_at.truncate(860);
        assert_eq!(compare(&p, &b, &o), Ok(()));
        // And lost entirely to the timeout.
        o.served_waves.pop();
        o.timeouts_at = vec![30.0; 880];
        assert_eq!(compare(&p, &b, &o), Ok(()));
    }

    #[test]
    fn refusals_that_waited_out_the_pool_timeout_differ() {
        // What sqlx's silent retries produced: 24 answers at 34 s, no refusal.
        let b = budget(60, 60, 36);
        let p = predict(&b);
        let o = Observed {
            served_waves: vec![(36, 5.02, 5.15), (24, 33.8, 34.0)],
            ..Observed::default()
        };
        let why = compare(&p, &b, &o).unwrap_err();
        assert!(why.contains("0 × db_refused, expected 24"), "{why}");
        // Refused, but only after a long wait.
        let o = Observed {
            served_waves: vec![(36, 5.02, 5.15)],
            refused_at: vec![27.4; 24],
            ..Observed::default()
        };
        let why = compare(&p, &b, &o).unwrap_err();
        assert!(why.contains("after 27.40s"), "{why}");
    }

    #[test]
    fn a_slower_server_than_promised_differs() {
        // 30 requests, but only 10 at once: three waves where two were promised.
        let b = budget(30, 20, 20);
        let p = predict(&b);
        let o = Observed {
            served_waves: vec![(10, 5.0, 5.1), (10, 10.0, 10.1), (10, 15.0, 15.1)],
            ..Observed::default()
        };
        let why = compare(&p, &b, &o).unwrap_err();
        assert!(why.starts_with("3 waves of answers, expected 2"), "{why}");
        // Right sizes, but each wave late.
        let o = Observed {
            served_waves: vec![(20, 7.0, 7.1), (10, 14.0, 14.1)],
            ..Observed::default()
        };
        let why = compare(&p, &b, &o).unwrap_err();
        assert!(why.starts_with("wave 1 answered at 7.00–7.10s"), "{why}");
    }

    #[test]
    fn unexpected_kinds_and_counts_differ() {
        let b = budget(30, 20, 20);
        let p = predict(&b);
        let mut o = as_predicted(&p);
        o.other = vec![("db_unavailable".into(), 3)];
        assert!(compare(&p, &b, &o)
            .unwrap_err()
            .contains("3 × db_unavailable"));
        let mut o = as_predicted(&p);
        o.timeouts_at = vec![30.0; 2];
        assert!(compare(&p, &b, &o)
            .unwrap_err()
            .starts_with("2 timed out, expected 0"));
        let mut o = as_predicted(&p);
        o.interrupted = Some((3, 30));
        assert!(compare(&p, &b, &o).is_err());
    }

    #[test]
    fn a_pooler_queues_the_excess_in_waves_of_its_pool() {
        // 3 replicas × 20 through PgBouncer's 20 server connections.
        let b = Plan {
            requests: 100,
            sleep_s: 5.0,
            concurrency: 20,
            refuses_excess: false,
            limited_by: Layer::Pooler,
            pool_timeout_s: 30.0,
            pooler_timeout_s: Some(120.0),
        };
        let p = predict(&b);
        assert_eq!(p.waves.len(), 5);
        assert!(p.waves.iter().all(|w| w.size == 20 && !w.may_time_out));
        assert_eq!(
            (p.refused, p.timeouts_max, p.limited_by),
            (0, 0, Layer::Pooler)
        );
        assert_eq!(compare(&p, &b, &as_predicted(&p)), Ok(()));
    }

    #[test]
    fn tolerance_is_half_a_second_or_ten_percent() {
        assert_eq!(tolerance(1.0), 0.5);
        assert_eq!(tolerance(30.0), 3.0);
    }
}
