//! One test binary (zero2prod style): black-box HTTP against the real service
//! on a real PostgreSQL.

mod cluster;
mod helpers;

mod client;
mod demo;
mod errors;
mod lifecycle;
mod live_page;
mod observability;
mod parsers;
mod pgbouncer;
mod pool_limit;
mod pool_semantics;
mod readiness;
mod recovery;
mod reliability;
mod settings;
mod sweep;
mod workloads;
