//! Output: the original client's lines (byte for byte in format), the
//! summary, or one JSON report; a progress line on a terminal for large runs.

use std::io::{IsTerminal, Write};

use super::args::ClientArgs;
use super::burst::{Outcome, Run, Watcher};
use super::expect::trim;
use super::http::Target;
use super::summary::{Expectation, Report};

/// Runs at least this large get a progress line on a terminal.
const PROGRESS_FROM: usize = 100;

pub struct Mode {
    lines: bool,
    json: bool,
    progress: bool,
    /// `--report -` takes standard output; everything else goes to stderr.
    to_stderr: bool,
}

impl Mode {
    pub fn from_args(args: &ClientArgs) -> Mode {
        let lines = !args.json && !args.quiet;
        Mode {
            lines,
            json: args.json,
            progress: !lines && args.n >= PROGRESS_FROM && std::io::stderr().is_terminal(),
            to_stderr: args.report.as_deref() == Some(std::path::Path::new("-")),
        }
    }

    fn emit(&self, text: std::fmt::Arguments) {
        if self.to_stderr {
            eprint!("{text}");
        } else {
            print!("{text}");
        }
    }

    pub fn header(&self, n: usize, target: &Target) {
        if !self.json {
            self.emit(format_args!("Sending {n} requests for {}...\n", target.url));
        }
    }

    fn line(&self, o: &Outcome) {
        if !self.lines {
            return;
        }
        let what = match &o.result {
            Ok(reply) => reply.status.to_string(),
            Err(e) => format!("ERR {}", e.words()),
        };
        self.emit(format_args!("\t@ {:5.2}s got response [{what}]\n", o.at));
    }

    fn show_progress(&self, done: usize, n: usize) {
        if self.progress {
            let width = 30;
            let filled = done * width / n.max(1);
            eprint!(
                "\r[{}{}] {done}/{n} answered",
                "#".repeat(filled),
                " ".repeat(width - filled)
            );
            let _ = std::io::stderr().flush();
        }
    }

    fn progress_done(&self) {
        if self.progress {
            eprint!("\r\x1b[2K");
        }
    }

    pub fn footer(&self, run: &Run, report: &Report) {
        if self.json {
            let json = serde_json::to_string_pretty(report).expect("report serialises");
            self.emit(format_args!("{json}\n"));
            return;
        }
        if self.lines {
            self.emit(format_args!("\t= {:5.2}s TOTAL\n", run.elapsed));
        }
        self.emit(format_args!("SUM TOTAL = {:.2}s\n", run.elapsed));
        self.emit(format_args!("{}", summary_text(report)));
    }
}

pub fn summary_text(r: &Report) -> String {
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(String::new());
    line(format!(
        "Summary{}",
        if r.interrupted {
            format!(" (interrupted: {} of {} answered)", r.answered, r.requests)
        } else {
            String::new()
        }
    ));
    if let Some(address) = &r.address {
        line(format!("  target:   {address}"));
    }
    line(format!("  statuses: {}", counts(&r.statuses)));
    line(format!("  errors:   {}", counts(&r.errors)));
    if r.replicas.len() > 1 {
        line(format!("  replicas: {}", counts(&r.replicas)));
    }
    if let Some(l) = &r.latency_ms {
        line(format!(
            "  latency:  p50 {:.2}s  p95 {:.2}s  p99 {:.2}s  max {:.2}s",
            l.p50 / 1000.0,
            l.p95 / 1000.0,
            l.p99 / 1000.0,
            l.max / 1000.0
        ));
    }
    line(format!(
        "  waves (answers more than {:.2}s apart start a new wave):",
        r.wave_gap_s
    ));
    // The served waves, numbered as the expectation counts them, and the
    // answers of each other kind, in order of time.
    let mut rows: Vec<(f64, String)> = r
        .served_waves
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let wait = w
                .median_pool_wait_ms
                .map_or("n/a".into(), |ms| format!("{ms:.0} ms"));
            (
                w.first_s,
                format!(
                    "    wave {}: {:>5} {} at {:6.2}–{:6.2}s, median pool wait {wait}",
                    i + 1,
                    w.size,
                    answers(w.size),
                    w.first_s,
                    w.last_s
                ),
            )
        })
        .collect();
    rows.extend(r.failed.iter().map(|f| {
        (
            f.first_s,
            format!(
                "    {}: {:>5} {} at {:6.2}–{:6.2}s",
                f.failure,
                f.count,
                answers(f.count),
                f.first_s,
                f.last_s
            ),
        )
    }));
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    for (_, row) in rows {
        line(row);
    }
    match &r.expectation {
        Some(e) => {
            let server = match (e.max_connections, e.reserved) {
                (Some(m), Some(res)) => format!("max_connections {m} ({res} reserved)"),
                _ => "max_connections unknown".into(),
            };
            line(format!(
                "  expected: {}pool {}+{}{}, {server} → {} at once → {}",
                if e.replicas > 1 {
                    format!("{} replicas × ", e.replicas)
                } else {
                    String::new()
                },
                e.pool_size,
                e.max_overflow,
                e.pooler_pool
                    .map_or(String::new(), |p| format!(" → PgBouncer {p}")),
                e.concurrency,
                predicted_outcome(r, e)
            ));
            line(format!("  verdict:  {}", e.verdict));
        }
        None => line("  expected: unknown (the server's /pool could not be read)".into()),
    }
    out
}

