//! The load client (`poolscope client N`).

pub mod args;
pub mod http;

use std::process::ExitCode;

pub async fn run(_args: args::ClientArgs) -> ExitCode {
    ExitCode::FAILURE
}

/// `poolscope healthcheck`: 0 when the URL answers 200 within 2 s.
pub async fn healthcheck(url: Option<String>) -> ExitCode {
    let url = url.unwrap_or_else(|| {
        let port = std::env::var("APP_PORT")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "8080".into());
        format!("http://127.0.0.1:{port}/healthz")
    });
    let Ok(target) = http::Target::parse(&url) else {
        eprintln!("healthcheck: not an http:// URL: {url}");
        return ExitCode::from(2);
    };
    match http::get(&target, std::time::Duration::from_secs(2)).await {
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
