//! `poolscope sweep`: the database's half of the lesson. A closed loop of
//! clients runs against the demo route while the service's pool limit is
//! lowered to 1, 2, 4, … up to its configured maximum, one step each; every
//! step measures throughput, latency, where the time went, and what
//! PostgreSQL and any other client of it went through. The knee — the
//! smallest limit within 5 % of the best throughput — is where a bigger pool
//! stops buying anything but slower queries (see [`knee`]).
//!
//! The limit is lowered through the service's `POST /pool/limit` lease (see
//! `http::pool_limit`), renewed while the step runs and deleted when the
//! sweep ends or is interrupted; if the sweep dies, the lease runs out on
//! its own within [`LEASE`].

pub mod args;
pub mod knee;
pub mod load;
pub mod picture;
pub mod render;
pub mod stats;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use hyper::Method;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::contract::PoolReport;
use args::SweepArgs;
use load::{Clients, Completed, Endpoint};
use stats::{Sample, Step};

/// The limit's lease: long enough to survive a slow renewal, short enough
/// that a killed sweep leaves the service throttled only briefly.
pub const LEASE: Duration = Duration::from_secs(15);
/// How often the lease is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// How often the server's `/pool` is read during a step.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);
/// Timeout of one control or sample request.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

const EXIT_USAGE: u8 = 2;
const EXIT_INTERRUPTED: u8 = 130;

/// The whole sweep (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    pub url: String,
    pub work: String,
    pub clients: u32,
    pub step_seconds: f64,
    pub warmup_seconds: f64,
    pub pool_max: u32,
    pub db_cores: Option<u32>,
    pub steps: Vec<Step>,
    /// The smallest limit within 5 % of the best throughput.
    pub knee: Option<u32>,
    pub best: Option<u32>,
    pub cores_x2: Option<u32>,
    pub comparison: Option<String>,
    pub recommendation: Option<String>,
    pub interrupted: bool,
}

impl SweepReport {
    /// A sweep about to run: no steps yet, nothing concluded.
    pub fn new(
        url: String,
        work: String,
        clients: u32,
        (step_seconds, warmup_seconds): (f64, f64),
        pool_max: u32,
        db_cores: Option<u32>,
    ) -> SweepReport {
        SweepReport {
            url,
            work,
            clients,
            step_seconds,
            warmup_seconds,
            pool_max,
            db_cores,
            steps: Vec::new(),
            knee: None,
            best: None,
            cores_x2: db_cores.map(|c| c * 2),
            comparison: None,
            recommendation: None,
            interrupted: false,
        }
    }
}

