//! poolscope: see how an async service's connection pool and PostgreSQL's
//! `max_connections` behave under load. One binary: `serve` (the demo
//! service), `migrate`, and `client` (the load client).

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
pub mod telemetry;
