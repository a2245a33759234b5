//! The closed loop: a fixed number of clients, each on its own kept-alive
//! HTTP/1.1 connection, each sending its next request as soon as the last is
//! answered. Unlike `poolscope client`'s burst (one fresh connection per
//! request, all at once), the load stays constant for as long as the sweep
//! runs, and thousands of requests a second do not exhaust ports with
//! connections in TIME_WAIT.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::header::HOST;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;

use super::stats::Answer;
use crate::contract::ErrorBody;
use crate::contract::ServerTiming;

/// Where the clients send their requests.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addrs: Arc<[SocketAddr]>,
    authority: String,
    path_and_query: String,
}

impl Endpoint {
    /// Looks the host up once.
    pub async fn resolve(url: &url::Url) -> Result<Endpoint, String> {
        let host = url.host_str().ok_or("the URL has no host")?;
        let authority = format!("{host}:{}", url.port_or_known_default().unwrap_or(80));
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&authority)
            .await
            .map_err(|e| format!("cannot resolve {authority}: {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("{authority} resolves to no address"));
        }
        let mut path_and_query = url.path().to_owned();
        if let Some(q) = url.query() {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        Ok(Endpoint {
            addrs: addrs.into(),
            authority,
            path_and_query,
        })
    }

    /// The same server, another path (`/pool`, `/pool/limit?max=4`).
    pub fn with_path(&self, path_and_query: &str) -> Endpoint {
        Endpoint {
            path_and_query: path_and_query.to_owned(),
            ..self.clone()
        }
    }

    /// One request on a fresh connection: status and body.
    pub async fn call(
        &self,
        method: hyper::Method,
        timeout: Duration,
    ) -> Result<(u16, Bytes), String> {
        let what = format!("{method} http://{}{}", self.authority, self.path_and_query);
        let exchange = async {
            let mut conn = connect(self).await?;
            let request = Request::builder()
                .method(method)
                .uri(self.path_and_query.as_str())
                .header(HOST, self.authority.as_str())
                .body(Empty::<Bytes>::new())
                .map_err(|_| "protocol_error".to_owned())?;
            let resp = conn
                .sender
                .send_request(request)
                .await
                .map_err(|_| "connection_reset".to_owned())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|_| "connection_reset".to_owned())?
                .to_bytes();
            Ok::<_, String>((status, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(kind)) => Err(format!("{what}: {}", kind.replace('_', " "))),
            Err(_) => Err(format!(
                "{what}: no answer within {}s",
                timeout.as_secs_f64()
            )),
        }
    }
}

/// One answered request and when it completed.
pub type Completed = (Instant, Answer);

/// The running clients; [`Clients::stop`] ends them.
pub struct Clients {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Clients {
    /// Starts `n` clients; every answer goes to `tx`.
    pub fn start(
        endpoint: &Endpoint,
        n: usize,
        timeout: Duration,
        tx: mpsc::UnboundedSender<Completed>,
    ) -> Clients {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..n)
            .map(|_| {
                let (endpoint, stop, tx) = (endpoint.clone(), stop.clone(), tx.clone());
                tokio::spawn(client_loop(endpoint, timeout, stop, tx))
            })
            .collect();
        Clients { stop, tasks }
    }

    /// Lets each client finish the request it is on (at most `grace`), then
    /// ends it.
    pub async fn stop(mut self, grace: Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let all = futures_util::future::join_all(self.tasks.iter_mut());
        if tokio::time::timeout(grace, all).await.is_err() {
            for task in &self.tasks {
                task.abort();
            }
        }
    }
}

struct Conn {
    sender: SendRequest<Empty<Bytes>>,
    _driver: AbortOnDropHandle<Result<(), hyper::Error>>,
}

async fn connect(endpoint: &Endpoint) -> Result<Conn, String> {
    let stream = TcpStream::connect(&endpoint.addrs[..])
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connect_refused".to_owned(),
            _ => "connect_failed".to_owned(),
        })?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| "protocol_error".to_owned())?;
    Ok(Conn {
        sender,
        _driver: AbortOnDropHandle::new(tokio::spawn(conn)),
    })
}

async fn client_loop(
    endpoint: Endpoint,
    timeout: Duration,
    stop: Arc<AtomicBool>,
    tx: mpsc::UnboundedSender<Completed>,
) {
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let result = tokio::time::timeout(timeout, one_request(&endpoint, &mut conn)).await;
        let answer = match result {
            Ok(Ok(answer)) => answer,
            Ok(Err(kind)) => {
                conn = None;
                failed(started, kind)
            }
            Err(_) => {
                conn = None;
                failed(started, "client_timeout".to_owned())
            }
        };
        let transport_failed = answer.outcome.as_ref().is_err_and(|k| is_transport(k));
        if tx.send((Instant::now(), answer)).is_err() {
            return;
        }
        if transport_failed {
            // The service is down or restarting: do not spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn is_transport(kind: &str) -> bool {
    matches!(
        kind,
        "connect_refused" | "connect_failed" | "protocol_error" | "connection_reset"
    )
}

fn failed(started: Instant, kind: String) -> Answer {
    Answer {
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
        outcome: Err(kind),
        pool_ms: None,
        db_ms: None,
    }
}

/// One GET on the kept connection (opened first if there is none).
async fn one_request(endpoint: &Endpoint, conn: &mut Option<Conn>) -> Result<Answer, String> {
    let started = Instant::now();
    if conn.is_none() {
        *conn = Some(connect(endpoint).await?);
    }
    let c = conn.as_mut().expect("just set");
    c.sender
        .ready()
        .await
        .map_err(|_| "connection_reset".to_owned())?;
    let request = Request::get(endpoint.path_and_query.as_str())
        .header(HOST, endpoint.authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|_| "protocol_error".to_owned())?;
    let resp = c
        .sender
        .send_request(request)
        .await
        .map_err(|_| "connection_reset".to_owned())?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|_| "connection_reset".to_owned())?
        .to_bytes();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let timing = parts
        .headers
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let timing = ServerTiming::parse(timing);
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let db_ms = timing.map(|t| ms(t.db + t.pooler.unwrap_or_default()));
    let outcome = if parts.status == 200 {
        Ok(())
    } else {
        Err(serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error.to_string())
            .unwrap_or_else(|_| format!("http_{}", parts.status.as_u16())))
    };
    Ok(Answer {
        latency_ms,
        outcome,
        pool_ms: timing.map(|t| ms(t.pool)),
        db_ms,
    })
}
