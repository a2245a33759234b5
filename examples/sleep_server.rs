//! A stand-in for the service, for benchmarking the load client alone
//! (`scripts/bench-client.sh`, issue 3): no database, no pool.
//!
//! - `GET /test/postgres/?seconds=S` sleeps S seconds (default 1, at most
//!   60) with `tokio::time::sleep`, then answers `200 {"data":[]}`.
//! - every other path answers 404, so `poolscope client` finds no `/pool`
//!   and skips the expectation.
//!
//! ```sh
//! cargo run --release --example sleep_server -- 127.0.0.1:8099
//! ```
//!
//! The listen address is the first argument (default `127.0.0.1:8099`); it
//! listens as the service does (`poolscope::startup::listen`: a backlog of
//! 4096, capped by `net.core.somaxconn`), so that a burst of 10,000 connects
//! is not held up by SYN retries on the server side.

use std::net::SocketAddr;
use std::time::Duration;

use poem::http::StatusCode;
use poem::listener::TcpAcceptor;
use poem::web::Query;
use poem::{get, handler, EndpointExt, Response, Route, Server};
use serde::Deserialize;

#[derive(Deserialize)]
struct Params {
    seconds: Option<f64>,
}

#[handler]
async fn demo(Query(params): Query<Params>) -> Response {
    let seconds = params.seconds.unwrap_or(1.0);
    if !(0.0..=60.0).contains(&seconds) {
        return Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .content_type("application/json")
            .body(r#"{"error":"bad_request","message":"seconds must be from 0 to 60"}"#);
    }
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    Response::builder()
        .status(StatusCode::OK)
        .content_type("application/json")
        .header("Server-Timing", "pool;dur=0, db;dur=0")
        .body(r#"{"data":[]}"#)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8099".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let listener = poolscope::startup::listen(addr)?;
    eprintln!("sleep_server listening on {addr}");
    let app = Route::new()
        .at("/test/postgres/", get(demo))
        .at("/test/postgres", get(demo))
        .map_to_response();
    Server::new_with_acceptor(TcpAcceptor::from_tokio(listener)?)
        .run(app)
        .await
}
