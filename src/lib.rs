//! poolscope: see how an async service's connection pool and PostgreSQL's
//! `max_connections` behave under load. One binary: `serve` (the demo
//! service), `migrate`, `client` (the load client) and `sweep` (the pool
//! limit against throughput).

pub mod budget;
pub mod cli;
pub mod client;
pub mod contract;
pub mod db;
pub mod http;
pub mod metrics;
pub mod report;
pub mod runlog;
pub mod secret;
pub mod settings;
pub mod shutdown;
pub mod startup;
pub mod sweep;
pub mod telemetry;
