//! The current run, as the service saw it: every answer of the demo route
//! with its completion time, status and error kind, for the live page (`/`).
//!
//! A run starts with the first demo request after at least [`IDLE_GAP`]
//! without one in flight — `docker compose run --rm client 100` is one run — and
//! its answers are kept until the next run starts (at most [`MAX_ANSWERS`]).
//! Recording is one short lock per request; the page asks only for the
//! answers it has not seen yet.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::contract::ErrorKind;
pub use crate::contract::{Answer, RunView};

/// Quiet time that separates two runs.
pub const IDLE_GAP: Duration = Duration::from_secs(1);
/// Answers kept per run (the page draws 10,000 comfortably).
pub const MAX_ANSWERS: usize = 50_000;

#[derive(Debug)]
struct Inner {
    id: u64,
    started: Instant,
    arrived: u64,
    in_flight: u64,
    idle_since: Option<Instant>,
    /// The sleep the run's first served request asked for.
    seconds: Option<f64>,
    answers: Vec<Answer>,
}

#[derive(Clone)]
pub struct RunLog {
    inner: Arc<Mutex<Inner>>,
}

impl Default for RunLog {
    fn default() -> Self {
        RunLog {
            inner: Arc::new(Mutex::new(Inner {
                id: 0,
                started: Instant::now(),
                arrived: 0,
                in_flight: 0,
                idle_since: Some(Instant::now() - IDLE_GAP),
                seconds: None,
                answers: Vec::new(),
            })),
        }
    }
}

impl RunLog {
    /// A demo request arrived; the guard records its answer (or, dropped
    /// unanswered — the client hung up — only that it is no longer in flight).
    pub fn arrived(&self) -> InFlight {
        self.arrived_at(Instant::now())
    }

    fn arrived_at(&self, now: Instant) -> InFlight {
        let mut r = self.inner.lock().expect("not poisoned");
        let quiet = r
            .idle_since
            .is_some_and(|since| now.duration_since(since) >= IDLE_GAP);
        if r.in_flight == 0 && quiet {
            r.id += 1;
            r.started = now;
            r.arrived = 0;
            r.seconds = None;
            r.answers.clear();
        }
        r.arrived += 1;
        r.in_flight += 1;
        r.idle_since = None;
        InFlight {
            log: self.clone(),
            done: false,
        }
    }

    /// Records the end of a request; the run's id when it left none in flight.
    fn finished(
        &self,
        answer: Option<(u16, Option<ErrorKind>)>,
        seconds: Option<f64>,
        now: Instant,
    ) -> Option<u64> {
        let mut r = self.inner.lock().expect("not poisoned");
        if r.seconds.is_none() {
            r.seconds = seconds;
        }
        r.in_flight = r.in_flight.saturating_sub(1);
        if r.in_flight == 0 {
            r.idle_since = Some(now);
        }
        if let Some((status, kind)) = answer {
            if r.answers.len() < MAX_ANSWERS {
                let at = now
                    .duration_since(r.started)
                    .as_millis()
                    .min(u32::MAX as u128) as u32;
                r.answers.push(Answer(at, status, kind));
            }
        }
        (r.in_flight == 0).then_some(r.id)
    }

    /// The current run; answers from `after` on when `run` is its id, else all.
    pub fn view(&self, run: u64, after: usize) -> RunView {
        let r = self.inner.lock().expect("not poisoned");
        let from = if run == r.id {
            after.min(r.answers.len())
        } else {
            0
        };
        RunView {
            id: r.id,
            elapsed_ms: r.started.elapsed().as_millis() as u64,
            arrived: r.arrived,
            in_flight: r.in_flight,
            answered: r.answers.len() as u64,
            seconds: r.seconds,
            from,
            answers: r.answers[from..].to_vec(),
        }
    }
}

/// A demo request in flight; see [`RunLog::arrived`].
pub struct InFlight {
    log: RunLog,
    done: bool,
}

impl InFlight {
    /// `seconds`: the sleep a served request asked for. Returns the run's id
    /// when this answer left no demo request in flight (the run may be over),
    /// so that under load, with requests always in flight, nobody has to take
    /// the lock again to find out.
    pub fn answered(
        mut self,
        status: u16,
        kind: Option<ErrorKind>,
        seconds: Option<f64>,
    ) -> Option<u64> {
        self.done = true;
        self.log
            .finished(Some((status, kind)), seconds, Instant::now())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.log.finished(None, None, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_run_and_a_pause_starts_the_next() {
        let log = RunLog::default();
        let t0 = Instant::now();
        let a = log.arrived_at(t0);
        let b = log.arrived_at(t0);
        a.answered(200, None, Some(5.0));
        b.answered(503, Some(ErrorKind::DbRefused), None);
        let v = log.view(0, 0);
        assert_eq!((v.id, v.arrived, v.answered, v.in_flight), (1, 2, 2, 0));
        assert_eq!(v.answers[1].2, Some(ErrorKind::DbRefused));
        assert_eq!(v.seconds, Some(5.0));
        // Only what the page has not seen yet.
        assert_eq!(log.view(1, 1).answers.len(), 1);
        // Right after the run: same run. After the gap: a new one.
        log.arrived_at(Instant::now())
            .answered(200, None, Some(5.0));
        assert_eq!(log.view(1, 0).id, 1);
        let later = Instant::now() + IDLE_GAP * 2;
        let c = log.arrived_at(later);
        assert_eq!(log.view(1, 0).id, 2);
        drop(c); // a client that hung up: no answer, not in flight
        let v = log.view(2, 0);
        assert_eq!((v.in_flight, v.answered, v.arrived), (0, 0, 1));
    }
}
