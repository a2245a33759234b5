//! The wire format of `GET /pool` and the data both sides of the service
//! share, one set of types owned by neither side:
//! the service serialises [`PoolReport`], the client and the tests
//! deserialise the same type, so a renamed field fails to compile instead of
//! failing at a user's terminal. The same holds for error answers
//! ([`ErrorBody`] with its [`ErrorKind`]) and for the demo route's
//! `Server-Timing` header ([`ServerTiming`]: written with `Display`, read
//! with [`ServerTiming::parse`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::budget::{Budget, Layer};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PoolReport {
    pub configured: Configured,
    pub live: Live,
    /// `None` when PostgreSQL could not be asked (see `postgres_error`).
    pub postgres: Option<Postgres>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres_error: Option<String>,
    /// Replicas seen (each holds a monitor connection) and their pools' backends.
    pub replicas: Vec<ReplicaBackends>,
    /// PgBouncer's figures, when the service goes through one.
    pub pooler: Option<PoolerReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooler_error: Option<String>,
    /// The whole topology's budget (see [`crate::budget`]).
    pub budget: Option<Budget>,
    /// Requests served at once: `budget.concurrency`.
    pub concurrency: Option<u32>,
    /// The pool's limit in force (lowered for a while by `poolscope sweep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<LimitReport>,
}

/// The pool's runtime limit (`GET /pool/limit`, and `limit` in `/pool`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LimitReport {
    /// Whether `POST /pool/limit` is allowed (`POOL_LIMIT_CONTROL`).
    pub control: bool,
    /// The configured maximum: `DB_POOL_SIZE + DB_MAX_OVERFLOW`.
    pub max: u32,
    /// Connections requests may hold at once now: `max` unless lowered.
    pub limit: u32,
    /// While lowered: seconds until the lease runs out unless renewed.
    pub lease_expires_in_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Configured {
    pub replica: String,
    pub pool_size: u32,
    pub max_overflow: u32,
    pub pool_max: u32,
    pub pool_timeout_s: f64,
    pub overflow_idle_timeout_s: f64,
    pub pool_recycle_s: f64,
    pub statement_timeout_s: f64,
    pub sleep_seconds: f64,
    pub sleep_max: f64,
    /// The database's cores (`DB_CORES`), when the operator said; the sweep
    /// compares its knee with cores × 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_cores: Option<u32>,
}

/// What this replica's pool holds right now.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Live {
    /// Connections open (idle + in use).
    pub open: u32,
    pub idle: u32,
    pub in_use: u32,
    /// Requests waiting for a connection.
    pub waiting: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Postgres {
    pub max_connections: u32,
    pub reserved: u32,
    pub backends_total: u32,
    /// This replica's pool.
    pub backends_service: u32,
    /// Every replica's pool (or the pooler's server connections for them).
    pub backends_service_all: u32,
    /// Slots this replica's pool can get / all replicas together.
    pub grantable_to_pool: u32,
    pub grantable_to_service: u32,
    /// What the backends are doing and how long a trivial query takes.
    #[serde(default)]
    pub activity: Activity,
}

/// What PostgreSQL's client backends are doing right now, as the service's
/// role sees them (its own sessions; everyone's with `pg_read_all_stats`),
/// and what any other client of the database waits for a trivial query.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Activity {
    /// Client backends running a statement (`state = 'active'`), the
    /// monitor's own excluded.
    pub active: u32,
    /// Of those, the ones waiting for a lock (`wait_event_type = 'Lock'`):
    /// row locks under `?work=hot`.
    pub lock_waiters: u32,
    /// Round trip of `SELECT 1` on the monitor connection (outside the
    /// pool), in microseconds.
    pub probe_us: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaBackends {
    pub name: String,
    pub backends: u32,
}

