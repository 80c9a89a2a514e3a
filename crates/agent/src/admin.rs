//! The admin HTTP server on `--metrics-addr`:
//!
//! | path | answers |
//! |---|---|
//! | `/metrics` | Prometheus text exposition of [`crate::metrics::Metrics`] |
//! | `/healthz` | 200 while the process runs (liveness) |
//! | `/readyz`  | 200 once the first sync succeeded and the datapath matches the config, else 503 |
//! | `/status`  | the [`crate::status::Status`] snapshot as JSON (what `masq status` prints) |
//!
//! Handlers only read shared state; the reconciler is the one writer.

use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::metrics::Metrics;
use crate::status::Status;

/// State shared between the reconciler (writer) and the handlers (readers).
pub struct Shared {
    /// Every metric.
    pub metrics: Metrics,
    /// The latest snapshot.
    pub status: RwLock<Status>,
}

impl Shared {
    /// A copy of the current status.
    pub fn status(&self) -> Status {
        self.status
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Looks at the current status without copying it (the CIDR list can be long).
    pub fn read<R>(&self, f: impl FnOnce(&Status) -> R) -> R {
        f(&self.status.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Changes the status in place.
    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        let mut s = self.status.write().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        self.metrics.ready.set(i64::from(s.ready));
    }
}

/// The router; [`serve`] runs it.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(shared)
}

/// Serves the admin endpoints until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    if let Err(e) = axum::serve(listener, router(shared)).await {
        tracing::error!(error = %e, "admin server stopped");
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
}

async fn readyz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    if shared.read(|s| s.ready) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn status(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        shared.read(|s| serde_json::to_string_pretty(s).expect("status serializes")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let code = out[9..12].parse().unwrap();
        (code, out)
    }

    #[tokio::test]
    async fn readiness_switches_from_503_to_200() {
        let shared = Arc::new(Shared {
            metrics: Metrics::new(),
            status: RwLock::new(Status::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, shared.clone()));
        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 503);
        shared.update(|s| s.ready = true);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        let (code, body) = get(addr, "/metrics").await;
        assert_eq!(code, 200);
        assert!(body.contains("masq_ready 1"), "{body}");
        let (code, body) = get(addr, "/status").await;
        assert_eq!(code, 200);
        assert!(body.contains("\"ready\": true"), "{body}");
        let fetched = tokio::task::spawn_blocking(move || crate::status::fetch(&addr.to_string()))
            .await
            .unwrap()
            .unwrap();
        assert!(fetched.ready);
    }
}
