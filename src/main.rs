//! Wiring only: parse the command, load settings, start telemetry, run.

use std::process::ExitCode;

use clap::Parser;
use poolscope::cli::{Cli, Command};
use poolscope::settings::Settings;
use poolscope::{client, shutdown, startup, telemetry};

/// Exit code for bad settings or arguments (as for usage errors).
const EXIT_USAGE: u8 = 2;

/// Polls of ready tasks between checks for new I/O events (tokio's default
/// is 61). On busy workers, sockets that became ready wait that long to be
/// noticed; checking every 16 polls took the p99 at `seconds=0` from
/// 25.0 ms to 21.4 ms in alternating quick runs (medians of 5 each, same CPU
/// per request; within the noise of full runs), while every 8 polls cost CPU
/// (BENCHMARKS.md).
const EVENT_INTERVAL: u32 = 16;

fn main() -> ExitCode {
    let cli = Cli::parse_from(poolscope::cli::args_from(std::env::args_os()));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .event_interval(EVENT_INTERVAL)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("poolscope: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Client(args) => client::run(args).await,
        Command::Sweep(args) => poolscope::sweep::run(args).await,
        Command::Healthcheck { url } => client::healthcheck(url).await,
        Command::Serve => match load_settings() {
            Ok(settings) => serve(settings).await,
            Err(code) => code,
        },
        Command::Migrate => match load_settings() {
            Ok(settings) => migrate(settings).await,
            Err(code) => code,
        },
    }
}

fn load_settings() -> Result<Settings, ExitCode> {
    Settings::load().map_err(|errors| {
        eprintln!("poolscope: invalid settings:");
        for e in &errors.0 {
            eprintln!("  {e}");
        }
        ExitCode::from(EXIT_USAGE)
    })
}

async fn serve(settings: Settings) -> ExitCode {
    let _telemetry = telemetry::init(&settings.telemetry);
    let app = match startup::Application::build(settings).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("poolscope: {e}");
            return ExitCode::FAILURE;
        }
    };
    app.run_until_stopped(shutdown::signal()).await;
    ExitCode::SUCCESS
}

async fn migrate(settings: Settings) -> ExitCode {
    let _telemetry = telemetry::init(&settings.telemetry);
    if let Err(e) = poolscope::db::check::database_is_usable(&settings.database).await {
        eprintln!("poolscope: migration failed: {e}");
        return ExitCode::FAILURE;
    }
    match poolscope::db::migrate_once(&settings.database).await {
        Ok(()) => {
            tracing::info!("migration complete");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("poolscope: migration failed: {e}");
            ExitCode::FAILURE
        }
    }
}
