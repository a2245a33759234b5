//! Telling PostgreSQL's refusal from a slow or busy pool, at once.
//!
//! sqlx 0.9 treats "too many clients" (SQLSTATE 53300) as transient while
//! connecting and retries it silently until the acquire timeout
//! (`sqlx-core` `pool/inner.rs`, `connect`), without a hook to see the
//! attempt's answer: PostgreSQL's refusal would become a 30-second wait, and
//! a slot freed meanwhile could even serve the request late. So:
//!
//! * **Before the pool grows** where the server may be full, the request
//!   makes one connection attempt of its own ([`Monitor::attempt`], same
//!   role, database and options) and is refused at once if PostgreSQL
//!   refuses it. Such growth goes one request at a time (ask, then open), so
//!   two requests never count on the same free slot. Requests queued
//!   behind an attempt PostgreSQL refused share its answer: in QueuePool
//!   they would have connected at the same moment and heard the same. A
//!   request that arrives after a refusal asks for itself. Only requests
//!   that find the pool below its max open, so a burst is refused at most
//!   `pool max − granted` times.
//! * **A request stuck inside sqlx** anyway (another client took the slot
//!   between the attempt and sqlx's own, or the database went away) asks the
//!   shared probe after [`STUCK_AFTER`] (sooner where the server may be
//!   full, [`STUCK_AFTER_AT_THE_LIMIT`]) and gives up with its answer.

use std::time::{Duration, Instant};

use tokio::sync::{Mutex, MutexGuard};

use crate::db::errors::DbError;
use crate::db::server_info::{Monitor, ProbeOutcome, PROBE_TTL};

/// A request holding a turn normally leaves sqlx within one login (tens of
/// milliseconds). One still inside after this long may be in sqlx's silent
/// retry loop. Long enough that a slow but admitted login under load is not
/// mistaken for a refusal.
pub const STUCK_AFTER: Duration = Duration::from_millis(500);

/// The same where the pool may outgrow what PostgreSQL grants. There, with
/// several replicas, another replica can take the slot between this one's
/// attempt and sqlx's own login; the request stuck in sqlx then holds the
/// growth lock and every request queued behind it waits too, and their
/// refusals would come late. A login there takes tens of milliseconds;
/// asking sooner costs at most one shared probe per `PROBE_TTL`.
pub const STUCK_AFTER_AT_THE_LIMIT: Duration = Duration::from_millis(150);

/// Whether a request may go on to open a connection.
pub enum Gate<'a> {
    /// Go on; hold the guard (if any) until the connection is open.
    Open(Option<MutexGuard<'a, ()>>),
    Refused(DbError),
    DeadlinePassed,
}

pub struct Gatekeeper {
    /// Held by the one request that is asking PostgreSQL and then opening.
    growth: Mutex<()>,
    /// When PostgreSQL last refused an attempt made here.
    refused_at: std::sync::Mutex<Option<Instant>>,
    /// Through a pooler a refusal is the pooler's (max_client_conn), which
    /// sqlx does not retry: the request learns it at once anyway.
    through_pooler: bool,
    pool_max: u32,
}

impl Gatekeeper {
    pub fn new(pool_max: u32, through_pooler: bool) -> Gatekeeper {
        Gatekeeper {
            growth: Mutex::new(()),
            refused_at: std::sync::Mutex::new(None),
            through_pooler,
            pool_max,
        }
    }

    /// Before an acquire that `must_open()` a connection: asks PostgreSQL
    /// first when the server may not have room.
    pub async fn before_growth(
        &self,
        monitor: &Monitor,
        must_open: impl Fn() -> bool,
        deadline: Instant,
    ) -> Gate<'_> {
        if !must_open() || !self.may_be_refused(monitor) {
            return Gate::Open(None);
        }
        let queued_at = Instant::now();
        let guard = match tokio::time::timeout_at(deadline.into(), self.growth.lock()).await {
            Ok(guard) => guard,
            Err(_elapsed) => return Gate::DeadlinePassed,
        };
        // A connection may have come back while this request waited.
        if !must_open() {
            return Gate::Open(Some(guard));
        }
        // PostgreSQL refused an attempt while this request queued for its own:
        // they were attempts at the same moment, and get the same answer.
        if self.refused_at().is_some_and(|at| at >= queued_at) {
            return Gate::Refused(DbError::Refused);
        }
        match Box::pin(monitor.attempt()).await {
            ProbeOutcome::Accepted => Gate::Open(Some(guard)),
            ProbeOutcome::Refused => {
                self.note_refusal();
                Gate::Refused(DbError::Refused)
            }
            ProbeOutcome::Failed(e) => Gate::Refused(e),
        }
    }

    fn refused_at(&self) -> Option<Instant> {
        *self.refused_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether opening one more connection may be refused: the pool may grow
    /// past what PostgreSQL granted at the last sample, or nobody knows.
    pub fn may_be_refused(&self, monitor: &Monitor) -> bool {
        if self.through_pooler {
            return false;
        }
        monitor
            .grantable_to_pool()
            .is_none_or(|grantable| self.pool_max > grantable)
    }

    /// Resolves, with the reason, once a request inside sqlx should give up:
    /// after [`STUCK_AFTER`] ([`STUCK_AFTER_AT_THE_LIMIT`] where the server may
    /// be full and this request did not just hear PostgreSQL accept an
    /// attempt), whenever the shared probe says the server refuses or cannot
    /// be reached. Raced against the acquire; never resolves while the server
    /// accepts connections.
    ///
    /// After an accepted attempt a slot was free a moment ago: a login that
    /// meets "too many clients" then is most likely crowded out for a few
    /// milliseconds by other clients' attempts (other replicas'), and sqlx's
    /// own retries win the slot back; giving up sooner lost that grant.
    pub async fn stuck(&self, monitor: &Monitor, accepted_attempt: bool) -> DbError {
        let after = if self.may_be_refused(monitor) && !accepted_attempt {
            STUCK_AFTER_AT_THE_LIMIT
        } else {
            STUCK_AFTER
        };
        let e = stuck_after(monitor, after).await;
        if matches!(e, DbError::Refused) {
            self.note_refusal();
        }
        e
    }

    fn note_refusal(&self) {
        *self.refused_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
}

async fn stuck_after(monitor: &Monitor, after: Duration) -> DbError {
    tokio::time::sleep(after).await;
    loop {
        match Box::pin(monitor.probe()).await {
            ProbeOutcome::Accepted => tokio::time::sleep(PROBE_TTL).await,
            ProbeOutcome::Refused => return DbError::Refused,
            ProbeOutcome::Failed(e) => return e,
        }
    }
}
