//! A minimal HTTP/1.1 GET: one fresh TCP connection per request, like the
//! original client, so the client never queues requests behind each other.
//! Only `http://` is supported: the stack serves plain HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderMap, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_util::task::AbortOnDropHandle;

/// A parsed `http://host:port/path?query`.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: url::Url,
    authority: String,
    path_and_query: String,
    /// The host's addresses, looked up once ([`Target::resolve`]) and in the
    /// resolver's order; until then every connection resolves `authority`.
    addrs: Option<Arc<[SocketAddr]>>,
}

impl Target {
    pub fn parse(raw: &str) -> Result<Target, String> {
        let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
        if url.scheme() != "http" {
            return Err(format!(
                "only http:// URLs are supported, got {}://",
                url.scheme()
            ));
        }
        let host = url.host_str().ok_or("the URL has no host")?.to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let mut path_and_query = url.path().to_owned();
        if let Some(q) = url.query() {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        Ok(Target {
            authority: format!("{host}:{port}"),
            path_and_query,
            url,
            addrs: None,
        })
    }

    /// Looks the host up once, so that 10,000 requests do not ask the
    /// resolver 10,000 times; connections then try the addresses in the
    /// order the resolver gave them (IPv4 or IPv6 as it prefers).
    pub async fn resolve(mut self) -> Result<Target, String> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&self.authority)
            .await
            .map_err(|e| format!("cannot resolve {}: {e}", self.authority))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("{} resolves to no address", self.authority));
        }
        self.addrs = Some(addrs.into());
        Ok(self)
    }

    /// `app:8080 → 172.18.0.3:8080` once resolved.
    pub fn address(&self) -> Option<String> {
        let first = self.addrs.as_ref()?.first()?;
        Some(format!("{} → {first}", self.authority))
    }

    /// Another path on the same server (e.g. `/pool`).
    pub fn sibling(&self, path: &str) -> Target {
        let mut url = self.url.clone();
        url.set_path(path);
        url.set_query(None);
        let mut t = Target::parse(url.as_str()).expect("derived from a valid target");
        t.addrs = self.addrs.clone();
        t
    }

    pub fn with_query(&self, key: &str, value: &str) -> Target {
        let mut url = self.url.clone();
        url.query_pairs_mut().append_pair(key, value);
        let mut t = Target::parse(url.as_str()).expect("derived from a valid target");
        t.addrs = self.addrs.clone();
        t
    }
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why no answer came. Serialised (the summary's and the JSON report's
/// kind names) as `connect_refused`, `client_timeout`, …
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportError {
    ConnectRefused,
    ConnectFailed,
    /// The client's `--timeout` ran out.
    ClientTimeout,
    ConnectionReset,
    ProtocolError,
}

impl TransportError {
    /// Words for the per-response line, e.g. `[ERR connect refused]`.
    pub fn words(self) -> &'static str {
        match self {
            TransportError::ConnectRefused => "connect refused",
            TransportError::ConnectFailed => "connect failed",
            TransportError::ClientTimeout => "timeout",
            TransportError::ConnectionReset => "connection reset",
            TransportError::ProtocolError => "protocol error",
        }
    }
}

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.words())
    }
}

/// GET `target` on a new connection, giving up after `timeout`.
pub async fn get(target: &Target, timeout: Duration) -> Result<Answer, TransportError> {
    match tokio::time::timeout(timeout, get_inner(target)).await {
        Ok(result) => result,
        Err(_) => Err(TransportError::ClientTimeout),
    }
}

async fn get_inner(target: &Target) -> Result<Answer, TransportError> {
    let connect = match &target.addrs {
        Some(addrs) => TcpStream::connect(&addrs[..]).await,
        None => TcpStream::connect(&target.authority).await,
    };
    let stream = connect.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => TransportError::ConnectRefused,
        _ => TransportError::ConnectFailed,
    })?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|_| TransportError::ProtocolError)?;
    // The connection is driven by its own task; abort it however this future
    // ends (answer, error, or dropped by the caller's timeout) so that giving
    // up really closes the socket.
    let _driver = AbortOnDropHandle::new(tokio::spawn(conn));
    let request = Request::get(target.path_and_query.as_str())
        .header(HOST, target.authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|_| TransportError::ProtocolError)?;
    let result = async {
        let resp = sender
            .send_request(request)
            .await
            .map_err(|e| classify(&e))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| classify(&e))?.to_bytes();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
    .await;
    result
}

fn classify(e: &hyper::Error) -> TransportError {
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        TransportError::ConnectionReset
    } else {
        TransportError::ProtocolError
    }
}
