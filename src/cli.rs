//! The command line: `serve`, `migrate`, `client`, `sweep`, `healthcheck`.
//! Settings come from the environment and `.env` (see `settings`); the flags
//! here are only for the client and the health check.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "poolscope",
    version,
    about = "See how a connection pool and PostgreSQL's max_connections behave under load",
    long_about = "See how an async service's connection pool and PostgreSQL's max_connections behave under load.\n\n\
Settings (DATABASE_URL, DB_POOL_SIZE, DB_MAX_OVERFLOW, DB_POOL_TIMEOUT, ...) are read from the\n\
environment and from ./.env when present; see the README for the full table."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the demo service: migrate, then serve GET /test/postgres/ over the pool.
    ///
    /// Listens on APP_HOST:APP_PORT. Runs the migration at start (retrying until
    /// the database answers), logs the effective pool against PostgreSQL's
    /// max_connections, and drains in-flight requests for SHUTDOWN_GRACE
    /// seconds on SIGTERM/SIGINT.
    Serve,
    /// Create the todos table and its 50 seed rows (idempotent), then exit.
    Migrate,
    /// Fire N concurrent requests at the service and explain the waves.
    ///
    /// `client sweep …` is `sweep …` (compose's client service runs `poolscope client`).
    Client(crate::client::args::ClientArgs),
    /// Measure throughput, latency and the database's load at pool limits
    /// 1, 2, 4, … up to the pool's max, and name the knee.
    ///
    /// Needs POOL_LIMIT_CONTROL=true on the service: each step lowers its
    /// pool's limit for a while (a lease, renewed while the step runs and
    /// released at the end or on Ctrl-C).
    Sweep(crate::sweep::args::SweepArgs),
    /// Exit 0 when GET URL answers 200 within 2 s (for container health checks).
    Healthcheck {
        /// URL to check; default http://127.0.0.1:$APP_PORT/readyz (migrated and PostgreSQL answers).
        #[arg(long)]
        url: Option<String>,
    },
}

/// The arguments as clap should see them: `client sweep …` becomes `sweep …`,
/// because compose's `client` service has the entrypoint `poolscope client`,
/// so `docker compose run client sweep` arrives as `poolscope client sweep`.
pub fn args_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut args: Vec<_> = args.into_iter().collect();
    if args.len() >= 3 && args[1] == "client" && args[2] == "sweep" {
        args.remove(1);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Command {
        Cli::parse_from(args_from(line.split(' ').map(Into::into))).command
    }

    #[test]
    fn client_sweep_is_sweep_and_client_n_stays_client() {
        match parse("poolscope client sweep --work hot --limits 1,2") {
            Command::Sweep(a) => {
                assert_eq!((a.work.as_str(), a.limits), ("hot", Some(vec![1, 2])))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse("poolscope sweep"), Command::Sweep(_)));
        match parse("poolscope client 100") {
            Command::Client(a) => assert_eq!(a.n, 100),
            other => panic!("{other:?}"),
        }
    }
}
