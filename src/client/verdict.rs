//! Whether a run did what the pool arithmetic ([`super::expect`]) predicted.
//! The verdict judges the *pool*, not the machine it ran on: it reads each
//! served answer's `Server-Timing` (the wait for a connection, and the
//! statement's own time) and so allows a slow database, within bounds,
//! instead of calling a correct pool on a loaded machine `differs`.
//!
//! It checks, in this order, and names the first difference:
//!
//! 1. the outcomes: no unexpected kinds; `db_refused` exactly as predicted
//!    (a run that is exactly the prediction for one slot fewer is named as
//!    such, [`Difference::SlotShort`], not as a pool refusing waiters) and
//!    all within [`REFUSAL_WITHIN_S`]; the count of timeouts, all near
//!    `DB_POOL_TIMEOUT`; the number of served waves and each one's size;
//! 2. per served wave k, per answer:
//!    * **the pool:** its wait (`pool` + `pooler`) is when wave k − 1's
//!      connections came back (their wait + their statement, by the
//!      server's account), within max(0.5 s, 10 %) of k × sleep. Wave 1
//!      waits only to open a connection (a login: the machine's and the
//!      database's cost), so it may wait up to [`opening_allowance`];
//!    * **the database:** its statement (`db`) took the sleep, up to
//!      [`statement_slack`] longer (a busy machine), never less;
//!    * **the rest** (between client and service): the answer time minus
//!      the server's wait and statement is within max(0.5 s, 10 %) of k × sleep.
//!
//!    An answer without `Server-Timing` is held to k × sleep within
//!    max(0.5 s, 10 %) instead.
//!
//! So each answer may be late by at most the statement slack per wave plus
//! the tolerances: a run that took 34 s where 10 s were expected differs,
//! whatever the server says about it.

use super::burst::Failure;
use super::expect::{predict, tolerance, trim, Layer, Plan, Prediction};
use crate::contract::ServerTiming;

/// Refusals must all arrive within this many seconds of the burst.
pub const REFUSAL_WITHIN_S: f64 = 1.0;

/// How much longer than the sleep the statement may run and still count as
/// the machine rather than a difference: max(0.5 s, 25 %). A loaded 2-core
/// machine measured statements up to 10 % over a 5 s sleep; a lock held
/// elsewhere makes them several times the sleep.
pub fn statement_slack(sleep_s: f64) -> f64 {
    (0.25 * sleep_s).max(0.5)
}

/// How long a wave-1 request may wait for its connection: opening one is a
/// login (slow on a loaded machine), and an answer that waited less than
/// the wave gap, a quarter of the sleep, still comes with its wave. A pool
/// that made it wait for a *returned* connection instead would take about
/// a whole sleep.
pub fn opening_allowance(sleep_s: f64) -> f64 {
    tolerance(sleep_s).max(sleep_s / 4.0)
}

/// A statement shorter than the sleep by more than this did not sleep
/// (the `Server-Timing` figures are rounded to 0.1 ms).
const SHORT_STATEMENT_S: f64 = 0.05;

/// One served answer: when it came (seconds from the burst) and the
/// server's account of its time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Served {
    pub at: f64,
    pub timing: Option<ServerTiming>,
}

/// What happened, reduced to what the verdict compares.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The 200 answers, grouped into waves by the wave rule, in time order.
    pub served_waves: Vec<Vec<Served>>,
    /// Completion times of `db_refused` answers.
    pub refused_at: Vec<f64>,
    /// Completion times of `pool_timeout` (and `pooler_timeout`) answers.
    pub timeouts_at: Vec<f64>,
    /// Any other outcome, by kind.
    pub other: Vec<(Failure, u64)>,
    /// Interrupted after this many answers of how many.
    pub interrupted: Option<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Matches { limited_by: Layer },
    Differs(Difference),
}

impl Verdict {
    pub fn matches(&self) -> bool {
        matches!(self, Verdict::Matches { .. })
    }
}

