//! The client's arguments, checked up front so a bad one is a usage error (exit 2).

use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Number of concurrent requests (each on its own connection).
    #[arg(default_value = "10", value_parser = parse_count)]
    pub n: usize,
    /// Target URL (default: $TARGET_URL, else http://localhost:8080/test/postgres/).
    #[arg(
        long,
        env = "TARGET_URL",
        default_value = "http://localhost:8080/test/postgres/"
    )]
    pub url: String,
    /// pg_sleep seconds, passed as ?seconds=S (default: the server's SLEEP_SECONDS).
    #[arg(long, value_parser = parse_nonneg_seconds)]
    pub seconds: Option<f64>,
    /// Seconds before a request is given up (default: the server's DB_POOL_TIMEOUT + SLEEP_MAX + 10).
    #[arg(long, value_parser = parse_positive_seconds)]
    pub timeout: Option<f64>,
    /// Print one machine-readable JSON report instead of lines and summary.
    #[arg(long)]
    pub json: bool,
    /// Print the summary only, not a line per response.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also write a picture of the run: one self-contained HTML file
    /// (`-` = standard output; the usual output then goes to standard error).
    #[arg(long, value_name = "FILE")]
    pub report: Option<std::path::PathBuf>,
}

/// Most requests one process will try (each needs a file descriptor).
pub const MAX_REQUESTS: usize = 1_000_000;

fn parse_count(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_REQUESTS).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected a whole number from 1 to {MAX_REQUESTS}, got \"{raw}\""
        )),
    }
}

fn parse_nonneg_seconds(raw: &str) -> Result<f64, String> {
    crate::settings::parse_seconds(raw, 0.0, 86_400.0)
        .map(|d| d.as_secs_f64())
        .ok_or_else(|| format!("expected seconds from 0 to 86400, got \"{raw}\""))
}

fn parse_positive_seconds(raw: &str) -> Result<f64, String> {
    crate::settings::parse_seconds(raw, 0.001, 86_400.0)
        .map(|d| d.as_secs_f64())
        .ok_or_else(|| format!("expected seconds from 0.001 to 86400, got \"{raw}\""))
}
