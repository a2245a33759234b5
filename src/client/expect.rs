//! What a run should look like: the pool arithmetic as a prediction of
//! every answer. Pure functions, unit-tested without a server; the verdict
//! that holds a run against it is [`super::verdict`].
//!
//! **The rule** (SQLAlchemy's QueuePool in front of PostgreSQL). A pool
//! opens a connection for a request that finds none idle while fewer than
//! its max P (size + overflow) are open or being opened; at P, requests wait,
//! first come first served, for a connection to be *returned*. PostgreSQL
//! grants G slots, so C = min(P, G) connections serve. A burst of N:
//!
//! * the first min(N, P) requests each try a connection, and those
//!   PostgreSQL refuses are answered `db_refused` at once:
//!   refused = max(0, min(N, P) − G). A refused attempt wakes no waiter.
//! * Everyone else is served by the C connections in waves: wave k is
//!   handed its connections after (k − 1) × sleep and answers at k × sleep.
//!   A request still waiting at `DB_POOL_TIMEOUT` gets `pool_timeout`
//!   instead; a wave handed its connections within a margin of the timeout
//!   may go either way, and the prediction says so.
//!
//! Pool 30 + 30 with 36 grantable: `client 60` → 24 refused at once, 36 at
//! 5 s; `client 100` → 24 refused at once, then 36, 36 and 4 at 5, 10, 15 s.
//!
//! **Replicas.** R replicas behind a round-robin balancer get ⌊N/R⌋ or
//! ⌈N/R⌉ requests each and try min(nᵣ, P) connections each; the attempts
//! beyond G fail, so refused = max(0, Σ min(nᵣ, P) − G) exactly. Which
//! replicas the G connections that opened belong to is a race, and each
//! replica's waiters are served by its own connections only: the later
//! waves' sizes, and whether some wait out the timeout, depend on that
//! spread. The prediction shows an even spread and accepts any.

use serde::{Deserialize, Serialize};

pub use crate::budget::Layer;

/// Inputs of the arithmetic for one run, from the server's `/pool`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub requests: u64,
    pub sleep_s: f64,
    /// Replicas behind the load balancer, each with its own pool.
    pub replicas: u64,
    /// Each replica's `DB_POOL_SIZE + DB_MAX_OVERFLOW`.
    pub pool_max: u64,
    /// Requests served at once: min(replicas × pool max, pooler pool, slots
    /// PostgreSQL grants) — see `crate::budget`.
    pub concurrency: u64,
    /// PostgreSQL is the limit: connection attempts beyond what it grants
    /// are refused at once.
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

    /// Requests per replica under round robin: ⌊N/R⌋ or ⌈N/R⌉.
    fn split(&self) -> impl Iterator<Item = u64> {
        let r = self.replicas.max(1);
        let (each, extra) = (self.requests / r, self.requests % r);
        (0..r).map(move |i| each + u64::from(i < extra))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PredictedWave {
    /// The expected size (with replicas: for an even spread of connections).
    pub size: u64,
    /// The sizes the verdict accepts.
    pub size_min: u64,
    pub size_max: u64,
    pub at_s: f64,
    /// Handed its connections at about `DB_POOL_TIMEOUT`: served or timed out.
    pub may_time_out: bool,
}

/// `concurrency` and `attempts` stay out of the JSON report (its
/// expectation states the concurrency itself): read back, they are 0.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Prediction {
    #[serde(skip)]
    pub concurrency: u64,
    /// Connections the pools try to open in the burst (when PostgreSQL is
    /// the limit): the refused ones are those beyond `concurrency`.
    #[serde(skip)]
    pub attempts: u64,
    #[serde(rename = "predicted_waves")]
    pub waves: Vec<PredictedWave>,
    /// `db_refused`, all at once.
    pub refused: u64,
    /// `pool_timeout` at `DB_POOL_TIMEOUT`: at least / at most.
    pub timeouts_min: u64,
    pub timeouts_max: u64,
    /// The layer that limits the run: `app pool`, `pooler` or `PostgreSQL`.
    pub limited_by: Layer,
    /// The waves after the first depend on how the connections that opened
    /// fell across the replicas (see the module doc).
    pub depends_on_balance: bool,
}

impl Prediction {
    /// Waves with at least one answer expected.
    pub fn expected_waves(&self) -> impl Iterator<Item = &PredictedWave> {
        self.waves.iter().filter(|w| w.size > 0)
    }