/// What PgBouncer holds and who waits, for the service's database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PoolerReport {
    pub pool_mode: String,
    pub default_pool_size: u32,
    pub reserve_pool_size: u32,
    pub max_client_conn: u32,
    pub query_wait_timeout_s: f64,
    /// Client connections running a transaction / waiting for a server connection.
    pub cl_active: u32,
    pub cl_waiting: u32,
    /// Server connections in use / idle / just used.
    pub sv_active: u32,
    pub sv_idle: u32,
    pub sv_used: u32,
    /// The oldest waiting client's wait.
    pub maxwait_s: f64,
}

/// What PostgreSQL says about its connection slots.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerLimits {
    pub max_connections: u32,
    /// Slots the service's role may not use: `superuser_reserved_connections`
    /// plus `reserved_connections` (PostgreSQL 16+) for an ordinary role, fewer
    /// for a member of `pg_use_reserved_connections`, none for a superuser.
    pub reserved: u32,
    /// Client backends in the whole cluster.
    pub backends_total: u32,
    /// Client backends of this replica's pool (same role, database and application_name).
    pub backends_service: u32,
    /// Client backends of every replica's pool (or of the pooler on their behalf).
    pub backends_service_all: u32,
    /// Replicas with a monitor connection, and the backends of each one's pool.
    pub replicas: Vec<ReplicaBackends>,
    #[serde(default)]
    pub activity: Activity,
}

impl ServerLimits {
    /// Slots this replica's pool can hold at most: what the service's role
    /// may use, minus the backends of everyone else (other replicas and every
    /// monitor included).
    pub fn grantable_to_pool(&self) -> u32 {
        self.grantable_beside(self.backends_service)
    }

    /// Slots every replica's pool together can hold at most.
    pub fn grantable_to_service(&self) -> u32 {
        self.grantable_beside(self.backends_service_all)
    }

    fn grantable_beside(&self, ours: u32) -> u32 {
        let others = self.backends_total.saturating_sub(ours);
        self.max_connections
            .saturating_sub(self.reserved)
            .saturating_sub(others)
    }
}

/// `GET /live`, polled by the live page four times a second: this replica's
/// pool, PostgreSQL's side (the monitor's last sample), the budget and the
/// current run's answers the page has not seen yet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LiveView {
    pub replica: String,
    pub sleep_seconds: f64,
    pub pool_timeout_s: f64,
    pub pool: LivePool,
    pub postgres: Option<LivePostgres>,
    pub budget: Option<Budget>,
    pub run: RunView,
}

/// This replica's pool, as the live page draws it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LivePool {
    pub size: u32,
    pub max: u32,
    pub open: u32,
    pub idle: u32,
    pub in_use: u32,
    pub waiting: u32,
    /// How long the oldest waiting request has waited (PgBouncer's `maxwait`).
    pub oldest_wait_s: f64,
    pub opened: u64,
    pub closed: u64,
    /// The limit in force (lowered for a while by `poolscope sweep`).
    pub limit: u32,
}

/// PostgreSQL's slots, as the live page draws them: the whole service's
/// share, because the bar shows what every replica takes from the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LivePostgres {
    pub max_connections: u32,
    pub reserved: u32,
    pub backends_total: u32,
    /// Every replica's pool, as [`Postgres::backends_service_all`].
    pub backends_service_all: u32,
    pub grantable_to_service: u32,
    /// Backends running a statement, and those of them waiting on a lock.
    pub active: u32,
    pub lock_waiters: u32,
}

/// The current run's answers from `from` on (`GET /live?run=ID&after=N`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    pub id: u64,
    pub elapsed_ms: u64,
    /// Demo requests that arrived in this run (the client's N).
    pub arrived: u64,
    pub in_flight: u64,
    pub answered: u64,
    /// The `pg_sleep` of the run's requests, once one was served.
    pub seconds: Option<f64>,
    /// Index of the first answer in `answers`.
    pub from: usize,
    pub answers: Vec<Answer>,
}

/// One answer of a run: ms since the run started, HTTP status, error kind if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer(pub u32, pub u16, pub Option<ErrorKind>);

