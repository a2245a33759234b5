//! `poolscope sweep`'s arguments, checked up front (a bad one is a usage
//! error, exit 2).

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct SweepArgs {
    /// The demo route (default: $TARGET_URL, else http://localhost:8080/test/postgres/).
    #[arg(
        long,
        env = "TARGET_URL",
        default_value = "http://localhost:8080/test/postgres/"
    )]
    pub url: String,
    /// What each request makes PostgreSQL do: cpu, hot or sleep.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "hot", "sleep"])]
    pub work: String,
    /// Clients in the closed loop (default: twice the pool's max, so the
    /// pool stays full at every step).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: Option<u32>,
    /// Seconds measured per step.
    #[arg(long, default_value = "10", value_parser = parse_step)]
    pub step: f64,
    /// Seconds of load before each step's measurement (the new limit settles).
    #[arg(long, default_value = "2", value_parser = parse_warmup)]
    pub warmup: f64,
    /// Pool limits to measure, e.g. 1,2,4,8 (default: 1, 2, 4, … up to the pool's max).
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub limits: Option<Vec<u32>>,
    /// pg_sleep seconds for --work sleep (default: the server's SLEEP_SECONDS).
    #[arg(long, value_parser = parse_seconds)]
    pub seconds: Option<f64>,
    /// The database server's cores (default: the service's DB_CORES, else unknown).
    #[arg(long, env = "DB_CORES", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub db_cores: Option<u32>,
    /// Print one machine-readable JSON report instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Also write the curves as one self-contained HTML file (`-` = standard output).
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
}

fn parse_step(raw: &str) -> Result<f64, String> {
    crate::settings::parse_seconds(raw, 0.5, 3600.0)
        .map(|d| d.as_secs_f64())
        .ok_or_else(|| format!("expected seconds from 0.5 to 3600, got \"{raw}\""))
}

fn parse_warmup(raw: &str) -> Result<f64, String> {
    crate::settings::parse_seconds(raw, 0.0, 600.0)
        .map(|d| d.as_secs_f64())
        .ok_or_else(|| format!("expected seconds from 0 to 600, got \"{raw}\""))
}

fn parse_seconds(raw: &str) -> Result<f64, String> {
    crate::settings::parse_seconds(raw, 0.0, 86_400.0)
        .map(|d| d.as_secs_f64())
        .ok_or_else(|| format!("expected seconds from 0 to 86400, got \"{raw}\""))
}

/// 1, 2, 4, 8, … below `max`, then `max` itself.
pub fn doubling_up_to(max: u32) -> Vec<u32> {
    let mut limits: Vec<u32> = std::iter::successors(Some(1u32), |n| n.checked_mul(2))
        .take_while(|n| *n < max)
        .collect();
    limits.push(max.max(1));
    limits
}

#[cfg(test)]
mod tests {
    use super::doubling_up_to;

    #[test]
    fn the_series_doubles_up_to_the_pool_max() {
        assert_eq!(doubling_up_to(20), [1, 2, 4, 8, 16, 20]);
        assert_eq!(doubling_up_to(16), [1, 2, 4, 8, 16]);
        assert_eq!(doubling_up_to(1), [1]);
        assert_eq!(doubling_up_to(3), [1, 2, 3]);
    }
}
