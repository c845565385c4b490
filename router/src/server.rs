//! Binding, serving and graceful shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::build::build_gateway;
use crate::layers::snapshot::SharedGateway;
use crate::stack;

/// A gateway serving on a bound socket.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The live configuration (swapped on reload).
    pub shared: SharedGateway,
    /// The usage writer, when `usage:` is configured (process-wide: survives reloads).
    pub usage: Option<crate::usage::UsageWriter>,
    token: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Begins a graceful shutdown: stop accepting, finish in-flight requests.
    pub fn shutdown(&self) {
        self.token.cancel();
    }

    /// Waits until the server has stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("server task")?
    }
}

/// Starts the gateway for `cfg` on `listener` (tests pass a port-0 listener).
pub async fn start_on(
    cfg: &slmgate_config::Config,
    listener: TcpListener,
) -> anyhow::Result<Running> {
    let built = build_gateway(cfg)?;
    let limits = built.limits;
    let shared: SharedGateway = Arc::new(ArcSwap::from_pointee(built));
    let draining = Arc::new(AtomicBool::new(false));
    // Install the metrics recorder before the first request records anything.
    let _ = crate::metrics::handle();
    let usage = match cfg.usage.as_ref().filter(|u| u.enabled) {
        Some(u) => Some(crate::usage::UsageWriter::start(u).await?),
        None => None,
    };
    let app = stack::build_with_usage(shared.clone(), limits, draining.clone(), usage.clone());
    let addr = listener.local_addr()?;
    let token = CancellationToken::new();
    let drain = limits.shutdown_timeout;

    let server_token = token.clone();
    let serve = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { server_token.cancelled().await });
    let serve_task = tokio::spawn(async move { serve.await });

    let outer_token = token.clone();
    let writer = usage.clone();
    let task = tokio::spawn(async move {
        let served = serve_and_drain(serve_task, outer_token, draining, drain).await;
        // Every request has finished (or was cut off): write the records still queued.
        if let Some(w) = writer {
            w.shutdown().await;
        }
        served
    });
    Ok(Running {
        addr,
        shared,
        usage,
        token,
        task,
    })
}

async fn serve_and_drain(
    mut serve_task: JoinHandle<std::io::Result<()>>,
    outer_token: CancellationToken,
    draining: Arc<AtomicBool>,
    drain: std::time::Duration,
) -> anyhow::Result<()> {
    tokio::select! {
        r = &mut serve_task => return r.context("server")?.context("serve"),
        _ = outer_token.cancelled() => {}
    }
    draining.store(true, Ordering::Relaxed);
    tracing::info!(?drain, "shutting down: draining in-flight requests");
    match tokio::time::timeout(drain, &mut serve_task).await {
        Ok(r) => {
            tracing::info!("all requests finished; bye");
            r.context("server")?.context("serve")
        }
        Err(_) => {
            tracing::warn!(
                ?drain,
                "drain timeout reached; closing remaining connections"
            );
            serve_task.abort();
            // Let the aborted connections drop their bodies (and with them their
            // pending usage records) before the writer is closed.
            let _ = serve_task.await;
            Ok(())
        }
    }
}

/// Binds `listen` (or the config's `listen`) and starts serving.
pub async fn start(
    cfg: &slmgate_config::Config,
    listen: Option<SocketAddr>,
) -> anyhow::Result<Running> {
    let addr = match listen {
        Some(a) => a,
        None => cfg
            .listen
            .parse()
            .with_context(|| format!("invalid listen address `{}`", cfg.listen))?,
    };
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    start_on(cfg, listener).await
}

/// The top-level entry point for `slmgate serve`: serves until SIGTERM or Ctrl-C, then
/// drains in-flight requests (bounded by `limits.shutdown_timeout`) and returns.
pub async fn serve(cfg: slmgate_config::Config, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let running = start(&cfg, listen).await?;
    {
        let gw = running.shared.load();
        for alias in &gw.model_order {
            if let Some(route) = gw.models.get(alias) {
                let chain: Vec<&str> = route.targets.iter().map(|t| t.backend.name()).collect();
                tracing::info!(model = %alias, backends = ?chain, "model available");
            }
        }
        let mut off: Vec<_> = gw.unavailable.iter().collect();
        off.sort();
        for (alias, why) in off {
            tracing::warn!(model = %alias, reason = %why, "model unavailable");
        }
        if let Some(e) = &gw.embedder {
            tracing::info!(model = %e.name, "embeddings available at /v1/embeddings");
        }
        if gw.models.is_empty() {
            tracing::warn!(
                "no model can be served: every request will get 404 (see the reasons above)"
            );
        }
    }
    tracing::info!(addr = %running.addr, "slmgate listening");
    shutdown_signal().await;
    running.shutdown();
    running.wait().await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
