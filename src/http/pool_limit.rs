//! A runtime limit on the pool, for `poolscope sweep`: `POST
//! /pool/limit?max=N&ttl=S` lowers the number of connections requests may
//! hold at once to N for S seconds, `DELETE /pool/limit` gives the
//! configured maximum back, `GET /pool/limit` (and `/pool`, and the live
//! page) show the limit in force.
//!
//! Three rules keep a measuring tool from becoming a way to break the
//! service:
//!
//! * **Off unless enabled.** `POOL_LIMIT_CONTROL=true` turns it on;
//!   otherwise every change is `403 forbidden`.
//! * **Only lower.** N is between 1 and the configured `DB_POOL_SIZE +
//!   DB_MAX_OVERFLOW`: the `.env` settings stay the most the service ever
//!   uses, so a sweep can never push PostgreSQL past what the operator
//!   allowed.
//! * **A lease, not a setting.** The limit expires after `ttl` unless
//!   renewed, so a sweep that is killed (or a laptop that sleeps) leaves the
//!   service back at its configured pool within seconds. The sweep renews
//!   while it runs and deletes the lease when it ends or is interrupted.
//!
//! The limit is applied through [`PoolLimit`], which the pool implements
//! (`Pool::set_limit`): requests beyond the limit wait at the pool, first
//! come first served, as they do at its configured max — that wait is pool
//! wait in `Server-Timing` and `waiting` in `/pool`, and ends in
//! `pool_timeout` after `DB_POOL_TIMEOUT`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use poem::http::StatusCode;
use poem::web::{Data, Json};
use poem::{handler, IntoResponse, Request, Response};

use super::error::ApiError;
use super::AppState;
pub use crate::contract::LimitReport;
use crate::db::pool::Pool;

/// Longest lease one request may ask for; the sweep renews every few seconds.
pub const MAX_TTL_S: f64 = 3600.0;
/// The lease when `ttl` is not given.
pub const DEFAULT_TTL_S: f64 = 30.0;

/// What the routes need from whatever enforces the limit.
pub trait PoolLimit: Send + Sync {
    /// The limit in force: the configured maximum unless lowered.
    fn limit(&self) -> u32;
    /// `None`: back to the configured maximum; `Some(n)`: 1 ≤ n ≤ maximum.
    fn set_limit(&self, limit: Option<u32>);
}

impl PoolLimit for Pool {
    fn limit(&self) -> u32 {
        Pool::limit(self)
    }

    fn set_limit(&self, limit: Option<u32>) {
        Pool::set_limit(self, limit)
    }
}

/// Who holds the limit and until when: a pure state machine, the clock
/// passed in.
#[derive(Debug, Default)]
pub struct LimitLease {
    held: Option<Held>,
    generation: u64,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    limit: u32,
    until: Instant,
    generation: u64,
}

impl LimitLease {
    /// Grants (or renews) `limit` until `now + ttl`; returns the grant's
    /// generation for [`LimitLease::expire`].
    pub fn grant(&mut self, limit: u32, ttl: Duration, now: Instant) -> u64 {
        self.generation += 1;
        self.held = Some(Held {
            limit,
            until: now + ttl,
            generation: self.generation,
        });
        self.generation
    }

    pub fn release(&mut self) {
        self.held = None;
    }

    /// The lowered limit, while the lease runs.
    pub fn in_force(&self, now: Instant) -> Option<u32> {
        self.held.filter(|h| now < h.until).map(|h| h.limit)
    }

    /// Seconds left, while the lease runs.
    pub fn expires_in(&self, now: Instant) -> Option<Duration> {
        self.held
            .filter(|h| now < h.until)
            .map(|h| h.until.duration_since(now))
    }

    /// Ends grant `generation` if it is still the current one and has run
    /// out; true when it did (the caller then restores the pool).
    pub fn expire(&mut self, generation: u64, now: Instant) -> bool {
        match self.held {
            Some(h) if h.generation == generation && now >= h.until => {
                self.held = None;
                true
            }
            _ => false,
        }
    }
}

/// The limit's part of [`AppState`].
pub struct LimitControl {
    pub enabled: bool,
    pub max: u32,
    /// What enforces the limit.
    pub pool: Arc<dyn PoolLimit>,
    lease: Arc<Mutex<LimitLease>>,
}

impl LimitControl {
    pub fn new(enabled: bool, pool: &Pool) -> LimitControl {
        LimitControl {
            enabled,
            max: pool.settings().pool_max(),
            pool: Arc::new(pool.clone()),
            lease: Default::default(),
        }
    }

    pub fn report(&self) -> LimitReport {
        let lease = self.lease.lock().expect("not poisoned");
        LimitReport {
            control: self.enabled,
            max: self.max,
            limit: self.pool.limit(),
            lease_expires_in_s: lease.expires_in(Instant::now()).map(|d| d.as_secs_f64()),
        }
    }

    fn grant(&self, limit: u32, ttl: Duration) {
        let generation = {
            let mut lease = self.lease.lock().expect("not poisoned");
            let generation = lease.grant(limit, ttl, Instant::now());
            self.pool.set_limit(Some(limit));
            generation
        };
        let (lease, pool) = (self.lease.clone(), self.pool.clone());
        tokio::spawn(async move {
            tokio::time::sleep(ttl).await;
            let mut lease = lease.lock().expect("not poisoned");
            if lease.expire(generation, Instant::now()) {
                pool.set_limit(None);
                tracing::info!("pool limit lease expired; back to the configured maximum");
            }
        });
    }

