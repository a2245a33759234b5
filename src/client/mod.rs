//! The load client (`poolscope client N`): fires N requests at once, each on
//! its own connection, prints the original demo's lines as answers arrive,
//! then a summary that explains them (see [`summary`]).

pub mod args;
pub mod burst;
pub mod expect;
pub mod http;
pub mod limits;
pub mod picture;
pub mod render;
pub mod summary;
pub mod verdict;

use std::process::ExitCode;
use std::time::Duration;

use args::ClientArgs;
use http::Target;

/// Exit code for bad arguments.
const EXIT_USAGE: u8 = 2;
/// Exit code after Ctrl-C, as shells report SIGINT.
const EXIT_INTERRUPTED: u8 = 130;
/// Client timeout when the server's `/pool` cannot be read: defaults 30 + 60 + 10.
const FALLBACK_TIMEOUT: f64 = 100.0;

pub async fn run(args: ClientArgs) -> ExitCode {
    let target = match Target::parse(&args.url) {
        Ok(t) => t,
        Err(why) => return usage(&format!("--url {}: {why}", args.url)),
    };
    let target = match target.resolve().await {
        Ok(t) => t,
        Err(why) => {
            eprintln!("poolscope client: {why}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(why) = limits::ensure_open_files(args.n) {
        return usage(&why);
    }
    let server = summary::ServerPool::fetch(&target).await;
    let target = match args.seconds {
        Some(s) => target.with_query("seconds", &format!("{s}")),
        None => target,
    };
    let timeout = args
        .timeout
        .or_else(|| {
            server
                .as_ref()
                .map(|s| s.pool_timeout_s + s.sleep_max + 10.0)
        })
        .unwrap_or(FALLBACK_TIMEOUT);
    let sleep = args.seconds.or(server.as_ref().map(|s| s.sleep_seconds));

    let mode = render::Mode::from_args(&args);
    mode.header(args.n, &target);
    let run = burst::fire(&target, args.n, Duration::from_secs_f64(timeout), &mode).await;
    let report = summary::Report::new(&target, args.n, &run, sleep, server.as_ref());
    mode.footer(&run, &report);
    if let Some(path) = &args.report {
        let page = picture::html(&report, &run.outcomes);
        let written = if path.as_os_str() == "-" {
            use std::io::Write;
            std::io::stdout().write_all(page.as_bytes())
        } else {
            std::fs::write(path, page)
        };
        if let Err(e) = written {
            eprintln!(
                "poolscope client: cannot write --report {}: {e}",
                path.display()
            );
            return ExitCode::FAILURE;
        }
    }
    if run.interrupted {
        ExitCode::from(EXIT_INTERRUPTED)
    } else {
        ExitCode::SUCCESS
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("poolscope client: {why}");
    eprintln!(
        "usage: poolscope client [N] [--url URL] [--seconds S] [--timeout SECS] [--json] [--quiet]"
    );
    ExitCode::from(EXIT_USAGE)
}

/// `poolscope healthcheck`: 0 when the URL (default: the service's
/// `/readyz`, so compose's `run client` waits for the migration) answers 200
/// within 2 s.
pub async fn healthcheck(url: Option<String>) -> ExitCode {
    let url = url.unwrap_or_else(|| {
        let port = std::env::var("APP_PORT")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "8080".into());
        format!("http://127.0.0.1:{port}/readyz")
    });
    let Ok(target) = Target::parse(&url) else {
        eprintln!("healthcheck: not an http:// URL: {url}");
        return ExitCode::from(EXIT_USAGE);
    };
    match http::get(&target, Duration::from_secs(2)).await {
        Ok(answer) if answer.status == 200 => ExitCode::SUCCESS,
        Ok(answer) => {
            eprintln!("healthcheck: {url} answered {}", answer.status);
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}
