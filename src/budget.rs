//! The connection budget of the whole topology: R replicas, each with a pool
//! of at most P connections, optionally a pooler (PgBouncer) with a server
//! pool of S connections, and PostgreSQL granting G slots. The demo reaches
//! C = min(R × P, S, G) requests at once; the smallest layer is where the
//! limit is, and what happens to the excess depends on it:
//!
//! * the app pools (R × P smallest): requests queue in the app pools
//!   (`DB_POOL_TIMEOUT`);
//! * the pooler (S smallest): requests hold an app connection and queue in
//!   PgBouncer (`query_wait_timeout`);
//! * PostgreSQL (G smallest): the connection attempts beyond G are refused
//!   (`db_refused`, at once), which is the outage this stack demonstrates:
//!   R × (size + overflow) > G. Requests beyond a pool's max do not try a
//!   connection: they wait for a returned one (see `client::expect`).
//!
//! Used by `/pool`, the startup warning and (through `/pool`) the client.

use serde::{Deserialize, Serialize};

/// The layer that sets the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layer {
    #[serde(rename = "app pool")]
    AppPool,
    #[serde(rename = "pooler")]
    Pooler,
    #[serde(rename = "PostgreSQL")]
    Postgres,
}

impl Layer {
    /// For a sentence: "limited by the app pool", "… by PostgreSQL".
    pub fn phrase(self) -> &'static str {
        match self {
            Layer::AppPool => "the app pool",
            Layer::Pooler => "the pooler",
            Layer::Postgres => "PostgreSQL",
        }
    }
}

/// What the layers can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    pub replicas: u32,
    /// Per replica: `DB_POOL_SIZE + DB_MAX_OVERFLOW`.
    pub pool_max: u32,
    /// The pooler's server connections for this database (`default_pool_size`).
    pub pooler_pool: Option<u32>,
    /// Slots PostgreSQL grants the service (unknown when it could not be asked).
    pub grantable: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Requests served at once.
    pub concurrency: u32,
    /// Every replica's pool together: R × P.
    pub app_capacity: u32,
    pub limited_by: Layer,
    /// Connection attempts beyond the limit are refused at once (else the
    /// excess queues). Requests beyond the pools' max queue either way.
    pub refuses_excess: bool,
}

impl Topology {
    pub fn budget(&self) -> Budget {
        let app_capacity = self.replicas.max(1).saturating_mul(self.pool_max);
        // Ties go to the outer layer: a pool exactly as large as the server
        // allows is limited by itself, and nothing is refused.
        let mut limit = (app_capacity, Layer::AppPool);
        if let Some(s) = self.pooler_pool {
            if s < limit.0 {
                limit = (s, Layer::Pooler);
            }
        }
        if let Some(g) = self.grantable {
            if g < limit.0 {
                limit = (g, Layer::Postgres);
            }
        }
        Budget {
            concurrency: limit.0.max(1),
            app_capacity,
            limited_by: limit.1,
            refuses_excess: limit.1 == Layer::Postgres,
        }
    }

    /// The startup warning when PostgreSQL is the limit, with the arithmetic.
    pub fn warning(&self) -> Option<String> {
        let b = self.budget();
        if b.limited_by != Layer::Postgres {
            return None;
        }
        let grantable = self.grantable.unwrap_or(0);
        let asked = match self.pooler_pool {
            Some(s) => format!("the pooler's {s} server connections"),
            None if self.replicas > 1 => format!(
                "{} replicas × {} = {}",
                self.replicas, self.pool_max, b.app_capacity
            ),
            None => format!("pool max {}", self.pool_max),
        };
        Some(format!(
            "PostgreSQL is the limit: {asked} > {grantable} grantable; beyond {grantable} \
             connections requests get 503 db_refused. Raise POSTGRES_MAX_CONNECTIONS, shrink \
             DB_POOL_SIZE + DB_MAX_OVERFLOW, or put PgBouncer in between."
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(replicas: u32, pool_max: u32, pooler: Option<u32>, grantable: u32) -> Budget {
        Topology {
            replicas,
            pool_max,
            pooler_pool: pooler,
            grantable: Some(grantable),
        }
        .budget()
    }

    #[test]
    fn one_replica_within_the_server_is_limited_by_its_pool() {
        let b = topo(1, 20, None, 96);
        assert_eq!(
            (b.concurrency, b.limited_by, b.refuses_excess),
            (20, Layer::AppPool, false)
        );
    }

    #[test]
    fn replicas_multiply_past_what_postgres_grants() {
        // 3 × (10 + 10) against max_connections 40: 40 − 3 reserved − 3 monitors = 34.
        let b = topo(3, 20, None, 34);
        assert_eq!((b.concurrency, b.app_capacity), (34, 60));
        assert_eq!((b.limited_by, b.refuses_excess), (Layer::Postgres, true));
        let t = Topology {
            replicas: 3,
            pool_max: 20,
            pooler_pool: None,
            grantable: Some(34),
        };
        assert!(t
            .warning()
            .unwrap()
            .contains("3 replicas × 20 = 60 > 34 grantable"));
    }

    #[test]
    fn a_pooler_turns_refusals_into_a_queue() {
        let b = topo(3, 20, Some(20), 34);
        assert_eq!(
            (b.concurrency, b.limited_by, b.refuses_excess),
            (20, Layer::Pooler, false)
        );
        assert_eq!(
            Topology {
                replicas: 3,
                pool_max: 20,
                pooler_pool: Some(20),
                grantable: Some(34)
            }
            .warning(),
            None
        );
    }

    #[test]
    fn a_pool_exactly_as_large_as_the_server_allows_refuses_nothing() {
        let b = topo(1, 36, None, 36);
        assert_eq!((b.limited_by, b.refuses_excess), (Layer::AppPool, false));
    }
}