pub async fn run(args: SweepArgs) -> ExitCode {
    match sweep(&args).await {
        Ok(report) => {
            if let Err(why) = write_outputs(&args, &report) {
                eprintln!("poolscope sweep: {why}");
                return ExitCode::FAILURE;
            }
            if report.interrupted {
                ExitCode::from(EXIT_INTERRUPTED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(Failure::Usage(why)) => {
            eprintln!("poolscope sweep: {why}");
            eprintln!(
                "usage: poolscope sweep [--work cpu|hot|sleep] [--clients N] [--step SECS] \
                 [--warmup SECS] [--limits 1,2,4] [--url URL] [--db-cores N] [--json] [--report FILE]"
            );
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Failed(why)) => {
            eprintln!("poolscope sweep: {why}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    Usage(String),
    Failed(String),
}

fn write_outputs(args: &SweepArgs, report: &SweepReport) -> Result<(), String> {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(report).map_err(|e| e.to_string())?
        );
    } else {
        // The rows were printed as the steps finished; now the reading.
        print!("{}", render::conclusion(report));
    }
    if let Some(path) = &args.report {
        let page = picture::html(report);
        let written = if path.as_os_str() == "-" {
            use std::io::Write;
            std::io::stdout().write_all(page.as_bytes())
        } else {
            std::fs::write(path, page)
        };
        written.map_err(|e| format!("cannot write --report {}: {e}", path.display()))?;
    }
    Ok(())
}

/// The pool's report, read once before the sweep.
async fn read_pool(server: &Endpoint) -> Result<PoolReport, String> {
    let (status, body) = server
        .with_path("/pool")
        .call(Method::GET, CONTROL_TIMEOUT)
        .await?;
    if status != 200 {
        return Err(format!("GET /pool answered {status}"));
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET /pool: not poolscope's answer ({e})"))
}

async fn set_limit(server: &Endpoint, limit: u32) -> Result<(), String> {
    let path = format!("/pool/limit?max={limit}&ttl={}", LEASE.as_secs());
    let (status, body) = server
        .with_path(&path)
        .call(Method::POST, CONTROL_TIMEOUT)
        .await?;
    if status == 200 {
        return Ok(());
    }
    let why = serde_json::from_slice::<crate::contract::ErrorBody>(&body)
        .map(|b| b.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
    Err(format!("POST {path} answered {status}: {why}"))
}

async fn release_limit(server: &Endpoint) {
    let released = server
        .with_path("/pool/limit")
        .call(Method::DELETE, CONTROL_TIMEOUT)
        .await;
    match released {
        Ok((200, _)) => {}
        Ok((status, _)) => eprintln!(
            "poolscope sweep: DELETE /pool/limit answered {status}; the lease ends by itself within {}s",
            LEASE.as_secs()
        ),
        Err(why) => eprintln!(
            "poolscope sweep: {why}; the lease ends by itself within {}s",
            LEASE.as_secs()
        ),
    }
}

type Samples = mpsc::UnboundedReceiver<(Instant, Sample)>;

/// Reads `/pool` every [`SAMPLE_EVERY`] until the returned handle is dropped.
fn start_sampler(server: &Endpoint) -> (Samples, tokio_util::task::AbortOnDropHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let pool = server.with_path("/pool");
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok((200, body)) = pool.call(Method::GET, CONTROL_TIMEOUT).await else {
                continue;
            };
            let Ok(report) = serde_json::from_slice::<PoolReport>(&body) else {
                continue;
            };
            let Some(pg) = report.postgres else { continue };
            let sample = Sample {
                active: pg.activity.active,
                lock_waiters: pg.activity.lock_waiters,
                probe_ms: pg.activity.probe_us as f64 / 1000.0,
                in_use: report.live.in_use,
                waiting: report.live.waiting,
                limit: report.limit.map(|l| l.limit),
            };
            if tx.send((Instant::now(), sample)).is_err() {
                return;
            }
        }
    });
    (rx, tokio_util::task::AbortOnDropHandle::new(task))
}

/// The URL every client requests: the route with `work=` (and `seconds=`).
fn work_url(args: &SweepArgs) -> Result<url::Url, Failure> {
    let mut url = url::Url::parse(&args.url)
        .map_err(|e| Failure::Usage(format!("--url {}: not a URL ({e})", args.url)))?;
    if url.scheme() != "http" {
        return Err(Failure::Usage(format!(
            "--url {}: only http:// URLs are supported",
            args.url
        )));
    }
    if args.seconds.is_some() && args.work != "sleep" {
        return Err(Failure::Usage(
            "--seconds is for --work sleep only".to_owned(),
        ));
    }
    url.query_pairs_mut().append_pair("work", &args.work);
    if let Some(s) = args.seconds {
        url.query_pairs_mut().append_pair("seconds", &s.to_string());
    }
    Ok(url)
}

async fn sweep(args: &SweepArgs) -> Result<SweepReport, Failure> {
    let url = work_url(args)?;
    let endpoint = Endpoint::resolve(&url).await.map_err(Failure::Failed)?;
    let pool = read_pool(&endpoint).await.map_err(Failure::Failed)?;
    let control = pool.limit.clone().ok_or_else(|| {
        Failure::Failed("this service's /pool has no runtime limit (an older poolscope?)".into())
    })?;
    if !control.control {
        return Err(Failure::Failed(
            "the service does not let the sweep lower its pool's limit: set \
             POOL_LIMIT_CONTROL=true for it (in .env, then `docker compose up -d`)"
                .into(),
        ));
    }
    let pool_max = control.max;
    let limits = match &args.limits {
        Some(limits) => {
            if let Some(bad) = limits.iter().find(|l| **l > pool_max) {
                return Err(Failure::Usage(format!(
                    "--limits: {bad} exceeds the pool's max {pool_max} (DB_POOL_SIZE + \
                     DB_MAX_OVERFLOW); the sweep can only lower the limit"
                )));
            }
            limits.clone()
        }
        None => args::doubling_up_to(pool_max),
    };
    let clients = args.clients.unwrap_or(2 * pool_max).max(1);
    let db_cores = args.db_cores.or(pool.configured.db_cores);
    let timeout =
        Duration::from_secs_f64(pool.configured.pool_timeout_s + pool.configured.sleep_max + 10.0);
    let mut report = SweepReport::new(
        url.to_string(),
        args.work.clone(),
        clients,
        (args.step, args.warmup),
        pool_max,
        db_cores,
    );
    if !args.json {
        print!("{}", render::header(&report, &limits));
    }

    let (tx, mut answers) = mpsc::unbounded_channel::<Completed>();
    let (mut samples, _sampler) = start_sampler(&endpoint);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut running: Option<Clients> = None;
    let mut failure = None;
    'steps: for limit in limits {
        if let Err(why) = set_limit(&endpoint, limit).await {
            failure = Some(why);
            break;
        }
        // Clients start once the first limit is in force.
        if running.is_none() {
            running = Some(Clients::start(
                &endpoint,
                clients as usize,
                timeout,
                tx.clone(),
            ));
        }
        let window_start = Instant::now() + Duration::from_secs_f64(args.warmup);
        let window_end = window_start + Duration::from_secs_f64(args.step);
        let mut renew =
            tokio::time::interval_at((Instant::now() + RENEW_EVERY).into(), RENEW_EVERY);
        loop {
            tokio::select! {
                _ = &mut ctrl_c => {
                    report.interrupted = true;
                    break 'steps;
                }
                _ = renew.tick() => {
                    if let Err(why) = set_limit(&endpoint, limit).await {
                        failure = Some(why);
                        break 'steps;
                    }
                }
                _ = tokio::time::sleep_until(window_end.into()) => break,
            }
        }
        let in_window = |at: &Instant| *at >= window_start && *at <= window_end;
        let mut measured = Vec::new();
        while let Ok((at, answer)) = answers.try_recv() {
            if in_window(&at) {
                measured.push(answer);
            }
        }
        let mut read = Vec::new();
        while let Ok((at, sample)) = samples.try_recv() {
            if in_window(&at) {
                read.push(sample);
            }
        }
        let step = stats::summarise(limit, args.step, &measured, &read);
        if !args.json {
            print!("{}", render::row(&step));
        }
        report.steps.push(step);
    }
    if let Some(clients) = running {
        clients.stop(Duration::from_secs(5)).await;
    }
    release_limit(&endpoint).await;
    if let Some(why) = failure {
        return Err(Failure::Failed(why));
    }
    render::conclude(&mut report);
    Ok(report)
}
