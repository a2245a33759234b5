//! `docker compose run --rm -T client … --json`, read into the client's own
//! report type, and the checks the scenarios make on it.

use std::collections::BTreeMap;
use std::fmt::Debug;

use poolscope::client::burst::Failure;
use poolscope::client::summary::{Expectation, Report};
use poolscope::contract::ErrorKind;

use crate::stack::{tail, Ran, Stack};

impl Stack {
    /// `docker compose run --rm -T client ARGS`, bounded to `seconds`; its
    /// standard output must be one `--json` report.
    #[track_caller]
    pub fn client_json(&self, args: &[&str], seconds: u64) -> Report {
        let ran = self.client(args).timeout(seconds).run();
        report_of(&ran, args)
    }

    /// `docker compose run --rm -T client ARGS`, to run as the caller likes.
    pub fn client(&self, args: &[&str]) -> crate::stack::Cmd {
        let mut all = vec!["run", "--rm", "-T", "client"];
        all.extend_from_slice(args);
        self.compose(&all)
    }
}

/// The report a finished `client … --json` printed; fails when the client
/// failed or printed something else.
#[track_caller]
pub fn report_of(ran: &Ran, args: &[&str]) -> Report {
    check!(
        ran.success(),
        "docker compose run client {}: expected exit 0, saw {:?}{}: {}",
        args.join(" "),
        ran.code,
        if ran.timed_out { " (timed out)" } else { "" },
        tail(&ran.stderr, 30)
    );
    match parse(&ran.stdout) {
        Ok(r) => r,
        Err(e) => panic!(
            "FAIL: client {}: expected one JSON report on stdout, saw ({e}):\n{}",
            args.join(" "),
            tail(&ran.stdout, 40)
        ),
    }
}

/// The report; a line that is not part of it before the object (a warning
/// of a tool in between) is tolerated.
fn parse(stdout: &str) -> Result<Report, serde_json::Error> {
    serde_json::from_str(stdout).or_else(|e| match stdout.find("\n{") {
        Some(at) => serde_json::from_str(&stdout[at + 1..]),
        None => Err(e),
    })
}

/// Sizes of the waves (every answer, any status).
pub fn wave_sizes(r: &Report) -> Vec<usize> {
    r.waves.iter().map(|w| w.size).collect()
}

/// The report in one line, printed before its checks as the log of the run.
pub fn show(r: &Report) {
    note!(
        "report: statuses={:?} errors={} waves={:?} latency_ms={} verdict={:?}",
        r.statuses,
        errors(r),
        wave_sizes(r),
        r.latency_ms.as_ref().map_or("none".into(), |l| format!(
            "p50 {:.0} p95 {:.0} p99 {:.0} max {:.0}",
            l.p50, l.p95, l.p99, l.max
        )),
        r.expectation.as_ref().map(|e| e.verdict.to_string())
    );
}

/// `{db_refused: 24, …}`, by name.
pub fn errors(r: &Report) -> String {
    let m: BTreeMap<String, usize> = r.errors.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    format!("{m:?}")
}

pub fn statuses(pairs: &[(u16, usize)]) -> BTreeMap<u16, usize> {
    pairs.iter().copied().collect()
}

pub fn kinds(pairs: &[(ErrorKind, usize)]) -> BTreeMap<Failure, usize> {
    pairs.iter().map(|(k, n)| (Failure::Kind(*k), *n)).collect()
}

/// The expectation, which every report of a run against a reachable
/// `/pool` has.
#[track_caller]
pub fn expectation<'a>(r: &'a Report, what: &str) -> &'a Expectation {
    match &r.expectation {
        Some(e) => e,
        None => panic!(
            "FAIL: {what}: expected an expectation in the report (the client read /pool), saw none"
        ),
    }
}

/// 1 when the verdict found the run exactly the prediction for one slot
/// fewer ([`poolscope::client::verdict::Difference::SlotShort`]), else 0.
pub fn slot_short(r: &Report) -> usize {
    r.expectation
        .as_ref()
        .map_or(0, |e| usize::from(e.verdict.slot_short))
}