/// `error` in every error answer's body: what went wrong, for machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    BadRequest,
    /// The pool stayed full for `DB_POOL_TIMEOUT`.
    PoolTimeout,
    /// PostgreSQL refused a new connection: too many clients.
    DbRefused,
    PoolerRefused,
    PoolerTimeout,
    DbUnavailable,
    StatementTimeout,
    Internal,
    Overloaded,
    NotFound,
    MethodNotAllowed,
    ClientClosed,
    /// A control the service's settings keep off (`POOL_LIMIT_CONTROL`).
    Forbidden,
}

impl ErrorKind {
    /// Gave up waiting in a queue: the app pool's or PgBouncer's.
    pub fn is_timeout(self) -> bool {
        matches!(self, ErrorKind::PoolTimeout | ErrorKind::PoolerTimeout)
    }
}

/// The wire name, as serde writes it: the enum's `rename_all` is the only
/// list of names.
impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(name)) => f.write_str(&name),
            _ => Err(std::fmt::Error),
        }
    }
}

/// The JSON body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: ErrorKind,
    /// For people: what happened and what is allowed.
    pub message: String,
    /// `pool_timeout`: how long the request waited, and the pool then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waited_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<Live>,
    /// `db_refused`: what to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The demo route's `Server-Timing` header: where an answer's time went, in
/// the order it was spent. `pool;dur=` waiting for a connection of the app's
/// pool, `pooler;dur=` from sending the statement to PostgreSQL starting it
/// (the wait inside PgBouncer, or one network hop without one), `db;dur=`
/// the statement itself; each in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTiming {
    pub pool: Duration,
    pub pooler: Option<Duration>,
    pub db: Duration,
}

impl ServerTiming {
    pub const HEADER: &'static str = "Server-Timing";

    /// All the waiting for a connection: the app pool's and the pooler's.
    pub fn waited(&self) -> Duration {
        self.pool + self.pooler.unwrap_or_default()
    }

    /// Reads a header value: metrics in any order, unknown metrics and
    /// parameters ignored. `None` unless `pool` and `db` both have a
    /// non-negative finite `dur`.
    pub fn parse(value: &str) -> Option<ServerTiming> {
        let (mut pool, mut pooler, mut db) = (None, None, None);
        for metric in value.split(',') {
            let mut params = metric.split(';').map(str::trim);
            let slot = match params.next() {
                Some("pool") => &mut pool,
                Some("pooler") => &mut pooler,
                Some("db") => &mut db,
                _ => continue,
            };
            if slot.is_some() {
                continue; // the first of a repeated metric counts
            }
            *slot = params
                .filter_map(|p| p.strip_prefix("dur="))
                .find_map(|ms| ms.trim_matches('"').parse::<f64>().ok())
                .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok());
        }
        Some(ServerTiming {
            pool: pool?,
            pooler,
            db: db?,
        })
    }
}

