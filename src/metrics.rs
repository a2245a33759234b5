//! `GET /metrics`: OpenMetrics text, rendered by the Prometheus project's own
//! Rust client (`prometheus-client`), so no exporter image is needed.
//!
//! Names follow the OpenTelemetry semantic conventions as Prometheus spells
//! them: `db.client.connection.wait_time` (seconds) becomes
//! `db_client_connection_wait_time_seconds`, counters end in `_total`, and
//! labels are the attribute names (`db_client_connection_pool_name`,
//! `db_client_connection_state`). Series the conventions do not define carry
//! the `poolscope_` prefix instead of borrowing theirs.
//!
//! Histograms are consistent per scrape: each one is updated and read under
//! its own lock, so a scrape never shows a bucket above `+Inf` or a count
//! that disagrees with its buckets.
//!
//! Two kinds of numbers, one registry ([`Metrics`], built once at start):
//! those recorded as things happen ([`PoolMetrics`], [`RequestDurations`]:
//! shared handles, registered once) and those read at scrape time (the pool's
//! gauges, PostgreSQL's last sample, PgBouncer's last `SHOW POOLS`), which a
//! `Collector` asks for as a [`Scrape`] and writes on each scrape. A scrape
//! registers nothing: it reads the handles and writes text.

use std::fmt;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{text::encode, DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::contract::{PoolerReport, ServerLimits};

/// OpenMetrics' media type (Prometheus 2.x and 3.x both ask for it).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `db.client.connection.pool.name`.
pub const POOL_NAME: &str = "poolscope";

/// Bucket bounds in seconds: from a free connection (sub-ms) to a wave that
/// waited out a long pool timeout.
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

fn seconds_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Records one duration in seconds.
pub fn observe(h: &Histogram, d: Duration) {
    h.observe(d.as_secs_f64());
}

/// What the pool records as it works. Clones share the same series.
#[derive(Clone)]
pub struct PoolMetrics {
    /// `db.client.connection.wait_time`: waits for a connection, served or not.
    pub wait_time: Histogram,
    /// `db.client.connection.create_time`: how long opening a connection took.
    pub create_time: Histogram,
    /// `db.client.connection.use_time`: from handing a connection out to its return.
    pub use_time: Histogram,
    /// `db.client.connection.timeouts`: gave up after `DB_POOL_TIMEOUT`, pool busy.
    pub timeouts: Counter,
    /// PostgreSQL refused a new connection (too many clients).
    pub refusals: Counter,
    /// Connections opened (every one, timed or not).
    pub opened: Counter,
}

impl Default for PoolMetrics {
    fn default() -> Self {
        PoolMetrics {
            wait_time: seconds_histogram(),
            create_time: seconds_histogram(),
            use_time: seconds_histogram(),
            timeouts: Counter::default(),
            refusals: Counter::default(),
            opened: Counter::default(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    http_request_method: &'static str,
    http_route: &'static str,
    http_response_status_code: u16,
}

/// `http.server.request.duration` by method, route and status.
pub struct RequestDurations {
    family: Family<RequestLabels, Histogram, fn() -> Histogram>,
}

impl Default for RequestDurations {
    fn default() -> Self {
        RequestDurations {
            family: Family::new_with_constructor(seconds_histogram),
        }
    }
}

impl RequestDurations {
    pub fn record(&self, method: &str, route: &'static str, status: u16, d: Duration) {
        let labels = RequestLabels {
            http_request_method: known_method(method),
            http_route: route,
            http_response_status_code: status,
        };
        self.family.get_or_create(&labels).observe(d.as_secs_f64());
    }
}

/// The conventions' rule for `http.request.method`: the standard methods by
/// name, anything else as `_OTHER` (a client must not create series at will).
fn known_method(m: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
    ];
    KNOWN.into_iter().find(|k| *k == m).unwrap_or("_OTHER")
}

/// The pool's numbers at one instant, as `/metrics` shows them.
pub struct PoolSnapshot {
    pub idle: u32,
    pub used: u32,
    pub max: u32,
    /// `DB_POOL_SIZE`: kept open, and the most that stay idle.
    pub size: u32,
    pub pending: u32,
    /// The oldest waiting request's wait so far (zero when none waits).
    pub oldest_wait: Duration,
    /// Connections closed so far (never decreasing).
    pub closed: u64,
}

/// What is read at scrape time rather than recorded: the pool right now,
/// PostgreSQL's last background sample, PgBouncer's last `SHOW POOLS`.
pub struct Scrape {
    pub pool: PoolSnapshot,
    pub server: Option<ServerLimits>,
    pub pooler: Option<PoolerReport>,
}

type PoolLabel = [(&'static str, &'static str); 1];
const POOL: PoolLabel = [("db_client_connection_pool_name", POOL_NAME)];

/// The service's exposition: one registry, built once at start, holding the
/// recorded series and a collector that reads a [`Scrape`] each time.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// `read` is called once per scrape, for the numbers of [`Scrape`].
    pub fn new(
        recorded: &PoolMetrics,
        requests: &RequestDurations,
        read: impl Fn() -> Scrape + Send + Sync + 'static,
    ) -> Metrics {
        let mut r = Registry::default();
        register_recorded(&mut r, recorded);
        r.register_with_unit(
            "http_server_request_duration",
            "Time to answer, by method, route and status (499: the client closed the connection first)",
            Unit::Seconds,
            requests.family.clone(),
        );
        r.register_collector(Box::new(AtScrape(Box::new(read))));
        Metrics { registry: r }
    }

    /// The whole exposition, as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// One series labelled with the pool's name, sharing `metric`'s handle.
fn for_pool<M>(metric: M) -> Family<PoolLabel, M, impl Fn() -> M + Clone>
where
    M: Clone + prometheus_client::metrics::TypedMetric + 'static,
{
    let family = Family::new_with_constructor(move || metric.clone());
    drop(family.get_or_create(&POOL));
    family
}

fn register_recorded(r: &mut Registry, recorded: &PoolMetrics) {
    let histograms = [
        (
            "db_client_connection_wait_time",
            "Time waited for a connection, served or not",
            &recorded.wait_time,
        ),
        (
            "db_client_connection_create_time",
            "Time to open a connection (login included) for a request or the warm-up",
            &recorded.create_time,
        ),
        (
            "db_client_connection_use_time",
            "Time a connection was out of the pool, from hand-out to return",
            &recorded.use_time,
        ),
    ];
    for (name, help, h) in histograms {
        r.register_with_unit(name, help, Unit::Seconds, for_pool(h.clone()));
    }
    let counters = [
        (
            "db_client_connection_timeouts",
            "Acquires that gave up after DB_POOL_TIMEOUT with the pool busy",
            &recorded.timeouts,
        ),
        (
            "poolscope_pool_refusals",
            "Acquires that failed because PostgreSQL refused a new connection (too many clients)",
            &recorded.refusals,
        ),
        (
            "poolscope_pool_connections_opened",
            "Connections the pool opened",
            &recorded.opened,
        ),
    ];
    for (name, help, c) in counters {
        r.register(name, help, for_pool(c.clone()));
    }
}

/// The series read at scrape time. A [`Collector`] writes its descriptors
/// itself, so the help texts end in the full stop the registry adds to the
/// others.
struct AtScrape(Box<dyn Fn() -> Scrape + Send + Sync>);

impl fmt::Debug for AtScrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AtScrape")
    }
}

impl Collector for AtScrape {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        let Scrape {
            pool,
            server,
            pooler,
        } = (self.0)();
        encode_pool(&mut out, &pool)?;
        encode_postgres(&mut out, server.as_ref())?;
        match pooler {
            Some(b) => encode_pooler(&mut out, &b),
            None => Ok(()),
        }
    }
}

