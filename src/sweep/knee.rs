//! Reading the curve: where throughput stops growing with the pool's limit
//! (the knee), how that compares with the rule of thumb `cores × 2`, and
//! what to recommend. Pure functions over the measured steps.

/// How close to the best throughput counts as "as good": 5 %.
pub const WITHIN: f64 = 0.05;

/// The index of the knee: the smallest limit whose throughput is within
/// [`WITHIN`] of the best step's. `None` when nothing was served.
///
/// `points` are `(limit, requests per second)` in any order.
pub fn knee(points: &[(u32, f64)]) -> Option<usize> {
    let best = points.iter().map(|p| p.1).fold(0.0, f64::max);
    if best <= 0.0 || !best.is_finite() {
        return None;
    }
    points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.1 >= best * (1.0 - WITHIN))
        .min_by_key(|(_, p)| p.0)
        .map(|(i, _)| i)
}

/// The index of the best throughput (the smallest limit among equals).
pub fn best(points: &[(u32, f64)]) -> Option<usize> {
    points
        .iter()
        .enumerate()
        .filter(|(_, p)| p.1.is_finite())
        .max_by(|a, b| a.1 .1.total_cmp(&b.1 .1).then(b.1 .0.cmp(&a.1 .0)))
        .map(|(i, _)| i)
}

/// The knee against HikariCP's `cores × 2` (no spindles: the data is in
/// memory), in words.
pub fn against_cores(knee: u32, cores: Option<u32>) -> String {
    let Some(cores) = cores else {
        return "cores × 2: the database's cores are unknown (set DB_CORES on the service, \
                or --db-cores)"
            .to_owned();
    };
    let rule = cores * 2;
    let relation = if knee == rule {
        "the knee is right there".to_owned()
    } else if knee < rule {
        format!("the knee comes {}× sooner", rule as f64 / knee as f64)
    } else {
        format!("the knee comes {}× later", knee as f64 / rule as f64)
    };
    format!("cores × 2 = {cores} × 2 = {rule}: {relation}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_knee_is_the_smallest_limit_within_5_percent_of_the_best() {
        // CPU-bound on 2 cores: flat from 4 on, a little lower at 32.
        let cpu = [
            (1, 33.0),
            (2, 66.0),
            (4, 72.0),
            (8, 74.0),
            (16, 71.0),
            (32, 65.0),
        ];
        assert_eq!(knee(&cpu), Some(2));
        assert_eq!(best(&cpu), Some(3));
        // Hot rows: best at 2, collapsing after.
        let hot = [
            (1, 5000.0),
            (2, 8674.0),
            (4, 6000.0),
            (8, 1903.0),
            (32, 75.0),
        ];
        assert_eq!(knee(&hot), Some(1));
        // Sleep: throughput grows with every connection; the knee is the last.
        let sleep = [(1, 0.2), (2, 0.4), (4, 0.8), (8, 1.6), (16, 3.2), (20, 4.0)];
        assert_eq!(knee(&sleep), Some(5));
        // Exactly 5 % below still counts; order does not matter.
        let edge = [(8, 100.0), (2, 95.0), (1, 94.9)];
        assert_eq!(knee(&edge), Some(1));
    }

    #[test]
    fn no_knee_without_throughput() {
        assert_eq!(knee(&[]), None);
        assert_eq!(knee(&[(1, 0.0), (2, 0.0)]), None);
        assert_eq!(knee(&[(4, 10.0)]), Some(0));
    }

    #[test]
    fn the_knee_is_compared_with_cores_times_two() {
        assert!(against_cores(4, Some(2)).ends_with("the knee is right there"));
        assert!(against_cores(2, Some(2)).ends_with("2× sooner"));
        assert!(against_cores(16, Some(2)).ends_with("4× later"));
        assert!(against_cores(4, None).contains("unknown"));
    }
}
