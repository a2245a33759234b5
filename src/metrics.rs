//! `GET /metrics`: Prometheus text with the OpenTelemetry database-client
//! names (`db.client.connection.*` → `db_client_connection_*`), request
//! durations, and PostgreSQL's side of the arithmetic as the service last
//! sampled it — so no exporter image is needed.
//!
//! sqlx exposes only the pool's size and idle count; pending requests, wait
//! times, timeouts and refusals are counted by [`crate::db::pool::Pool`].

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::contract::{PoolerReport, ServerLimits};

/// Bucket bounds in seconds: from a free connection (sub-ms) to a wave that
/// waited out a long pool timeout.
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A cumulative histogram, lock-free to record.
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            let n = bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Request durations by route and status.
#[derive(Default)]
pub struct RequestDurations {
    by_label: Mutex<BTreeMap<(&'static str, u16), Histogram>>,
}

impl RequestDurations {
    pub fn record(&self, route: &'static str, status: u16, d: Duration) {
        self.by_label
            .lock()
            .expect("not poisoned")
            .entry((route, status))
            .or_default()
            .record(d);
    }
}

/// The pool's numbers at one instant, as `/metrics` shows them.
pub struct PoolSnapshot {
    pub idle: u32,
    pub used: u32,
    pub max: u32,
    pub idle_min: u32,
    pub pending: u32,
    pub timeouts: u64,
    pub refusals: u64,
}

/// Renders the whole exposition.
pub fn render(
    pool: &PoolSnapshot,
    wait_time: &Histogram,
    requests: &RequestDurations,
    server: Option<&ServerLimits>,
    pooler: Option<&PoolerReport>,
) -> String {
    let mut out = String::with_capacity(4096);
    let p = "pool_name=\"poolscope\"";
    let gauge = |out: &mut String, name: &str, help: &str, kind: &str, rows: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    };
    gauge(
        &mut out,
        "db_client_connection_count",
        "Connections in the pool by state.",
        "gauge",
        &[
            (format!("{p},state=\"idle\""), pool.idle as f64),
            (format!("{p},state=\"used\""), pool.used as f64),
        ],
    );
    gauge(
        &mut out,
        "db_client_connection_max",
        "Most connections the pool may open (DB_POOL_SIZE + DB_MAX_OVERFLOW).",
        "gauge",
        &[(p.into(), pool.max as f64)],
    );
    gauge(
        &mut out,
        "db_client_connection_idle_min",
        "Connections the pool keeps open (DB_POOL_SIZE).",
        "gauge",
        &[(p.into(), pool.idle_min as f64)],
    );
    gauge(
        &mut out,
        "db_client_connection_pending_requests",
        "Requests waiting for a connection.",
        "gauge",
        &[(p.into(), pool.pending as f64)],
    );
    gauge(
        &mut out,
        "db_client_connection_timeouts",
        "Acquires that gave up after DB_POOL_TIMEOUT with the pool busy.",
        "counter",
        &[(p.into(), pool.timeouts as f64)],
    );
    gauge(
        &mut out,
        "db_client_connection_refusals",
        "Acquires that failed because PostgreSQL refused new connections (too many clients).",
        "counter",
        &[(p.into(), pool.refusals as f64)],
    );

    let _ = writeln!(out, "# HELP db_client_connection_wait_time Seconds waited for a connection.\n# TYPE db_client_connection_wait_time histogram");
    wait_time.render(&mut out, "db_client_connection_wait_time", p);

    let _ = writeln!(out, "# HELP http_server_request_duration Seconds to answer, by route and status.\n# TYPE http_server_request_duration histogram");
    for ((route, status), h) in requests.by_label.lock().expect("not poisoned").iter() {
        let labels = format!("http_route=\"{route}\",http_response_status_code=\"{status}\"");
        h.render(&mut out, "http_server_request_duration", &labels);
    }

    let up = server.is_some() as u8 as f64;
    gauge(
        &mut out,
        "postgresql_up",
        "1 when the service's last sample of PostgreSQL succeeded.",
        "gauge",
        &[(String::new(), up)],
    );
    if let Some(s) = server {
        gauge(
            &mut out,
            "postgresql_max_connections",
            "PostgreSQL's max_connections.",
            "gauge",
            &[(String::new(), s.max_connections as f64)],
        );
        gauge(&mut out, "postgresql_reserved_connections", "Slots reserved for superusers (superuser_reserved_connections + reserved_connections).", "gauge", &[(String::new(), s.reserved as f64)]);
        gauge(
            &mut out,
            "postgresql_backends",
            "Client backends: in the whole cluster, and of this service's pool.",
            "gauge",
            &[
                ("scope=\"total\"".into(), s.backends_total as f64),
                ("scope=\"service\"".into(), s.backends_service as f64),
            ],
        );
        gauge(
            &mut out,
            "postgresql_grantable_to_pool",
            "Connections the pool can get: max_connections - reserved - other backends.",
            "gauge",
            &[(String::new(), s.grantable_to_pool() as f64)],
        );
        gauge(
            &mut out,
            "poolscope_replicas",
            "Replicas of the service seen in pg_stat_activity (one monitor connection each).",
            "gauge",
            &[(String::new(), s.replicas.len() as f64)],
        );
    }
    if let Some(b) = pooler {
        // Named as the community pgbouncer_exporter names SHOW POOLS.
        let rows = [
            (
                "pgbouncer_pools_client_active_connections",
                "Client connections running a transaction (cl_active).",
                b.cl_active as f64,
            ),
            (
                "pgbouncer_pools_client_waiting_connections",
                "Client connections waiting for a server connection (cl_waiting).",
                b.cl_waiting as f64,
            ),
            (
                "pgbouncer_pools_server_active_connections",
                "Server connections in use (sv_active).",
                b.sv_active as f64,
            ),
            (
                "pgbouncer_pools_server_idle_connections",
                "Server connections idle (sv_idle).",
                b.sv_idle as f64,
            ),
            (
                "pgbouncer_pools_client_maxwait_seconds",
                "The oldest waiting client's wait (maxwait).",
                b.maxwait_s,
            ),
            (
                "pgbouncer_config_default_pool_size",
                "Server connections per database and user (default_pool_size).",
                b.default_pool_size as f64,
            ),
        ];
        for (name, help, value) in rows {
            gauge(&mut out, name, help, "gauge", &[(String::new(), value)]);
        }
    }
    // `{}` on an empty label set is valid but unusual; drop it.
    out.replace("{}", "")
}