/// The first way a run differed from the prediction. Seconds are from the
/// burst; waves count from 1.
#[derive(Debug, Clone, PartialEq)]
pub enum Difference {
    Interrupted {
        answered: u64,
        requests: u64,
    },
    Unexpected {
        failure: Failure,
        count: u64,
    },
    Refused {
        seen: u64,
        expected: u64,
        /// Connections the pools tried to open, and those PostgreSQL grants.
        attempts: u64,
        granted: u64,
    },
    /// The run is exactly the prediction for one slot fewer than `/pool`
    /// counted: one more attempt refused, every wave one narrower. PostgreSQL
    /// granted `granted`, not `counted`: a slot was held for a moment by
    /// another connection while the pools opened theirs (the database's
    /// health check, `pg_isready` every 2 s in the compose stack, holds one
    /// from its startup packet to its exit), or, with replicas, went unused
    /// in their race for the last slots. Not the pool refusing a request
    /// that should have waited: that keeps the waves as wide as predicted.
    SlotShort {
        seen: u64,
        expected: u64,
        granted: u64,
        counted: u64,
    },
    RefusedLate {
        at: f64,
    },
    Timeouts {
        seen: u64,
        min: u64,
        max: u64,
        pool_timeout_s: f64,
        pooler_timeout_s: Option<f64>,
    },
    TimedOutAt {
        at: f64,
        pool_timeout_s: f64,
        within: f64,
    },
    WaveCount {
        seen: usize,
        min: usize,
        max: usize,
    },
    WaveSize {
        wave: usize,
        seen: u64,
        min: u64,
        max: u64,
    },
    /// The pool handed the wave its connections later or earlier than the
    /// previous wave gave them back (`from`–`to`: by the server's account).
    PoolWait {
        wave: usize,
        waited: f64,
        from: f64,
        to: f64,
    },
    /// The database ran the statement much longer than the sleep.
    SlowStatement {
        wave: usize,
        took: f64,
        sleep: f64,
    },
    /// The statement ended before the sleep could have.
    ShortStatement {
        wave: usize,
        took: f64,
        sleep: f64,
    },
    /// Time lost outside the pool and the database: `server` is the wait
    /// plus the statement, the answer came at `at`.
    Transit {
        wave: usize,
        at: f64,
        server: f64,
        within: f64,
    },
    /// An answer without `Server-Timing`, away from k × sleep.
    WaveTime {
        wave: usize,
        first: f64,
        last: f64,
        expected_at: f64,
        within: f64,
    },
    /// Sleep 0: no waves to compare, only the count of served answers.
    ServedCount {
        seen: u64,
        expected: u64,
    },
}

/// Holds the run `o` against the prediction `p` for the plan `b`.
pub fn compare(p: &Prediction, b: &Plan, o: &Observed) -> Verdict {
    match first_difference(p, b, o) {
        None => Verdict::Matches {
            limited_by: p.limited_by,
        },
        Some(d) => Verdict::Differs(slot_short(p, b, o).unwrap_or(d)),
    }
}

/// [`Difference::SlotShort`], when the run is exactly the prediction for
/// one slot fewer, and that prediction refuses one more than `p`.
fn slot_short(p: &Prediction, b: &Plan, o: &Observed) -> Option<Difference> {
    if !b.refuses_excess || b.concurrency < 2 {
        return None;
    }
    let fewer = Plan {
        concurrency: b.concurrency - 1,
        ..*b
    };
    let q = predict(&fewer);
    (q.refused == p.refused + 1 && first_difference(&q, &fewer, o).is_none()).then_some(
        Difference::SlotShort {
            seen: q.refused,
            expected: p.refused,
            granted: fewer.concurrency,
            counted: b.concurrency,
        },
    )
}

fn first_difference(p: &Prediction, b: &Plan, o: &Observed) -> Option<Difference> {
    outcomes(p, b, o).or_else(|| {
        if b.sleep_s > 0.0 {
            timing(b.sleep_s, o)
        } else {
            let seen = o.served_waves.iter().map(|w| w.len() as u64).sum();
            let expected = p.waves.iter().map(|w| w.size).sum();
            (seen != expected).then_some(Difference::ServedCount { seen, expected })
        }
    })
}

