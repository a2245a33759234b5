//! All N requests at once: every task is spawned first and released together,
//! each opens its own connection, and answers are collected in arrival order.
//! Ctrl-C stops collecting and keeps what finished.

use std::time::{Duration, Instant};

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

/// The parts of an answer the summary needs.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// `error` from a JSON error body (`pool_timeout`, `db_refused`, …);
    /// `None` for a 200, or a body that is not poolscope's.
    pub error_kind: Option<ErrorKind>,
    /// `pool;dur=` from `Server-Timing`.
    pub pool_wait_ms: Option<f64>,
    /// `X-Replica`: which replica answered, behind a load balancer.
    pub replica: Option<String>,
}

impl Reply {
    fn from_answer(answer: &Answer) -> Reply {
        let error_kind = (answer.status != 200)
            .then(|| serde_json::from_slice::<ErrorBody>(&answer.body).ok())
            .flatten()
            .map(|body| body.error);
        let pool_wait_ms = answer
            .headers
            .get(ServerTiming::HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(ServerTiming::parse)
            .map(|t| t.pool.as_secs_f64() * 1000.0);
        let replica = answer
            .headers
            .get("x-replica")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Reply {
            status: answer.status,
            error_kind,
            pool_wait_ms,
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