/// Collects every failed check of one report, then fails listing all of
/// them: one look at a failed run shows everything that differed.
pub struct Checks {
    what: String,
    bad: Vec<String>,
}

impl Checks {
    pub fn of(what: &str, r: &Report) -> Checks {
        show(r);
        Checks {
            what: what.to_owned(),
            bad: Vec::new(),
        }
    }

    #[track_caller]
    pub fn that(&mut self, holds: bool, expected: &str, seen: impl Debug) -> &mut Checks {
        crate::progress::count_check();
        if !holds {
            self.bad.push(format!("expected {expected}, saw {seen:?}"));
        }
        self
    }

    #[track_caller]
    pub fn eq<T: PartialEq + Debug>(&mut self, what: &str, seen: T, expected: T) -> &mut Checks {
        let holds = seen == expected;
        self.that(holds, &format!("{what} == {expected:?}"), seen)
    }

    /// All `n` requests answered, each 200 or 503: what a run through an
    /// outage may see, and nothing else.
    #[track_caller]
    pub fn answered_200_or_503(&mut self, r: &Report, n: usize) -> &mut Checks {
        let total: usize = r.statuses.values().sum();
        self.eq("answers", total, n).that(
            r.statuses.keys().all(|s| *s == 200 || *s == 503),
            "statuses 200 or 503 only",
            &r.statuses,
        )
    }

    /// Some requests refused at once (`db_refused`, the first wave of the
    /// report, within 1 s), the rest served in waves of these sizes (one
    /// pool: every wave but the last as wide as the first). When the
    /// verdict found the run one slot short, one more is refused and every
    /// wave is one narrower.
    #[track_caller]
    pub fn refused_then_served(
        &mut self,
        r: &Report,
        refused: usize,
        waves: &[usize],
    ) -> &mut Checks {
        let held = slot_short(r);
        let served = waves.iter().sum::<usize>() - held;
        let refused = refused + held;
        let width = waves[0] - held;
        let mut sizes = vec![(refused, 0)];
        let mut left = served;
        while left > 0 {
            let n = left.min(width);
            sizes.push((n, n));
            left -= n;
        }
        let seen: Vec<(usize, usize)> = r.waves.iter().map(|w| (w.size, w.ok)).collect();
        self.eq(
            "statuses",
            r.statuses.clone(),
            statuses(&[(200, served), (503, refused)]),
        )
        .eq(
            "errors",
            r.errors.clone(),
            kinds(&[(ErrorKind::DbRefused, refused)]),
        )
        .eq("(size, ok) of the waves", seen, sizes)
        .that(
            r.waves.first().is_some_and(|w| w.last_s <= 1.0),
            "the refusals within 1 s",
            r.waves.iter().map(|w| w.last_s).collect::<Vec<_>>(),
        )
    }

    /// The verdict matches.
    #[track_caller]
    pub fn matches(&mut self, r: &Report) -> &mut Checks {
        let e = expectation(r, &self.what);
        let (holds, seen) = (e.verdict.matches, e.verdict.to_string());
        self.that(holds, "verdict matches", seen)
    }

    /// The verdict matches, or finds the run exactly the prediction for one
    /// slot fewer: PostgreSQL granted one connection fewer than `/pool`
    /// counted while the pools opened theirs (a slot held for a moment by
    /// the database's health check; with replicas, left unused in their
    /// race for the last slots — 3 of 5 runs of scenario 3 in this order
    /// on a 2-core machine). The pool's own rule still holds then: every
    /// refusal a failed attempt, everyone else served in waves.
    #[track_caller]
    pub fn matches_or_slot_short(&mut self, r: &Report) -> &mut Checks {
        let e = expectation(r, &self.what);
        let holds = e.verdict.matches || e.verdict.slot_short;
        if e.verdict.slot_short {
            measured!("one slot short: {}", e.verdict);
        }
        self.that(
            holds,
            "verdict matches (or one slot short)",
            e.verdict.to_string(),
        )
    }

    #[track_caller]
    pub fn done(&mut self) {
        if !self.bad.is_empty() {
            panic!("FAIL: {}:\n   {}", self.what, self.bad.join("\n   "));
        }
    }
}