/// What the answers were and how many of each: the arithmetic's counts.
fn outcomes(p: &Prediction, b: &Plan, o: &Observed) -> Option<Difference> {
    if let Some((answered, requests)) = o.interrupted {
        return Some(Difference::Interrupted { answered, requests });
    }
    if let Some(&(failure, count)) = o.other.first() {
        return Some(Difference::Unexpected { failure, count });
    }
    let refused = o.refused_at.len() as u64;
    if refused != p.refused {
        return Some(Difference::Refused {
            seen: refused,
            expected: p.refused,
            attempts: p.attempts,
            granted: p.concurrency,
        });
    }
    if let Some(at) = o.refused_at.iter().copied().find(|t| *t > REFUSAL_WITHIN_S) {
        return Some(Difference::RefusedLate { at });
    }
    let timeouts = o.timeouts_at.len() as u64;
    if timeouts < p.timeouts_min || timeouts > p.timeouts_max {
        return Some(Difference::Timeouts {
            seen: timeouts,
            min: p.timeouts_min,
            max: p.timeouts_max,
            pool_timeout_s: b.pool_timeout_s,
            pooler_timeout_s: b.pooler_timeout_s,
        });
    }
    let (first, last) = b.timeout_window();
    if let Some(at) = o
        .timeouts_at
        .iter()
        .copied()
        .find(|t| *t < first - tolerance(first) || *t > last + tolerance(last))
    {
        return Some(Difference::TimedOutAt {
            at,
            pool_timeout_s: b.pool_timeout_s,
            within: tolerance(first),
        });
    }
    if b.sleep_s <= 0.0 {
        return None;
    }
    let (min, max) = p.wave_count_range();
    let seen = o.served_waves.len();
    if seen < min || seen > max {
        return Some(Difference::WaveCount { seen, min, max });
    }
    p.waves
        .iter()
        .zip(&o.served_waves)
        .enumerate()
        .find_map(|(i, (want, got))| {
            let seen = got.len() as u64;
            (seen < want.size_min || seen > want.size_max).then_some(Difference::WaveSize {
                wave: i + 1,
                seen,
                min: want.size_min,
                max: want.size_max,
            })
        })
}

/// Each served answer's time, taken apart with the server's `Server-Timing`.
fn timing(sleep: f64, o: &Observed) -> Option<Difference> {
    // When the previous wave's connections came back, by the server's
    // account (wait + statement), from the first to the last.
    let mut returned: Option<(f64, f64)> = Some((0.0, 0.0));
    for (i, wave) in o.served_waves.iter().enumerate() {
        let k = i + 1;
        let due = k as f64 * sleep;
        let (from, to) = returned.unwrap_or(((k - 1) as f64 * sleep, (k - 1) as f64 * sleep));
        let within = if k == 1 {
            opening_allowance(sleep)
        } else {
            tolerance(due)
        };
        let timed: Vec<(f64, ServerTiming)> = wave
            .iter()
            .filter_map(|a| Some((a.at, a.timing?)))
            .collect();
        for &(_, t) in &timed {
            let waited = t.waited().as_secs_f64();
            if waited > to + within || waited < from - within {
                return Some(Difference::PoolWait {
                    wave: k,
                    waited,
                    from,
                    to,
                });
            }
        }
        for &(_, t) in &timed {
            let took = t.db.as_secs_f64();
            if took > sleep + statement_slack(sleep) {
                return Some(Difference::SlowStatement {
                    wave: k,
                    took,
                    sleep,
                });
            }
            if took + t.pooler.unwrap_or_default().as_secs_f64() < sleep - SHORT_STATEMENT_S {
                return Some(Difference::ShortStatement {
                    wave: k,
                    took,
                    sleep,
                });
            }
        }
        for &(at, t) in &timed {
            let server = (t.waited() + t.db).as_secs_f64();
            if at - server > tolerance(due) {
                return Some(Difference::Transit {
                    wave: k,
                    at,
                    server,
                    within: tolerance(due),
                });
            }
        }
        let untimed = wave.iter().filter(|a| a.timing.is_none()).map(|a| a.at);
        let (first, last) = untimed.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), t| {
            (lo.min(t), hi.max(t))
        });
        if first.is_finite()
            && [first, last]
                .iter()
                .any(|t| (t - due).abs() > tolerance(due))
        {
            return Some(Difference::WaveTime {
                wave: k,
                first,
                last,
                expected_at: due,
                within: tolerance(due),
            });
        }
        returned = timed
            .iter()
            .map(|(_, t)| (t.waited() + t.db).as_secs_f64())
            .fold(None, |span, r| match span {
                None => Some((r, r)),
                Some((lo, hi)) => Some((r.min(lo), r.max(hi))),
            });
    }
    None
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Matches { limited_by } => {
                write!(f, "matches (limited by {})", limited_by.phrase())
            }
            Verdict::Differs(d) => write!(f, "differs: {d}"),
        }
    }
}

