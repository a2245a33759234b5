//! The command line: `serve`, `migrate`, `client`, `healthcheck`.
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
    Client(crate::client::args::ClientArgs),
    /// Exit 0 when GET URL answers 200 within 2 s (for container health checks).
    Healthcheck {
        /// URL to check; default http://127.0.0.1:$APP_PORT/readyz (migrated and PostgreSQL answers).
        #[arg(long)]
        url: Option<String>,
    },
}
