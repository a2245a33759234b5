//! Readiness: can this replica serve the demo now? It must say no when a
//! request could not reach the database, and never because the pool is busy:
//! a load balancer that takes out every busy replica during `client 100`
//! turns a queue into an outage.
//!
//! So nothing here touches the app's pool. PostgreSQL is asked on the
//! monitor connection (outside the pool). Through a pooler, requests take
//! another road, and that road is checked too: PgBouncer's admin console
//! (`SHOW VERSION`, answered by PgBouncer itself with no server connection,
//! so a PgBouncer whose server connections are all busy still answers at
//! once), or, without an admin URL, a login at the pool's address (no query).
//! A query through PgBouncer would be the wrong check: in transaction mode it
//! waits for a server connection, i.e. for the busy demo to finish.
//!
//! Probes come from many sources (HAProxy every 2 s per replica, Docker's
//! healthcheck, Kubernetes): one check's answer is shared for [`ANSWER_TTL`],
//! and a change of answer is logged once (the probes' own access lines are
//! at debug).

use std::time::{Duration, Instant};

use sqlx::postgres::PgConnectOptions;
use sqlx::ConnectOptions;
use tokio::sync::Mutex;

use super::AppState;
use crate::db::pooler;
use crate::settings::DatabaseSettings;

/// How long PostgreSQL, and PgBouncer, each have to answer.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one check's answer is reused.
pub const ANSWER_TTL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ready: bool,
    pub reason: String,
    /// Not ready because the service is still starting (not migrated yet).
    pub starting: bool,
}

/// The road to PgBouncer that readiness checks, when requests take one.
enum PoolerRoad {
    /// `PGBOUNCER_ADMIN_URL`: `SHOW VERSION` ([`pooler::Pooler::answers`]).
    AdminConsole { at: String },
    /// Only `DATABASE_URL` differs from `MONITOR_DATABASE_URL`: a login there.
    Login {
        at: String,
        options: Box<PgConnectOptions>,
    },
}

pub struct Readiness {
    road: Option<PoolerRoad>,
    last: Mutex<Option<(Instant, Verdict)>>,
    /// The last verdict that was logged, so that only changes are.
    logged: std::sync::Mutex<Logged>,
}

fn address(options: &PgConnectOptions) -> String {
    format!("{}:{}", options.get_host(), options.get_port())
}

impl Readiness {
    pub fn new(settings: &DatabaseSettings) -> Readiness {
        let road = if let Some(admin) = &settings.pooler_admin_url {
            Some(PoolerRoad::AdminConsole {
                at: address(&admin.connect_options()),
            })
        } else if pooler::through_pooler(settings) {
            let options = settings
                .url
                .connect_options()
                .application_name(&crate::db::application_name(
                    crate::db::MONITOR_APP,
                    &settings.replica,
                ))
                .disable_statement_logging();
            Some(PoolerRoad::Login {
                at: address(&options),
                options: Box::new(options),
            })
        } else {
            None
        };
        Readiness {
            road,
            last: Mutex::new(None),
            logged: Default::default(),
        }
    }

    /// The current verdict: a fresh one at most every [`ANSWER_TTL`];
    /// probes arriving meanwhile (or during a check) get the same.
    pub async fn verdict(&self, state: &AppState) -> Verdict {
        let mut last = self.last.lock().await;
        if let Some((at, verdict)) = last.as_ref() {
            if at.elapsed() < ANSWER_TTL {
                return verdict.clone();
            }
        }
        let verdict = self.check(state).await;
        *last = Some((Instant::now(), verdict.clone()));
        drop(last);
        self.log_change(&verdict);
        verdict
    }

    async fn check(&self, state: &AppState) -> Verdict {
        if !state.is_migrated() {
            return Verdict {
                ready: false,
                reason: "schema not migrated yet".into(),
                starting: true,
            };
        }
        let postgres = state.pool.monitor().answers(CHECK_TIMEOUT);
        let pgbouncer = self.pooler_answers(state);
        let (postgres, pgbouncer) = tokio::join!(postgres, pgbouncer);
        let mut failed = Vec::new();
        if !postgres {
            failed.push(format!(
                "PostgreSQL did not answer within {}s (monitor connection)",
                CHECK_TIMEOUT.as_secs_f64()
            ));
        }
        if let Err(why) = &pgbouncer {
            failed.push(why.clone());
        }
        if failed.is_empty() {
            let reason = match &pgbouncer {
                Ok(Some(at)) => {
                    format!("migrated; PostgreSQL answered; PgBouncer at {at} answered")
                }
                _ => "migrated; PostgreSQL answered".into(),
            };
            Verdict {
                ready: true,
                reason,
                starting: false,
            }
        } else {
            Verdict {
                ready: false,
                reason: failed.join("; "),
                starting: false,
            }
        }
    }

    /// `Ok(Some(address))` when PgBouncer answered, `Ok(None)` without one,
    /// `Err(reason)` naming PgBouncer and what failed.
    async fn pooler_answers(&self, state: &AppState) -> Result<Option<String>, String> {
        match &self.road {
            None => Ok(None),
            Some(PoolerRoad::AdminConsole { at }) => {
                let Some(pooler) = state.pool.pooler() else {
                    return Ok(None);
                };
                match pooler.answers(CHECK_TIMEOUT).await {
                    Ok(()) => Ok(Some(at.clone())),
                    Err(e) => Err(format!(
                        "PgBouncer at {at} cannot be reached (admin console, SHOW VERSION): {e}"
                    )),
                }
            }
            Some(PoolerRoad::Login { at, options }) => {
                match pooler::reachable_by_login(options, CHECK_TIMEOUT).await {
                    Ok(()) => Ok(Some(at.clone())),
                    Err(e) => Err(format!(
                        "PgBouncer at {at} (DATABASE_URL) cannot be reached (login): {e}"
                    )),
                }
            }
        }
    }

    /// Logs each change of verdict: a replica leaving or rejoining its load
    /// balancer is part of the story. Before the first "ready", waiting for
    /// the migration is how every start begins: logged at debug only.
    fn log_change(&self, verdict: &Verdict) {
        let mut logged = self.logged.lock().expect("not poisoned");
        if logged.last == Some(verdict.ready) {
            return;
        }
        logged.last = Some(verdict.ready);
        let reason = &verdict.reason;
        match (verdict.ready, logged.ever_ready) {
            (true, false) => tracing::info!(%reason, "ready"),
            (true, true) => tracing::info!(%reason, "ready again"),
            (false, false) if verdict.starting => tracing::debug!(%reason, "not ready yet"),
            (false, _) => tracing::warn!(%reason, "not ready"),
        }
        logged.ever_ready |= verdict.ready;
    }
}

#[derive(Default)]
struct Logged {
    last: Option<bool>,
    ever_ready: bool,
}
