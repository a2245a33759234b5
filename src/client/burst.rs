//! All N requests at once: every task is spawned first and released together,
//! each opens its own connection, and answers are collected in arrival order.
//! Ctrl-C stops collecting and keeps what finished.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::http::{self, Answer, Target, TransportError};
use crate::contract::{ErrorBody, ErrorKind, ServerTiming};

/// What one request came back with.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Seconds from the release of the burst to the end of the answer.
    pub at: f64,
    pub result: Result<Reply, TransportError>,
}

impl Outcome {
    /// Served: a 200.
    pub fn is_served(&self) -> bool {
        matches!(&self.result, Ok(r) if r.status == 200)
    }

    /// Why it was not served; `None` for a 200.
    pub fn failure(&self) -> Option<Failure> {
        match &self.result {
            Ok(r) if r.status == 200 => None,
            Ok(r) => Some(
                r.error_kind
                    .map_or(Failure::Status(r.status), Failure::Kind),
            ),
            Err(e) => Some(Failure::Transport(*e)),
        }
    }
}

/// Why a request was not served: what the summary's `errors` counts. Written
/// as the server's error kind (`db_refused`), `http_<status>` for a non-200
/// answer without poolscope's error body, or the transport failure
/// (`client_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Failure {
    Kind(ErrorKind),
    Status(u16),
    Transport(TransportError),
}

impl Serialize for Failure {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Failure::Kind(kind) => kind.serialize(s),
            Failure::Status(status) => s.collect_str(&format_args!("http_{status}")),
            Failure::Transport(e) => e.serialize(s),
        }
    }
}

/// Reads back what [`Serialize`] writes: the server's error kinds, then
/// `http_<status>`, then the transport failures (the names do not overlap).
impl<'de> Deserialize<'de> for Failure {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Failure, D::Error> {
        use serde::de::value::{Error as ValueError, StrDeserializer};
        let name = String::deserialize(d)?;
        let named = || StrDeserializer::<ValueError>::new(&name);
        if let Ok(kind) = ErrorKind::deserialize(named()) {
            return Ok(Failure::Kind(kind));
        }
        if let Some(status) = name.strip_prefix("http_").and_then(|s| s.parse().ok()) {
            return Ok(Failure::Status(status));
        }
        TransportError::deserialize(named())
            .map(Failure::Transport)
            .map_err(|_| serde::de::Error::custom(format!("unknown failure {name:?}")))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(name)) => f.write_str(&name),
            _ => Err(std::fmt::Error),
        }
    }
}

/// The parts of an answer the summary needs.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// `error` from a JSON error body (`pool_timeout`, `db_refused`, …);
    /// `None` for a 200, or a body that is not poolscope's.
    pub error_kind: Option<ErrorKind>,
    /// Where the time went, by the server's account (200s only).
    pub timing: Option<ServerTiming>,
    /// `X-Replica`: which replica answered, behind a load balancer.
    pub replica: Option<String>,
}

impl Reply {
    fn from_answer(answer: &Answer) -> Reply {
        let error_kind = (answer.status != 200)
            .then(|| serde_json::from_slice::<ErrorBody>(&answer.body).ok())
            .flatten()
            .map(|body| body.error);
        let timing = answer
            .headers
            .get(ServerTiming::HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(ServerTiming::parse);
        let replica = answer
            .headers
            .get("x-replica")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Reply {
            status: answer.status,
            error_kind,
            timing,
            replica,
        }
    }
}

pub struct Run {
    pub outcomes: Vec<Outcome>,
    pub elapsed: f64,
    pub interrupted: bool,
}

/// What a burst tells while it runs (the terminal output is `render`'s, so
/// that this module needs nothing above it).
pub trait Watcher {
    fn answered(&self, outcome: &Outcome);
    fn progress(&self, done: usize, n: usize);
    fn finished(&self);
}

pub async fn fire(target: &Target, n: usize, timeout: Duration, mode: &impl Watcher) -> Run {
    let (go_tx, go_rx) = watch::channel(None::<Instant>);
    let (tx, mut rx) = mpsc::unbounded_channel();
    for _ in 0..n {
        let (tx, mut go) = (tx.clone(), go_rx.clone());
        let target = target.clone();
        tokio::spawn(async move {
            let Ok(start) = go.wait_for(Option::is_some).await.map(|s| s.expect("set")) else {
                return;
            };
            let result = http::get(&target, timeout).await;
            let outcome = Outcome {
                at: start.elapsed().as_secs_f64(),
                result: result.map(|a| Reply::from_answer(&a)),
            };
            let _ = tx.send(outcome);
        });
    }
    drop(tx);
    let start = Instant::now();
    let _ = go_tx.send(Some(start));

    let mut outcomes = Vec::with_capacity(n);
    let mut progress = tokio::time::interval(Duration::from_millis(200));
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    loop {
        tokio::select! {
            next = rx.recv() => match next {
                Some(outcome) => {
                    mode.answered(&outcome);
                    outcomes.push(outcome);
                }
                None => break,
            },
            _ = progress.tick() => mode.progress(outcomes.len(), n),
            _ = &mut ctrl_c => {
                interrupted = true;
                break;
            }
        }
    }
    mode.finished();
    Run {
        outcomes,
        elapsed: start.elapsed().as_secs_f64(),
        interrupted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, error_kind: Option<ErrorKind>) -> Result<Reply, TransportError> {
        Ok(Reply {
            status,
            error_kind,
            timing: None,
            replica: None,
        })
    }

    #[test]
    fn failures_are_named_by_kind_status_or_transport() {
        let named = |result| Outcome { at: 1.0, result }.failure().map(|f| f.to_string());
        assert_eq!(named(reply(200, None)), None);
        assert_eq!(
            named(reply(503, Some(ErrorKind::DbRefused))).as_deref(),
            Some("db_refused")
        );
        assert_eq!(named(reply(502, None)).as_deref(), Some("http_502"));
        assert_eq!(
            named(Err(TransportError::ClientTimeout)).as_deref(),
            Some("client_timeout")
        );
        // And as keys of the JSON report's `errors`.
        let counts = std::collections::BTreeMap::from([
            (Failure::Kind(ErrorKind::PoolTimeout), 3),
            (Failure::Status(502), 1),
            (Failure::Transport(TransportError::ConnectRefused), 2),
        ]);
        assert_eq!(
            serde_json::to_value(&counts).unwrap(),
            serde_json::json!({"pool_timeout": 3, "http_502": 1, "connect_refused": 2})
        );
    }
}
