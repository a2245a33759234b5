//! HTTP to the stack's published port on 127.0.0.1, and only there.

use std::time::Duration;

use poolscope::contract::PoolReport;

#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
    port: u16,
}

/// An answer: status, the headers that matter here, the body.
pub struct Answer {
    pub status: u16,
    pub replica: Option<String>,
    pub server_timing: Option<String>,
    pub body: bytes::Bytes,
}

impl Http {
    pub fn new(port: u16) -> Http {
        // A new connection for every request, so that behind HAProxy every
        // request is balanced on its own and a poll never waits on a
        // connection an earlier one left half-used.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("an HTTP client");
        Http { client, port }
    }

    pub async fn get(&self, path: &str, timeout: Duration) -> Result<Answer, reqwest::Error> {
        let url = format!("http://127.0.0.1:{}{path}", self.port);
        let resp = self.client.get(url).timeout(timeout).send().await?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (replica, server_timing) = (header("x-replica"), header("server-timing"));
        let status = resp.status().as_u16();
        Ok(Answer {
            status,
            replica,
            server_timing,
            body: resp.bytes().await?,
        })
    }

    /// `GET /pool`, read as the service writes it; `None` when it cannot be
    /// had (a replica restarting, the balancer between two).
    pub async fn pool(&self) -> Option<(PoolReport, Option<String>)> {
        let a = self.get("/pool", Duration::from_secs(5)).await.ok()?;
        if a.status != 200 {
            return None;
        }
        let report = serde_json::from_slice(&a.body).ok()?;
        Some((report, a.replica))
    }

    /// `/healthz` and `/readyz` answer 200.
    pub async fn ready(&self) -> Result<(), String> {
        for path in ["/healthz", "/readyz"] {
            match self.get(path, Duration::from_secs(5)).await {
                Ok(a) if a.status == 200 => {}
                Ok(a) => return Err(format!("{path} answered {}", a.status)),
                Err(e) => return Err(format!("{path}: {e}")),
            }
        }
        Ok(())
    }
}

/// Answers from Prometheus's HTTP API on 127.0.0.1:9090 (the observability
/// profile publishes it there).
pub async fn prometheus<T: serde::de::DeserializeOwned>(
    http: &Http,
    path_and_query: &str,
) -> Result<T, String> {
    let url = format!("http://127.0.0.1:9090{path_and_query}");
    let resp = http
        .client
        .get(&url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))
}