/// Writes the descriptor of `metric` and one series per label set.
fn series<M: EncodeMetric, L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    (name, help): (&str, &str),
    unit: Option<&Unit>,
    series: &[(L, M)],
) -> fmt::Result {
    let Some((_, first)) = series.first() else {
        return Ok(());
    };
    let mut m = out.encode_descriptor(name, &format!("{help}."), unit, first.metric_type())?;
    for (labels, metric) in series {
        metric.encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

/// One unlabelled gauge.
fn gauge(out: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> fmt::Result {
    let m = out.encode_descriptor(name, &format!("{help}."), None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

fn encode_pool(out: &mut DescriptorEncoder, pool: &PoolSnapshot) -> fmt::Result {
    let by_state = |state| [POOL[0], ("db_client_connection_state", state)];
    series(
        out,
        (
            "db_client_connection_count",
            "Connections in the pool by state (idle, used)",
        ),
        None,
        &[
            (by_state("idle"), ConstGauge::new(i64::from(pool.idle))),
            (by_state("used"), ConstGauge::new(i64::from(pool.used))),
        ],
    )?;
    let gauges = [
        (
            "db_client_connection_max",
            "Most connections the pool may open (DB_POOL_SIZE + DB_MAX_OVERFLOW)",
            pool.max,
        ),
        (
            "db_client_connection_idle_min",
            "Connections the pool keeps open (DB_POOL_SIZE)",
            pool.size,
        ),
        (
            "db_client_connection_idle_max",
            "Most connections left idle; overflow beyond DB_POOL_SIZE is closed (DB_POOL_SIZE)",
            pool.size,
        ),
        (
            "db_client_connection_pending_requests",
            "Requests waiting for a connection",
            pool.pending,
        ),
    ];
    for (name, help, value) in gauges {
        let value = ConstGauge::new(f64::from(value));
        series(out, (name, help), None, &[(POOL, value)])?;
    }
    series(
        out,
        (
            "poolscope_pool_connections_closed",
            "Connections the pool closed (surplus overflow, recycled, broken)",
        ),
        None,
        &[(POOL, ConstCounter::new(pool.closed))],
    )?;
    series(
        out,
        (
            "poolscope_pool_oldest_wait",
            "How long the oldest request still waiting has waited (like PgBouncer's maxwait); 0 when none waits",
        ),
        Some(&Unit::Seconds),
        &[(POOL, ConstGauge::new(pool.oldest_wait.as_secs_f64()))],
    )
}

fn encode_postgres(out: &mut DescriptorEncoder, server: Option<&ServerLimits>) -> fmt::Result {
    gauge(
        out,
        "postgresql_up",
        "1 when the service's last sample of PostgreSQL succeeded",
        if server.is_some() { 1.0 } else { 0.0 },
    )?;
    let Some(s) = server else { return Ok(()) };
    gauge(
        out,
        "postgresql_max_connections",
        "PostgreSQL's max_connections",
        f64::from(s.max_connections),
    )?;
    gauge(
        out,
        "postgresql_reserved_connections",
        "Slots the service's role may not use (superuser_reserved_connections + reserved_connections; 0 for a superuser)",
        f64::from(s.reserved),
    )?;
    series(
        out,
        (
            "postgresql_backends",
            "Client backends: in the whole cluster, and of this service's pool",
        ),
        None,
        &[
            (
                [("scope", "total")],
                ConstGauge::new(i64::from(s.backends_total)),
            ),
            (
                [("scope", "service")],
                ConstGauge::new(i64::from(s.backends_service)),
            ),
        ],
    )?;
    gauge(
        out,
        "postgresql_grantable_to_pool",
        "Connections the pool can get: max_connections - reserved - other backends",
        f64::from(s.grantable_to_pool()),
    )?;
    gauge(
        out,
        "poolscope_replicas",
        "Replicas of the service seen in pg_stat_activity (one monitor connection each)",
        s.replicas.len() as f64,
    )
}

/// Named as the community pgbouncer_exporter names `SHOW POOLS`.
fn encode_pooler(out: &mut DescriptorEncoder, b: &PoolerReport) -> fmt::Result {
    let rows = [
        (
            "pgbouncer_pools_client_active_connections",
            "Client connections running a transaction (cl_active)",
            b.cl_active as f64,
        ),
        (
            "pgbouncer_pools_client_waiting_connections",
            "Client connections waiting for a server connection (cl_waiting)",
            b.cl_waiting as f64,
        ),
        (
            "pgbouncer_pools_server_active_connections",
            "Server connections in use (sv_active)",
            b.sv_active as f64,
        ),
        (
            "pgbouncer_pools_server_idle_connections",
            "Server connections idle (sv_idle)",
            b.sv_idle as f64,
        ),
        (
            "pgbouncer_pools_client_maxwait_seconds",
            "The oldest waiting client's wait (maxwait)",
            b.maxwait_s,
        ),
        (
            "pgbouncer_config_default_pool_size",
            "Server connections per database and user (default_pool_size)",
            b.default_pool_size as f64,
        ),
    ];
    for (name, help, value) in rows {
        gauge(out, name, help, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> PoolSnapshot {
        PoolSnapshot {
            idle: 1,
            used: 2,
            max: 3,
            size: 2,
            pending: 4,
            oldest_wait: Duration::from_millis(1500),
            closed: 7,
        }
    }

    /// The exposition over these series, with no PostgreSQL sample or pooler.
    fn exposition(recorded: &PoolMetrics, requests: &RequestDurations) -> Metrics {
        Metrics::new(recorded, requests, || Scrape {
            pool: snapshot(),
            server: None,
            pooler: None,
        })
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{series} not in:\n{text}"))
    }

    #[test]
    fn names_and_labels_follow_the_conventions() {
        let recorded = PoolMetrics::default();
        recorded.timeouts.inc();
        let requests = RequestDurations::default();
        requests.record("GET", "/pool", 200, Duration::from_millis(3));
        requests.record("BREW", "/pool", 405, Duration::from_millis(1));
        let text = exposition(&recorded, &requests).render();
        let pool = "{db_client_connection_pool_name=\"poolscope\"}";
        assert_eq!(
            value(&text, &format!("db_client_connection_timeouts_total{pool}")),
            1.0
        );
        assert_eq!(
            value(&text, &format!("poolscope_pool_oldest_wait_seconds{pool}")),
            1.5
        );
        assert_eq!(
            value(
                &text,
                &format!("poolscope_pool_connections_closed_total{pool}")
            ),
            7.0
        );
        assert_eq!(
            value(
                &text,
                "db_client_connection_count{db_client_connection_pool_name=\"poolscope\",db_client_connection_state=\"used\"}"
            ),
            2.0
        );
        // An unknown method is `_OTHER`, so clients cannot mint series.
        assert!(text.contains("http_request_method=\"_OTHER\""), "{text}");
        assert!(!text.contains("BREW"));
        assert_eq!(value(&text, "postgresql_up"), 0.0);
        assert!(text.ends_with("# EOF\n"));
    }

    /// A scrape taken while other threads record never shows more in the
    /// `+Inf` bucket than in the count.
    #[test]
    fn histograms_are_consistent_while_recording() {
        let recorded = PoolMetrics::default();
        let requests = RequestDurations::default();
        let metrics = exposition(&recorded, &requests);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        observe(&recorded.wait_time, Duration::from_millis(7));
                    }
                });
            }
            let pool = "db_client_connection_pool_name=\"poolscope\"";
            for _ in 0..200 {
                let text = metrics.render();
                let inf = value(
                    &text,
                    &format!("db_client_connection_wait_time_seconds_bucket{{le=\"+Inf\",{pool}}}"),
                );
                let count = value(
                    &text,
                    &format!("db_client_connection_wait_time_seconds_count{{{pool}}}"),
                );
                assert_eq!(inf, count);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
}