fn counts<K: std::fmt::Display>(m: &std::collections::BTreeMap<K, usize>) -> String {
    if m.is_empty() {
        return "none".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k} × {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn answers(n: usize) -> &'static str {
    if n == 1 {
        "answer "
    } else {
        "answers"
    }
}

/// `2 waves of 5 s ≈ 10 s; 24 × db_refused at once (…)` and the like: the
/// served waves counted as the summary's list numbers them, then the
/// answers that are not served.
fn predicted_outcome(r: &Report, e: &Expectation) -> String {
    let p = &e.prediction;
    let refused = (p.refused > 0).then(|| {
        format!(
            "{} × db_refused at once ({} {} connections, PostgreSQL grants {})",
            p.refused,
            if e.replicas > 1 {
                format!("{} replicas try", e.replicas)
            } else {
                "the pool tries".to_owned()
            },
            p.attempts,
            p.concurrency,
        )
    });
    let timeouts = |min: u64, max: u64| {
        format!(
            "{} × pool_timeout at {} s (DB_POOL_TIMEOUT){}",
            match (min, max) {
                (min, max) if min == max => min.to_string(),
                (0, max) => format!("up to {max}"),
                (min, max) => format!("{min}–{max}"),
            },
            trim(e.pool_timeout_s),
            if e.pooler_pool.is_some() {
                " or pooler_timeout"
            } else {
                ""
            }
        )
    };
    let sleep = trim(r.sleep_seconds.unwrap_or(0.0));
    let shown: Vec<_> = p.expected_waves().collect();
    if p.depends_on_balance {
        // Refusals first: the waiting requests are what is left.
        let waiting = (r.requests as u64).saturating_sub(p.refused + shown[0].size);
        let even: Vec<String> = shown[1..]
            .iter()
            .map(|w| format!("{} at {} s", w.size, trim(w.at_s)))
            .collect();
        return format!(
            "{}; {} at {sleep} s, then {waiting} wait for their own replica's connections: {} \
             if the {} are spread evenly over the {} replicas, else smaller and later waves; {}",
            refused.unwrap_or_default(),
            shown[0].size,
            even.join(", "),
            p.concurrency,
            e.replicas,
            timeouts(p.timeouts_min, p.timeouts_max)
        );
    }
    let (sure, _) = p.wave_count_range();
    let mut parts = vec![match shown.len() {
        0 => "nothing served".to_owned(),
        1 if sure == 1 => format!("1 wave of {} at {sleep} s", shown[0].size),
        n if sure < n => format!("{sure}–{n} waves of {sleep} s ≈ {} s", trim(e.seconds)),
        n => format!("{n} waves of {sleep} s ≈ {} s", trim(e.seconds)),
    }];
    parts.extend(refused);
    if p.timeouts_max > 0 {
        parts.push(timeouts(p.timeouts_min, p.timeouts_max));
    }
    if let Some(k) = p.waves.iter().position(|w| w.may_time_out) {
        parts.push(format!(
            "wave {} gets its connections right at the timeout and may time out",
            k + 1
        ));
    }
    parts.join("; ")
}

impl Watcher for Mode {
    fn answered(&self, outcome: &Outcome) {
        self.line(outcome);
    }

    fn progress(&self, done: usize, n: usize) {
        self.show_progress(done, n);
    }

    fn finished(&self) {
        self.progress_done();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::budget::{Layer, Topology};
    use crate::client::burst::{Failure, Reply};
    use crate::client::summary::ServerPool;
    use crate::contract::{ErrorKind, ServerTiming};

    /// One replica of pool max `pool_max`, PostgreSQL granting `grantable`.
    fn server(pool_max: u64, pool_timeout_s: f64, grantable: u32) -> ServerPool {
        ServerPool {
            pool_size: pool_max / 2,
            max_overflow: pool_max - pool_max / 2,
            pool_max,
            pool_timeout_s,
            sleep_seconds: 5.0,
            sleep_max: 60.0,
            max_connections: Some(u64::from(grantable) + 4),
            reserved: Some(3),
            replicas: 1,
            budget: Some(
                Topology {
                    replicas: 1,
                    pool_max: pool_max as u32,
                    pooler_pool: None,
                    grantable: Some(grantable),
                }
                .budget(),
            ),
            pooler_pool: None,
            pooler_timeout_s: None,
        }
    }

    /// `n` answers of wave `k` (5 s sleep).
    fn served(n: usize, k: u32) -> impl Iterator<Item = Outcome> {
        let waited = Duration::from_secs(5 * u64::from(k - 1));
        (0..n).map(move |i| Outcome {
            at: 5.0 * f64::from(k) + 0.02 + i as f64 * 0.001,
            result: Ok(Reply {
                status: 200,
                error_kind: None,
                timing: Some(ServerTiming {
                    pool: waited,
                    pooler: None,
                    db: Duration::from_secs(5),
                }),
                replica: None,
            }),
        })
    }

    /// `n` error answers of `kind` at `at`.
    fn failed(n: usize, kind: ErrorKind, at: f64) -> impl Iterator<Item = Outcome> {
        (0..n).map(move |_| Outcome {
            at,
            result: Ok(Reply {
                status: 503,
                error_kind: Some(kind),
                timing: None,
                replica: None,
            }),
        })
    }

    fn summary(outcomes: Vec<Outcome>, s: &ServerPool) -> (String, Report) {
        let target = Target::parse("http://127.0.0.1:9/test/postgres/").unwrap();
        let run = Run {
            elapsed: outcomes.iter().map(|o| o.at).fold(0.0, f64::max),
            outcomes,
            interrupted: false,
        };
        let report = Report::new(&target, run.outcomes.len(), &run, Some(5.0), Some(s));
        (summary_text(&report), report)
    }

    #[test]
    fn the_json_report_reads_back_as_the_same_report() {
        // Every kind of entry under `errors`: a server kind, a bare status, a
        // transport failure; a verdict that differs.
        let outcomes = failed(24, ErrorKind::DbRefused, 0.05)
            .chain(served(30, 1))
            .chain([
                Outcome {
                    at: 5.5,
                    result: Ok(Reply {
                        status: 502,
                        error_kind: None,
                        timing: None,
                        replica: Some("web-2".into()),
                    }),
                },
                Outcome {
                    at: 6.0,
                    result: Err(crate::client::http::TransportError::ClientTimeout),
                },
            ])
            .collect();
        let (_, report) = summary(outcomes, &server(60, 30.0, 36));
        let wire = serde_json::to_value(&report).unwrap();
        assert_eq!(
            wire["errors"],
            serde_json::json!({"db_refused": 24, "http_502": 1, "client_timeout": 1})
        );
        let back: Report = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), wire);
        let e = back.expectation.unwrap();
        assert!(!e.verdict.matches, "{}", e.verdict);
        assert_eq!(e.prediction.limited_by, Layer::Postgres);
        assert_eq!(back.statuses[&200], 30);
        let unknown = serde_json::json!({"teapot": 1});
        assert!(
            serde_json::from_value::<std::collections::BTreeMap<Failure, usize>>(unknown).is_err()
        );
    }

    fn listed(text: &str) -> Vec<&str> {
        text.lines().filter(|l| l.starts_with("    ")).collect()
    }

    #[test]
    fn the_expected_line_counts_the_waves_the_list_numbers() {
        // Pool 10 + 10 with a 12 s timeout: waves at 5, 10, 15 s; the 40
        // requests that would be handed connections at 15 s time out at 12 s.
        let outcomes = served(20, 1)
            .chain(served(20, 2))
            .chain(failed(40, ErrorKind::PoolTimeout, 12.01))
            .chain(served(20, 3))
            .collect();
        let (text, report) = summary(outcomes, &server(20, 12.0, 96));
        assert!(
            text.contains("→ 20 at once → 3 waves of 5 s ≈ 15 s; 40 × pool_timeout at 12 s"),
            "{text}"
        );
        let list = listed(&text);
        assert_eq!(list.len(), 4, "{text}");
        assert_eq!(
            list.iter().filter(|l| l.starts_with("    wave ")).count(),
            3
        );
        assert!(
            list[2].starts_with("    pool_timeout:    40 answers at  12.01–"),
            "{text}"
        );
        let e = report.expectation.unwrap();
        assert_eq!(e.waves, 3);
        assert!(e.verdict.matches, "{}", e.verdict);
        // The JSON's `waves` still groups every answer, whatever its status.
        assert_eq!(report.waves.len(), 4);
    }

    #[test]
    fn with_replicas_the_later_waves_are_a_range_and_the_line_says_so() {
        // 3 replicas × 10 + 10, 34 grantable, client 100.
        let s = ServerPool {
            replicas: 3,
            budget: Some(
                Topology {
                    replicas: 3,
                    pool_max: 20,
                    pooler_pool: None,
                    grantable: Some(34),
                }
                .budget(),
            ),
            ..server(20, 30.0, 34)
        };
        let outcomes = failed(26, ErrorKind::DbRefused, 0.05)
            .chain(served(34, 1))
            .chain(served(25, 2))
            .chain(served(15, 3))
            .collect();
        let (text, report) = summary(outcomes, &s);
        assert!(
            text.contains(
                "→ 34 at once → 26 × db_refused at once (3 replicas try 60 connections, \
                 PostgreSQL grants 34); 34 at 5 s, then 40 wait for their own replica's \
                 connections: 34 at 10 s, 6 at 15 s if the 34 are spread evenly over the 3 \
                 replicas, else smaller and later waves; up to 40 × pool_timeout at 30 s"
            ),
            "{text}"
        );
        let e = report.expectation.unwrap();
        assert!(e.prediction.depends_on_balance);
        assert!(e.verdict.matches, "{}", e.verdict);
    }

    #[test]
    fn refusals_are_listed_apart_and_predicted_from_the_failed_attempts() {
        // Pool 30 + 30, 36 grantable, client 100.
        let outcomes = failed(24, ErrorKind::DbRefused, 0.05)
            .chain(served(36, 1))
            .chain(served(36, 2))
            .chain(served(4, 3))
            .collect();
        let (text, report) = summary(outcomes, &server(60, 30.0, 36));
        assert!(
            text.contains(
                "→ 36 at once → 3 waves of 5 s ≈ 15 s; 24 × db_refused at once \
                 (the pool tries 60 connections, PostgreSQL grants 36)"
            ),
            "{text}"
        );
        let list = listed(&text);
        assert!(
            list[0].starts_with("    db_refused:    24 answers at   0.05–"),
            "{text}"
        );
        assert!(list[1].starts_with("    wave 1:    36 answers"), "{text}");
        assert!(list[3].starts_with("    wave 3:     4 answers"), "{text}");
        assert!(
            text.contains("verdict:  matches (limited by PostgreSQL)"),
            "{text}"
        );
        assert_eq!(
            serde_json::to_value(&report.errors).unwrap(),
            serde_json::json!({"db_refused": 24})
        );
        let e = report.expectation.unwrap();
        assert_eq!(e.prediction.limited_by, Layer::Postgres);
        // The old rule's run: everyone past 36 refused.
        let outcomes = failed(64, ErrorKind::DbRefused, 0.05)
            .chain(served(36, 1))
            .collect();
        let (text, _) = summary(outcomes, &server(60, 30.0, 36));
        assert!(
            text.contains("verdict:  differs: 64 × db_refused, expected 24"),
            "{text}"
        );
    }
}
