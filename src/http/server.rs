//! Serving the poem endpoint over HTTP/1.1 with hyper directly.
//!
//! poem's own `Server` serves every connection through hyper-util's automatic
//! HTTP/1 + HTTP/2 builder with upgrades, which holds about 28 KB per open
//! connection; this loop holds about 22 KB (measured with a handler that only
//! sleeps, 10,000 connections: 284 MB against 226 MB, BENCHMARKS.md). The
//! demo's point is thousands of requests waiting on a small pool, each on its
//! own connection, so that is the number that matters. HTTP/2 is not served:
//! the load client, browsers without TLS and Prometheus all speak HTTP/1.1.
//!
//! It also gives every connection its hang-up token ([`ClientGone`]) and does
//! what poem's server does on shutdown: stop accepting, let in-flight requests
//! finish (idle keep-alive connections close at once; hyper-util's
//! `GracefulShutdown` tells each connection) for up to the grace period, then
//! drop what is left.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown};
use poem::http::uri::Scheme;
use poem::web::{LocalAddr, RemoteAddr};
use poem::{Endpoint, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::disconnect::{ClientGone, WatchedIo};

/// A client has this long to send a request's headers (slow-loris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// After an accept error such as "too many open files", wait this long before
/// accepting again instead of spinning on the error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves `ep` on `listener` until `shutdown` resolves, then drains for up to `grace`.
pub async fn serve<E>(
    listener: TcpListener,
    ep: E,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) where
    E: Endpoint<Output = Response> + 'static,
{
    let ep = Arc::new(ep);
    let local = match listener.local_addr() {
        Ok(addr) => LocalAddr(addr.into()),
        Err(_) => LocalAddr::default(),
    };
    let graceful = GracefulShutdown::new();
    // Every connection's task, so that what outlives the grace can be dropped.
    let connections = TaskTracker::new();
    let abort = CancellationToken::new();
    let mut accept_errors = AcceptErrors::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let conn = graceful.watch(connection(stream, remote, local.clone(), ep.clone()));
                    let abort = abort.clone();
                    connections.spawn(async move {
                        tokio::select! {
                            _ = conn => {}
                            _ = abort.cancelled() => {}
                        }
                    });
                }
                Err(error) => {
                    accept_errors.report(&error);
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            grace_s = grace.as_secs_f64(),
            "requests still running after SHUTDOWN_GRACE; dropping them"
        );
        abort.cancel();
    }
    connections.wait().await;
}

/// One client's HTTP/1.1 connection, with its hang-up token.
fn connection<E>(
    stream: TcpStream,
    remote: SocketAddr,
    local: LocalAddr,
    ep: Arc<E>,
) -> impl GracefulConnection
where
    E: Endpoint<Output = Response> + 'static,
{
    // Responses go out in one write; don't let Nagle hold back the next one.
    let _ = stream.set_nodelay(true);
    let gone = CancellationToken::new();
    let io = TokioIo::new(WatchedIo::new(stream, gone.clone()));
    let remote = RemoteAddr(remote.into());
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let ep = ep.clone();
        let mut req = poem::Request::from((req, local.clone(), remote.clone(), Scheme::HTTP));
        req.extensions_mut().insert(ClientGone(gone.clone()));
        // `call`, not `get_response`: its extra `async` layer would keep
        // another copy of the request in every waiting request's state.
        async move {
            let resp = ep.call(req).await.unwrap_or_else(|err| err.into_response());
            Ok::<_, Infallible>(resp.into())
        }
    });
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(io, service)
}

/// Logs accept errors (typically "too many open files") at most once a second.
#[derive(Default)]
struct AcceptErrors {
    last_report: Option<Instant>,
    since: u64,
}

impl AcceptErrors {
    fn report(&mut self, error: &std::io::Error) {
        self.since += 1;
        if self
            .last_report
            .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        tracing::warn!(%error, errors = self.since, "cannot accept connections (raise the open-files limit?)");
        self.last_report = Some(Instant::now());
        self.since = 0;
    }
}