    /// How many waves of served answers the verdict accepts: the leading
    /// ones that cannot be empty, up to all that may have answers.
    pub fn wave_count_range(&self) -> (usize, usize) {
        let sure = self.waves.iter().take_while(|w| w.size_min > 0).count();
        (sure, self.waves.len())
    }
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

/// Whether wave `k` (from 1), handed its connections after (k − 1) × sleep,
/// is served: `Some(false)` surely, `Some(true)` maybe, `None` not (it timed out).
fn handed_in_time(b: &Plan, k: u64) -> Option<bool> {
    if b.sleep_s <= 0.0 {
        return Some(false);
    }
    let handed_at = (k - 1) as f64 * b.sleep_s;
    let (first, last) = b.timeout_window();
    if handed_at > last + handoff_margin(last) {
        None
    } else {
        Some(handed_at >= first - handoff_margin(first))
    }
}

/// Hands out waves from wave 1 until the timeout: `size(k)` requests get
/// connections in wave k (0 = nobody is left to serve). Returns the waves
/// and how many requests they hold.
fn schedule(b: &Plan, mut size: impl FnMut(u64) -> u64) -> (Vec<PredictedWave>, u64) {
    let mut waves = Vec::new();
    for k in 1.. {
        let Some(may_time_out) = handed_in_time(b, k) else {
            break;
        };
        let n = size(k);
        if n == 0 {
            break;
        }
        waves.push(PredictedWave {
            size: n,
            size_min: if may_time_out { 0 } else { n },
            size_max: n,
            at_s: k as f64 * b.sleep_s,
            may_time_out,
        });
    }
    let handed = waves.iter().map(|w| w.size).sum();
    (waves, handed)
}

pub fn predict(b: &Plan) -> Prediction {
    let c = b.concurrency.max(1);
    let (attempts, refused) = if b.refuses_excess {
        let a: u64 = b.split().map(|n| n.min(b.pool_max)).sum();
        (a, a.saturating_sub(c))
    } else {
        (0, 0)
    };
    let to_serve = b.requests - refused;
    // As if one pool of C served everyone (exact for one replica, and for
    // replicas that refuse nothing: each then serves its even share).
    let mut left = to_serve;
    let (mut waves, handed) = schedule(b, |_| {
        let n = left.min(c);
        left -= n;
        n
    });
    let mut timeouts_min = to_serve - handed;
    let uncertain: u64 = waves
        .iter()
        .filter(|w| w.may_time_out)
        .map(|w| w.size)
        .sum();
    let mut timeouts_max = timeouts_min + uncertain;
    let depends_on_balance = refused > 0 && b.replicas > 1 && to_serve > c;
    if depends_on_balance {
        (waves, timeouts_min, timeouts_max) = spread(b, c, to_serve - c, timeouts_min);
    }
    Prediction {
        concurrency: c,
        attempts,
        waves,
        refused,
        timeouts_min,
        timeouts_max,
        limited_by: b.limited_by,
        depends_on_balance,
    }
}

/// Replicas that refused connections, with `queued` requests waiting on
/// them: wave 1 is all `c` connections that opened; after it each replica's
/// waiters are served by its own connections only. The sizes shown are for
/// an even spread of the `c` connections; the accepted sizes run from 0 to
/// `c` (a replica left with none serves its waiters never, and they time
/// out), with as many waves as are handed out before the timeout.
fn spread(b: &Plan, c: u64, queued: u64, fewest_timeouts: u64) -> (Vec<PredictedWave>, u64, u64) {
    let attempts: Vec<u64> = b.split().map(|n| n.min(b.pool_max)).collect();
    let mut waiting: Vec<u64> = b.split().zip(&attempts).map(|(n, a)| n - a).collect();
    // Even spread: one connection per replica in turn, up to its attempts.
    let mut granted = vec![0u64; attempts.len()];
    let mut to_grant = c;
    while to_grant > 0 {
        for (g, a) in granted.iter_mut().zip(&attempts) {
            if to_grant > 0 && *g < *a {
                *g += 1;
                to_grant -= 1;
            }
        }
    }
    let (mut waves, handed) = schedule(b, |k| {
        if k == 1 {
            return c;
        }
        granted
            .iter()
            .zip(waiting.iter_mut())
            .map(|(g, w)| {
                let n = (*g).min(*w);
                *w -= n;
                n
            })
            .sum()
    });
    let even_timeouts = c + queued - handed;
    // An uneven spread serves fewer per wave: more waves, up to one per
    // request still waiting, until the timeout.
    let most_waves = 1 + queued;
    let mut k = waves.len() as u64 + 1;
    while k <= most_waves {
        let Some(may_time_out) = handed_in_time(b, k) else {
            break;
        };
        waves.push(PredictedWave {
            size: 0,
            size_min: 0,
            size_max: 0,
            at_s: k as f64 * b.sleep_s,
            may_time_out,
        });
        k += 1;
    }
    for w in waves.iter_mut().skip(1) {
        (w.size_min, w.size_max) = (0, c.min(queued));
    }
    (waves, fewest_timeouts.min(even_timeouts), queued)
}

/// 5.0 → "5", 0.5 → "0.5".
pub fn trim(x: f64) -> String {
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// One replica of pool max `pool_max`, PostgreSQL granting `grantable`.
    pub(crate) fn plan(n: u64, pool_max: u64, grantable: u64) -> Plan {
        replicas(n, 1, pool_max, grantable)
    }

    pub(crate) fn replicas(n: u64, r: u64, pool_max: u64, grantable: u64) -> Plan {
        let refused = grantable < r * pool_max;
        Plan {
            requests: n,
            sleep_s: 5.0,
            replicas: r,
            pool_max,
            concurrency: grantable.min(r * pool_max),
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

    #[test]
    fn thirty_requests_on_ten_plus_ten_come_in_two_waves() {
        let p = predict(&plan(30, 20, 96));
        assert_eq!(waves(&p), vec![(20, 5.0, false), (10, 10.0, false)]);
        assert_eq!((p.refused, p.timeouts_min, p.timeouts_max), (0, 0, 0));
        assert_eq!(p.limited_by, Layer::AppPool);
        assert_eq!(p.wave_count_range(), (2, 2));
    }

    #[test]
    fn only_the_connection_attempts_postgres_refuses_are_refused() {
        // Pool 30 + 30, max_connections 40: 40 − 3 reserved − 1 monitor = 36.
        let p = predict(&plan(60, 60, 36));
        assert_eq!(waves(&p), vec![(36, 5.0, false)]);
        assert_eq!((p.refused, p.attempts), (24, 60));
        assert_eq!(p.limited_by, Layer::Postgres);
        // 100: the pool stops at 60 open-or-opening; the other 40 wait for a
        // returned connection and are served by the 36 that opened.
        let p = predict(&plan(100, 60, 36));
        assert_eq!(p.refused, 24);
        assert_eq!(
            waves(&p),
            vec![(36, 5.0, false), (36, 10.0, false), (4, 15.0, false)]
        );
        assert_eq!((p.timeouts_min, p.timeouts_max), (0, 0));
        assert!(!p.depends_on_balance);
        // Fewer requests than the pool max: only those beyond 36 are refused.
        let p = predict(&plan(40, 60, 36));
        assert_eq!((p.refused, waves(&p)), (4, vec![(36, 5.0, false)]));
        let p = predict(&plan(30, 60, 36));
        assert_eq!((p.refused, waves(&p)), (0, vec![(30, 5.0, false)]));
    }

    #[test]
    fn waves_handed_out_after_the_pool_timeout_time_out() {
        // 1000 on 10 + 10, 5 s sleep, 30 s timeout: waves 1–6 are handed
        // their connections at 0–25 s; wave 7 at 30 s = the timeout, either way.
        let p = predict(&plan(1000, 20, 96));
        assert_eq!(p.waves.len(), 7);
        assert!(p.waves[..6].iter().all(|w| !w.may_time_out));
        assert!(p.waves[6].may_time_out);
        assert_eq!((p.timeouts_min, p.timeouts_max), (860, 880));
        assert_eq!(p.wave_count_range(), (6, 7));
        // 100 on 10 + 10: 5 waves of 20, the last handed out at 20 s.
        let p = predict(&plan(100, 20, 96));
        assert_eq!(p.waves.len(), 5);
        assert_eq!(p.timeouts_max, 0);
        // Refusals and timeouts together: 200 on 30 + 30 with 36 grantable.
        let p = predict(&plan(200, 60, 36));
        assert_eq!(p.refused, 24);
        assert_eq!(p.waves.iter().map(|w| w.size).sum::<u64>(), 176);
        assert_eq!(p.waves.len(), 5);
    }

    #[test]
    fn replicas_refuse_exactly_and_predict_a_range_for_the_later_waves() {
        // 3 replicas × 10 + 10 against 34 grantable; round robin gives 34,
        // 33, 33 requests, each replica tries 20 connections: 60 − 34 refused.
        let p = predict(&replicas(100, 3, 20, 34));
        assert_eq!((p.attempts, p.refused), (60, 26));
        assert!(p.depends_on_balance);
        // Even spread (12, 11, 11 connections for 14, 13, 13 waiters).
        let shown: Vec<u64> = p.expected_waves().map(|w| w.size).collect();
        assert_eq!(shown, [34, 34, 6]);
        assert_eq!((p.waves[0].size_min, p.waves[0].size_max), (34, 34));
        assert!(p.waves[1..]
            .iter()
            .all(|w| (w.size_min, w.size_max) == (0, 34)));
        // Any spread: up to one wave per waiter, until the timeout.
        assert_eq!(p.wave_count_range(), (1, 7));
        assert_eq!((p.timeouts_min, p.timeouts_max), (0, 40));
        // Nobody waits: nothing depends on the spread.
        let p = predict(&replicas(60, 3, 20, 34));
        assert_eq!((p.refused, waves(&p)), (26, vec![(34, 5.0, false)]));
        assert!(!p.depends_on_balance);
        // Within what PostgreSQL grants: each replica's share in its own waves.
        let p = predict(&replicas(100, 3, 10, 96));
        assert_eq!(
            p.expected_waves().map(|w| w.size).collect::<Vec<_>>(),
            [30, 30, 30, 10]
        );
        assert!(!p.depends_on_balance);
    }

    #[test]
    fn a_pooler_queues_the_excess_in_waves_of_its_pool() {
        // 3 replicas × 20 through PgBouncer's 20 server connections.
        let b = Plan {
            requests: 100,
            sleep_s: 5.0,
            replicas: 3,
            pool_max: 20,
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
    }

    #[test]
    fn tolerance_is_half_a_second_or_ten_percent() {
        assert_eq!(tolerance(1.0), 0.5);
        assert_eq!(tolerance(30.0), 3.0);
    }
}
