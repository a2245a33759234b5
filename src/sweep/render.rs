//! The sweep's terminal output: a header, one table row per step as it
//! finishes, then the knee, the comparison with `cores × 2` and a one-line
//! recommendation.

use std::fmt::Write;

use super::knee;
use super::stats::Step;
use super::SweepReport;

pub fn header(r: &SweepReport, limits: &[u32]) -> String {
    let list: Vec<String> = limits.iter().map(u32::to_string).collect();
    let mut out = format!(
        "Sweeping the pool limit of {}\n  {} clients in a closed loop, work={}, {} s measured per step after {} s of warm-up; limits {} (pool max {})\n\n",
        r.url,
        r.clients,
        r.work,
        r.step_seconds,
        r.warmup_seconds,
        list.join(", "),
        r.pool_max
    );
    let _ = writeln!(
        out,
        "{:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>8} {:>9}  errors",
        "limit",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "pool ms",
        "db ms",
        "active",
        "on lock",
        "probe ms"
    );
    out
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.decimals$}"))
}

pub fn row(s: &Step) -> String {
    let errors: Vec<String> = s.errors.iter().map(|(k, n)| format!("{k} × {n}")).collect();
    format!(
        "{:>6} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>8} {:>9}  {}\n",
        s.limit,
        s.rps,
        num(s.latency_ms.map(|l| l.p50), 1),
        num(s.latency_ms.map(|l| l.p95), 1),
        num(s.latency_ms.map(|l| l.p99), 1),
        num(s.pool_ms, 1),
        num(s.db_ms, 1),
        num(s.active, 1),
        num(s.lock_waiters, 1),
        num(s.probe_ms, 2),
        if errors.is_empty() {
            "none".to_owned()
        } else {
            errors.join(", ")
        }
    )
}

/// Fills in the knee, the best step, the comparison and the recommendation.
pub fn conclude(r: &mut SweepReport) {
    let points: Vec<(u32, f64)> = r.steps.iter().map(|s| (s.limit, s.rps)).collect();
    let Some(k) = knee::knee(&points) else {
        r.recommendation = Some(if r.steps.is_empty() {
            "no step finished: nothing to recommend".to_owned()
        } else {
            "no request was served: nothing to recommend (is the service healthy?)".to_owned()
        });
        return;
    };
    let best = knee::best(&points).unwrap_or(k);
    let (kneed, top) = (&r.steps[k], &r.steps[best]);
    r.knee = Some(kneed.limit);
    r.best = Some(top.limit);
    let largest = r
        .steps
        .iter()
        .max_by_key(|s| s.limit)
        .expect("a knee has steps");
    r.comparison = Some(if largest.limit == kneed.limit && r.steps.len() > 1 {
        // Still climbing: the knee, if any, lies beyond what was measured.
        match r.db_cores {
            Some(c) => format!(
                "cores × 2 = {c} × 2 = {}: no knee up to {} (throughput still grows)",
                c * 2,
                largest.limit
            ),
            None => knee::against_cores(kneed.limit, None),
        }
    } else {
        knee::against_cores(kneed.limit, r.db_cores)
    });
    r.recommendation = Some(if largest.limit == kneed.limit {
        format!(
            "throughput still grows at the largest limit measured ({}): for work={} the \
             database is not what limits this service; the pool may stay as it is",
            largest.limit, r.work
        )
    } else {
        let mut why = format!(
            "cap this service's connections to this database at about {} \
             (DB_POOL_SIZE + DB_MAX_OVERFLOW, all replicas together): at {} the database \
             served {:.0} req/s instead of {:.0}",
            kneed.limit, largest.limit, largest.rps, kneed.rps
        );
        if let (Some(a), Some(b)) = (kneed.db_ms, largest.db_ms) {
            let _ = write!(
                why,
                ", each request spent {b:.1} ms in it instead of {a:.1}"
            );
        }
        if let (Some(a), Some(b)) = (kneed.probe_ms, largest.probe_ms) {
            let _ = write!(
                why,
                ", and a SELECT 1 from outside the pool took {b:.2} ms instead of {a:.2}"
            );
        }
        why
    });
}

pub fn conclusion(r: &SweepReport) -> String {
    let mut out = String::from("\n");
    if r.interrupted {
        out.push_str("interrupted: the steps above are what finished\n");
    }
    if let (Some(k), Some(b)) = (r.knee, r.best) {
        let rps = |limit: u32| {
            r.steps
                .iter()
                .find(|s| s.limit == limit)
                .map_or(0.0, |s| s.rps)
        };
        let _ = writeln!(
            out,
            "knee:           limit {k} ({:.1} req/s, within 5 % of the best: {:.1} req/s at limit {b})",
            rps(k),
            rps(b)
        );
    }
    if let Some(c) = &r.comparison {
        let _ = writeln!(out, "{c}");
    }
    if let Some(rec) = &r.recommendation {
        let _ = writeln!(out, "recommendation: {rec}");
    }
    out
}

/// A sweep with made-up throughputs per limit, for tests of what is drawn
/// and concluded from it.
#[cfg(test)]
pub fn made_up(curve: &[(u32, f64)], pool_max: u32, db_cores: Option<u32>) -> SweepReport {
    let url = "http://app:8080/test/postgres/?work=cpu".to_owned();
    let mut r = SweepReport::new(url, "cpu".into(), 40, (10.0, 2.0), pool_max, db_cores);
    r.steps = curve
        .iter()
        .map(|(limit, rps)| {
            let mut s = crate::sweep::stats::summarise(*limit, 10.0, &[], &[]);
            s.rps = *rps;
            s
        })
        .collect();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(curve: &[(u32, f64)], db_cores: Option<u32>) -> SweepReport {
        let mut r = made_up(curve, 20, db_cores);
        conclude(&mut r);
        r
    }

    #[test]
    fn a_curve_still_climbing_has_no_knee_to_compare() {
        let r = report(&[(1, 10.0), (2, 20.0), (4, 40.0)], Some(2));
        assert_eq!(r.knee, Some(4));
        assert_eq!(
            r.comparison.as_deref(),
            Some("cores × 2 = 2 × 2 = 4: no knee up to 4 (throughput still grows)")
        );
        assert!(r
            .recommendation
            .unwrap()
            .starts_with("throughput still grows"));
    }

    #[test]
    fn past_the_knee_the_recommendation_caps_the_pool() {
        let r = report(
            &[(1, 33.0), (2, 66.0), (4, 72.0), (8, 70.0), (20, 60.0)],
            None,
        );
        assert_eq!((r.knee, r.best), (Some(4), Some(4)));
        let rec = r.recommendation.unwrap();
        assert!(rec.starts_with("cap this service's connections to this database at about 4"));
        assert!(
            rec.contains("at 20 the database served 60 req/s instead of 72"),
            "{rec}"
        );
        assert!(r.comparison.unwrap().contains("unknown"));
        assert!(conclusion(&report(&[], None)).contains("no step finished"));
        assert!(conclusion(&report(&[(1, 0.0)], None)).contains("no request was served"));
    }
}