    fn release(&self) {
        let mut lease = self.lease.lock().expect("not poisoned");
        lease.release();
        self.pool.set_limit(None);
    }
}

#[handler]
pub fn get_limit(state: Data<&Arc<AppState>>) -> Json<LimitReport> {
    Json(state.limit.report())
}

#[handler]
pub fn post_limit(req: &Request, state: Data<&Arc<AppState>>) -> poem::Result<Response> {
    let control = &state.limit;
    if !control.enabled {
        return Err(ApiError::Forbidden(
            "the pool's limit is not adjustable here: set POOL_LIMIT_CONTROL=true".into(),
        )
        .into());
    }
    let (limit, ttl) = parse_request(req.uri().query(), control.max)?;
    control.grant(limit, ttl);
    tracing::info!(
        limit,
        ttl_s = ttl.as_secs_f64(),
        "pool limit lowered (lease)"
    );
    Ok(Json(control.report()).into_response())
}

#[handler]
pub fn delete_limit(state: Data<&Arc<AppState>>) -> poem::Result<Response> {
    let control = &state.limit;
    if !control.enabled {
        return Err(ApiError::Forbidden(
            "the pool's limit is not adjustable here: set POOL_LIMIT_CONTROL=true".into(),
        )
        .into());
    }
    control.release();
    tracing::info!("pool limit released; back to the configured maximum");
    Ok(Json(control.report())
        .with_status(StatusCode::OK)
        .into_response())
}

/// `max` (1 to the pool's maximum, required) and `ttl` (seconds, default
/// [`DEFAULT_TTL_S`], at most [`MAX_TTL_S`]).
pub fn parse_request(query: Option<&str>, pool_max: u32) -> Result<(u32, Duration), ApiError> {
    let mut max = None;
    let mut ttl = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let slot = match key.as_ref() {
            "max" => &mut max,
            "ttl" => &mut ttl,
            _ => continue,
        };
        if slot.is_some() {
            return Err(ApiError::BadRequest(format!("{key}: give it once")));
        }
        *slot = Some(value.into_owned());
    }
    let shown = |raw: &str| {
        raw.chars()
            .take(40)
            .collect::<String>()
            .escape_default()
            .to_string()
    };
    let limit = match max.as_deref().map(str::parse::<u32>) {
        Some(Ok(n)) if (1..=pool_max).contains(&n) => n,
        _ => {
            return Err(ApiError::BadRequest(format!(
                "max: expected a whole number from 1 to {pool_max} (DB_POOL_SIZE + \
                 DB_MAX_OVERFLOW: the limit can only be lowered), got \"{}\"",
                shown(max.as_deref().unwrap_or(""))
            )))
        }
    };
    let ttl = match ttl {
        None => Duration::from_secs_f64(DEFAULT_TTL_S),
        Some(raw) => crate::settings::parse_seconds(&raw, 1.0, MAX_TTL_S).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "ttl: expected seconds from 1 to {MAX_TTL_S}, got \"{}\"",
                shown(&raw)
            ))
        })?,
    };
    Ok((limit, ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_out_unless_renewed() {
        let t0 = Instant::now();
        let mut lease = LimitLease::default();
        let first = lease.grant(4, Duration::from_secs(10), t0);
        assert_eq!(lease.in_force(t0 + Duration::from_secs(9)), Some(4));
        // Renewed at 8 s: the first grant's timer finds a newer one.
        let second = lease.grant(2, Duration::from_secs(10), t0 + Duration::from_secs(8));
        assert!(!lease.expire(first, t0 + Duration::from_secs(10)));
        assert_eq!(lease.in_force(t0 + Duration::from_secs(17)), Some(2));
        assert_eq!(
            lease.expires_in(t0 + Duration::from_secs(17)),
            Some(Duration::from_secs(1))
        );
        assert!(!lease.expire(second, t0 + Duration::from_secs(17)));
        assert!(lease.expire(second, t0 + Duration::from_secs(18)));
        assert_eq!(lease.in_force(t0 + Duration::from_secs(18)), None);
        lease.grant(3, Duration::from_secs(10), t0);
        lease.release();
        assert_eq!(lease.in_force(t0), None);
    }

    #[test]
    fn the_request_is_checked_against_the_pool_max() {
        assert_eq!(
            parse_request(Some("max=4&ttl=15"), 20).unwrap(),
            (4, Duration::from_secs(15))
        );
        assert_eq!(parse_request(Some("max=20"), 20).unwrap().0, 20);
        for bad in [
            "",
            "max=0",
            "max=21",
            "max=abc",
            "max=2&max=3",
            "max=2&ttl=0",
            "max=2&ttl=NaN",
        ] {
            let err = parse_request(Some(bad), 20).unwrap_err().to_string();
            assert!(err.contains("max") || err.contains("ttl"), "{bad}: {err}");
        }
        let err = parse_request(Some("max=30"), 20).unwrap_err().to_string();
        assert!(
            err.contains("from 1 to 20") && err.contains("lowered"),
            "{err}"
        );
    }
}