impl std::fmt::Display for ServerTiming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(f, "pool;dur={:.1}", ms(self.pool))?;
        if let Some(pooler) = self.pooler {
            write!(f, ", pooler;dur={:.1}", ms(pooler))?;
        }
        write!(f, ", db;dur={:.1}", ms(self.db))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_travel_under_their_names() {
        // The documented names (README, "Errors"): a renamed variant fails here.
        for (kind, name) in [
            (ErrorKind::BadRequest, "bad_request"),
            (ErrorKind::PoolTimeout, "pool_timeout"),
            (ErrorKind::DbRefused, "db_refused"),
            (ErrorKind::PoolerRefused, "pooler_refused"),
            (ErrorKind::PoolerTimeout, "pooler_timeout"),
            (ErrorKind::DbUnavailable, "db_unavailable"),
            (ErrorKind::StatementTimeout, "statement_timeout"),
            (ErrorKind::Internal, "internal"),
            (ErrorKind::Overloaded, "overloaded"),
            (ErrorKind::NotFound, "not_found"),
            (ErrorKind::MethodNotAllowed, "method_not_allowed"),
            (ErrorKind::ClientClosed, "client_closed"),
        ] {
            let body = ErrorBody {
                error: kind,
                message: "m".into(),
                waited_ms: None,
                pool: None,
                hint: None,
            };
            let wire = serde_json::to_value(&body).unwrap();
            assert_eq!(wire["error"], name);
            assert_eq!(kind.to_string(), name);
            assert_eq!(serde_json::from_value::<ErrorBody>(wire).unwrap(), body);
        }
        let foreign = r#"{"error":"teapot","message":"?"}"#;
        assert!(serde_json::from_str::<ErrorBody>(foreign).is_err());
    }

    #[test]
    fn server_timing_reads_what_it_writes() {
        let t = ServerTiming {
            pool: Duration::from_micros(4_999_500),
            pooler: Some(Duration::from_micros(300)),
            db: Duration::from_millis(5_002),
        };
        let wire = t.to_string();
        assert_eq!(wire, "pool;dur=4999.5, pooler;dur=0.3, db;dur=5002.0");
        let back = ServerTiming::parse(&wire).unwrap();
        assert_eq!(back.to_string(), wire);
        assert_eq!(back.waited(), Duration::from_micros(4_999_800));
        let bare = ServerTiming { pooler: None, ..t };
        assert_eq!(bare.to_string(), "pool;dur=4999.5, db;dur=5002.0");
        assert_eq!(ServerTiming::parse(&bare.to_string()).unwrap().pooler, None);
    }

    #[test]
    fn server_timing_tolerates_order_and_extras_but_needs_pool_and_db() {
        let t = ServerTiming::parse(r#"db;desc="x";dur=5, cache;dur=1, pool;dur="2.5""#).unwrap();
        assert_eq!(t.pool, Duration::from_micros(2_500));
        assert_eq!((t.pooler, t.db), (None, Duration::from_millis(5)));
        for bad in [
            "db;dur=5",
            "pool;dur=1",
            "pool;desc=x, db;dur=5",
            "pool;dur=abc, db;dur=5",
            "pool;dur=-1, db;dur=5",
            "pool;dur=NaN, db;dur=5",
            "pool;dur=inf, db;dur=5",
            "",
        ] {
            assert_eq!(ServerTiming::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_report_survives_a_round_trip() {
        let report = PoolReport {
            configured: Configured {
                replica: "web-1".into(),
                pool_size: 10,
                max_overflow: 10,
                pool_max: 20,
                pool_timeout_s: 30.0,
                overflow_idle_timeout_s: 0.0,
                pool_recycle_s: 1800.0,
                statement_timeout_s: 65.0,
                sleep_seconds: 5.0,
                sleep_max: 60.0,
                db_cores: Some(2),
            },
            live: Live {
                open: 10,
                idle: 10,
                in_use: 0,
                waiting: 0,
            },
            postgres: Some(Postgres {
                max_connections: 40,
                reserved: 3,
                backends_total: 33,
                backends_service: 10,
                backends_service_all: 30,
                grantable_to_pool: 14,
                grantable_to_service: 34,
                activity: Activity {
                    active: 12,
                    lock_waiters: 7,
                    probe_us: 2100,
                },
            }),
            postgres_error: None,
            replicas: vec![ReplicaBackends {
                name: "web-1".into(),
                backends: 10,
            }],
            pooler: None,
            pooler_error: None,
            budget: Some(
                crate::budget::Topology {
                    replicas: 3,
                    pool_max: 20,
                    pooler_pool: None,
                    grantable: Some(34),
                }
                .budget(),
            ),
            concurrency: Some(34),
            limit: Some(LimitReport {
                control: true,
                max: 20,
                limit: 4,
                lease_expires_in_s: Some(12.5),
            }),
        };
        let text = serde_json::to_string(&report).unwrap();
        assert!(text.contains(r#""limited_by":"PostgreSQL""#), "{text}");
        let back: PoolReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, report);
    }
}
