//! `capsule-server`: the service a user runs (`capsule up`) and calls.
//!
//! **Owns:** the data directory layout and `capsule init` ([`data`]); the
//! configuration file and its environment overrides ([`config`]); bearer
//! tokens, roles and the rate limit ([`auth`]); the HTTP API ([`http`]),
//! the BrainAI gRPC service with health and reflection ([`grpc`]), the
//! OpenAPI document ([`openapi`]) and the metrics ([`metrics`]); start-up
//! and graceful shutdown ([`serve`]).
//!
//! **Must never:** decide anything itself — every kernel action goes
//! through the cortex, which asks policy and records in the ledger; store
//! a token in clear; answer a `/v1` request without a valid token; accept
//! an unbounded body or stream; exit on SIGTERM before the ledger is
//! closed.
//!
//! The HTTP and gRPC servers are thin adapters: they authenticate, parse
//! and bound the input, call the cortex or a library on a blocking thread,
//! and map errors to status codes.

#![forbid(unsafe_code)]
// The OpenAPI document is one large `json!`.
#![recursion_limit = "256"]

pub mod auth;
pub mod config;
pub mod data;
pub mod extract;
pub mod grpc;
pub mod http;
mod mesh_http;
pub mod metrics;
pub mod openapi;
pub mod service;

use anyhow::{Context, Result};
use service::Service;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use config::Config;

/// The addresses a running service bound (ports resolved when 0 was asked).
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
}

/// Bind every listener of `svc`, report the addresses through `on_bound`,
/// serve until `shutdown` resolves, then drain requests (up to the
/// configured grace) and close the ledger, which flushes and checkpoints.
pub async fn serve(
    svc: Arc<Service>,
    on_bound: impl FnOnce(Bound),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addrs = svc.config.addresses()?;
    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the {what} address {addr} (server.{what})"))
    };
    let http_listener = bind(addrs.http, "http").await?;
    let grpc_listener = bind(addrs.grpc, "grpc").await?;
    let metrics_listener = bind(addrs.metrics, "metrics").await?;
    let bound = Bound {
        http: http_listener.local_addr()?,
        grpc: grpc_listener.local_addr()?,
        metrics: metrics_listener.local_addr()?,
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let wait_stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let http = axum::serve(http_listener, http::router(svc.clone()))
        .with_graceful_shutdown(wait_stop(stop_rx.clone()));
    let metrics = axum::serve(metrics_listener, http::metrics_router(svc.clone()))
        .with_graceful_shutdown(wait_stop(stop_rx.clone()));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<grpc::BrainAiServer<grpc::BrainService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(grpc::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    let brain = grpc::BrainAiServer::new(grpc::BrainService::new(svc.clone(), stop_rx.clone()))
        .max_decoding_message_size(svc.config.limits.max_body_bytes);
    let grpc = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(brain)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
            wait_stop(stop_rx.clone()),
        );

    svc.set_ready(true);
    on_bound(bound);

    let grace = Duration::from_millis(svc.config.server.shutdown_grace_ms);
    let servers = async {
        let (h, g, m) = tokio::join!(
            async { http.await.context("HTTP server") },
            async { grpc.await.context("gRPC server") },
            async { metrics.await.context("metrics server") },
        );
        h.and(g).and(m)
    };
    tokio::pin!(servers);
    let mut result = tokio::select! {
        r = &mut servers => r,
        () = shutdown => {
            svc.set_ready(false);
            health_reporter
                .set_not_serving::<grpc::BrainAiServer<grpc::BrainService>>()
                .await;
            let _ = stop_tx.send(true);
            match tokio::time::timeout(grace, &mut servers).await {
                Ok(r) => r,
                Err(_) => Err(anyhow::anyhow!(
                    "requests still running after the {} ms grace (server.shutdown_grace_ms)",
                    grace.as_millis()
                )),
            }
        }
    };
    // Requests still on blocking threads hold their own Arc; close() makes
    // them fail cleanly rather than write after the final checkpoint.
    // The mesh's workers stop taking tasks and finish the one they run
    // (recorded while the ledger is still open); then no mesh thread holds
    // the ledger.
    let mesh = svc.mesh.clone();
    let _ = tokio::task::spawn_blocking(move || mesh.close()).await;
    let ledger = svc.ledger.clone();
    let closed = tokio::task::spawn_blocking(move || ledger.close()).await;
    match closed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => result = result.and(Err(e.into())),
        Err(e) => result = result.and(Err(e.into())),
    }
    result
}

/// A service started in the background by [`start`].
pub struct Running {
    pub bound: Bound,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<()>>,
}

impl Running {
    /// Shut down gracefully and wait until the ledger is closed.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.await?
    }
}

/// [`serve`] on a background task (for in-process use: the demo, tests);
/// returns once every listener is bound.
pub async fn start(svc: Arc<Service>) -> Result<Running> {
    let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        svc,
        move |b| {
            let _ = bound_tx.send(b);
        },
        async move {
            let _ = stop_rx.await;
        },
    ));
    match bound_rx.await {
        Ok(bound) => Ok(Running {
            bound,
            stop: Some(stop_tx),
            task,
        }),
        // serve returned before binding: its error says why.
        Err(_) => Err(task
            .await?
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the service stopped before binding"))),
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn termination() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