/// A verdict as the JSON report carries it: `matches` or `differs: …`
/// under `verdict`, and `matches` as a boolean. Written by the client and
/// read back by whoever consumes `--json` (the compose test), so both sides
/// share one type; the sentence is all a reader gets of a [`Difference`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VerdictLine {
    pub verdict: String,
    pub matches: bool,
    /// The difference was [`Difference::SlotShort`] (left out when not).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub slot_short: bool,
}

impl From<&Verdict> for VerdictLine {
    fn from(v: &Verdict) -> VerdictLine {
        VerdictLine {
            verdict: v.to_string(),
            matches: v.matches(),
            slot_short: matches!(v, Verdict::Differs(Difference::SlotShort { .. })),
        }
    }
}

impl std::fmt::Display for VerdictLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.verdict)
    }
}

fn range<T: std::fmt::Display + PartialEq>(min: T, max: T) -> String {
    if min == max {
        min.to_string()
    } else {
        format!("{min} to {max}")
    }
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Difference::Interrupted { answered, requests } => write!(
                f,
                "interrupted after {answered} of {requests} answers; only a finished run can be compared"
            ),
            Difference::Unexpected { failure, count } => write!(
                f,
                "{count} × {failure} answered, which the pool arithmetic does not predict \
                 (see the server's log and the error messages)"
            ),
            Difference::Refused { seen, expected: 0, .. } => write!(
                f,
                "{seen} × db_refused, expected none: PostgreSQL refused connections the \
                 server's /pool said it would grant (another client took slots?)"
            ),
            Difference::Refused {
                seen,
                expected,
                attempts,
                granted,
            } => write!(
                f,
                "{seen} × db_refused, expected {expected} (the pool tries {attempts} connections, \
                 PostgreSQL grants {granted}){}",
                if seen > expected {
                    ": requests that should have waited for a returned connection were refused"
                } else {
                    ": PostgreSQL granted more than /pool said (another client left?)"
                }
            ),
            Difference::SlotShort {
                seen,
                expected,
                granted,
                counted,
            } => write!(
                f,
                "{seen} × db_refused and waves of {granted}, expected {expected} and {counted}: \
                 PostgreSQL granted one connection fewer than /pool counted while the pools \
                 opened theirs (a slot held for a moment by another connection, such as the \
                 database's health check, or with replicas left unused in their race for the \
                 last slots); every refusal was a failed attempt and the rest waited, as in \
                 QueuePool"
            ),
            Difference::RefusedLate { at } => write!(
                f,
                "a db_refused answer came after {at:.2}s; refusals should be immediate \
                 (within {REFUSAL_WITHIN_S} s)"
            ),
            Difference::Timeouts {
                seen,
                min,
                max,
                pool_timeout_s,
                pooler_timeout_s,
            } => write!(
                f,
                "{seen} timed out, expected {} (requests still waiting after \
                 DB_POOL_TIMEOUT = {} s{})",
                range(min, max),
                trim(pool_timeout_s),
                pooler_timeout_s.map_or(String::new(), |p| format!(
                    " or PgBouncer's query_wait_timeout = {} s",
                    trim(p)
                ))
            ),
            Difference::TimedOutAt {
                at,
                pool_timeout_s,
                within,
            } => write!(
                f,
                "a request timed out at {at:.2}s, expected at DB_POOL_TIMEOUT = {} s ± {}",
                trim(pool_timeout_s),
                trim(within)
            ),
            Difference::WaveCount { seen, min, max } => write!(
                f,
                "{seen} waves of answers, expected {} — {}",
                range(min, max),
                if seen > max {
                    "more waves than the pool's size explains: the server served fewer requests \
                     at once than /pool says (other clients, or a smaller pool)"
                } else {
                    "fewer waves than the pool's size explains: more requests ran at once than /pool says"
                }
            ),
            Difference::WaveSize {
                wave,
                seen,
                min,
                max,
            } => write!(
                f,
                "wave {wave} had {seen} answers, expected {}",
                range(min, max)
            ),
            Difference::PoolWait {
                wave: 1, waited, ..
            } => write!(
                f,
                "wave 1 waited {waited:.2}s for its connections (Server-Timing pool + pooler); \
                 the first wave gets them at once, idle or newly opened (a login is allowed \
                 up to a quarter of the sleep)"
            ),
            Difference::PoolWait {
                wave,
                waited,
                from,
                to,
            } => write!(
                f,
                "wave {wave} waited {waited:.2}s for its connections (Server-Timing pool + pooler), \
                 but wave {}'s came back after {from:.2}–{to:.2}s: the pool handed them out {}",
                wave - 1,
                if waited > to {
                    "late (a waiter not woken when a connection was returned?)"
                } else {
                    "early (more connections than the pool's size?)"
                }
            ),
            Difference::SlowStatement { wave, took, sleep } => write!(
                f,
                "in wave {wave} the database took {took:.2}s for the {} s sleep (Server-Timing db; \
                 up to {} s counts as a busy machine): the statements are slow, not the pool \
                 (a lock held elsewhere, or an overloaded database?)",
                trim(sleep),
                trim(sleep + statement_slack(sleep))
            ),
            Difference::ShortStatement { wave, took, sleep } => write!(
                f,
                "in wave {wave} the statement took {took:.2}s, less than the {} s sleep: \
                 is the route sleeping?",
                trim(sleep)
            ),
            Difference::Transit {
                wave,
                at,
                server,
                within,
            } => write!(
                f,
                "wave {wave} answered at {at:.2}s, {:.2}s after the server's own {server:.2}s \
                 (waiting + statement; allowed {} s): time lost between the client and the \
                 service, not in the pool (a loaded machine or network?)",
                at - server,
                trim(within)
            ),
            Difference::WaveTime {
                wave,
                first,
                last,
                expected_at,
                within,
            } => write!(
                f,
                "wave {wave} answered at {first:.2}–{last:.2}s, expected at {} s ± {} \
                 ({wave} × the sleep): {}",
                trim(expected_at),
                trim(within),
                if last > expected_at {
                    "the server is slower than the arithmetic (a loaded machine or database?)"
                } else {
                    "faster than the sleep allows: is the route sleeping?"
                }
            ),
            Difference::ServedCount { seen, expected } => {
                write!(f, "{seen} answers served, expected {expected}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::client::expect::tests::{plan, replicas};
    use crate::client::http::TransportError;
    use crate::contract::ErrorKind;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// A served answer at `at` that waited `waited` and ran `db` seconds.
    fn served(at: f64, waited: f64, db: f64) -> Served {
        Served {
            at,
            timing: Some(ServerTiming {
                pool: secs(waited),
                pooler: Some(secs(0.0003)),
                db: secs(db),
            }),
        }
    }

    /// `n` answers of wave `k` (sleep 5 s), the database taking `db`, the
    /// answers spread over `spread` seconds after the server's own time.
    fn wave(n: u64, k: u64, db: f64, spread: f64) -> Vec<Served> {
        let waited = (k - 1) as f64 * db;
        (0..n)
            .map(|i| {
                let lag = 0.01 + spread * i as f64 / n.max(1) as f64;
                served(waited + db + lag, waited, db)
            })
            .collect()
    }

    /// The run exactly as predicted, each statement taking `db` seconds.
    fn as_predicted(p: &Prediction, db: f64) -> Observed {
        Observed {
            served_waves: p
                .expected_waves()
                .enumerate()
                .map(|(i, w)| wave(w.size, i as u64 + 1, db, 0.05))
                .collect(),
            refused_at: vec![0.05; p.refused as usize],
            timeouts_at: vec![30.01; p.timeouts_min as usize],
            ..Observed::default()
        }
    }

    fn differs(v: Verdict) -> Difference {
        match v {
            Verdict::Differs(d) => d,
            m => panic!("expected differs, got {m}"),
        }
    }

    #[test]
    fn a_run_that_follows_the_arithmetic_matches() {
        for b in [
            plan(30, 20, 96),
            plan(60, 60, 36),
            plan(100, 60, 36),
            plan(100, 20, 96),
            plan(1000, 20, 96),
            replicas(100, 3, 20, 34),
        ] {
            let p = predict(&b);
            assert_eq!(
                compare(&p, &b, &as_predicted(&p, 5.0)),
                Verdict::Matches {
                    limited_by: b.limited_by
                },
                "{b:?}"
            );
        }
        // The uncertain wave served instead of timed out matches too.
        let b = plan(1000, 20, 96);
        let p = predict(&b);
        let mut o = as_predicted(&p, 5.0);
        o.timeouts_at.truncate(860);
        assert!(compare(&p, &b, &o).matches());
        // And lost entirely to the timeout.
        o.served_waves.pop();
        o.timeouts_at = vec![30.0; 880];
        assert!(compare(&p, &b, &o).matches());
    }

    #[test]
    fn a_correct_pool_on_a_loaded_machine_matches() {
        // client 60 and client 100 on 30 + 30 with 36 grantable, on a busy
        // 2-core machine: statements of up to 5.5 s, answers at 5.02–5.55 s.
        let b = plan(60, 60, 36);
        let p = predict(&b);
        let mut o = as_predicted(&p, 5.0);
        o.served_waves[0] = (0..36)
            .map(|i| {
                let db = 5.0 + 0.5 * f64::from(i) / 35.0;
                served(db + 0.02 + 0.03 * f64::from(i) / 35.0, 0.002, db)
            })
            .collect();
        assert!(compare(&p, &b, &o).matches(), "{}", compare(&p, &b, &o));
        // Three waves, each statement 10 % over: the last wave at 16.5 s.
        let b = plan(100, 60, 36);
        let p = predict(&b);
        let o = as_predicted(&p, 5.5);
        assert_eq!(o.served_waves[2][0].at.floor(), 16.0);
        assert!(compare(&p, &b, &o).matches(), "{}", compare(&p, &b, &o));
        // Replicas with an uneven spread of connections: other wave sizes.
        let b = replicas(100, 3, 20, 34);
        let p = predict(&b);
        let o = Observed {
            served_waves: vec![
                wave(34, 1, 5.0, 0.1),
                wave(20, 2, 5.0, 0.1),
                wave(20, 3, 5.0, 0.1),
            ],
            refused_at: vec![0.1; 26],
            ..Observed::default()
        };
        assert!(compare(&p, &b, &o).matches(), "{}", compare(&p, &b, &o));
    }

    #[test]
    fn refusals_beyond_the_failed_attempts_differ() {
        // The old rule: every request beyond the 36 refused (64, not 24).
        let b = plan(100, 60, 36);
        let p = predict(&b);
        let o = Observed {
            served_waves: vec![wave(36, 1, 5.0, 0.1)],
            refused_at: vec![0.05; 64],
            ..Observed::default()
        };
        assert_eq!(
            differs(compare(&p, &b, &o)),
            Difference::Refused {
                seen: 64,
                expected: 24,
                attempts: 60,
                granted: 36
            }
        );
        // Replicas: 66 refused where 3 × 20 attempts − 34 = 26 fail.
        let b = replicas(100, 3, 20, 34);
        let p = predict(&b);
        let o = Observed {
            served_waves: vec![wave(34, 1, 5.0, 0.1)],
            refused_at: vec![0.05; 66],
            ..Observed::default()
        };
        assert!(matches!(
            differs(compare(&p, &b, &o)),
            Difference::Refused {
                seen: 66,
                expected: 26,
                ..
            }
        ));
    }

    #[test]
    fn refusals_that_waited_out_the_pool_timeout_differ() {
        // What sqlx's silent retries produced: 24 answers at 34 s, no refusal.
        let b = plan(60, 60, 36);
        let p = predict(&b);
        let o = Observed {
            served_waves: vec![
                wave(36, 1, 5.0, 0.1),
                (0..24).map(|_| served(34.0, 29.0, 5.0)).collect(),
            ],
            ..Observed::default()
        };
        assert!(matches!(
            differs(compare(&p, &b, &o)),
            Difference::Refused {
                seen: 0,
                expected: 24,
                ..
            }
        ));
        // Refused, but only after a long wait.
        let o = Observed {
            served_waves: vec![wave(36, 1, 5.0, 0.1)],
            refused_at: vec![27.4; 24],
            ..Observed::default()
        };
        assert_eq!(
            differs(compare(&p, &b, &o)),
            Difference::RefusedLate { at: 27.4 }
        );
    }

    #[test]
    fn a_run_of_34_s_where_10_s_were_expected_never_matches() {
        // 30 on 10 + 10: 20 at 5 s, 10 at 10 s expected; wave 2 came at 34 s.
        let b = plan(30, 20, 96);
        let p = predict(&b);
        let late = |waited: f64, db: f64| Observed {
            served_waves: vec![
                wave(20, 1, 5.0, 0.05),
                (0..10).map(|_| served(34.0, waited, db)).collect(),
            ],
            ..Observed::default()
        };
        // The pool kept it waiting 29 s though connections came back at 5 s.
        assert!(matches!(
            differs(compare(&p, &b, &late(29.0, 5.0))),
            Difference::PoolWait { wave: 2, .. }
        ));
        // The statement itself took 29 s.
        assert!(matches!(
            differs(compare(&p, &b, &late(5.0, 29.0))),
            Difference::SlowStatement { wave: 2, .. }
        ));
        // The server was done at 10 s; the answer arrived at 34 s.
        assert!(matches!(
            differs(compare(&p, &b, &late(5.0, 5.0))),
            Difference::Transit { wave: 2, .. }
        ));
        // No Server-Timing at all: held to k × sleep.
        let mut o = late(5.0, 5.0);
        for w in &mut o.served_waves {
            for a in w {
                a.timing = None;
            }
        }
        assert!(matches!(
            differs(compare(&p, &b, &o)),
            Difference::WaveTime { wave: 2, .. }
        ));
    }

    #[test]
    fn a_slower_server_than_promised_differs() {
        // 30 requests, but only 10 at once: three waves where two were promised.
        let b = plan(30, 20, 96);
        let p = predict(&b);
        let o = Observed {
            served_waves: vec![
                wave(10, 1, 5.0, 0.1),
                wave(10, 2, 5.0, 0.1),
                wave(10, 3, 5.0, 0.1),
            ],
            ..Observed::default()
        };
        assert_eq!(
            differs(compare(&p, &b, &o)),
            Difference::WaveCount {
                seen: 3,
                min: 2,
                max: 2
            }
        );
        // Right sizes, but every statement held up by a lock: 2.2 s for a 0.5 s sleep.
        let b = Plan {
            sleep_s: 0.5,
            ..plan(4, 2, 96)
        };
        let p = predict(&b);
        let o = Observed {
            served_waves: vec![
                vec![served(2.2, 0.001, 2.19), served(2.21, 0.001, 2.2)],
                vec![served(2.7, 2.19, 0.5), served(2.71, 2.2, 0.5)],
            ],
            ..Observed::default()
        };
        assert!(matches!(
            differs(compare(&p, &b, &o)),
            Difference::SlowStatement { wave: 1, .. }
        ));
        // Waiting in wave 1, longer than a login could explain.
        let b = plan(30, 20, 96);
        let p = predict(&b);
        let mut o = as_predicted(&p, 5.0);
        o.served_waves[0][3] = served(7.0, 1.9, 5.0);
        assert!(matches!(
            differs(compare(&p, &b, &o)),
            Difference::PoolWait { wave: 1, .. }
        ));
        // A route that does not sleep.
        let o = as_predicted(&p, 0.2);
        assert!(matches!(
            differs(compare(&p, &b, &o)),
            Difference::ShortStatement { wave: 1, .. }
        ));
    }

    #[test]
    fn unexpected_kinds_and_counts_differ() {
        let b = plan(30, 20, 96);
        let p = predict(&b);
        let mut o = as_predicted(&p, 5.0);
        o.other = vec![(Failure::Kind(ErrorKind::DbUnavailable), 3)];
        let d = differs(compare(&p, &b, &o));
        assert!(matches!(d, Difference::Unexpected { count: 3, .. }));
        assert!(d.to_string().starts_with("3 × db_unavailable"), "{d}");
        let mut o = as_predicted(&p, 5.0);
        o.other = vec![(Failure::Transport(TransportError::ClientTimeout), 1)];
        assert!(differs(compare(&p, &b, &o))
            .to_string()
            .starts_with("1 × client_timeout"));
        let mut o = as_predicted(&p, 5.0);
        o.timeouts_at = vec![30.0; 2];
        assert!(matches!(
            differs(compare(&p, &b, &o)),
            Difference::Timeouts {
                seen: 2,
                min: 0,
                max: 0,
                ..
            }
        ));
        let mut o = as_predicted(&p, 5.0);
        o.interrupted = Some((3, 30));
        assert!(matches!(
            differs(compare(&p, &b, &o)),
            Difference::Interrupted {
                answered: 3,
                requests: 30
            }
        ));
        // Replicas: more in a later wave than all the connections that opened.
        let b = replicas(100, 3, 20, 34);
        let p = predict(&b);
        let o = Observed {
            served_waves: vec![wave(34, 1, 5.0, 0.1), wave(40, 2, 5.0, 0.1)],
            refused_at: vec![0.1; 26],
            ..Observed::default()
        };
        assert_eq!(
            differs(compare(&p, &b, &o)),
            Difference::WaveSize {
                wave: 2,
                seen: 40,
                min: 0,
                max: 34
            }
        );
    }

    /// Refused at once, then served in waves of `sizes` (sleep 5 s).
    fn refused_then_waves(refused: usize, sizes: &[u64]) -> Observed {
        Observed {
            served_waves: (1..)
                .zip(sizes)
                .map(|(k, &n)| wave(n, k, 5.0, 0.1))
                .collect(),
            refused_at: vec![0.05; refused],
            ..Observed::default()
        }
    }

    #[test]
    fn one_slot_short_is_named_as_such_not_as_refused_waiters() {
        // Another connection held a slot while the pool opened its 60: 35
        // granted, so 25 refused and waves of 35.
        let b = plan(100, 60, 36);
        let p = predict(&b);
        let v = compare(&p, &b, &refused_then_waves(25, &[35, 35, 5]));
        assert_eq!(
            differs(v.clone()),
            Difference::SlotShort {
                seen: 25,
                expected: 24,
                granted: 35,
                counted: 36
            }
        );
        assert!(v.to_string().starts_with(
            "differs: 25 × db_refused and waves of 35, expected 24 and 36: PostgreSQL granted one"
        ));
        assert!(VerdictLine::from(&v).slot_short);
        // Three replicas × 10 + 10 against 34: 33 granted, 27 refused.
        let b = replicas(100, 3, 20, 34);
        let p = predict(&b);
        let v = compare(&p, &b, &refused_then_waves(27, &[33, 33, 7]));
        assert!(VerdictLine::from(&v).slot_short, "{v}");
    }

    #[test]
    fn an_extra_refusal_with_every_slot_serving_is_the_pool_refusing_waiters() {
        // One request refused that should have waited: the pool had all 36
        // connections, so the waves are 36 wide and the refusal is the pool's.
        let b = plan(100, 60, 36);
        let p = predict(&b);
        let d = differs(compare(&p, &b, &refused_then_waves(25, &[36, 36, 3])));
        assert!(
            matches!(
                d,
                Difference::Refused {
                    seen: 25,
                    expected: 24,
                    ..
                }
            ),
            "{d}"
        );
        // Two slots short is not one.
        let d = differs(compare(&p, &b, &refused_then_waves(26, &[34, 34, 6])));
        assert!(matches!(d, Difference::Refused { seen: 26, .. }), "{d}");
        // A run that matches is not short.
        assert!(!VerdictLine::from(&compare(&p, &b, &as_predicted(&p, 5.0))).slot_short);
    }

    #[test]
    fn the_verdict_reads_as_before_in_the_json_report() {
        let m = Verdict::Matches {
            limited_by: Layer::Postgres,
        };
        let line = VerdictLine::from(&m);
        assert_eq!(
            serde_json::to_value(&line).unwrap(),
            serde_json::json!({"verdict": "matches (limited by PostgreSQL)", "matches": true})
        );
        let d = Verdict::Differs(Difference::WaveCount {
            seen: 3,
            min: 2,
            max: 2,
        });
        let v = serde_json::to_value(VerdictLine::from(&d)).unwrap();
        assert_eq!(v["matches"], false);
        assert!(v["verdict"]
            .as_str()
            .unwrap()
            .starts_with("differs: 3 waves of answers, expected 2 — more waves"));
        let back: VerdictLine = serde_json::from_value(v).unwrap();
        assert_eq!(back, VerdictLine::from(&d));
        assert_eq!(back.to_string(), d.to_string());
    }

    #[test]
    fn a_slow_login_in_wave_1_is_the_machine() {
        // 10 of the 20 in wave 1 opened a connection, each login 1 s on a busy machine.
        let b = plan(30, 20, 96);
        let p = predict(&b);
        let mut o = as_predicted(&p, 5.0);
        for a in &mut o.served_waves[0][10..] {
            *a = served(6.02, 1.0, 5.0);
        }
        for a in &mut o.served_waves[1] {
            *a = served(11.03, 6.0, 5.0);
        }
        assert!(compare(&p, &b, &o).matches(), "{}", compare(&p, &b, &o));
    }

    #[test]
    fn the_allowances_are_half_a_second_or_a_share_of_the_sleep() {
        assert_eq!(statement_slack(0.5), 0.5);
        assert_eq!(statement_slack(5.0), 1.25);
        assert_eq!(opening_allowance(0.4), 0.5);
        assert_eq!(opening_allowance(5.0), 1.25);
    }
}
