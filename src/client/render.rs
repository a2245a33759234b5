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
    for (i, w) in r.waves.iter().enumerate() {
        let errors = if w.ok < w.size {
            format!(" ({} not 200)", w.size - w.ok)
        } else {
            String::new()
        };
        let wait = w
            .median_pool_wait_ms
            .map_or("n/a".into(), |ms| format!("{ms:.0} ms"));
        line(format!(
            "    wave {}: {:>5} {} at {:6.2}–{:6.2}s, median pool wait {wait}{errors}",
            i + 1,
            w.size,
            if w.size == 1 { "answer " } else { "answers" },
            w.first_s,
            w.last_s
        ));
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

/// `2 waves of 5 s ≈ 10 s; 24 × db_refused at once` and the like.
fn predicted_outcome(r: &Report, e: &Expectation) -> String {
    let p = &e.prediction;
    let sleep = trim(r.sleep_seconds.unwrap_or(0.0));
    let mut parts = vec![match p.waves.len() {
        0 => "nothing served".to_owned(),
        1 => format!("1 wave of {} at {sleep} s", p.waves[0].size),
        n => format!("{n} waves of {sleep} s ≈ {} s", trim(e.seconds)),
    }];
    if p.refused > 0 {
        parts.push(format!(
            "{} × db_refused at once (PostgreSQL grants {} < {})",
            p.refused,
            p.concurrency,
            if e.replicas > 1 {
                format!("{} replicas × pool max {}", e.replicas, e.pool_max)
            } else {
                format!("pool max {}", e.pool_max)
            }
        ));
    }
    if p.timeouts_max > 0 {
        let count = if p.timeouts_min == p.timeouts_max {
            p.timeouts_min.to_string()
        } else {
            format!("{}–{}", p.timeouts_min, p.timeouts_max)
        };
        parts.push(format!(
            "{count} × pool_timeout at {} s (DB_POOL_TIMEOUT){}",
            trim(e.pool_timeout_s),
            if e.pooler_pool.is_some() {
                " or pooler_timeout"
            } else {
                ""
            }
        ));
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
